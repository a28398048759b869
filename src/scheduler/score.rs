//! The scoring formula (see the module docs of `scheduler`).

use crate::domain::{ClusterState, TaskManager};

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

    /// Full score of placing one more shard of `slots_needed` on a TaskManager with `slots`
    /// slots, `free` of them free, already holding `same_job` shards of this job.
    pub fn score(
        &self,
        static_penalty: f64,
        slots: u32,
        free: u32,
        slots_needed: u32,
        same_job: u32,
    ) -> f64 {
        let w = &self.weights;
        let free_after = free.saturating_sub(slots_needed) as f64;
        let capacity = if slots == 0 {
            0.0
        } else {
            free_after / slots as f64
        };
        w.capacity * capacity - static_penalty - w.spread * same_job as f64
    }
}
