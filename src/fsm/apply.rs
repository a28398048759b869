//! Deterministic apply of one command to the cluster state.

use super::command::{Command, Placement, PlacementOutcome, Rejection, Response};
use super::validate::{validate_registration, validate_spec};
use crate::domain::{
    ClusterState, Job, JobId, JobSpec, JobState, Labels, RunStats, Shard, ShardState, TaskManager,
    TaskManagerState,
};

/// Apply `command`, committed at `log_index`, to `state`.
///
/// Every rejection is checked before the first mutation, so a refused command changes
/// nothing.
pub fn apply(state: &mut ClusterState, log_index: u64, command: Command) -> Response {
    let result = match command {
        Command::RegisterTaskManager {
            id,
            addr,
            slots,
            labels,
            now_ms,
        } => register_taskmanager(state, id, addr, slots, labels, now_ms),
        Command::SubmitJob {
            name,
            spec,
            idempotency_key,
            now_ms,
        } => submit_job(state, log_index, name, spec, idempotency_key, now_ms),
        Command::PlaceShards { placements, .. } => Ok(place_shards(state, log_index, placements)),
        Command::CancelJob { job_id, .. } => cancel_job(state, job_id),
        Command::DrainTaskManager { id, .. } => drain_taskmanager(state, id),
    };
    result.unwrap_or_else(Response::Rejected)
}

fn register_taskmanager(
    state: &mut ClusterState,
    id: String,
    addr: String,
    slots: u32,
    labels: Labels,
    now_ms: u64,
) -> Result<Response, Rejection> {
    validate_registration(&id, &addr, slots, &labels)?;
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
            registered_at_ms: now_ms,
            stats: RunStats::default(),
        });
    tm.addr = addr;
    tm.slots = slots;
    tm.labels = labels;
    tm.registration_epoch += 1;
    tm.registered_at_ms = now_ms;
    // A drained TaskManager stays drained across a re-registration: the operator asked for it.
    if tm.state == TaskManagerState::Lost {
        tm.state = TaskManagerState::Alive;
    }
    Ok(Response::TaskManagerRegistered {
        registration_epoch: tm.registration_epoch,
    })
}

fn submit_job(
    state: &mut ClusterState,
    log_index: u64,
    name: String,
    spec: JobSpec,
    idempotency_key: Option<String>,
    now_ms: u64,
) -> Result<Response, Rejection> {
    if let Some(existing) = idempotency_key
        .as_ref()
        .and_then(|k| state.idempotency_keys.get(k))
    {
        return Ok(Response::JobSubmitted {
            job_id: *existing,
            created: false,
        });
    }
    validate_spec(&name, &spec)?;
    let job_id = JobId(log_index);
    let shards = (0..spec.shard_count).map(Shard::new).collect();
    if let Some(key) = &idempotency_key {
        state.idempotency_keys.insert(key.clone(), job_id);
    }
    state.jobs.insert(
        job_id,
        Job {
            id: job_id,
            name,
            spec,
            state: JobState::Pending,
            created_at_ms: now_ms,
            idempotency_key,
            shards,
        },
    );
    state.jobs_with_pending_shards.insert(job_id);
    Ok(Response::JobSubmitted {
        job_id,
        created: true,
    })
}

/// Re-check each placement against the current state; apply the ones that still hold.
fn place_shards(state: &mut ClusterState, log_index: u64, placements: Vec<Placement>) -> Response {
    let mut outcome = PlacementOutcome::default();
    let mut touched = std::collections::BTreeSet::new();
    for placement in placements {
        if place_one(state, log_index, &placement) {
            outcome.placed += 1;
            touched.insert(placement.job_id);
        } else {
            outcome.stale += 1;
        }
    }
    // Job-level bookkeeping once per job, not once per shard: a plan may place thousands of
    // shards of one job, and each of these scans all its shards.
    for job_id in touched {
        if let Some(job) = state.jobs.get_mut(&job_id) {
            job.state = job.derived_state();
            if job.pending_shards().next().is_none() {
                state.jobs_with_pending_shards.remove(&job_id);
            }
        }
    }
    Response::ShardsPlaced(outcome)
}

fn place_one(state: &mut ClusterState, log_index: u64, p: &Placement) -> bool {
    let Some(job) = state.jobs.get_mut(&p.job_id) else {
        return false;
    };
    if job.state.is_terminal() {
        return false;
    }
    let Some(tm) = state.taskmanagers.get_mut(&p.taskmanager) else {
        return false;
    };
    let slots = job.spec.slots_per_shard;
    if !tm.accepts_placements() || !tm.matches(&job.spec.selector) || tm.free_slots() < slots {
        return false;
    }
    let Some(shard) = job.shards.get_mut(p.shard as usize) else {
        return false;
    };
    if shard.state != ShardState::Pending {
        return false;
    }
    shard.state = ShardState::Assigned;
    shard.taskmanager = Some(tm.id.clone());
    shard.attempt += 1;
    shard.epoch = log_index;
    shard.exit_code = None;
    tm.used_slots += slots;
    true
}

fn cancel_job(state: &mut ClusterState, job_id: JobId) -> Result<Response, Rejection> {
    let job = state
        .jobs
        .get_mut(&job_id)
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
    let slots = job.spec.slots_per_shard;
    let mut cancelled = 0;
    for shard in job.shards.iter_mut().filter(|s| !s.state.is_terminal()) {
        if shard.state.holds_slots() {
            if let Some(tm) = shard
                .taskmanager
                .as_ref()
                .and_then(|id| state.taskmanagers.get_mut(id))
            {
                tm.used_slots = tm.used_slots.saturating_sub(slots);
            }
        }
        shard.state = ShardState::Cancelled;
        cancelled += 1;
    }
    job.state = JobState::Cancelled;
    state.jobs_with_pending_shards.remove(&job_id);
    Ok(Response::JobCancelled {
        job_id,
        shards_cancelled: cancelled,
    })
}

fn drain_taskmanager(state: &mut ClusterState, id: String) -> Result<Response, Rejection> {
    let tm = state
        .taskmanagers
        .get_mut(&id)
        .ok_or_else(|| Rejection::UnknownTaskManager(id.clone()))?;
    tm.state = TaskManagerState::Draining;
    Ok(Response::TaskManagerDraining { id })
}

#[cfg(test)]
mod tests;
