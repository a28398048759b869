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

#[cfg(test)]
impl JobSpec {
    /// `shards` shards that each run `command`, one slot and one attempt each (for tests).
    pub fn of_command(command: &str, shards: u32) -> JobSpec {
        JobSpec {
            command: command.into(),
            args: vec![],
            env: Default::default(),
            shard_count: shards,
            slots_per_shard: 1,
            max_attempts: 1,
            selector: Default::default(),
        }
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
///
/// It also keeps where to start looking for pending shards: no shard below `pending_from`
/// is pending. It is a hint (0 is always right), so it takes no part in equality.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardCounts {
    by_state: [u32; 6],
    pending_from: u32,
}

impl PartialEq for ShardCounts {
    fn eq(&self, other: &Self) -> bool {
        self.by_state == other.by_state
    }
}

impl Eq for ShardCounts {}

impl ShardCounts {
    pub fn of(shards: &[Shard]) -> Self {
        let mut counts = ShardCounts::default();
        for shard in shards {
            counts.by_state[shard.state.slot()] += 1;
        }
        counts.pending_from = shards
            .iter()
            .position(|s| s.state == ShardState::Pending)
            .unwrap_or(shards.len()) as u32;
        counts
    }

    /// Shard `index` went from `from` to `to`.
    pub fn moved(&mut self, index: u32, from: ShardState, to: ShardState) {
        self.by_state[from.slot()] = self.by_state[from.slot()].saturating_sub(1);
        self.by_state[to.slot()] += 1;
        if to == ShardState::Pending {
            self.pending_from = self.pending_from.min(index);
        }
    }

    pub fn get(&self, state: ShardState) -> u32 {
        self.by_state[state.slot()]
    }

    /// Shards placed at some point of their current run: assigned, running or finished.
    pub fn placed(&self) -> u32 {
        self.get(ShardState::Assigned)
            + self.get(ShardState::Running)
            + self.get(ShardState::Finished)
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
        let from = (self.counts.pending_from as usize).min(self.shards.len());
        self.shards[from..]
            .iter()
            .filter(|s| s.state == ShardState::Pending)
    }

    /// Move the start of the pending shards past those placed since (apply calls this after
    /// changing a job, so the scheduler's scans skip what is placed or done).
    pub fn skip_placed_shards(&mut self) {
        let mut from = self.counts.pending_from as usize;
        while from < self.shards.len() && self.shards[from].state != ShardState::Pending {
            from += 1;
        }
        self.counts.pending_from = from as u32;
    }

    /// The job's state as its shards imply it. `Cancelled` and `Failed` are set by apply
    /// (cancel, a shard out of attempts) and stick.
    pub fn derived_state(&self) -> JobState {
        if matches!(self.state, JobState::Cancelled | JobState::Failed) {
            return self.state;
        }
        if self.counts.get(ShardState::Finished) as usize == self.shards.len() {
            JobState::Finished
        } else if self.counts.placed() > 0 {
            JobState::Running
        } else {
            JobState::Pending
        }
    }

    /// Whether any shard waits to be placed.
    pub fn has_pending_shards(&self) -> bool {
        self.counts.get(ShardState::Pending) > 0
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
            self.counts
                .moved(self.shard.index, self.before, self.shard.state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(shards: u32) -> Job {
        let shards: Vec<Shard> = (0..shards).map(Shard::new).collect();
        Job {
            id: JobId(1),
            name: "j".into(),
            spec: JobSpec {
                command: "/bin/true".into(),
                args: vec![],
                env: Default::default(),
                shard_count: shards.len() as u32,
                slots_per_shard: 1,
                max_attempts: 1,
                selector: Default::default(),
            },
            state: JobState::Pending,
            created_at_ms: 0,
            ended_at_ms: None,
            idempotency_key: None,
            owner: "o".into(),
            counts: ShardCounts::of(&shards),
            shards,
        }
    }

    fn set(job: &mut Job, index: usize, state: ShardState) {
        job.shard_mut(index).unwrap().state = state;
    }

    #[test]
    fn counts_and_the_pending_scan_follow_every_change_made_through_the_guard() {
        let mut job = job(4);
        for i in 0..3 {
            set(&mut job, i, ShardState::Assigned);
        }
        set(&mut job, 0, ShardState::Finished);
        job.skip_placed_shards();
        let pending: Vec<u32> = job.pending_shards().map(|s| s.index).collect();
        assert_eq!(pending, vec![3]);
        assert_eq!(job.derived_state(), JobState::Running);
        // Shard 1 goes back to pending, below where the scan had moved to.
        set(&mut job, 1, ShardState::Pending);
        let pending: Vec<u32> = job.pending_shards().map(|s| s.index).collect();
        assert_eq!(pending, vec![1, 3]);
        assert_eq!(job.counts, ShardCounts::of(&job.shards));
        for i in 0..4 {
            set(&mut job, i, ShardState::Finished);
        }
        job.skip_placed_shards();
        assert_eq!(job.pending_shards().count(), 0);
        assert!(!job.has_pending_shards());
        assert_eq!(job.derived_state(), JobState::Finished);
        assert_eq!(job.counts.get(ShardState::Finished), 4);
    }
}
