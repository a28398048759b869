//! The dashboard's history: every few seconds a replica notes its headline figures and keeps
//! the last hours of them in memory, so an operator can see whether submissions, shard
//! starts and ends or the queue were different an hour ago without a time-series database
//! (Prometheus keeps the long history). The figures are what this replica applied, so a
//! follower draws the same curves as the leader; a restarted replica starts a new history.
//!
//! It only reads the metrics and the applied state; it never writes to either.

use super::Metrics;
use crate::domain::{ClusterState, ShardState};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One moment: counters since this process started, and gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    pub at_ms: u64,
    pub submitted: u64,
    pub shard_starts: u64,
    pub shard_ends: u64,
    pub leader_changes: u64,
    pub pending_shards: u64,
    pub running_shards: u64,
}

/// One point of the charts: the rates over the interval that ends at `at_ms`, and the
/// gauges then.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub at_ms: u64,
    pub submitted_per_s: f64,
    pub starts_per_s: f64,
    pub ends_per_s: f64,
    /// Leader changes within the interval.
    pub leader_changes: u64,
    pub pending_shards: u64,
    pub running_shards: u64,
}

/// The newest samples, oldest dropped first.
#[derive(Debug)]
pub struct HistoryRing {
    samples: Mutex<VecDeque<Sample>>,
    capacity: usize,
    /// How often a sample is taken.
    pub every: Duration,
}

impl HistoryRing {
    /// A ring that samples `every` and keeps `keep` of history.
    pub fn new(every: Duration, keep: Duration) -> Self {
        let capacity = (keep.as_millis() / every.as_millis().max(1)).max(2) as usize + 1;
        HistoryRing {
            samples: Mutex::new(VecDeque::with_capacity(capacity.min(4_096))),
            capacity,
            every,
        }
    }

    pub fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == self.capacity {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The charts' points, oldest first: one per interval between two samples.
    pub fn points(&self) -> Vec<Point> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let mut points = Vec::with_capacity(samples.len().saturating_sub(1));
        for (before, after) in samples.iter().zip(samples.iter().skip(1)) {
            let seconds = after.at_ms.saturating_sub(before.at_ms).max(1) as f64 / 1_000.0;
            let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / seconds;
            points.push(Point {
                at_ms: after.at_ms,
                submitted_per_s: rate(before.submitted, after.submitted),
                starts_per_s: rate(before.shard_starts, after.shard_starts),
                ends_per_s: rate(before.shard_ends, after.shard_ends),
                leader_changes: after.leader_changes.saturating_sub(before.leader_changes),
                pending_shards: after.pending_shards,
                running_shards: after.running_shards,
            });
        }
        points
    }
}

/// This moment's sample of `metrics` and `state`.
pub fn sample(at_ms: u64, metrics: &Metrics, state: &ClusterState) -> Sample {
    let pending_shards = state
        .jobs_with_pending_shards
        .iter()
        .filter_map(|id| state.job(*id))
        .map(|job| u64::from(job.counts.get(ShardState::Pending)))
        .sum();
    let running_shards = state
        .shards_by_taskmanager
        .values()
        .map(|held| held.len() as u64)
        .sum();
    Sample {
        at_ms,
        submitted: metrics.event_count("job_submitted"),
        shard_starts: metrics.event_count("shard_started"),
        shard_ends: metrics.event_count("shard_finished") + metrics.event_count("shard_failed"),
        leader_changes: metrics.leader_changes(),
        pending_shards,
        running_shards,
    }
}

/// Take a sample every `ring.every` for as long as the process runs.
pub async fn run(ring: Arc<HistoryRing>, shared: Arc<crate::raft::SharedState>) {
    let mut ticks = tokio::time::interval(ring.every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let taken = {
            let view = shared.read();
            sample(crate::clock::now_ms(), shared.metrics(), &view.state)
        };
        ring.push(taken);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(at_ms: u64, submitted: u64, leader_changes: u64) -> Sample {
        Sample {
            at_ms,
            submitted,
            leader_changes,
            pending_shards: submitted,
            ..Sample::default()
        }
    }

    #[test]
    fn points_are_rates_between_samples_and_the_oldest_go_first() {
        let ring = HistoryRing::new(Duration::from_secs(10), Duration::from_secs(30));
        for (i, submitted) in [0u64, 100, 300, 300, 1_300].into_iter().enumerate() {
            ring.push(at(i as u64 * 10_000, submitted, i as u64 / 3));
        }
        // 30 s of history at 10 s: four samples kept, three points.
        let points = ring.points();
        let rates: Vec<f64> = points.iter().map(|p| p.submitted_per_s).collect();
        assert_eq!(rates, vec![20.0, 0.0, 100.0]);
        assert_eq!(points[0].at_ms, 20_000);
        let changes: Vec<u64> = points.iter().map(|p| p.leader_changes).collect();
        assert_eq!(changes, vec![0, 1, 0]);
        assert_eq!(points[2].pending_shards, 1_300);
    }

    #[test]
    fn a_ring_of_one_sample_has_no_points() {
        let ring = HistoryRing::new(Duration::from_secs(1), Duration::from_secs(60));
        assert!(ring.points().is_empty());
        ring.push(at(0, 5, 0));
        assert!(ring.points().is_empty());
    }
}
