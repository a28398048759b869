//! `Dispatcher.GetShardOutput`: what a shard printed, as its last ended run's tails kept in
//! the state, and where it runs now. Output may carry its tenant's secrets: read and submit
//! tokens read only their own tenant's jobs' output (another tenant's job is `NOT_FOUND`).

use super::error::ApiError;
use super::raft_access::{linearizable, not_leader_here};
use super::stream_right;
use super::visibility::Scope;
use super::ServiceContext;
use crate::domain::{ClusterState, JobId};
use crate::pb::api::{OutputChunk, ShardOutputReply};
use openraft::async_runtime::watch::WatchReceiver;

/// The reply for shard `shard` of `job_id`, for a caller who sees `scope`.
pub fn reply(
    state: &ClusterState,
    job_id: JobId,
    shard: u32,
    scope: &Scope,
) -> Result<ShardOutputReply, ApiError> {
    let job = scope.job(state, job_id)?;
    let current = job.shards.get(shard as usize).ok_or_else(|| {
        ApiError::NotFound(format!(
            "{job_id} has shards 0 to {}; there is no shard {shard}",
            job.shards.len().saturating_sub(1)
        ))
    })?;
    let taskmanager = current.taskmanager.clone().unwrap_or_default();
    let taskmanager_addr = state
        .taskmanager(&taskmanager)
        .map(|tm| tm.addr.clone())
        .unwrap_or_default();
    let mut reply = ShardOutputReply {
        job_id: job_id.to_string(),
        shard,
        state: current.state.as_str().to_string(),
        taskmanager,
        taskmanager_addr,
        epoch: current.epoch,
        ..ShardOutputReply::default()
    };
    if let Some(kept) = state.outputs.get(job_id, shard) {
        reply.kept = true;
        reply.kept_epoch = kept.epoch;
        let printed = &kept.printed;
        reply.stdout = printed.stdout.clone();
        reply.stderr = printed.stderr.clone();
        reply.stdout_cut = printed.stdout_cut;
        reply.stderr_cut = printed.stderr_cut;
        reply.stdout_len = printed.stdout_len;
        reply.stderr_len = printed.stderr_len;
    }
    Ok(reply)
}

/// A running shard's output as its agent sends it: `FollowShardOutput`.
pub type OutputStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<OutputChunk, tonic::Status>> + Send>>;

/// How often a follow checks that this replica still leads and the run still runs.
const FOLLOW_CHECK: std::time::Duration = std::time::Duration::from_millis(500);

/// The run a follow is about, while it runs.
fn live_run(state: &ClusterState, job_id: JobId, shard: u32) -> Option<(String, u64)> {
    let current = state.job(job_id)?.shards.get(shard as usize)?;
    if !current.state.holds_slots() {
        return None;
    }
    Some((current.taskmanager.clone()?, current.epoch))
}

/// Follow shard `shard` of `job_id` (on the leader): the stream ends when its run does, or
/// fails with `UNAVAILABLE` and the leader's address when this replica stops leading.
pub async fn follow(
    ctx: ServiceContext,
    job_id: JobId,
    shard: u32,
    scope: Scope,
    guard: stream_right::Guard,
) -> Result<OutputStream, ApiError> {
    linearizable(&ctx).await?;
    let run = {
        let applied = ctx.shared.read();
        // The same checks as reading the kept output: the job, the shard, the tenant.
        reply(&applied.state, job_id, shard, &scope)?;
        live_run(&applied.state, job_id, shard)
    };
    let Some((taskmanager, epoch)) = run else {
        return Ok(Box::pin(futures::stream::empty()));
    };
    let mut chunks = ctx
        .taps
        .subscribe(&taskmanager, (job_id, shard, epoch))
        .ok_or_else(|| {
            ApiError::Unavailable(format!(
                "TaskManager '{taskmanager}' already sends the output of as many runs as it may; \
                 try again when a follower leaves"
            ))
        })?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<OutputChunk, tonic::Status>>(16);
    tokio::spawn(async move {
        let mut check = tokio::time::interval(FOLLOW_CHECK);
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                chunk = chunks.recv() => match chunk {
                    Ok(chunk) => {
                        let ended = chunk.ended;
                        if tx.send(Ok(chunk)).await.is_err() || ended {
                            return;
                        }
                    }
                    // The follower was too slow: it skips what it missed (it sees the gap
                    // in the offsets).
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = check.tick() => {
                    let leads = ctx.raft.metrics().borrow_watched().current_leader == Some(ctx.node_id);
                    if !leads {
                        let _ = tx.send(Err(not_leader_here(&ctx).into())).await;
                        return;
                    }
                    let still = live_run(&ctx.shared.read().state, job_id, shard);
                    if still != Some((taskmanager.clone(), epoch)) {
                        return;
                    }
                }
            }
        }
    });
    let chunks = Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    Ok(stream_right::grpc(guard, chunks))
}
