//! Deterministic apply of one command to the cluster state.

use super::command::{Command, Placement, PlacementOutcome, Rejection, Response, ShardOutcome};
use super::validate::{validate_registration, validate_spec};
use crate::domain::{
    Admission, ClusterState, InputLimits, Job, JobId, JobSpec, JobState, Labels, RunStats, Shard,
    ShardState, TaskManager, TaskManagerState, EXCLUSION_FAILURES, EXCLUSION_MS,
    EXCLUSION_WINDOW_MS, MAX_ERROR_LEN, MAX_TASKMANAGERS, RECENT_FAILURES_KEPT,
};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Apply `command`, committed at `log_index`, to `state`.
///
/// Every rejection is checked before the first mutation, so a refused command changes
/// nothing.
pub fn apply(state: &mut ClusterState, log_index: u64, command: Command) -> Response {
    let result = match command {
        Command::RegisterTaskManager {
            incarnation,
            successor_of,
            replaces,
            id,
            addr,
            slots,
            labels,
            now_ms,
        } => register_taskmanager(
            state,
            Registration {
                id,
                addr,
                slots,
                labels,
                incarnation,
                successor_of,
                replaces,
            },
            now_ms,
        ),
        Command::SubmitJob {
            name,
            spec,
            idempotency_key,
            owner,
            admission,
            now_ms,
        } => submit_job(
            state,
            log_index,
            Submission {
                name,
                spec,
                idempotency_key,
                owner,
                admission,
            },
            now_ms,
        ),
        Command::PlaceShards { placements, now_ms } => {
            Ok(place_shards(state, log_index, placements, now_ms))
        }
        Command::CancelJob { job_id, now_ms } => cancel_job(state, job_id, now_ms),
        Command::DrainTaskManager {
            id, deadline_ms, ..
        } => drain_taskmanager(state, id, deadline_ms),
        Command::ReportShardStarted {
            taskmanager,
            job_id,
            shard,
            epoch,
            now_ms,
        } => report_started(state, &taskmanager, job_id, shard, epoch, now_ms),
        Command::ReportShardEnded {
            taskmanager,
            job_id,
            shard,
            epoch,
            outcome,
            run_ms,
            retry_at_ms,
            now_ms,
        } => report_ended(
            state,
            &taskmanager,
            job_id,
            shard,
            epoch,
            outcome,
            run_ms,
            retry_at_ms,
            now_ms,
        ),
        Command::MarkTaskManagerLost {
            id,
            registration_epoch,
            now_ms,
        } => mark_lost(state, id, registration_epoch, now_ms),
        Command::RequeueShards {
            taskmanager,
            shards,
            not_before_ms,
            now_ms,
        } => Ok(requeue_shards(
            state,
            &taskmanager,
            shards,
            not_before_ms,
            now_ms,
        )),
        Command::ForgetJobs { job_ids, .. } => Ok(forget_jobs(state, job_ids)),
        Command::ForgetTaskManagers { ids, .. } => Ok(forget_taskmanagers(state, ids)),
    };
    result.unwrap_or_else(Response::Rejected)
}

/// A `RegisterTaskManager` command's contents.
struct Registration {
    id: String,
    addr: String,
    slots: u32,
    labels: Labels,
    incarnation: u64,
    successor_of: Option<u64>,
    replaces: Option<u64>,
}

fn register_taskmanager(
    state: &mut ClusterState,
    registration: Registration,
    now_ms: u64,
) -> Result<Response, Rejection> {
    let Registration {
        id,
        addr,
        slots,
        labels,
        incarnation,
        successor_of,
        replaces,
    } = registration;
    validate_registration(&id, &addr, slots, &labels, &InputLimits::CEILING)?;
    if !state.taskmanagers.contains_key(&id) && state.taskmanagers.len() >= MAX_TASKMANAGERS {
        return Err(Rejection::Overloaded(format!(
            "the cluster holds {MAX_TASKMANAGERS} TaskManagers, the most it can; lost ones are \
             forgotten after jobs.retention_secs"
        )));
    }
    // Another agent process takes the id over (the leader admitted it only once the holder's
    // lease had surely run out, see `leader::fencing`): what the holder ran goes back to
    // pending, to run again under new epochs. A successor on the same work dir keeps them: it
    // reports how they ended from the work dir.
    // Any other live holder is refused: the leader's decision to fence it may have been
    // overtaken by another registration committed in between.
    let mut taken_over = false;
    if let Some(tm) = state.taskmanagers.get(&id) {
        let other = tm.state != TaskManagerState::Lost
            && tm.incarnation != incarnation
            && successor_of != Some(tm.incarnation);
        if other && replaces != Some(tm.incarnation) {
            return Err(Rejection::IdInUse {
                id,
                addr: tm.addr.clone(),
            });
        }
        taken_over = other;
    }
    if taken_over {
        let held: Vec<(JobId, u32, Option<u64>)> = state
            .shards_by_taskmanager
            .get(&id)
            .map(|s| s.iter().map(|(j, i)| (*j, *i, None)).collect())
            .unwrap_or_default();
        requeue_held(state, &id, &held, 0, now_ms);
    }
    let tm = state
        .taskmanagers
        .entry(id.clone())
        .or_insert_with(|| TaskManager {
            id,
            addr: String::new(),
            slots: 0,
            used_slots: 0,
            labels: Labels::new(),
            state: TaskManagerState::Alive,
            registration_epoch: 0,
            incarnation: 0,
            registered_at_ms: now_ms,
            lost_at_ms: None,
            stats: RunStats::default(),
            recent_failures_ms: Vec::new(),
            excluded_until_ms: 0,
            drain_deadline_ms: None,
        });
    tm.addr = addr;
    tm.slots = slots;
    tm.labels = labels;
    tm.registration_epoch += 1;
    tm.incarnation = incarnation;
    tm.registered_at_ms = now_ms;
    tm.lost_at_ms = None;
    // A drained TaskManager stays drained across a re-registration and a loss: the operator
    // asked for it.
    if tm.state == TaskManagerState::Lost {
        tm.state = if tm.drain_deadline_ms.is_some() {
            TaskManagerState::Draining
        } else {
            TaskManagerState::Alive
        };
    }
    Ok(Response::TaskManagerRegistered {
        registration_epoch: tm.registration_epoch,
    })
}

/// A `SubmitJob` command's contents.
struct Submission {
    name: String,
    spec: JobSpec,
    idempotency_key: Option<String>,
    owner: String,
    admission: Admission,
}

fn submit_job(
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
    } = submission;
    if let Some(existing) = idempotency_key
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
    let shards = (0..spec.shard_count).map(Shard::new).collect();
    if let Some(key) = &idempotency_key {
        state.idempotency_keys.insert(key.clone(), job_id);
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
            shards,
        }),
    );
    state.jobs_with_pending_shards.insert(job_id);
    Ok(Response::JobSubmitted {
        job_id,
        created: true,
    })
}

/// Re-check each placement against the current state; apply the ones that still hold.
fn place_shards(
    state: &mut ClusterState,
    log_index: u64,
    placements: Vec<Placement>,
    now_ms: u64,
) -> Response {
    let mut outcome = PlacementOutcome::default();
    let mut touched = BTreeSet::new();
    for placement in placements {
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

fn place_one(state: &mut ClusterState, log_index: u64, p: &Placement, now_ms: u64) -> bool {
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
    let Some(shard) = job.shards.get_mut(p.shard as usize) else {
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
    tm.used_slots += slots;
    Arc::make_mut(
        state
            .shards_by_taskmanager
            .entry(tm.id.clone())
            .or_default(),
    )
    .insert((p.job_id, p.shard));
    true
}

/// Recompute a job's state from its shards and keep the pending work list in step.
fn refresh_job(state: &mut ClusterState, job_id: JobId, now_ms: u64) {
    let mut ended = None;
    if let Some(job) = state.jobs.get_mut(&job_id).map(Arc::make_mut) {
        job.state = job.derived_state();
        if job.state.is_terminal() && job.ended_at_ms.is_none() {
            job.ended_at_ms = Some(now_ms);
            ended = Some((job.owner.clone(), job.spec.shard_count));
        }
        let waiting = !job.state.is_terminal() && job.pending_shards().next().is_some();
        if waiting {
            state.jobs_with_pending_shards.insert(job_id);
        } else {
            state.jobs_with_pending_shards.remove(&job_id);
        }
    }
    if let Some((owner, shards)) = ended {
        admission::release(state, &owner, shards.into());
    }
}

/// Give back the slots a shard holds on its TaskManager. The shard's own fields are the
/// caller's to change.
fn release_slots(
    state: &mut ClusterState,
    job_id: JobId,
    index: u32,
    taskmanager: &str,
    slots: u32,
) {
    if let Some(tm) = state.taskmanagers.get_mut(taskmanager) {
        tm.used_slots = tm.used_slots.saturating_sub(slots);
    }
    if let Some(held) = state.shards_by_taskmanager.get_mut(taskmanager) {
        Arc::make_mut(held).remove(&(job_id, index));
        if held.is_empty() {
            state.shards_by_taskmanager.remove(taskmanager);
        }
    }
}

/// Stop every shard of a job that has not ended, releasing their slots.
fn cancel_remaining_shards(state: &mut ClusterState, job_id: JobId) -> u32 {
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
    for (index, tm) in released {
        release_slots(state, job_id, index, &tm, slots);
    }
    cancelled
}

fn cancel_job(state: &mut ClusterState, job_id: JobId, now_ms: u64) -> Result<Response, Rejection> {
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
    state.jobs_with_pending_shards.remove(&job_id);
    Ok(Response::JobCancelled {
        job_id,
        shards_cancelled: cancelled,
    })
}

fn drain_taskmanager(
    state: &mut ClusterState,
    id: String,
    deadline_ms: u64,
) -> Result<Response, Rejection> {
    let tm = state
        .taskmanagers
        .get_mut(&id)
        .ok_or_else(|| Rejection::UnknownTaskManager(id.clone()))?;
    // A lost TaskManager stays lost (its old registration must not come back to life); it
    // comes back draining when it registers again.
    if tm.state != TaskManagerState::Lost {
        tm.state = TaskManagerState::Draining;
    }
    tm.drain_deadline_ms = Some(deadline_ms);
    Ok(Response::TaskManagerDraining { id })
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
) -> Result<&'a mut Shard, Rejection> {
    check_report(state, taskmanager, job_id, index, epoch)?;
    state
        .jobs
        .get_mut(&job_id)
        .map(Arc::make_mut)
        .and_then(|job| job.shards.get_mut(index as usize))
        .ok_or(Rejection::UnknownShard {
            job_id,
            shard: index,
        })
}

fn report_started(
    state: &mut ClusterState,
    taskmanager: &str,
    job_id: JobId,
    index: u32,
    epoch: u64,
    now_ms: u64,
) -> Result<Response, Rejection> {
    let shard = current_assignment(state, taskmanager, job_id, index, epoch)?;
    if shard.state == ShardState::Assigned {
        shard.state = ShardState::Running;
        shard.started_at_ms = Some(now_ms);
    }
    refresh_job(state, job_id, now_ms);
    Ok(Response::ShardReported)
}

#[allow(clippy::too_many_arguments)]
fn report_ended(
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
    if let Some(shard) = state
        .jobs
        .get_mut(&job_id)
        .map(Arc::make_mut)
        .and_then(|job| job.shards.get_mut(index as usize))
    {
        match outcome {
            ShardOutcome::Finished => {
                shard.state = ShardState::Finished;
                shard.exit_code = Some(0);
            }
            ShardOutcome::Failed { exit_code, error } => {
                shard.failures += 1;
                shard.exit_code = exit_code;
                shard.error = Some(truncate(error));
                if shard.failures >= max_attempts {
                    shard.state = ShardState::Failed;
                    out_of_attempts = true;
                } else {
                    requeue(shard, retry_at_ms);
                }
            }
            ShardOutcome::Interrupted { reason } => {
                shard.error = Some(truncate(reason));
                interrupt(shard, 0, now_ms);
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

fn truncate(mut message: String) -> String {
    if message.len() > MAX_ERROR_LEN {
        let mut cut = message.len() - MAX_ERROR_LEN;
        while !message.is_char_boundary(cut) {
            cut += 1;
        }
        message.drain(..cut);
    }
    message
}

/// Back-off after the `n`th interruption of a shard: none the first time, then 1 s doubling
/// up to a minute.
fn interruption_backoff_ms(n: u32) -> u64 {
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
fn requeue(shard: &mut Shard, not_before_ms: u64) {
    shard.state = ShardState::Pending;
    shard.taskmanager = None;
    shard.started_at_ms = None;
    shard.not_before_ms = not_before_ms;
}

/// Update a TaskManager's run statistics and apply the exclusion rule.
fn record_run(tm: &mut TaskManager, outcome: &ShardOutcome, run_ms: u64, now_ms: u64) {
    match outcome {
        ShardOutcome::Finished => {
            tm.stats.runs = tm.stats.runs.saturating_add(1);
            tm.stats.run_time_ms = tm.stats.run_time_ms.saturating_add(run_ms);
        }
        ShardOutcome::Failed { .. } => {
            tm.stats.runs = tm.stats.runs.saturating_add(1);
            tm.stats.run_time_ms = tm.stats.run_time_ms.saturating_add(run_ms);
            tm.stats.failures += 1;
            tm.recent_failures_ms.push(now_ms);
            if tm.recent_failures_ms.len() > RECENT_FAILURES_KEPT {
                tm.recent_failures_ms.remove(0);
            }
            let window_start = now_ms.saturating_sub(EXCLUSION_WINDOW_MS);
            let recent = tm
                .recent_failures_ms
                .iter()
                .filter(|t| **t >= window_start)
                .count();
            if recent >= EXCLUSION_FAILURES {
                tm.excluded_until_ms = now_ms + EXCLUSION_MS;
                tm.recent_failures_ms.clear();
            }
        }
        // Neither is the TaskManager's doing.
        ShardOutcome::Interrupted { .. } | ShardOutcome::CannotStart { .. } => {}
    }
}

/// Put the given shards of a TaskManager back to pending, placeable from `not_before_ms`;
/// returns how many moved.
fn requeue_held(
    state: &mut ClusterState,
    taskmanager: &str,
    shards: &[(JobId, u32, Option<u64>)],
    not_before_ms: u64,
    now_ms: u64,
) -> u32 {
    let mut moved = 0;
    let mut jobs = BTreeSet::new();
    for (job_id, index, expected_epoch) in shards {
        let Some(job) = state.jobs.get_mut(job_id).map(Arc::make_mut) else {
            continue;
        };
        let slots = job.spec.slots_per_shard;
        let Some(shard) = job.shards.get_mut(*index as usize) else {
            continue;
        };
        let matches = shard.state.holds_slots()
            && shard.taskmanager.as_deref() == Some(taskmanager)
            && expected_epoch.is_none_or(|e| e == shard.epoch);
        if !matches {
            continue;
        }
        interrupt(shard, not_before_ms, now_ms);
        release_slots(state, *job_id, *index, taskmanager, slots);
        jobs.insert(*job_id);
        moved += 1;
    }
    for job_id in jobs {
        refresh_job(state, job_id, now_ms);
    }
    moved
}

fn mark_lost(
    state: &mut ClusterState,
    id: String,
    registration_epoch: u64,
    now_ms: u64,
) -> Result<Response, Rejection> {
    let tm = state
        .taskmanagers
        .get_mut(&id)
        .ok_or_else(|| Rejection::UnknownTaskManager(id.clone()))?;
    if tm.registration_epoch != registration_epoch {
        return Err(Rejection::StaleRegistration {
            id,
            current: tm.registration_epoch,
        });
    }
    tm.state = TaskManagerState::Lost;
    tm.lost_at_ms = Some(now_ms);
    let held: Vec<(JobId, u32, Option<u64>)> = state
        .shards_by_taskmanager
        .get(&id)
        .map(|s| s.iter().map(|(j, i)| (*j, *i, None)).collect())
        .unwrap_or_default();
    // Declared lost only after the timeout, which exceeds the agent's lease plus a margin:
    // its copies are already dead, so the shards may run elsewhere at once.
    let shards_requeued = requeue_held(state, &id, &held, 0, now_ms);
    Ok(Response::TaskManagerLost {
        id,
        shards_requeued,
    })
}

fn requeue_shards(
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

/// Drop ended jobs (retention). Jobs that have not ended are kept whatever the leader asked.
fn forget_jobs(state: &mut ClusterState, job_ids: Vec<JobId>) -> Response {
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
                state.idempotency_keys.remove(key);
            }
            admission::forget(state, job.spec.encoded_len_estimate() as u64);
            state.jobs_with_pending_shards.remove(&job_id);
            count += 1;
        }
    }
    Response::JobsForgotten { count }
}

/// Drop lost TaskManagers that hold nothing (retention). Others are kept whatever the leader
/// asked.
fn forget_taskmanagers(state: &mut ClusterState, ids: Vec<String>) -> Response {
    let mut count = 0;
    for id in ids {
        let lost = state
            .taskmanagers
            .get(&id)
            .is_some_and(|tm| tm.state == TaskManagerState::Lost);
        if lost && !state.shards_by_taskmanager.contains_key(&id) {
            state.taskmanagers.remove(&id);
            count += 1;
        }
    }
    Response::TaskManagersForgotten { count }
}

mod admission;
pub use admission::check_admission;
#[cfg(test)]
mod tests;
