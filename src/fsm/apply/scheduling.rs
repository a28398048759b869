//! Apply of the scheduling commands: jobs with options (priority, `--after`, gang, tenant),
//! what a job's end does to the jobs waiting for it, tenants' quotas, and gang restarts.

use super::admission;
use super::jobs::{cancel_remaining_shards, refresh_job, submit_job, Submission};
use super::shards::{release_slots, requeue};
use crate::domain::{
    ClusterState, JobId, JobScheduling, JobState, Quota, ShardState, DEFAULT_PRIORITY, MAX_QUOTAS,
};
use crate::fsm::command::{Rejection, Response, SlotLimit};
use crate::fsm::validate::{
    validate_max_priority, validate_options, validate_tenant, validate_weight,
};
use std::sync::Arc;

/// Submit a job with scheduling options: as `submit_job`, and the options are kept beside
/// the new job (only if they differ from the defaults). Every job named in `--after` must
/// exist; if one of them has already failed or been cancelled, the job ends `failed` at once.
pub(super) fn submit_with_options(
    state: &mut ClusterState,
    log_index: u64,
    submission: Submission,
    options: JobScheduling,
    now_ms: u64,
) -> Result<Response, Rejection> {
    validate_options(&options)?;
    if options.gang && submission.spec.shard_count > crate::domain::MAX_GANG_SHARDS {
        return Err(Rejection::Invalid(gang_too_large(
            submission.spec.shard_count,
        )));
    }
    let known = submission.idempotency_key.as_ref().is_some_and(|key| {
        let slot = crate::domain::idempotency_slot(&submission.tenant, key);
        state.idempotency_keys.contains_key(&slot)
    });
    if !known {
        if let Some(missing) = options.after.iter().find(|d| !state.jobs.contains_key(d)) {
            return Err(Rejection::UnknownDependency(*missing));
        }
        check_ceiling(state, &submission.owner, &options)?;
    }
    let response = submit_job(state, log_index, submission, now_ms)?;
    let Response::JobSubmitted {
        job_id,
        created: true,
    } = response
    else {
        return Ok(response);
    };
    if options.is_default() {
        return Ok(response);
    }
    let failed_dependency = options.after.iter().copied().find(|d| {
        state
            .job(*d)
            .is_some_and(|job| matches!(job.state, JobState::Failed | JobState::Cancelled))
    });
    for dependency in &options.after {
        state
            .dependents
            .entry(*dependency)
            .or_default()
            .insert(job_id);
    }
    state.scheduling.insert(job_id, options);
    state.reindex_pending(job_id);
    if let Some(dependency) = failed_dependency {
        fail_for_dependency(state, job_id, dependency, now_ms);
    }
    Ok(response)
}

/// Why a gang of `shards` shards is refused.
pub fn gang_too_large(shards: u32) -> String {
    format!(
        "a gang has at most {} shards (it is placed whole, in one decision), not {shards}; \
         split the work into several gangs",
        crate::domain::MAX_GANG_SHARDS
    )
}

/// The tenant's priority ceiling, checked again where it counts: the leader checked it when
/// the submission came in, but an admin may have lowered it since. A submission by a token
/// that is not an admin's (looked up in the state, so every replica decides alike) may not
/// go above it; submissions without a token (`--insecure`) are not capped.
fn check_ceiling(
    state: &ClusterState,
    owner: &str,
    options: &JobScheduling,
) -> Result<(), Rejection> {
    let Some(token) = owner.strip_prefix("token:") else {
        return Ok(());
    };
    let admin = state
        .tokens
        .get(token)
        .is_some_and(|t| t.role == crate::domain::Role::Admin);
    let ceiling = state.max_priority(&options.tenant);
    if admin || options.priority <= ceiling {
        return Ok(());
    }
    Err(Rejection::AboveCeiling {
        tenant: options.tenant.clone(),
        priority: options.priority,
        ceiling,
    })
}

/// A job ended: the jobs waiting for it may now run (it finished), or end `failed` without
/// running (it failed or was cancelled), and so on down the chain.
pub(super) fn settle_dependents(state: &mut ClusterState, ended: JobId, now_ms: u64) {
    let mut work = vec![ended];
    while let Some(job_id) = work.pop() {
        let Some(dependents) = state.dependents.remove(&job_id) else {
            continue;
        };
        let finished = state
            .job(job_id)
            .is_some_and(|job| job.state == JobState::Finished);
        if finished {
            // They are on the pending list already; those that wait for nothing else now
            // join their tenant's queue.
            for dependent in dependents {
                state.reindex_pending(dependent);
            }
            continue;
        }
        for dependent in dependents {
            if fail_for_dependency(state, dependent, job_id, now_ms) {
                work.push(dependent);
            }
        }
    }
}

/// End a job that has not run `failed`, because `dependency` failed or was cancelled.
/// Returns whether it ended now (it had not ended before).
fn fail_for_dependency(
    state: &mut ClusterState,
    job_id: JobId,
    dependency: JobId,
    now_ms: u64,
) -> bool {
    let Some(job) = state.jobs.get_mut(&job_id).map(Arc::make_mut) else {
        return false;
    };
    if job.state.is_terminal() {
        return false;
    }
    job.state = JobState::Failed;
    job.ended_at_ms = Some(now_ms);
    let (owner, shards) = (job.owner.clone(), job.spec.shard_count);
    admission::release(state, &owner, shards.into());
    cancel_remaining_shards(state, job_id);
    state.set_pending(job_id, false);
    state.dependency_failures.insert(job_id, dependency);
    true
}

/// Set a tenant's quota and weight; what the command leaves out keeps its value.
pub(super) fn set_quota(
    state: &mut ClusterState,
    tenant: String,
    slots: SlotLimit,
    weight: Option<u32>,
    max_priority: Option<u32>,
) -> Result<Response, Rejection> {
    validate_tenant(&tenant)?;
    if let Some(weight) = weight {
        validate_weight(weight)?;
    }
    if let Some(max) = max_priority {
        validate_max_priority(max)?;
    }
    let new_tenant =
        !state.quotas.contains_key(&tenant) && !state.max_priorities.contains_key(&tenant);
    if new_tenant && state.quotas.len().max(state.max_priorities.len()) >= MAX_QUOTAS {
        return Err(Rejection::Overloaded(format!(
            "{MAX_QUOTAS} tenants have quotas, the most the cluster keeps; reset unused ones \
             with `quota set <tenant> --unlimited --weight 1`"
        )));
    }
    let mut quota = state.quota(&tenant);
    match slots {
        SlotLimit::Keep => {}
        SlotLimit::Set(n) => quota.slots = Some(n),
        SlotLimit::Unlimited => quota.slots = None,
    }
    if let Some(weight) = weight {
        quota.weight = weight;
    }
    if quota == Quota::default() {
        state.quotas.remove(&tenant);
    } else {
        state.quotas.insert(tenant.clone(), quota);
    }
    match max_priority {
        None => {}
        Some(DEFAULT_PRIORITY) => {
            state.max_priorities.remove(&tenant);
        }
        Some(max) => {
            state.max_priorities.insert(tenant.clone(), max);
        }
    }
    let max_priority = state.max_priority(&tenant);
    Ok(Response::QuotaSet {
        tenant,
        quota,
        max_priority,
    })
}

/// Whether a gang is split: some of its shards wait while others hold slots or finished.
pub fn gang_is_split(state: &ClusterState, job_id: JobId) -> bool {
    let Some(job) = state.job(job_id) else {
        return false;
    };
    if job.state.is_terminal() || !state.is_gang(job_id) {
        return false;
    }
    job.has_pending_shards() && job.counts.placed() > 0
}

/// Put every shard of a split gang back to pending, so that it starts again as a whole.
/// The gang's failures count once: every shard takes the highest failure count among them.
pub(super) fn restart_gang(
    state: &mut ClusterState,
    job_id: JobId,
    not_before_ms: u64,
    now_ms: u64,
) -> Response {
    if !gang_is_split(state, job_id) {
        return Response::ShardsRequeued { count: 0 };
    }
    let Some(job) = state.jobs.get_mut(&job_id).map(Arc::make_mut) else {
        return Response::ShardsRequeued { count: 0 };
    };
    let slots = job.spec.slots_per_shard;
    let failures = job.shards.iter().map(|s| s.failures).max().unwrap_or(0);
    let mut released = Vec::new();
    let mut count = 0;
    for shard in &mut job.shards {
        shard.failures = failures;
        match shard.state {
            ShardState::Assigned | ShardState::Running => {
                if let Some(tm) = shard.taskmanager.clone() {
                    released.push((shard.index, tm));
                }
                requeue(shard, not_before_ms);
                count += 1;
            }
            ShardState::Finished => {
                requeue(shard, not_before_ms);
                shard.exit_code = None;
                count += 1;
            }
            ShardState::Pending => shard.not_before_ms = shard.not_before_ms.max(not_before_ms),
            ShardState::Failed | ShardState::Cancelled => {}
        }
    }
    // The loop above changed shards' states directly: a gang restart is rare, so count again.
    job.recount();
    for (index, tm) in released {
        release_slots(state, job_id, index, &tm, slots);
    }
    refresh_job(state, job_id, now_ms);
    Response::ShardsRequeued { count }
}
