//! `cluster downgrade`: the leader lowers the cluster version on purpose, and every member
//! leaves nothing on its data dir that a release of the lower version cannot read.
//!
//! 1. Alone against proposals of newer kinds (`VersionSurvey::proposals`), the leader checks
//!    that the state holds nothing the lower version cannot express (`fsm::needs_above`).
//! 2. Every member is told to hold at the lower version: it reports no newer one, so the
//!    leader does not raise the cluster straight back up. The hold is on the member's disk
//!    before it answers (`upgrade::hold_record`), so a restart of the same binary keeps it.
//!    A member that does not answer stops the downgrade before anything changed.
//! 3. `SetClusterVersion` down, through the log; from then on proposals of newer kinds are
//!    refused, and apply refuses any that raced in.
//! 4. Every member, once it applied that entry: a new log segment, a snapshot in the lower
//!    version's format, the log purged up to the new segment (`upgrade::compaction`). The
//!    reply says, per member, whether its data dir is ready for the older release.

use super::cluster_service::cluster_client_within;
use super::error::ApiError;
use super::raft_access::{busy, linearizable, not_leader_here, write_error};
use super::ServiceContext;
use crate::pb::api::{
    DowngradeReply, DowngradeRequest, DowngradedReplica, PrepareDowngradeReply,
    PrepareDowngradeRequest,
};
use crate::upgrade::compaction::compact_after;
use openraft::async_runtime::watch::WatchReceiver;
use std::time::Duration;

/// How long a member has to answer the hold.
const HOLD_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a member has to compact (it waits for applies, a snapshot and a purge).
const COMPACT_TIMEOUT: Duration = Duration::from_secs(90);

/// The leader's side (`Cluster.Downgrade`).
pub async fn downgrade(
    ctx: &ServiceContext,
    req: DowngradeRequest,
) -> Result<DowngradeReply, ApiError> {
    if ctx.raft.metrics().borrow_watched().state != openraft::ServerState::Leader {
        return Err(not_leader_here(ctx));
    }
    let members = crate::upgrade::survey::member_addresses(&ctx.raft);
    let alone = ctx.versions.alone().await.map_err(|_| busy())?;
    // The holds below change what members answer: the gate waits for the next round.
    ctx.versions.forget_round();
    if req.cancel {
        let holds = on_every_member(ctx, &members, 0, 0, HOLD_TIMEOUT).await;
        drop(alone);
        return Ok(DowngradeReply {
            cluster_version: ctx.shared.read().state.cluster_version.0,
            index: 0,
            replicas: holds,
        });
    }
    let max = crate::formats::MAX_CLUSTER_VERSION;
    if req.version == 0 || req.version > max {
        return Err(ApiError::InvalidArgument(format!(
            "cluster version {} does not exist here; this release runs in 1 to {max}",
            req.version
        )));
    }
    let version = crate::domain::ClusterVersion(req.version);
    // Everything earlier terms committed is applied here (a raise among it).
    linearizable(ctx).await?;
    let current = ctx.shared.read().state.cluster_version;
    if version > current {
        return Err(ApiError::FailedPrecondition(format!(
            "the cluster runs at version {current}; a downgrade only lowers it (the leader \
             raises it by itself once every replica reads the newer one)"
        )));
    }
    if let Some(what) = crate::fsm::needs_above(&ctx.shared.read().state, version) {
        return Err(ApiError::FailedPrecondition(format!(
            "cannot go down to cluster version {version}: {what}"
        )));
    }
    let holds = on_every_member(ctx, &members, version.0, 0, HOLD_TIMEOUT).await;
    if let Some(missing) = holds.iter().find(|r| !r.ready) {
        // Nothing lowered: let the others rise again.
        on_every_member(ctx, &members, 0, 0, HOLD_TIMEOUT).await;
        return Err(ApiError::FailedPrecondition(format!(
            "replica {} at {} did not take the hold ({}); every member must, so that the \
             version is not raised straight back: try again once it is up",
            missing.id, missing.addr, missing.error
        )));
    }
    let index = if version < current {
        let command = crate::fsm::Command::SetClusterVersion {
            version: version.0,
            now_ms: crate::clock::now_ms(),
        };
        let reply = ctx.raft.client_write(command).await.map_err(write_error)?;
        if let crate::fsm::Response::Rejected(why) = reply.data {
            return Err(ApiError::Rejected(why));
        }
        reply.log_id.index()
    } else {
        // Already there (a downgrade again, e.g. for a member that was down): compact only.
        ctx.shared
            .read()
            .last_applied
            .as_ref()
            .map_or(0, |l| l.index())
    };
    drop(alone);
    let replicas = on_every_member(ctx, &members, version.0, index, COMPACT_TIMEOUT).await;
    Ok(DowngradeReply {
        cluster_version: ctx.shared.read().state.cluster_version.0,
        index,
        replicas,
    })
}

/// A member's side (`Cluster.PrepareDowngrade`), also run by the leader for itself.
pub async fn prepare(
    ctx: &ServiceContext,
    req: PrepareDowngradeRequest,
) -> Result<PrepareDowngradeReply, ApiError> {
    if req.version > crate::formats::MAX_CLUSTER_VERSION {
        return Err(ApiError::InvalidArgument(format!(
            "cluster version {} is newer than this release runs in",
            req.version
        )));
    }
    // The record is written and synced off the async workers.
    let versions = ctx.versions.clone();
    let version = req.version;
    let held = tokio::task::spawn_blocking(move || versions.hold_at(version))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    held.map_err(|e| {
        ApiError::Unavailable(format!(
            "cannot record the hold on this replica's data dir: {e}; free or fix the disk and \
             try again"
        ))
    })?;
    if req.after_index == 0 {
        return Ok(PrepareDowngradeReply::default());
    }
    let snapshot_index = compact_after(&ctx.raft, &ctx.shared, &ctx.wal, req)
        .await
        .map_err(|e| ApiError::Unavailable(format!("not ready for the older release: {e}")))?;
    tracing::info!(
        version = req.version,
        snapshot_index,
        "downgrade: the data dir holds only what the version reads"
    );
    Ok(PrepareDowngradeReply {
        snapshot_index,
        note: String::new(),
    })
}

/// `PrepareDowngrade` on every member at once (this replica directly), within `timeout`.
async fn on_every_member(
    ctx: &ServiceContext,
    members: &[(u64, String)],
    version: u32,
    after_index: u64,
    timeout: Duration,
) -> Vec<DowngradedReplica> {
    let req = PrepareDowngradeRequest {
        version,
        after_index,
    };
    let asked = members.iter().map(|(id, addr)| async move {
        let answer = if *id == ctx.node_id {
            prepare(ctx, req).await.map_err(|e| e.to_string())
        } else {
            ask(ctx, addr, req, timeout).await
        };
        let (ready, error, reply) = match answer {
            Ok(reply) => (true, String::new(), reply),
            Err(error) => (false, error, PrepareDowngradeReply::default()),
        };
        DowngradedReplica {
            id: *id,
            addr: addr.clone(),
            ready,
            error,
            snapshot_index: reply.snapshot_index,
            note: reply.note,
        }
    });
    futures::future::join_all(asked).await
}

async fn ask(
    ctx: &ServiceContext,
    addr: &str,
    req: PrepareDowngradeRequest,
    timeout: Duration,
) -> Result<PrepareDowngradeReply, String> {
    let mut client = cluster_client_within(&ctx.transport, addr, HOLD_TIMEOUT, timeout)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    match tokio::time::timeout(timeout, client.prepare_downgrade(req)).await {
        Ok(Ok(reply)) => Ok(reply.into_inner()),
        // A replica of a release before downgrades: it runs on its data dir already.
        Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
            Ok(PrepareDowngradeReply {
                snapshot_index: 0,
                note: "runs an older release already".into(),
            })
        }
        Ok(Err(status)) => Err(status.message().to_string()),
        Err(_) => Err(format!("no answer within {} s", timeout.as_secs())),
    }
}
