//! Writes and linearizable reads through Raft, with openraft's errors turned into `ApiError`.

use super::error::ApiError;
use super::ServiceContext;
use crate::fsm::{Command, Response};
use crate::raft::{Node, NodeId, TypeConfig};
use crate::upgrade::proposal_gate::{judge, Verdict};
use futures::StreamExt;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::{ClientWriteError, ForwardToLeader, LinearizableReadError, RaftError};
use openraft::ReadPolicy;
use std::time::Duration;

pub fn not_leader(f: &ForwardToLeader<TypeConfig>) -> ApiError {
    ApiError::NotLeader {
        leader_id: f.leader_id,
        leader_addr: f.leader_node.as_ref().map(|n: &Node| n.addr.clone()),
    }
}

/// The leader this replica currently knows of: its id and address.
pub fn known_leader(ctx: &ServiceContext) -> (Option<NodeId>, Option<String>) {
    let metrics = ctx.raft.metrics().borrow_watched().clone();
    let leader_id: Option<NodeId> = metrics.current_leader;
    let leader_addr = leader_id.and_then(|id| {
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    });
    (leader_id, leader_addr)
}

/// The leader this replica knows of once it knows one other than `not` (a replica a client
/// could not reach), or whatever it knows when `bound` runs out.
pub async fn await_leader(
    ctx: &ServiceContext,
    not: Option<NodeId>,
    bound: Duration,
) -> (Option<NodeId>, Option<String>) {
    wait_on_metrics(ctx, bound, |m| {
        m.current_leader.is_some() && m.current_leader != not
    })
    .await;
    known_leader(ctx)
}

/// Wait until openraft's metrics satisfy `settled`, for `bound` at most.
async fn wait_on_metrics(
    ctx: &ServiceContext,
    bound: Duration,
    settled: impl Fn(&openraft::RaftMetrics<TypeConfig>) -> bool,
) {
    let mut metrics = ctx.raft.metrics();
    if settled(&metrics.borrow_watched()) {
        // The usual case, on every write: no timer.
        return;
    }
    let _ = tokio::time::timeout(bound, async {
        while metrics.changed().await.is_ok() {
            if settled(&metrics.borrow_watched()) {
                return;
            }
        }
    })
    .await;
}

/// `NotLeader` for this replica, pointing at the leader it currently knows of.
pub fn not_leader_here(ctx: &ServiceContext) -> ApiError {
    let (leader_id, leader_addr) = known_leader(ctx);
    ApiError::NotLeader {
        leader_id,
        leader_addr,
    }
}

pub fn write_error(err: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> ApiError {
    match err {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => not_leader(&f),
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)) => ApiError::OutcomeUnknown(
            format!("the leader changed before the write committed ({f})"),
        ),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ApiError::FailedPrecondition(format!("membership change refused: {e}"))
        }
        RaftError::APIError(ClientWriteError::PreconditionFailed(e)) => {
            ApiError::FailedPrecondition(e.to_string())
        }
        RaftError::Fatal(f) => ApiError::Unavailable(format!("raft stopped: {f}")),
    }
}

/// Propose a command and wait until it is applied; business rejections become errors. A
/// kind newer than the cluster version is refused here, before the log (`upgrade`).
pub async fn write(ctx: &ServiceContext, command: Command) -> Result<Response, ApiError> {
    if command.needs_cluster_version() == crate::domain::ClusterVersion::FIRST {
        return propose(ctx, command).await;
    }
    // Held from the check until the entry is applied, so a downgrade waits for it.
    let _checked = ctx.versions.shared().await.map_err(|_| busy())?;
    let leads = ctx.raft.metrics().borrow_watched().state == openraft::ServerState::Leader;
    if leads {
        // A new leader may not have applied what earlier terms committed (a downgrade among
        // them): read the version only once it has.
        linearizable(ctx).await?;
    }
    let current = ctx.shared.read().state.cluster_version;
    // The leader's last round; away from it (or before its first), a round asked now.
    let round = match ctx.versions.last_round().filter(|_| leads) {
        Some(round) => round,
        None => {
            crate::upgrade::survey::ask_members(
                &ctx.transport,
                ctx.node_id,
                &ctx.versions,
                crate::upgrade::survey::member_addresses(&ctx.raft),
            )
            .await
        }
    };
    let round = Some(round);
    match judge(&command, current, leads, round.as_ref()) {
        Verdict::Pass => propose(ctx, command).await,
        Verdict::AskLeader => Err(not_leader_here(ctx)),
        Verdict::Refuse(why) => Err(ApiError::FailedPrecondition(why)),
    }
}

/// A change of the cluster version held the way too long.
pub fn busy() -> ApiError {
    ApiError::Unavailable(
        "a change of the cluster version (a raise, a downgrade, a member joining) is under \
         way; try again in a few seconds"
            .into(),
    )
}

/// During an election no replica can take a write or say where to send it: rather than have
/// the client poll, wait (a bounded while) until a leader is known.
/// Likewise a leader just elected refuses writes until a quorum has acknowledged it (its
/// lease): wait for that too.
async fn ride_out_election(ctx: &ServiceContext) {
    wait_on_metrics(ctx, ctx.contact_bound * 2, |m| match m.state {
        openraft::ServerState::Leader => m.last_quorum_acked.is_some(),
        _ => m.current_leader.is_some(),
    })
    .await;
}

async fn propose(ctx: &ServiceContext, command: Command) -> Result<Response, ApiError> {
    ride_out_election(ctx).await;
    let reply = ctx
        .shared
        .metrics()
        .time_proposal(ctx.raft.client_write(command))
        .await
        .map_err(write_error)?;
    match reply.data {
        Response::Rejected(rejection) => Err(ApiError::Rejected(rejection)),
        other => Ok(other),
    }
}

/// Propose commands that every cluster version reads in one message to the Raft core, which
/// appends them together: one write and one `fdatasync` on each replica and one replication
/// message for all of them, where separate proposals may each be appended, synced and sent
/// on their own. Each command gets its own answer, in order, as from `write` (a business
/// rejection becomes an error).
pub async fn propose_together(
    ctx: &ServiceContext,
    commands: Vec<Command>,
) -> Vec<Result<Response, ApiError>> {
    debug_assert!(commands
        .iter()
        .all(|c| c.needs_cluster_version() == crate::domain::ClusterVersion::FIRST));
    ride_out_election(ctx).await;
    let count = commands.len();
    let proposal = async {
        let answers = ctx
            .raft
            .client_write_many(commands)
            .await
            .map_err(RaftError::Fatal)?;
        let answers: Vec<_> = answers.collect().await;
        // Away from the leader the core refuses the whole batch: counted as a proposal that
        // found no leader here, as `client_write`'s refusal is.
        if let Some(Ok(Err(ClientWriteError::ForwardToLeader(f)))) = answers.first() {
            return Err(RaftError::APIError(ClientWriteError::ForwardToLeader(
                f.clone(),
            )));
        }
        Ok(answers)
    };
    let answers = match ctx.shared.metrics().time_proposal(proposal).await {
        Ok(answers) => answers,
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            return (0..count).map(|_| Err(not_leader(&f))).collect();
        }
        Err(e) => {
            let said = e.to_string();
            return (0..count)
                .map(|_| Err(ApiError::Unavailable(format!("raft stopped: {said}"))))
                .collect();
        }
    };
    let mut answers: Vec<Result<Response, ApiError>> = answers
        .into_iter()
        .map(|answer| match answer {
            Ok(Ok(written)) => match written.response {
                Response::Rejected(rejection) => Err(ApiError::Rejected(rejection)),
                other => Ok(other),
            },
            Ok(Err(e)) => Err(write_error(RaftError::APIError(e))),
            Err(fatal) => Err(ApiError::Unavailable(format!("raft stopped: {fatal}"))),
        })
        .collect();
    // The core stopped before answering them all.
    while answers.len() < count {
        answers.push(Err(ApiError::Unavailable("raft stopped".into())));
    }
    answers
}

/// Make the following read of the local state linearizable (ReadIndex: the leader confirms
/// its leadership with a quorum and waits until it applied up to the read index).
pub async fn linearizable(ctx: &ServiceContext) -> Result<(), ApiError> {
    ride_out_election(ctx).await;
    match ctx.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
        Ok(_) => Ok(()),
        Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => Err(not_leader(&f)),
        Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(e))) => {
            Err(ApiError::Unavailable(format!("no quorum: {e}")))
        }
        Err(RaftError::Fatal(f)) => Err(ApiError::Unavailable(format!("raft stopped: {f}"))),
    }
}
