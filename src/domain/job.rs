//! Jobs and their shards.

use super::ids::JobId;
use super::taskmanager::Labels;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a client asked to run: each shard runs `command args...` with `env`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub command: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub shard_count: u32,
    pub slots_per_shard: u32,
    pub max_attempts: u32,
    /// Only TaskManagers carrying all these labels may run the job's shards.
    pub selector: Labels,
}

impl JobSpec {
    /// Bytes the variable-size parts of the spec take, for the size limit.
    pub fn encoded_len_estimate(&self) -> usize {
        self.command.len()
            + self.args.iter().map(|a| a.len() + 1).sum::<usize>()
            + self
                .env
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>()
            + self
                .selector
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    Pending,
    Running,
    Finished,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Finished => "finished",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Finished | JobState::Failed | JobState::Cancelled
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardState {
    Pending,
    Assigned,
    Running,
    Finished,
    Failed,
    Cancelled,
}

impl ShardState {
    pub fn as_str(self) -> &'static str {
        match self {
            ShardState::Pending => "pending",
            ShardState::Assigned => "assigned",
            ShardState::Running => "running",
            ShardState::Finished => "finished",
            ShardState::Failed => "failed",
            ShardState::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ShardState::Finished | ShardState::Failed | ShardState::Cancelled
        )
    }

    /// True while the shard holds slots on a TaskManager.
    pub fn holds_slots(self) -> bool {
        matches!(self, ShardState::Assigned | ShardState::Running)
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// How many of a job's shards are in each state. Derived from the shards and never encoded:
/// apply keeps it beside every change of a shard's state (`ShardCounts::moved`), decode
/// rebuilds it. It lets apply settle a job's state after a report without walking every
/// shard, which made a job's life quadratic in its size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardCounts([u32; 6]);

impl ShardCounts {
    pub fn of(shards: &[Shard]) -> Self {
        let mut counts = ShardCounts::default();
        for shard in shards {
            counts.0[shard.state.slot()] += 1;
        }
        counts
    }

    /// One shard went from `from` to `to`.
    pub fn moved(&mut self, from: ShardState, to: ShardState) {
        self.0[from.slot()] = self.0[from.slot()].saturating_sub(1);
        self.0[to.slot()] += 1;
    }

    pub fn get(&self, state: ShardState) -> u32 {
        self.0[state.slot()]
    }

    fn total(&self) -> u64 {
        self.0.iter().map(|&n| u64::from(n)).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub state: ShardState,
    pub taskmanager: Option<String>,
    /// Attempts started so far (0 until first placed).
    pub attempt: u32,
    /// Fencing token: the log index of the command that made the current assignment. Only
    /// grows; a report carrying an older epoch is stale.
    pub epoch: u64,
    pub exit_code: Option<i32>,
    /// Failed runs so far, counted against the job's max attempts. Runs cut short by the
    /// infrastructure (TaskManager lost, drained, restarted) do not count.
    pub failures: u32,
    /// Retry back-off: the shard may not be placed before this time (ms since the epoch).
    pub not_before_ms: u64,
    /// When the current run started, as the leader stamped the start report.
    pub started_at_ms: Option<u64>,
    /// Why the last run failed (exit code and the last lines of stderr).
    pub error: Option<String>,
    /// Runs cut short by the infrastructure (TaskManager lost, drained, restarted). They do
    /// not count against max attempts, but repeated ones back off, so a shard that keeps
    /// taking its TaskManager down cannot spin.
    pub interruptions: u32,
}

impl Shard {
    pub fn new(index: u32) -> Self {
        Shard {
            index,
            state: ShardState::Pending,
            taskmanager: None,
            attempt: 0,
            epoch: 0,
            exit_code: None,
            failures: 0,
            not_before_ms: 0,
            started_at_ms: None,
            error: None,
            interruptions: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub name: String,
    pub spec: JobSpec,
    pub state: JobState,
    pub created_at_ms: u64,
    /// When the job reached a terminal state (for retention).
    pub ended_at_ms: Option<u64>,
    pub idempotency_key: Option<String>,
    /// Who submitted it (the client's identity at the API edge).
    pub owner: String,
    pub shards: Vec<Shard>,
    /// Derived (see `ShardCounts`): not encoded, rebuilt on decode.
    #[serde(skip)]
    pub counts: ShardCounts,
}

impl Job {
    /// Shards not yet placed on any TaskManager.
    pub fn pending_shards(&self) -> impl Iterator<Item = &Shard> {
        self.shards
            .iter()
            .filter(|s| s.state == ShardState::Pending)
    }

    /// The job's state as its shards imply it. `Cancelled` and `Failed` are set by apply
    /// (cancel, a shard out of attempts) and stick.
    pub fn derived_state(&self) -> JobState {
        if matches!(self.state, JobState::Cancelled | JobState::Failed) {
            return self.state;
        }
        let counts = &self.counts;
        let finished = counts.get(ShardState::Finished);
        let placed = finished + counts.get(ShardState::Assigned) + counts.get(ShardState::Running);
        if finished as usize == self.shards.len() {
            JobState::Finished
        } else if placed > 0 {
            JobState::Running
        } else {
            JobState::Pending
        }
    }

    /// Whether any shard waits to be placed.
    pub fn has_pending_shards(&self) -> bool {
        self.counts.get(ShardState::Pending) > 0
    }

    /// Count the shards again if the counts cannot be right (a job built without them).
    pub fn ensure_counts(&mut self) {
        if self.counts.total() != self.shards.len() as u64 {
            self.recount();
        }
    }

    pub fn recount(&mut self) {
        self.counts = ShardCounts::of(&self.shards);
    }

    /// Shard `index`, to change: the counts follow its state when the guard is dropped.
    /// Apply changes shards only through this (or recounts after).
    pub fn shard_mut(&mut self, index: usize) -> Option<ShardMut<'_>> {
        let shard = self.shards.get_mut(index)?;
        Some(ShardMut {
            before: shard.state,
            shard,
            counts: &mut self.counts,
        })
    }
}

/// A shard being changed; see `Job::shard_mut`.
pub struct ShardMut<'a> {
    shard: &'a mut Shard,
    counts: &'a mut ShardCounts,
    before: ShardState,
}

impl std::ops::Deref for ShardMut<'_> {
    type Target = Shard;
    fn deref(&self) -> &Shard {
        self.shard
    }
}

impl std::ops::DerefMut for ShardMut<'_> {
    fn deref_mut(&mut self) -> &mut Shard {
        self.shard
    }
}

impl Drop for ShardMut<'_> {
    fn drop(&mut self) {
        if self.shard.state != self.before {
            self.counts.moved(self.before, self.shard.state);
        }
    }
}
