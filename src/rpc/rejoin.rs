//! The leader's side of taking back a replica that lost its data (see `node::rejoin`).
//!
//! Stateless: the rejoining replica asks again until it is restored, so a leader change in
//! the middle only means the next leader answers the next question. Decisions are made only
//! by a leader that has just confirmed its leadership with a quorum, only from the committed
//! configuration, and only while no other change is under way; every change goes through
//! openraft's membership log, committed by a quorum that does not count the rejoining replica:
//! - first contact from a voter: remove it from the voters, keep it as a learner;
//! - a learner asking to be restored: once it holds every entry up to the configuration that
//!   made it a learner (so everything committed before it lost its data), make it a voter;
//! - a replica that is not a member: nothing to do until `cluster add` adds it.
//!
//! The answers open nothing on the replica: it opens its own gate only when its log shows it
//! restored. A change that does not commit within the deadline keeps going in the background
//! (it is not abandoned half way), and a joint configuration left behind by a leader that
//! died mid-change is completed toward its target before anything else is decided.

use super::error::ApiError;
use super::raft_access::{linearizable, not_leader_here, write_error};
use super::ServiceContext;
use crate::pb::api::{RejoinReply, RejoinRequest};
use crate::raft::{Node, NodeId, RaftMetrics};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::{ChangeMembers, ServerState};
use std::collections::BTreeSet;
use std::time::Duration;

/// How long an answer waits for a membership change to commit; the change itself goes on.
const CHANGE_DEADLINE: Duration = Duration::from_secs(5);

fn reply(outcome: &str, detail: String, demoted_at: u64) -> RejoinReply {
    RejoinReply {
        outcome: outcome.to_string(),
        detail,
        demoted_at,
    }
}

pub async fn handle(ctx: &ServiceContext, req: RejoinRequest) -> Result<RejoinReply, ApiError> {
    let id = req.id;
    if id == ctx.node_id {
        return Err(ApiError::InvalidArgument(
            "a replica cannot rejoin through itself; name the other replicas in --peers"
                .to_string(),
        ));
    }
    // A deposed leader that does not know it yet must not decide anything.
    linearizable(ctx).await?;
    let metrics: RaftMetrics = ctx.raft.metrics().borrow_watched().clone();
    if metrics.state != ServerState::Leader {
        return Err(not_leader_here(ctx));
    }
    let committed = &metrics.committed_membership_config;
    if committed.log_id() != metrics.membership_config.log_id() {
        return Err(ApiError::Unavailable(
            "a membership change is being committed; asking again shortly".to_string(),
        ));
    }
    let membership = committed.membership();
    let configs = membership.get_joint_config();
    if configs.len() > 1 {
        // Left half done (its leader died between the two steps): finish it first.
        tracing::info!("completing a membership change left in a joint configuration");
        change(ctx, ChangeMembers::AddVoterIds(BTreeSet::new())).await?;
        return Err(ApiError::Unavailable(
            "completed a membership change left half done; asking again shortly".to_string(),
        ));
    }
    let config_index = committed.log_id().as_ref().map(|l| l.index()).unwrap_or(0);
    let is_voter = configs.last().is_some_and(|voters| voters.contains(&id));
    let is_node = membership.get_node(&id).is_some();
    match (is_voter, req.restoring) {
        (true, false) => {
            tracing::warn!(
                replica = id,
                "replica {id} has no data: demoting it to learner until it has caught up"
            );
            let at = change(ctx, ChangeMembers::RemoveVoters(BTreeSet::from([id]))).await?;
            Ok(reply("demoted", format!("replica {id} is a learner"), at))
        }
        (true, true) => Ok(reply(
            "restored",
            format!("replica {id} is a voter"),
            config_index,
        )),
        (false, _) if !is_node => Ok(reply(
            "not-a-member",
            format!("replica {id} is not a member; add it with `dispatcher cluster add`"),
            config_index,
        )),
        (false, false) => Ok(reply(
            "demoted",
            format!("replica {id} is a learner"),
            config_index,
        )),
        (false, true) => {
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(&id).cloned().flatten())
                .map(|l| l.index());
            match matched {
                // Everything committed before the wipe is at or below the configuration
                // that made it a learner.
                Some(m) if m >= config_index => {
                    change(ctx, ChangeMembers::AddVoterIds(BTreeSet::from([id]))).await?;
                    tracing::info!(replica = id, "replica {id} caught up and votes again");
                    Ok(reply(
                        "restored",
                        format!("replica {id} is a voter again"),
                        config_index,
                    ))
                }
                _ => Ok(reply(
                    "catching-up",
                    format!(
                        "replica {id} holds entries up to {matched:?}; it needs {config_index}"
                    ),
                    config_index,
                )),
            }
        }
    }
}

/// Run a membership change to completion in the background; wait for it a while. Returns
/// the log index of the configuration it committed.
async fn change(
    ctx: &ServiceContext,
    change: ChangeMembers<NodeId, Node>,
) -> Result<u64, ApiError> {
    let raft = ctx.raft.clone();
    let task = tokio::spawn(async move { raft.change_membership(change, true).await });
    match tokio::time::timeout(CHANGE_DEADLINE, task).await {
        Ok(Ok(Ok(response))) => Ok(response.log_id.index()),
        Ok(Ok(Err(e))) => Err(write_error(e)),
        Ok(Err(e)) => Err(ApiError::Unavailable(format!(
            "the membership change stopped: {e}"
        ))),
        Err(_) => Err(ApiError::Unavailable(format!(
            "the membership change did not commit within {CHANGE_DEADLINE:?} (too few replicas \
             up?); it goes on, and the replica asks again"
        ))),
    }
}
