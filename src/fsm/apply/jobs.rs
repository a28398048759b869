//! Apply of the job commands: submission, cancellation and retention, plus the job-level
//! bookkeeping that follows every change to a job's shards.

use super::admission;
use super::scheduling::settle_dependents;
use super::shards::release_slots;
use crate::domain::{
    Admission, ClusterState, InputLimits, Job, JobId, JobSpec, JobState, Shard, ShardCounts,
    ShardState,
};
use crate::fsm::command::{Rejection, Response};
use crate::fsm::validate::validate_spec;
use std::sync::Arc;

/// A `SubmitJob` command's contents.
pub(super) struct Submission {
    pub(super) name: String,
    pub(super) spec: JobSpec,
    pub(super) idempotency_key: Option<String>,
    pub(super) owner: String,
    pub(super) admission: Admission,
    /// The tenant it counts against: idempotency keys are per tenant.
    pub(super) tenant: String,
}

pub(super) fn submit_job(
    state: &mut ClusterState,
    log_index: u64,
    submission: Submission,
    now_ms: u64,
) -> Result<Response, Rejection> {
    let Submission {
        name,
        spec,
        idempotency_key,
        owner,
        admission,
        tenant,
    } = submission;
    let key_slot = idempotency_key
        .as_ref()
        .map(|key| crate::domain::idempotency_slot(&tenant, key));
    if let Some(existing) = key_slot
        .as_ref()
        .and_then(|k| state.idempotency_keys.get(k))
    {
        return Ok(Response::JobSubmitted {
            job_id: *existing,
            created: false,
        });
    }
    validate_spec(&name, &spec, &InputLimits::CEILING)?;
    let spec_bytes = spec.encoded_len_estimate() as u64;
    admission::admit(
        state,
        &owner,
        spec.shard_count.into(),
        spec_bytes,
        &admission,
    )?;
    let job_id = JobId(log_index);
    let shards: Vec<Shard> = (0..spec.shard_count).map(Shard::new).collect();
    if let Some(slot) = key_slot {
        state.idempotency_keys.insert(slot, job_id);
    }
    state.jobs.insert(
        job_id,
        Arc::new(Job {
            id: job_id,
            name,
            spec,
            state: JobState::Pending,
            created_at_ms: now_ms,
            ended_at_ms: None,
            idempotency_key,
            owner,
            counts: ShardCounts::of(&shards),
            shards,
        }),
    );
    state.set_pending(job_id, true);
    Ok(Response::JobSubmitted {
        job_id,
        created: true,
    })
}

/// Recompute a job's state from its shards and keep the pending work list in step.
pub(super) fn refresh_job(state: &mut ClusterState, job_id: JobId, now_ms: u64) {
    let mut ended = None;
    if let Some(job) = state.jobs.get_mut(&job_id).map(Arc::make_mut) {
        // Every change of a shard's state in apply keeps the counts; the debug builds (the
        // tests) check that none was missed.
        debug_assert_eq!(job.counts, crate::domain::ShardCounts::of(&job.shards));
        job.skip_placed_shards();
        debug_assert!(job.pending_shards().count() == job.counts.get(ShardState::Pending) as usize);
        job.state = job.derived_state();
        if job.state.is_terminal() && job.ended_at_ms.is_none() {
            job.ended_at_ms = Some(now_ms);
            ended = Some((job.owner.clone(), job.spec.shard_count));
        }
        let waiting = !job.state.is_terminal() && job.has_pending_shards();
        state.set_pending(job_id, waiting);
    }
    if let Some((owner, shards)) = ended {
        admission::release(state, &owner, shards.into());
        settle_dependents(state, job_id, now_ms);
    }
}

/// Stop every shard of a job that has not ended, releasing their slots.
pub(super) fn cancel_remaining_shards(state: &mut ClusterState, job_id: JobId) -> u32 {
    let Some(job) = state.jobs.get_mut(&job_id).map(Arc::make_mut) else {
        return 0;
    };
    let slots = job.spec.slots_per_shard;
    let mut released = Vec::new();
    let mut cancelled = 0;
    for shard in job.shards.iter_mut().filter(|s| !s.state.is_terminal()) {
        if shard.state.holds_slots() {
            if let Some(tm) = &shard.taskmanager {
                released.push((shard.index, tm.clone()));
            }
        }
        shard.state = ShardState::Cancelled;
        cancelled += 1;
    }
    // Changed in place above; a cancel walks every shard anyway.
    job.recount();
    for (index, tm) in released {
        release_slots(state, job_id, index, &tm, slots);
    }
    cancelled
}

/// Cancel a job; with `only_owner`, only if that owner submitted it (a `submit` token). The
/// check is made here, at apply, so that no read of a replica's state can race it.
pub(super) fn cancel_job(
    state: &mut ClusterState,
    job_id: JobId,
    only_owner: Option<&str>,
    now_ms: u64,
) -> Result<Response, Rejection> {
    let existing = state
        .jobs
        .get(&job_id)
        .ok_or(Rejection::UnknownJob(job_id))?;
    if only_owner.is_some_and(|owner| existing.owner != owner) {
        return Err(Rejection::NotOwner(job_id));
    }
    let job = state
        .jobs
        .get_mut(&job_id)
        .map(Arc::make_mut)
        .ok_or(Rejection::UnknownJob(job_id))?;
    // Cancelling twice is not an error: a client that lost the first answer may retry.
    if job.state == JobState::Cancelled {
        return Ok(Response::JobCancelled {
            job_id,
            shards_cancelled: 0,
        });
    }
    if job.state.is_terminal() {
        return Err(Rejection::JobAlreadyEnded {
            job_id,
            state: job.state.as_str().to_string(),
        });
    }
    job.state = JobState::Cancelled;
    job.ended_at_ms = Some(now_ms);
    let (owner, shards) = (job.owner.clone(), job.spec.shard_count);
    admission::release(state, &owner, shards.into());
    let cancelled = cancel_remaining_shards(state, job_id);
    state.set_pending(job_id, false);
    settle_dependents(state, job_id, now_ms);
    Ok(Response::JobCancelled {
        job_id,
        shards_cancelled: cancelled,
    })
}

/// Drop ended jobs (retention). Jobs that have not ended are kept whatever the leader asked.
pub(super) fn forget_jobs(state: &mut ClusterState, job_ids: Vec<JobId>) -> Response {
    let mut count = 0;
    for job_id in job_ids {
        let ended = state
            .jobs
            .get(&job_id)
            .is_some_and(|j| j.state.is_terminal());
        if !ended {
            continue;
        }
        if let Some(job) = state.jobs.remove(&job_id) {
            if let Some(key) = &job.idempotency_key {
                let slot = crate::domain::idempotency_slot(state.tenant(job_id), key);
                state.idempotency_keys.remove(&slot);
            }
            admission::forget(state, job.spec.encoded_len_estimate() as u64);
            state.set_pending(job_id, false);
            state.outputs.remove_job(job_id);
            if let Some(options) = state.scheduling.remove(&job_id) {
                for dependency in &options.after {
                    if let Some(waiting) = state.dependents.get_mut(dependency) {
                        waiting.remove(&job_id);
                        if waiting.is_empty() {
                            state.dependents.remove(dependency);
                        }
                    }
                }
            }
            state.dependency_failures.remove(&job_id);
            state.requests.remove(&job_id);
            state.cron.origins.remove(&job_id);
            state.dependents.remove(&job_id);
            let preempted: Vec<(JobId, u32)> = state
                .preemptions
                .range((job_id, 0)..=(job_id, u32::MAX))
                .map(|(key, _)| *key)
                .collect();
            for key in preempted {
                state.preemptions.remove(&key);
            }
            count += 1;
        }
    }
    Response::JobsForgotten { count }
}
