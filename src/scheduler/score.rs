//! The scoring formula (see the module docs of `scheduler`).

use crate::domain::{ClusterState, Resources, TaskManager};

/// Weights of the score terms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreWeights {
    pub capacity: f64,
    pub run_time: f64,
    pub failure_rate: f64,
    pub spread: f64,
    /// Failures per hour of run time at which the failure penalty is full.
    pub failure_rate_ceiling_per_hour: f64,
}

impl Default for ScoreWeights {
    fn default() -> Self {
        ScoreWeights {
            capacity: 1.0,
            run_time: 0.25,
            failure_rate: 0.5,
            spread: 2.0,
            failure_rate_ceiling_per_hour: 6.0,
        }
    }
}

/// Hours of run time assumed before any is observed, so that one early failure does not
/// brand a TaskManager as broken.
const PRIOR_RUN_HOURS: f64 = 0.1;
const MS_PER_HOUR: f64 = 3_600_000.0;

/// Scores TaskManagers for one planning round; holds the cluster-wide mean run time.
#[derive(Debug, Clone)]
pub struct TaskManagerScorer {
    weights: ScoreWeights,
    cluster_mean_run_ms: Option<f64>,
}

impl TaskManagerScorer {
    pub fn new(state: &ClusterState, weights: ScoreWeights) -> Self {
        let (runs, time) = state
            .taskmanagers
            .values()
            .fold((0u64, 0u64), |(r, t), tm| {
                (r + tm.stats.runs, t + tm.stats.run_time_ms)
            });
        let cluster_mean_run_ms = (runs > 0 && time > 0).then(|| time as f64 / runs as f64);
        TaskManagerScorer {
            weights,
            cluster_mean_run_ms,
        }
    }

    /// The part of the score that does not change while a plan is built: the run-time and
    /// failure-rate penalties.
    pub fn static_penalty(&self, tm: &TaskManager) -> f64 {
        let w = &self.weights;
        let run_time = match (tm.stats.mean_run_ms(), self.cluster_mean_run_ms) {
            (Some(t), Some(mean)) if t + mean > 0.0 => t / (t + mean),
            _ => 0.0,
        };
        let run_hours = tm.stats.run_time_ms as f64 / MS_PER_HOUR;
        let rate = tm.stats.failures as f64 / (run_hours + PRIOR_RUN_HOURS);
        let failure = (rate / w.failure_rate_ceiling_per_hour).min(1.0);
        w.run_time * run_time + w.failure_rate * failure
    }

    /// Full score of placing one more shard on a TaskManager that keeps `room_after` (R,
    /// 0..1: the share of its capacity left free in the tightest dimension, see
    /// `room_after`) and already holds `same_job` shards of this job.
    pub fn score(&self, static_penalty: f64, room_after: f64, same_job: u32) -> f64 {
        let w = &self.weights;
        w.capacity * room_after - static_penalty - w.spread * same_job as f64
    }
}

/// R: what a TaskManager keeps free after one more shard, as a share of its capacity, in the
/// dimension the shard leaves tightest: slots, and each resource the shard asks for (its
/// dominant dimension there). A TaskManager without a declared limit in a dimension does
/// not count that one.
pub fn room_after(
    slots: u32,
    free: u32,
    slots_needed: u32,
    asked: Option<&Resources>,
    used: &Resources,
    capacity: &Resources,
) -> f64 {
    let share = |left: u64, total: u64| {
        if total == 0 || total == u64::MAX {
            1.0
        } else {
            left as f64 / total as f64
        }
    };
    let mut room = share(
        u64::from(free.saturating_sub(slots_needed)),
        u64::from(slots),
    );
    if slots == 0 {
        room = 0.0;
    }
    let Some(asked) = asked else {
        return room;
    };
    let left = |asked: u64, used: u64, total: u64| total.saturating_sub(used).saturating_sub(asked);
    if asked.cpu_millis > 0 {
        room = room.min(share(
            left(asked.cpu_millis, used.cpu_millis, capacity.cpu_millis),
            capacity.cpu_millis,
        ));
    }
    if asked.memory_bytes > 0 {
        room = room.min(share(
            left(asked.memory_bytes, used.memory_bytes, capacity.memory_bytes),
            capacity.memory_bytes,
        ));
    }
    for (name, count) in &asked.named {
        let total = capacity.named.get(name).copied().unwrap_or(0);
        let used = used.named.get(name).copied().unwrap_or(0);
        room = room.min(share(left(*count, used, total), total));
    }
    room
}
