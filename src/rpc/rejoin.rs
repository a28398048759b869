//! The leader's side of taking back a replica that lost its data (see `node::rejoin`).
//!
//! Stateless: the rejoining replica asks again until it is restored, so a leader change in
//! the middle only means the next leader answers the next question. Every change goes through
//! openraft's membership log, committed by a quorum that does not count the rejoining replica:
//! - first contact from a voter: remove it from the voters, keep it as a learner;
//! - a learner asking to be restored: once it holds every entry up to the configuration that
//!   made it a learner (so everything committed before it lost its data), make it a voter;
//! - a replica that is not a voter: nothing to protect, it is admitted as it is.

use super::error::ApiError;
use super::raft_access::{not_leader_here, write_error};
use super::ServiceContext;
use crate::pb::api::{RejoinReply, RejoinRequest};
use crate::raft::{Node, NodeId, RaftMetrics};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::{ChangeMembers, ServerState};
use std::collections::BTreeSet;
use std::time::Duration;

/// A membership change waits for a quorum; without one the replica asks again later.
const CHANGE_DEADLINE: Duration = Duration::from_secs(10);
/// How far behind the commit index a caught-up learner may be when it is restored (it is
/// never restored before it holds the configuration that demoted it).
const RESTORE_SLACK: u64 = 1000;

fn reply(outcome: &str, detail: String) -> RejoinReply {
    RejoinReply {
        outcome: outcome.to_string(),
        detail,
    }
}

pub async fn handle(ctx: &ServiceContext, req: RejoinRequest) -> Result<RejoinReply, ApiError> {
    let metrics: RaftMetrics = ctx.raft.metrics().borrow_watched().clone();
    if metrics.state != ServerState::Leader {
        return Err(not_leader_here(ctx));
    }
    let id = req.id;
    if id == ctx.node_id {
        return Err(ApiError::InvalidArgument(
            "the leader cannot rejoin itself".to_string(),
        ));
    }
    let config = &metrics.membership_config;
    let membership = config.membership();
    let is_voter = membership.voter_ids().any(|v| v == id);
    let is_node = membership.get_node(&id).is_some();
    if !is_node {
        return Ok(reply(
            "admitted",
            format!("replica {id} is not a member; add it with `dispatcher cluster add`"),
        ));
    }
    match (is_voter, req.restoring) {
        (true, false) => {
            tracing::warn!(
                replica = id,
                "replica {id} lost its data: demoting it to learner until it has caught up"
            );
            change(ctx, ChangeMembers::RemoveVoters(BTreeSet::from([id]))).await?;
            Ok(reply("demoted", format!("replica {id} is a learner now")))
        }
        // Already restored (an earlier answer was lost on the way).
        (true, true) => Ok(reply("restored", format!("replica {id} is a voter"))),
        (false, false) => Ok(reply(
            "demoted",
            format!("replica {id} is a learner; it is restored once caught up"),
        )),
        (false, true) => {
            let needed = config.log_id().as_ref().map(|l| l.index()).unwrap_or(0);
            let committed = metrics.local_committed.map(|l| l.index()).unwrap_or(0);
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(&id).cloned().flatten())
                .map(|l| l.index());
            // Everything committed before the wipe is at or below the demoting configuration;
            // asking for the commit index too keeps a far-behind voter from slowing commits.
            match matched {
                Some(m) if m >= needed && m + RESTORE_SLACK >= committed => {
                    change(ctx, ChangeMembers::AddVoterIds(BTreeSet::from([id]))).await?;
                    tracing::info!(replica = id, "replica {id} caught up and votes again");
                    Ok(reply("restored", format!("replica {id} is a voter again")))
                }
                _ => Ok(reply(
                    "catching-up",
                    format!(
                        "replica {id} holds entries up to {matched:?}; it needs {needed} and the \
                         commit index {committed}"
                    ),
                )),
            }
        }
    }
}

async fn change(ctx: &ServiceContext, change: ChangeMembers<NodeId, Node>) -> Result<(), ApiError> {
    match tokio::time::timeout(CHANGE_DEADLINE, ctx.raft.change_membership(change, true)).await {
        Ok(result) => result.map(|_| ()).map_err(write_error),
        Err(_) => Err(ApiError::Unavailable(format!(
            "the membership change did not commit within {CHANGE_DEADLINE:?}: too few replicas \
             are up; it waits"
        ))),
    }
}
