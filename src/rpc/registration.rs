//! Registration of a TaskManager through the `Dispatcher` API: input and capacity checks,
//! the takeover of an id another agent process holds (see `leader::fencing`), and the
//! `RegisterTaskManager` proposal.

use super::dispatcher_service::unexpected;
use super::error::ApiError;
use super::raft_access::{not_leader_here, write};
use super::ServiceContext;
use crate::clock::now_ms;
use crate::domain::TaskManagerState;
use crate::fsm::{validate_registration, Command, Response as FsmResponse};
use crate::leader::fencing;
use crate::pb::api::{RegisterTaskManagerReply, RegisterTaskManagerRequest};
use openraft::async_runtime::watch::WatchReceiver;

/// A registration under an id another agent process holds: refused while the holder may
/// still run shards, admitted (as a takeover, the holder condemned) once it surely
/// cannot. See `leader::fencing`. Returns the holder's incarnation this registration
/// takes the id over from.
fn check_takeover(
    ctx: &ServiceContext,
    req: &RegisterTaskManagerRequest,
) -> Result<Option<u64>, ApiError> {
    let (holder, addr) = {
        let view = ctx.shared.read();
        match view.state.taskmanager(&req.id) {
            Some(tm)
                if tm.state != TaskManagerState::Lost
                    && tm.incarnation != req.incarnation
                    && req.successor_of != Some(tm.incarnation) =>
            {
                (tm.incarnation, tm.addr.clone())
            }
            _ => return Ok(None),
        }
    };
    // Only the leader knows when it last heard from the holder.
    let (is_leader, term) = {
        let m = ctx.raft.metrics().borrow_watched().clone();
        (m.state == openraft::ServerState::Leader, m.current_term)
    };
    if !is_leader {
        return Err(not_leader_here(ctx));
    }
    let bound = fencing::takeover_after(&ctx.tm_settings);
    match ctx.liveness.take_over(&req.id, term, bound) {
        Ok(()) => {
            tracing::warn!(
                id = %req.id,
                old = holder,
                new = req.incarnation,
                "another agent takes over TaskManager id '{}': its holder at {addr} has been silent past its lease",
                req.id
            );
            Ok(Some(holder))
        }
        Err(silent) => Err(ApiError::AlreadyExists(format!(
            "TaskManager id '{}' is held by another agent at {addr}, heard from {:.1} s ago; \
             stop that agent, or start this one with another --id (the id frees itself {:.1} s \
             after its holder falls silent)",
            req.id,
            silent.as_secs_f64(),
            bound.as_secs_f64()
        ))),
    }
}

pub async fn register(
    ctx: &ServiceContext,
    req: RegisterTaskManagerRequest,
) -> Result<RegisterTaskManagerReply, ApiError> {
    let labels = req
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    validate_registration(&req.id, &req.addr, req.slots, &labels, &ctx.limits.input())
        .map_err(ApiError::from)?;
    let id = req.id.clone();
    let declared = super::resources::declared(&req)?;
    {
        let view = ctx.shared.read();
        // With TLS, what an agent claims is checked against what an admin pinned to it;
        // under --insecure anyone may claim anything anyway.
        if ctx.transport.is_tls() {
            let capacity = declared.as_ref().map(|d| &d.capacity);
            if let Some(why) =
                crate::domain::claims_refusal(&view.state, &req.id, &labels, req.slots, capacity)
            {
                return Err(ApiError::PermissionDenied(why));
            }
        }
        let most = ctx.limits.max_taskmanagers;
        let held = view.state.taskmanagers.len();
        if view.state.taskmanager(&req.id).is_none() && held >= most {
            return Err(ApiError::Rejected(crate::fsm::Rejection::Overloaded(
                format!(
                    "the cluster holds {held} TaskManagers, the limit (limits.max_taskmanagers in \
                 the replicas' config file); lost ones are forgotten after jobs.retention_secs"
                ),
            )));
        }
    }
    let replaces = check_takeover(ctx, &req)?;
    let command = match declared {
        Some(resources) => Command::RegisterTaskManagerWithResources {
            incarnation: req.incarnation,
            successor_of: req.successor_of,
            replaces,
            id: req.id,
            addr: req.addr,
            slots: req.slots,
            labels,
            resources,
            now_ms: now_ms(),
        },
        // An agent from before resources, in the command every version reads.
        None => Command::RegisterTaskManager {
            incarnation: req.incarnation,
            successor_of: req.successor_of,
            replaces,
            id: req.id,
            addr: req.addr,
            slots: req.slots,
            labels,
            now_ms: now_ms(),
        },
    };
    // Contact now, before the entry applies: between its apply and the reply below, the
    // failure detector would otherwise see a TaskManager in the state that it has never
    // heard from, and could declare it lost the moment it registered. (A condemned holder
    // stays condemned: `heartbeat` does not touch it.)
    ctx.liveness.heartbeat(&id, std::time::Instant::now());
    // Runs to its end even if the caller gives up: a takeover proposal still in flight
    // must keep its holder condemned, and one that failed must pardon it.
    let ctx = ctx.clone();
    let outcome = tokio::spawn(async move {
        let result = write(&ctx, command).await;
        // Applied, not yet answered: the failure detector may look now.
        crate::delay_point!("registration-applied");
        match &result {
            // Registering is contact, and lifts any condemnation of an older life.
            Ok(_) => ctx.liveness.registered(&id, std::time::Instant::now()),
            // Not taken over (the entry will not commit): the holder may heartbeat again.
            Err(_) if replaces.is_some() => ctx.liveness.pardon(&id),
            Err(_) => {}
        }
        result
    })
    .await
    .map_err(|e| ApiError::Internal(format!("registration task: {e}")))?;
    match outcome? {
        FsmResponse::TaskManagerRegistered { registration_epoch } => {
            Ok(RegisterTaskManagerReply { registration_epoch })
        }
        other => Err(unexpected(other)),
    }
}
