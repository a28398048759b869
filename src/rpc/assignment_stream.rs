//! `TaskManagers.WatchAssignments`: the leader pushes a TaskManager's whole assignment list
//! the moment an applied entry changes it (the stream wakes only for changes to its own
//! TaskManager, `raft::assignment_watch`), so a placement reaches the agent in one network
//! hop instead of at its next heartbeat. Each push is made under the same rule as a
//! heartbeat reply (`leader_lease`): a deposed leader stops pushing and ends the stream, and
//! the agent opens a new one to whichever replica leads.
//!
//! The stream carries work, not proof of life: only heartbeats renew an agent's lease.

use super::error::ApiError;
use super::leader_lease::ensure_leader_lease;
use super::ServiceContext;
use crate::domain::{AssignmentsVersion, TaskManagerState};
use crate::pb::api::{Assignment, AssignmentsUpdate, WatchAssignmentsRequest};
use futures::Stream;
use std::pin::Pin;
use std::time::Duration;
use tonic::Status;

/// An unchanged update at least this often, so the agent can tell a live stream from a dead
/// connection.
const KEEPALIVE: Duration = Duration::from_secs(1);

pub type AssignmentStream = Pin<Box<dyn Stream<Item = Result<AssignmentsUpdate, Status>> + Send>>;

/// Open the stream, refusing at once if this replica may not push or the registration is
/// not the current one.
pub fn watch(
    ctx: ServiceContext,
    req: WatchAssignmentsRequest,
) -> Result<AssignmentStream, ApiError> {
    ensure_leader_lease(&ctx)?;
    next_update(&ctx, &req, None)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<AssignmentsUpdate, Status>>(4);
    tokio::spawn(async move {
        // Woken when this TaskManager's list or registration changes, not on every entry.
        let mut changes = ctx.shared.watch_assignments(&req.taskmanager_id);
        let mut sent = None;
        loop {
            let update = ensure_leader_lease(&ctx).and_then(|()| next_update(&ctx, &req, sent));
            match update {
                Ok(Some((update, version))) => {
                    if tx.send(Ok(update)).await.is_err() {
                        return;
                    }
                    sent = Some(version);
                }
                Ok(None) => {}
                Err(e) => {
                    // Deposed, or the agent registered again: it opens a new stream.
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            }
            tokio::select! {
                _ = tx.closed() => return,
                changed = tokio::time::timeout(KEEPALIVE, changes.changed()) => match changed {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => {
                        let alive = AssignmentsUpdate {
                            unchanged: true,
                            applied_index: ctx.shared.applied_index(),
                            ..AssignmentsUpdate::default()
                        };
                        if tx.send(Ok(alive)).await.is_err() {
                            return;
                        }
                    }
                },
            }
        }
    });
    Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })))
}

/// The list to push if it differs from the version last `sent`.
fn next_update(
    ctx: &ServiceContext,
    req: &WatchAssignmentsRequest,
    sent: Option<AssignmentsVersion>,
) -> Result<Option<(AssignmentsUpdate, AssignmentsVersion)>, ApiError> {
    let view = ctx.shared.read();
    let current = view.state.taskmanager(&req.taskmanager_id).filter(|tm| {
        tm.registration_epoch == req.registration_epoch
            && tm.incarnation == req.incarnation
            && tm.state != TaskManagerState::Lost
    });
    if current.is_none() {
        return Err(ApiError::FailedPrecondition(format!(
            "TaskManager '{}' is not registered with registration {} by this agent process; \
             register again",
            req.taskmanager_id, req.registration_epoch
        )));
    }
    let version = view.state.assignments_version(&req.taskmanager_id);
    if sent == Some(version) {
        return Ok(None);
    }
    let assignments = view
        .state
        .assignments(&req.taskmanager_id)
        .map(|(job, shard)| Assignment {
            job_id: job.id.to_string(),
            index: shard.index,
            epoch: shard.epoch,
            attempt: shard.attempt,
            shard_count: job.spec.shard_count,
        })
        .collect();
    let update = AssignmentsUpdate {
        assignments,
        assignments_max_epoch: version.max_epoch,
        assignments_count: version.count,
        applied_index: view.last_applied.as_ref().map(|l| l.index()).unwrap_or(0),
        unchanged: false,
    };
    Ok(Some((update, version)))
}
