//! Live output of running shards, on the leader, on demand: `job logs` on a running shard
//! subscribes to a tap here; the tap is listed in the heartbeat replies to the shard's
//! TaskManager, whose agent then sends the run's new output with its next heartbeats; the
//! leader hands each chunk to the subscribers. Nothing flows while nobody follows, nothing
//! goes through the log, and a slow follower loses chunks (it sees a gap) rather than
//! holding memory: each tap buffers a bounded number of chunks.
//!
//! Taps live in this replica's memory only: after a leader change the followers reconnect
//! to the new leader and tap again.

use crate::domain::JobId;
use crate::pb::api::{OutputChunk, ShardKey};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// Chunks a tap holds for its slowest subscriber.
const TAP_CHUNKS: usize = 64;
/// Most runs one TaskManager is asked to send output for at once.
pub const MAX_TAPS_PER_TASKMANAGER: usize = 64;

type RunKey = (JobId, u32, u64);

#[derive(Default)]
pub struct OutputTaps {
    /// TaskManager id → its tapped runs.
    by_taskmanager: Mutex<HashMap<String, HashMap<RunKey, broadcast::Sender<OutputChunk>>>>,
}

impl std::fmt::Debug for OutputTaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutputTaps")
    }
}

impl OutputTaps {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<RunKey, broadcast::Sender<OutputChunk>>>>
    {
        self.by_taskmanager
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Follow run `key` on `taskmanager`; `None` if that TaskManager is already tapped for
    /// as many runs as it may be.
    pub fn subscribe(
        &self,
        taskmanager: &str,
        key: RunKey,
    ) -> Option<broadcast::Receiver<OutputChunk>> {
        let mut all = self.lock();
        let runs = all.entry(taskmanager.to_string()).or_default();
        runs.retain(|_, tap| tap.receiver_count() > 0);
        if let Some(tap) = runs.get(&key) {
            return Some(tap.subscribe());
        }
        if runs.len() >= MAX_TAPS_PER_TASKMANAGER {
            return None;
        }
        let (tap, receiver) = broadcast::channel(TAP_CHUNKS);
        runs.insert(key, tap);
        Some(receiver)
    }

    /// The runs of `taskmanager` someone follows now.
    pub fn wanted(&self, taskmanager: &str) -> Vec<ShardKey> {
        let mut all = self.lock();
        let Some(runs) = all.get_mut(taskmanager) else {
            return Vec::new();
        };
        runs.retain(|_, tap| tap.receiver_count() > 0);
        let wanted = runs
            .keys()
            .map(|(job, index, epoch)| ShardKey {
                job_id: job.to_string(),
                index: *index,
                epoch: *epoch,
            })
            .collect();
        if runs.is_empty() {
            all.remove(taskmanager);
        }
        wanted
    }

    /// Hand chunks a TaskManager sent to whoever follows them; chunks of untapped runs
    /// (the follower left) are dropped.
    pub fn deliver(&self, taskmanager: &str, chunks: Vec<OutputChunk>) {
        if chunks.is_empty() {
            return;
        }
        let all = self.lock();
        let Some(runs) = all.get(taskmanager) else {
            return;
        };
        for chunk in chunks {
            let Ok(job) = chunk.job_id.parse::<JobId>() else {
                continue;
            };
            if let Some(tap) = runs.get(&(job, chunk.index, chunk.epoch)) {
                let _ = tap.send(chunk);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(epoch: u64, bytes: &[u8]) -> OutputChunk {
        OutputChunk {
            job_id: "j-4".into(),
            index: 0,
            epoch,
            stdout: bytes.to_vec(),
            ..OutputChunk::default()
        }
    }

    #[test]
    fn a_tap_is_wanted_only_while_followed_and_gets_only_its_runs_chunks() {
        let taps = OutputTaps::default();
        let mut rx = taps.subscribe("a", (JobId(4), 0, 9)).expect("room");
        assert_eq!(taps.wanted("a").len(), 1);
        assert!(taps.wanted("b").is_empty());
        taps.deliver("a", vec![chunk(9, b"hello"), chunk(8, b"older run")]);
        assert_eq!(rx.try_recv().expect("a chunk").stdout, b"hello");
        assert!(rx.try_recv().is_err(), "another run's chunk is not ours");
        drop(rx);
        assert!(taps.wanted("a").is_empty(), "nobody follows any more");
    }

    #[test]
    fn taps_per_taskmanager_are_bounded() {
        let taps = OutputTaps::default();
        let held: Vec<_> = (0..MAX_TAPS_PER_TASKMANAGER as u32)
            .map(|i| taps.subscribe("a", (JobId(1), i, 5)).expect("room"))
            .collect();
        assert!(taps.subscribe("a", (JobId(1), 999, 5)).is_none());
        // An existing tap can always be joined.
        assert!(taps.subscribe("a", (JobId(1), 0, 5)).is_some());
        drop(held);
        assert!(taps.subscribe("a", (JobId(1), 999, 5)).is_some());
    }
}
