//! The gauges that Raft's own metrics and the applied state already hold, set when scraped:
//! counting them as they change would duplicate what apply does.

use super::Metrics;
use crate::domain::{ClusterState, JobState, ShardState, TaskManagerState};
use std::collections::BTreeMap;

/// What a scrape reads from Raft.
#[derive(Debug, Clone, Copy, Default)]
pub struct RaftView {
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub is_leader: bool,
    pub leader_id: Option<u64>,
}

const TASKMANAGER_STATES: [TaskManagerState; 3] = [
    TaskManagerState::Alive,
    TaskManagerState::Draining,
    TaskManagerState::Lost,
];
const SHARD_STATES: [ShardState; 6] = [
    ShardState::Pending,
    ShardState::Assigned,
    ShardState::Running,
    ShardState::Finished,
    ShardState::Failed,
    ShardState::Cancelled,
];
const JOB_STATES: [JobState; 5] = [
    JobState::Pending,
    JobState::Running,
    JobState::Finished,
    JobState::Failed,
    JobState::Cancelled,
];

/// Counts of every state, zeros included so a series never vanishes.
fn tally<S: Copy>(all: &[S], name: fn(S) -> &'static str) -> BTreeMap<&'static str, i64> {
    all.iter().map(|s| (name(*s), 0)).collect()
}

impl Metrics {
    /// Set the scraped gauges from Raft and the applied state.
    pub fn refresh(&self, raft: RaftView, state: &ClusterState) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.term.set(gauge(raft.term));
        self.commit_index.set(gauge(raft.commit_index));
        self.applied_index.set(gauge(raft.applied_index));
        self.last_log_index.set(gauge(raft.last_log_index));
        self.is_leader.set(i64::from(raft.is_leader));
        self.leader_id.set(gauge(raft.leader_id.unwrap_or(0)));
        self.cluster_version.set(i64::from(state.cluster_version.0));

        let mut taskmanagers = tally(&TASKMANAGER_STATES, TaskManagerState::as_str);
        let (mut used, mut free) = (0i64, 0i64);
        for tm in state.taskmanagers.values() {
            *taskmanagers.entry(tm.state.as_str()).or_default() += 1;
            if tm.state != TaskManagerState::Lost {
                used += i64::from(tm.used_slots);
            }
            if tm.state == TaskManagerState::Alive {
                free += i64::from(tm.slots.saturating_sub(tm.used_slots));
            }
        }
        for (state, count) in taskmanagers {
            self.taskmanagers
                .get_or_create(&[("state", state)])
                .set(count);
        }
        self.slots_used.set(used);
        self.slots_free.set(free);

        let mut shards = tally(&SHARD_STATES, ShardState::as_str);
        let mut jobs = tally(&JOB_STATES, JobState::as_str);
        for job in state.jobs.values() {
            *jobs.entry(job.state.as_str()).or_default() += 1;
            if job.state == JobState::Finished {
                // A job finishes only once every shard has: count them without a walk.
                *shards.entry(ShardState::Finished.as_str()).or_default() +=
                    job.shards.len() as i64;
                continue;
            }
            for shard in &job.shards {
                *shards.entry(shard.state.as_str()).or_default() += 1;
            }
        }
        for (state, count) in shards {
            self.shards.get_or_create(&[("state", state)]).set(count);
        }
        for (state, count) in jobs {
            self.jobs.get_or_create(&[("state", state)]).set(count);
        }
    }
}
