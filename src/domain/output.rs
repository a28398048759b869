//! What ended shards printed: the tail of each run's stdout and stderr, sent with its final
//! report and kept in the replicated state so that `job logs` answers from any replica after
//! the TaskManager that ran it is gone.
//!
//! Bounded twice: each tail is cut before the log (the leader's `limits.output_tail_bytes`),
//! and the whole store is kept under a total stamped into each command by the leader: the
//! oldest tails are dropped first, in log order, so every replica drops the same ones.

use super::JobId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The end of what a run printed on its two streams.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrintedTail {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The run printed more than is here (only the end is).
    pub stdout_cut: bool,
    pub stderr_cut: bool,
    /// Bytes the run printed on each stream, in all.
    pub stdout_len: u64,
    pub stderr_len: u64,
}

impl PrintedTail {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        (self.stdout.len() + self.stderr.len()) as u64
    }
}

/// One run's output, as reported when it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardOutput {
    /// The placement (log index) of the run that printed it.
    pub epoch: u64,
    /// The log index that recorded it (the order of eviction).
    pub recorded_at: u64,
    pub printed: PrintedTail,
}

impl ShardOutput {
    pub fn bytes(&self) -> u64 {
        self.printed.bytes()
    }
}

/// Every shard's last reported output, by (job, shard).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputStore {
    by_shard: BTreeMap<(JobId, u32), Arc<ShardOutput>>,
    /// (recorded_at, job, shard): eviction order (a batch records many at one index).
    order: BTreeSet<(u64, JobId, u32)>,
    bytes: u64,
}

impl OutputStore {
    pub fn get(&self, job: JobId, shard: u32) -> Option<&ShardOutput> {
        self.by_shard.get(&(job, shard)).map(|o| &**o)
    }

    /// Bytes of output held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.by_shard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_shard.is_empty()
    }

    /// Keep `output` as the shard's latest (replacing an earlier run's), then drop the
    /// oldest until at most `keep_bytes` are held.
    pub fn record(&mut self, job: JobId, shard: u32, output: ShardOutput, keep_bytes: u64) {
        self.remove(job, shard);
        if output.bytes() > 0 {
            self.bytes += output.bytes();
            self.order.insert((output.recorded_at, job, shard));
            self.by_shard.insert((job, shard), Arc::new(output));
        }
        while self.bytes > keep_bytes {
            let Some((_, job, shard)) = self.order.pop_first() else {
                break;
            };
            if let Some(old) = self.by_shard.remove(&(job, shard)) {
                self.bytes -= old.bytes();
            }
        }
    }

    pub fn remove(&mut self, job: JobId, shard: u32) {
        if let Some(old) = self.by_shard.remove(&(job, shard)) {
            self.bytes -= old.bytes();
            self.order.remove(&(old.recorded_at, job, shard));
        }
    }

    /// Forget every shard of `job`.
    pub fn remove_job(&mut self, job: JobId) {
        let shards: Vec<u32> = self
            .by_shard
            .range((job, 0)..=(job, u32::MAX))
            .map(|((_, shard), _)| *shard)
            .collect();
        for shard in shards {
            self.remove(job, shard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(recorded_at: u64, bytes: usize) -> ShardOutput {
        ShardOutput {
            epoch: recorded_at - 1,
            recorded_at,
            printed: PrintedTail {
                stdout: vec![b'x'; bytes],
                stdout_len: bytes as u64,
                ..PrintedTail::default()
            },
        }
    }

    #[test]
    fn the_oldest_output_goes_first_and_the_total_stays_bounded() {
        let mut store = OutputStore::default();
        store.record(JobId(1), 0, output(10, 400), 1000);
        store.record(JobId(1), 1, output(10, 400), 1000);
        store.record(JobId(2), 0, output(12, 400), 1000);
        assert_eq!(store.bytes(), 800);
        assert!(store.get(JobId(1), 0).is_none(), "the oldest was dropped");
        assert!(
            store.get(JobId(1), 1).is_some(),
            "one index may record several"
        );
        assert!(store.get(JobId(2), 0).is_some());
    }

    #[test]
    fn a_new_run_replaces_the_shards_earlier_output_and_jobs_are_forgotten_whole() {
        let mut store = OutputStore::default();
        store.record(JobId(1), 0, output(10, 100), 1000);
        store.record(JobId(1), 0, output(20, 50), 1000);
        assert_eq!(store.bytes(), 50);
        assert_eq!(store.get(JobId(1), 0).map(|o| o.recorded_at), Some(20));
        store.record(JobId(1), 3, output(21, 10), 1000);
        store.record(JobId(2), 0, output(22, 10), 1000);
        store.remove_job(JobId(1));
        assert_eq!(store.len(), 1);
        assert_eq!(store.bytes(), 10);
        // Empty output takes no room and removes the older one.
        store.record(JobId(2), 0, output(23, 0), 1000);
        assert!(store.is_empty());
        assert_eq!(store.bytes(), 0);
    }
}
