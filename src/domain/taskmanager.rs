//! A TaskManager (worker) as the replicated state knows it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Labels a TaskManager carries and a job may select on.
pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskManagerState {
    /// Registered and eligible for placements.
    Alive,
    /// Takes no new placements; its running shards are left to finish.
    Draining,
    /// Declared lost by the leader; holds no shards.
    Lost,
}

impl TaskManagerState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskManagerState::Alive => "alive",
            TaskManagerState::Draining => "draining",
            TaskManagerState::Lost => "lost",
        }
    }
}

/// What the scheduler has observed of a TaskManager's shard runs. Times are milliseconds of
/// shard run time, stamped by the leader into the commands that report them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStats {
    /// Shard runs that ended (finished or failed).
    pub runs: u64,
    /// Total run time of those runs.
    pub run_time_ms: u64,
    /// Runs that ended in failure.
    pub failures: u64,
}

impl RunStats {
    /// Mean run time of a shard here, if any shard has ended here.
    pub fn mean_run_ms(&self) -> Option<f64> {
        (self.runs > 0).then(|| self.run_time_ms as f64 / self.runs as f64)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskManager {
    pub id: String,
    /// Where the TaskManager's agent listens (host:port), as it registered.
    pub addr: String,
    pub slots: u32,
    /// Slots held by shards assigned here that have not ended. Kept in step by apply.
    pub used_slots: u32,
    pub labels: Labels,
    pub state: TaskManagerState,
    /// Bumped every time the TaskManager registers again, so that a restarted agent can be
    /// told apart from its previous life.
    pub registration_epoch: u64,
    /// The agent process holding the id (random per process; 0 when unknown).
    pub incarnation: u64,
    pub registered_at_ms: u64,
    /// When it was declared lost (cleared when it registers again); retention forgets
    /// TaskManagers lost this long ago, so ids that come and go do not pile up.
    pub lost_at_ms: Option<u64>,
    pub stats: RunStats,
    /// Times of the most recent failed runs here (at most `RECENT_FAILURES_KEPT`).
    pub recent_failures_ms: Vec<u64>,
    /// Kept out of placement until this time after failing too often (0 = never excluded).
    pub excluded_until_ms: u64,
    /// While draining: when running shards are stopped and re-placed if not done by then.
    pub drain_deadline_ms: Option<u64>,
}

impl TaskManager {
    pub fn free_slots(&self) -> u32 {
        self.slots.saturating_sub(self.used_slots)
    }

    /// Alive and not excluded at `now_ms`.
    pub fn accepts_placements(&self, now_ms: u64) -> bool {
        self.state == TaskManagerState::Alive && !self.is_excluded(now_ms)
    }

    pub fn is_excluded(&self, now_ms: u64) -> bool {
        self.excluded_until_ms > now_ms
    }

    /// True when this TaskManager carries every label of `selector`.
    pub fn matches(&self, selector: &Labels) -> bool {
        selector
            .iter()
            .all(|(k, v)| self.labels.get(k).is_some_and(|have| have == v))
    }
}
