//! Apply of the shard commands: placement, the TaskManagers' reports of started and ended
//! runs, and putting shards back to pending.

use super::jobs::{cancel_remaining_shards, refresh_job};
use super::taskmanagers::record_run;
use crate::domain::{ClusterState, JobId, JobState, Shard, ShardMut, ShardState};
use crate::fsm::command::{Placement, PlacementOutcome, Rejection, Response, ShardOutcome};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Re-check each placement against the current state; apply the ones that still hold.
pub(super) fn place_shards(
    state: &mut ClusterState,
    log_index: u64,
    placements: Vec<Placement>,
    now_ms: u64,
) -> Response {
    state.expire_holds(now_ms);
    let mut outcome = PlacementOutcome::default();
    let mut touched = BTreeSet::new();
    let split_gangs = gangs_that_would_split(state, &placements, now_ms);
    for placement in placements {
        if split_gangs.contains(&placement.job_id) {
            outcome.stale += 1;
            continue;
        }
        if place_one(state, log_index, &placement, now_ms) {
            outcome.placed += 1;
            touched.insert(placement.job_id);
        } else {
            outcome.stale += 1;
        }
    }
    // Job-level bookkeeping once per job, not once per shard: a plan may place thousands of
    // shards of one job, and each of these scans all its shards.
    for job_id in touched {
        refresh_job(state, job_id, now_ms);
    }
    Response::ShardsPlaced(outcome)
}

/// The gangs of a plan that would not be placed whole: some placement of theirs would be
/// refused, or the plan leaves some of their shards out. Checked in the plan's order against
/// the capacity the placements before use up, so leaving these gangs out only frees room
/// for the rest.
fn gangs_that_would_split(
    state: &ClusterState,
    placements: &[Placement],
    now_ms: u64,
) -> BTreeSet<JobId> {
    let mut split = BTreeSet::new();
    // Only a gang with pending shards can be placed (an index, not a scan of every job's
    // options: this runs on every placement entry, on every replica).
    if state.pending.gangs().next().is_none() {
        return split;
    }
    let mut free: BTreeMap<&str, u32> = BTreeMap::new();
    let mut used: BTreeMap<&str, crate::domain::Resources> = BTreeMap::new();
    // Per tenant: slots and resources held, counting the plan's placements so far.
    let mut tenants: BTreeMap<&str, (u64, crate::domain::Resources)> = BTreeMap::new();
    let mut placed: BTreeMap<JobId, BTreeSet<u32>> = BTreeMap::new();
    for p in placements {
        let Some(job) = state.job(p.job_id) else {
            continue;
        };
        let Some(tm) = state.taskmanager(&p.taskmanager) else {
            split.insert(p.job_id);
            continue;
        };
        let left = free
            .entry(tm.id.as_str())
            .or_insert_with(|| tm.free_slots());
        let slots = job.spec.slots_per_shard;
        let asked = state.asked_resources(p.job_id);
        let used_here = used
            .entry(tm.id.as_str())
            .or_insert_with(|| state.tm_used.get(&tm.id).cloned().unwrap_or_default());
        let resources_fit = asked.is_none_or(|a| a.fits(used_here, &state.capacity(&tm.id)))
            && (!state.needs_full_isolation(p.job_id)
                || state.isolation(&tm.id) == crate::domain::Isolation::Full);
        let tenant = state.tenant(p.job_id);
        let held = tenants
            .entry(tenant)
            .or_insert_with(|| state.tenant_held(tenant, now_ms));
        let fits = !job.state.is_terminal()
            && tm.accepts_placements(now_ms)
            && tm.matches(&job.spec.selector)
            && *left >= slots
            && resources_fit
            && state.quota_allows(p.job_id, 1, held.0, Some(&held.1))
            && job
                .shards
                .get(p.shard as usize)
                .is_some_and(|s| s.state == ShardState::Pending && s.not_before_ms <= now_ms);
        if fits && placed.entry(p.job_id).or_default().insert(p.shard) {
            *left -= slots;
            held.0 += u64::from(slots);
            if let Some(asked) = asked {
                used_here.add_times(asked, 1);
                held.1.add_times(asked, 1);
            }
        } else {
            split.insert(p.job_id);
        }
    }
    for (job_id, shards) in placed {
        let whole = state
            .job(job_id)
            .is_some_and(|job| job.shards.len() == shards.len());
        if state.is_gang(job_id) && !whole {
            split.insert(job_id);
        }
    }
    split.retain(|job_id| state.is_gang(*job_id));
    split
}

pub(super) fn place_one(
    state: &mut ClusterState,
    log_index: u64,
    p: &Placement,
    now_ms: u64,
) -> bool {
    // Resources and the tenant's quota, checked here as well as in the plan: a plan made
    // from an older state (a new leader's, or one raced by `quota set`) cannot pass them.
    if !state.resources_allow(p.job_id, &p.taskmanager)
        || !state.quota_allows_one_more(p.job_id, now_ms)
    {
        return false;
    }
    let Some(job) = state.jobs.get_mut(&p.job_id).map(Arc::make_mut) else {
        return false;
    };
    if job.state.is_terminal() {
        return false;
    }
    let Some(tm) = state.taskmanagers.get_mut(&p.taskmanager) else {
        return false;
    };
    let slots = job.spec.slots_per_shard;
    if !tm.accepts_placements(now_ms) || !tm.matches(&job.spec.selector) || tm.free_slots() < slots
    {
        return false;
    }
    let Some(mut shard) = job.shard_mut(p.shard as usize) else {
        return false;
    };
    if shard.state != ShardState::Pending || shard.not_before_ms > now_ms {
        return false;
    }
    shard.state = ShardState::Assigned;
    shard.taskmanager = Some(tm.id.clone());
    shard.attempt += 1;
    shard.epoch = log_index;
    shard.exit_code = None;
    shard.started_at_ms = None;
    drop(shard);
    tm.used_slots += slots;
    Arc::make_mut(
        state
            .shards_by_taskmanager
            .entry(tm.id.clone())
            .or_default(),
    )
    .insert((p.job_id, p.shard));
    state.count_tenant_slots(p.job_id, slots, true);
    state.count_resources(p.job_id, &p.taskmanager, true);
    true
}

/// Give back the slots a shard holds on its TaskManager. The shard's own fields are the
/// caller's to change.
pub(super) fn release_slots(
    state: &mut ClusterState,
    job_id: JobId,
    index: u32,
    taskmanager: &str,
    slots: u32,
) -> bool {
    if let Some(tm) = state.taskmanagers.get_mut(taskmanager) {
        tm.used_slots = tm.used_slots.saturating_sub(slots);
    }
    let mut released = false;
    if let Some(held) = state.shards_by_taskmanager.get_mut(taskmanager) {
        released = Arc::make_mut(held).remove(&(job_id, index));
        if held.is_empty() {
            state.shards_by_taskmanager.remove(taskmanager);
        }
    }
    if released {
        state.count_tenant_slots(job_id, slots, false);
        state.count_resources(job_id, taskmanager, false);
    }
    released
}

/// The shard a report is about, if the report is the current assignment's.
/// Whether a report about (job, shard, epoch) from `taskmanager` concerns the shard's current
/// assignment there. The API edge asks first, so that stale reports never reach the log.
pub fn check_report(
    state: &ClusterState,
    taskmanager: &str,
    job_id: JobId,
    index: u32,
    epoch: u64,
) -> Result<(), Rejection> {
    if !state.taskmanagers.contains_key(taskmanager) {
        return Err(Rejection::UnknownTaskManager(taskmanager.to_string()));
    }
    let job = state
        .jobs
        .get(&job_id)
        .ok_or(Rejection::UnknownJob(job_id))?;
    let shard = job
        .shards
        .get(index as usize)
        .ok_or(Rejection::UnknownShard {
            job_id,
            shard: index,
        })?;
    let current = shard.epoch == epoch
        && shard.state.holds_slots()
        && shard.taskmanager.as_deref() == Some(taskmanager);
    if current {
        Ok(())
    } else {
        Err(Rejection::StaleEpoch {
            job_id,
            shard: index,
            epoch,
        })
    }
}

fn current_assignment<'a>(
    state: &'a mut ClusterState,
    taskmanager: &str,
    job_id: JobId,
    index: u32,
    epoch: u64,
) -> Result<ShardMut<'a>, Rejection> {
    check_report(state, taskmanager, job_id, index, epoch)?;
    state
        .jobs
        .get_mut(&job_id)
        .map(Arc::make_mut)
        .and_then(|job| job.shard_mut(index as usize))
        .ok_or(Rejection::UnknownShard {
            job_id,
            shard: index,
        })
}

pub(super) fn report_started(
    state: &mut ClusterState,
    taskmanager: &str,
    job_id: JobId,
    index: u32,
    epoch: u64,
    now_ms: u64,
) -> Result<Response, Rejection> {
    let mut shard = current_assignment(state, taskmanager, job_id, index, epoch)?;
    if shard.state == ShardState::Assigned {
        shard.state = ShardState::Running;
        shard.started_at_ms = Some(now_ms);
    }
    drop(shard);
    refresh_job(state, job_id, now_ms);
    Ok(Response::ShardReported)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn report_ended(
    state: &mut ClusterState,
    taskmanager: &str,
    job_id: JobId,
    index: u32,
    epoch: u64,
    outcome: ShardOutcome,
    run_ms: u64,
    retry_at_ms: u64,
    now_ms: u64,
) -> Result<Response, Rejection> {
    current_assignment(state, taskmanager, job_id, index, epoch)?;
    let (slots, max_attempts) = match state.jobs.get(&job_id) {
        Some(job) => (job.spec.slots_per_shard, job.spec.max_attempts),
        None => return Err(Rejection::UnknownJob(job_id)),
    };
    release_slots(state, job_id, index, taskmanager, slots);
    let mut out_of_attempts = false;
    if let Some(tm) = state.taskmanagers.get_mut(taskmanager) {
        record_run(tm, &outcome, run_ms, now_ms);
    }
    if let Some(mut shard) = state
        .jobs
        .get_mut(&job_id)
        .map(Arc::make_mut)
        .and_then(|job| job.shard_mut(index as usize))
    {
        match outcome {
            ShardOutcome::Finished => {
                shard.state = ShardState::Finished;
                shard.exit_code = Some(0);
            }
            ShardOutcome::Failed { .. } | ShardOutcome::OverLimit { .. } => {
                let (exit_code, error) = match outcome {
                    ShardOutcome::Failed { exit_code, error } => (exit_code, error),
                    ShardOutcome::OverLimit { error } => (None, error),
                    _ => (None, String::new()),
                };
                shard.failures += 1;
                shard.exit_code = exit_code;
                shard.error = Some(truncate(error));
                if shard.failures >= max_attempts {
                    shard.state = ShardState::Failed;
                    out_of_attempts = true;
                } else {
                    requeue(&mut shard, retry_at_ms);
                }
            }
            ShardOutcome::Interrupted { reason } => {
                shard.error = Some(truncate(reason));
                interrupt(&mut shard, 0, now_ms);
            }
            ShardOutcome::CannotStart { error } => {
                // Retrying would only fail the same way (here or on any TaskManager).
                shard.failures += 1;
                shard.exit_code = None;
                shard.error = Some(truncate(error));
                shard.state = ShardState::Failed;
                out_of_attempts = true;
            }
        }
    }
    if out_of_attempts {
        // One shard out of attempts fails the job; its other shards are stopped.
        if let Some(job) = state.jobs.get_mut(&job_id).map(Arc::make_mut) {
            job.state = JobState::Failed;
        }
        cancel_remaining_shards(state, job_id);
    }
    refresh_job(state, job_id, now_ms);
    Ok(Response::ShardReported)
}

fn truncate(message: String) -> String {
    crate::domain::cut_error(message)
}

/// Back-off after the `n`th interruption of a shard: none the first time, then 1 s doubling
/// up to a minute.
pub(super) fn interruption_backoff_ms(n: u32) -> u64 {
    match n {
        0 | 1 => 0,
        n => (1_000u64 << (n - 2).min(6)).min(60_000),
    }
}

/// Back to pending after the infrastructure cut a run short.
fn interrupt(shard: &mut Shard, not_before_ms: u64, now_ms: u64) {
    shard.interruptions += 1;
    let backoff = now_ms + interruption_backoff_ms(shard.interruptions);
    requeue(shard, not_before_ms.max(backoff));
}

/// Back to pending, placeable from `not_before_ms` on.
pub(super) fn requeue(shard: &mut Shard, not_before_ms: u64) {
    shard.state = ShardState::Pending;
    shard.taskmanager = None;
    shard.started_at_ms = None;
    shard.not_before_ms = not_before_ms;
}

/// Put the given shards of a TaskManager back to pending, placeable from `not_before_ms`;
/// Put every shard a TaskManager holds back to pending, placeable at once; returns how many
/// moved.
pub(super) fn requeue_all_held(state: &mut ClusterState, taskmanager: &str, now_ms: u64) -> u32 {
    let held: Vec<(JobId, u32, Option<u64>)> = state
        .shards_by_taskmanager
        .get(taskmanager)
        .map(|s| s.iter().map(|(j, i)| (*j, *i, None)).collect())
        .unwrap_or_default();
    requeue_held(state, taskmanager, &held, 0, now_ms)
}

/// returns how many moved.
pub(super) fn requeue_held(
    state: &mut ClusterState,
    taskmanager: &str,
    shards: &[(JobId, u32, Option<u64>)],
    not_before_ms: u64,
    now_ms: u64,
) -> u32 {
    state.expire_holds(now_ms);
    let mut moved = 0;
    let mut jobs = BTreeSet::new();
    for (job_id, index, expected_epoch) in shards {
        let Some(job) = state.jobs.get_mut(job_id).map(Arc::make_mut) else {
            continue;
        };
        let slots = job.spec.slots_per_shard;
        let Some(mut shard) = job.shard_mut(*index as usize) else {
            continue;
        };
        let matches = shard.state.holds_slots()
            && shard.taskmanager.as_deref() == Some(taskmanager)
            && expected_epoch.is_none_or(|e| e == shard.epoch);
        if !matches {
            continue;
        }
        interrupt(&mut shard, not_before_ms, now_ms);
        drop(shard);
        if release_slots(state, *job_id, *index, taskmanager, slots) && not_before_ms > now_ms {
            // Its process may run until then: its tenant's count keeps it (`stopping`).
            let tenant = state.tenant(*job_id).to_string();
            let asked = state.asked_resources(*job_id).cloned();
            state.hold_until(&tenant, not_before_ms, u64::from(slots), asked.as_ref());
        }
        jobs.insert(*job_id);
        moved += 1;
    }
    for job_id in jobs {
        refresh_job(state, job_id, now_ms);
    }
    moved
}

/// Requeue shards to make room for a higher priority, counting a preemption for each moved.
pub(super) fn preempt_shards(
    state: &mut ClusterState,
    taskmanager: &str,
    shards: Vec<(JobId, u32, u64)>,
    not_before_ms: u64,
    now_ms: u64,
) -> Response {
    let mut count = 0;
    for (job_id, index, epoch) in shards {
        let moved = requeue_held(
            state,
            taskmanager,
            &[(job_id, index, Some(epoch))],
            not_before_ms,
            now_ms,
        );
        if moved > 0 {
            *state.preemptions.entry((job_id, index)).or_default() += 1;
            count += moved;
        }
    }
    Response::ShardsRequeued { count }
}

pub(super) fn requeue_shards(
    state: &mut ClusterState,
    taskmanager: &str,
    shards: Vec<(JobId, u32, u64)>,
    not_before_ms: u64,
    now_ms: u64,
) -> Response {
    let shards: Vec<(JobId, u32, Option<u64>)> = shards
        .into_iter()
        .map(|(j, i, e)| (j, i, Some(e)))
        .collect();
    let count = requeue_held(state, taskmanager, &shards, not_before_ms, now_ms);
    Response::ShardsRequeued { count }
}
