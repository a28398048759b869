//! Apply of a preemption that places its preemptor in the same step (`PreemptForShard`):
//! the victims go back to pending and the room they held goes to the waiting shard at once,
//! so no other job (another tenant's, by fair share) can take it in between and be preempted
//! in turn: each preemption is charged to one preemptor, which is then placed. The agent
//! starts the preemptor only once the victims' processes are gone (`local_capacity`).
//!
//! Every condition is checked again here, against the state the entry meets: the preemptor
//! still waits and is ready, every victim still runs there under the named epoch at a
//! strictly lower priority, the TaskManager is still short of room without the victims and
//! has it with them, and the tenant's quota allows one more. A stale preemption changes
//! nothing.

use super::jobs::refresh_job;
use super::shards::{place_one, preempt_shards};
use crate::domain::{ClusterState, JobId, ShardState};
use crate::fsm::command::{Placement, Rejection, Response};

/// What a `PreemptForShard` command names.
pub(super) struct PreemptFor {
    pub(super) taskmanager: String,
    pub(super) victims: Vec<(JobId, u32, u64)>,
    pub(super) for_job: JobId,
    pub(super) shard: u32,
    pub(super) not_before_ms: u64,
}

fn stale(why: &str) -> Rejection {
    Rejection::Invalid(format!("stale preemption: {why}; the leader plans again"))
}

pub(super) fn preempt_for_shard(
    state: &mut ClusterState,
    log_index: u64,
    preemption: PreemptFor,
    now_ms: u64,
) -> Result<Response, Rejection> {
    let PreemptFor {
        taskmanager,
        victims,
        for_job,
        shard,
        not_before_ms,
    } = preemption;
    let job = state.job(for_job).ok_or(Rejection::UnknownJob(for_job))?;
    let waiting = job
        .shards
        .get(shard as usize)
        .is_some_and(|s| s.state == ShardState::Pending && s.not_before_ms <= now_ms);
    if job.state.is_terminal() || !waiting {
        return Err(stale("the shard no longer waits"));
    }
    if state.requests.contains_key(&for_job) || state.is_gang(for_job) {
        return Err(stale(
            "gangs and jobs that ask for resources do not preempt",
        ));
    }
    let tm = state
        .taskmanager(&taskmanager)
        .ok_or_else(|| Rejection::UnknownTaskManager(taskmanager.clone()))?;
    if !tm.accepts_placements(now_ms) || !tm.matches(&job.spec.selector) {
        return Err(stale("the TaskManager takes no placements for it"));
    }
    if !state.quota_allows_one_more(for_job, now_ms) {
        return Err(stale("its tenant is at its quota"));
    }
    let priority = state.priority(for_job);
    let need = job.spec.slots_per_shard;
    let mut freed = 0u32;
    let mut seen = std::collections::BTreeSet::new();
    for (victim_job, index, epoch) in &victims {
        let Some(victim) = state.job(*victim_job) else {
            return Err(stale("a victim's job is gone"));
        };
        let runs_there = victim.shards.get(*index as usize).is_some_and(|s| {
            s.state.holds_slots()
                && s.epoch == *epoch
                && s.taskmanager.as_deref() == Some(taskmanager.as_str())
        });
        if !runs_there
            || state.priority(*victim_job) >= priority
            || !seen.insert((*victim_job, *index))
        {
            return Err(stale(
                "a victim no longer runs there below the preemptor's priority",
            ));
        }
        freed = freed.saturating_add(victim.spec.slots_per_shard);
    }
    let free = tm.free_slots();
    if free >= need || free.saturating_add(freed) < need {
        return Err(stale("the room it needs is not what the victims hold"));
    }
    let response = preempt_shards(state, &taskmanager, victims, not_before_ms, now_ms);
    let placed = place_one(
        state,
        log_index,
        &Placement {
            job_id: for_job,
            shard,
            taskmanager,
        },
        now_ms,
    );
    debug_assert!(placed, "every condition of the placement was checked above");
    refresh_job(state, for_job, now_ms);
    Ok(response)
}
