//! The cluster version's commands: raising and lowering it, and the commands of version 2
//! that need no room of their own (`UndrainTaskManager`).

use crate::domain::{ClusterState, ClusterVersion, TaskManagerState};
use crate::fsm::command::{Rejection, Response};

/// `SetClusterVersion`. Raising needs nothing of the state (the leader proposes it once
/// every member reads the version); lowering is refused while the state holds something
/// the lower version cannot express, so that a snapshot in its format loses nothing.
pub(super) fn set_cluster_version(
    state: &mut ClusterState,
    version: u32,
) -> Result<Response, Rejection> {
    if version == 0 {
        return Err(Rejection::Invalid(
            "cluster version 0 does not exist; the first is 1".into(),
        ));
    }
    let version = ClusterVersion(version);
    if version < state.cluster_version {
        if let Some(what) = needs_above(state, version) {
            return Err(Rejection::Invalid(format!(
                "cannot go down to cluster version {version}: {what}"
            )));
        }
    }
    if version < ClusterVersion(4) {
        // None is left (checked above); said for the replay of a log that lowered it.
        state.resource_pins.clear();
    }
    if version < ClusterVersion(3) {
        // What a snapshot below version 3 cannot hold: no schedule is left (checked above),
        // and the jobs they made forget which made them, on every replica alike.
        state.cron = Default::default();
    }
    state.cluster_version = version;
    Ok(Response::ClusterVersionSet { version: version.0 })
}

/// What in `state` a cluster at `version` could not hold, said so an operator can remove
/// it; `None` when nothing. Version 2 added commands whose effects version 1 expresses
/// (an undrained TaskManager is an alive one); version 3 added schedules, which no older
/// snapshot format holds. Jobs a schedule made are plain jobs below it (they only lose
/// the note of which schedule made them). Version 4 added resource pins, which no older
/// format holds either; below it agents declare resources unchecked, as they did.
pub fn needs_above(state: &ClusterState, version: ClusterVersion) -> Option<String> {
    let pinned = state.resource_pins.len();
    if version < ClusterVersion(4) && pinned > 0 {
        // Each one's pin again without its resources, as an admin would type it.
        let again: Vec<String> = state
            .resource_pins
            .keys()
            .take(3)
            .map(|id| match state.pins.get(id) {
                Some(pin) => {
                    crate::domain::pin_command(id, &pin.labels, pin.slots, &Default::default())
                }
                None => format!("dispatcher tm unpin {id}"),
            })
            .collect();
        return Some(format!(
            "{pinned} TaskManagers have resource pins, which cluster version {version} cannot \
             hold; pin each again without --cpus, --memory or --resources first (`{}`{})",
            again.join("`, `"),
            if pinned > again.len() { ", ..." } else { "" }
        ));
    }
    let schedules = state.cron.schedules.len();
    if version < ClusterVersion(3) && schedules > 0 {
        return Some(format!(
            "{schedules} periodic schedules exist, which cluster version {version} cannot \
             hold; delete them first (`dispatcher cron list`, `dispatcher cron delete`)"
        ));
    }
    None
}

/// `UndrainTaskManager`: a draining TaskManager takes new shards again; one lost while
/// draining comes back alive, not draining, when it registers again.
pub(super) fn undrain_taskmanager(
    state: &mut ClusterState,
    id: String,
) -> Result<Response, Rejection> {
    let tm = state
        .taskmanagers
        .get_mut(&id)
        .ok_or_else(|| Rejection::UnknownTaskManager(id.clone()))?;
    if tm.state == TaskManagerState::Draining {
        tm.state = TaskManagerState::Alive;
    }
    tm.drain_deadline_ms = None;
    Ok(Response::TaskManagerUndrained { id })
}
