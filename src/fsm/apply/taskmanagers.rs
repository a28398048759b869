//! Apply of the TaskManager commands: registration (and takeover), drain, loss and
//! retention, plus the run statistics behind the exclusion rule.

use super::shards::requeue_all_held;
use crate::domain::{
    ClusterState, InputLimits, Labels, RunStats, TaskManager, TaskManagerState, EXCLUSION_FAILURES,
    EXCLUSION_MS, EXCLUSION_WINDOW_MS, MAX_TASKMANAGERS, RECENT_FAILURES_KEPT,
};
use crate::fsm::command::{Rejection, Response, ShardOutcome};
use crate::fsm::validate::validate_registration;

/// A `RegisterTaskManager` command's contents.
pub(super) struct Registration {
    pub(super) id: String,
    pub(super) addr: String,
    pub(super) slots: u32,
    pub(super) labels: Labels,
    pub(super) incarnation: u64,
    pub(super) successor_of: Option<u64>,
    pub(super) replaces: Option<u64>,
}

pub(super) fn register_taskmanager(
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
        requeue_all_held(state, &id, now_ms);
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

/// Most TaskManagers with a pin.
const MAX_PINS: usize = MAX_TASKMANAGERS;

/// `tm pin`: what TaskManager `id` may claim from its next registration on.
pub(crate) fn pin_taskmanager(
    state: &mut ClusterState,
    id: String,
    labels: Labels,
    slots: Option<u32>,
) -> Result<Response, Rejection> {
    crate::fsm::validate::validate_name("TaskManager id", &id)?;
    crate::fsm::validate::validate_labels(&labels, &InputLimits::CEILING)?;
    if labels.is_empty() && slots.is_none() {
        state.pins.remove(&id);
        return Ok(Response::TaskManagerPinned { id });
    }
    if !state.pins.contains_key(&id) && state.pins.len() >= MAX_PINS {
        return Err(Rejection::Overloaded(format!(
            "{MAX_PINS} TaskManagers have pins, the most the cluster keeps; unpin unused ones \
             with `dispatcher tm unpin <id>`"
        )));
    }
    state
        .pins
        .insert(id.clone(), crate::domain::TaskManagerPin { labels, slots });
    Ok(Response::TaskManagerPinned { id })
}

/// `tm pin` at cluster version 4: the labels and slots as `pin_taskmanager`, and the most
/// CPU, memory and named resources TaskManager `id` may declare. Replaces what was pinned.
pub(crate) fn pin_taskmanager_with_resources(
    state: &mut ClusterState,
    id: String,
    labels: Labels,
    slots: Option<u32>,
    resources: crate::domain::ResourcePin,
) -> Result<Response, Rejection> {
    crate::fsm::validate::validate_resource_pin(&resources)?;
    if !resources.is_empty()
        && !state.resource_pins.contains_key(&id)
        && state.resource_pins.len() >= MAX_PINS
    {
        return Err(Rejection::Overloaded(format!(
            "{MAX_PINS} TaskManagers have resource pins, the most the cluster keeps; unpin \
             unused ones with `dispatcher tm unpin <id>`"
        )));
    }
    let response = pin_taskmanager(state, id.clone(), labels, slots)?;
    if resources.is_empty() {
        state.resource_pins.remove(&id);
    } else {
        state.resource_pins.insert(id, resources);
    }
    Ok(response)
}

pub(super) fn drain_taskmanager(
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

/// Update a TaskManager's run statistics and apply the exclusion rule.
pub(super) fn record_run(tm: &mut TaskManager, outcome: &ShardOutcome, run_ms: u64, now_ms: u64) {
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
        // The run took its time, but passing its job's own limit is not the TaskManager's
        // failure.
        ShardOutcome::OverLimit { .. } => {
            tm.stats.runs = tm.stats.runs.saturating_add(1);
            tm.stats.run_time_ms = tm.stats.run_time_ms.saturating_add(run_ms);
        }
        // Neither is the TaskManager's doing.
        ShardOutcome::Interrupted { .. } | ShardOutcome::CannotStart { .. } => {}
    }
}

pub(super) fn mark_lost(
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
    // Declared lost only after the timeout, which exceeds the agent's lease plus a margin:
    // its copies are already dead, so the shards may run elsewhere at once.
    let shards_requeued = requeue_all_held(state, &id, now_ms);
    Ok(Response::TaskManagerLost {
        id,
        shards_requeued,
    })
}

/// Drop lost TaskManagers that hold nothing (retention). Others are kept whatever the leader
/// asked.
pub(super) fn forget_taskmanagers(state: &mut ClusterState, ids: Vec<String>) -> Response {
    let mut count = 0;
    for id in ids {
        let lost = state
            .taskmanagers
            .get(&id)
            .is_some_and(|tm| tm.state == TaskManagerState::Lost);
        if lost && !state.shards_by_taskmanager.contains_key(&id) {
            state.taskmanagers.remove(&id);
            state.tm_resources.remove(&id);
            count += 1;
        }
    }
    Response::TaskManagersForgotten { count }
}
