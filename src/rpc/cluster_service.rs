//! Cluster status and membership changes.
//!
//! `Status` without `local` is answered by the leader (linearizably); with `local` any replica
//! answers from its own view and adds its state digest. Membership changes run on the leader:
//! a new replica joins as a learner, catches up, then becomes a voter.

use super::access::{caller, Caller};
use super::error::ApiError;
use super::raft_access::{await_leader, known_leader, linearizable, not_leader_here, write_error};
use super::ServiceContext;
use crate::fsm::validate_address;
use crate::pb::api::cluster_client::ClusterClient;
use crate::pb::api::cluster_server::Cluster;
use crate::pb::api::*;
use crate::raft::{GateState, Node, RaftMetrics, TypeConfig};
use crate::security::Transport;
use crate::upgrade::survey::ask_members;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::{ChangeMembers, Instant as _, ServerState};
use std::collections::BTreeSet;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// A follower the leader has not heard from for this long is shown as `unreachable`.
const UNREACHABLE_AFTER: Duration = Duration::from_millis(1500);
/// How long transfer-leader waits for the new leader to take over.
const TRANSFER_WAIT: Duration = Duration::from_secs(5);
/// How long `cluster add` retries a promotion that raced another membership change.
const MEMBERSHIP_RETRY: Duration = Duration::from_secs(10);
/// How long a requested snapshot may take to build.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(120);

pub struct ClusterService {
    ctx: ServiceContext,
}

impl ClusterService {
    pub fn new(ctx: ServiceContext) -> Self {
        ClusterService { ctx }
    }

    fn metrics(&self) -> RaftMetrics {
        self.ctx.raft.metrics().borrow_watched().clone()
    }
}

/// The longest a `Leader` call waits for a new leader to be known.
const LEADER_WAIT_MAX_MS: u64 = 2_000;

fn last_election(ctx: &ServiceContext) -> Option<LastElection> {
    let won = ctx.election_timeline.last_won();
    Some(LastElection {
        term: won.term,
        campaign_started_us: won.campaign_started_us?,
        won_us: won.won_us?,
        first_commit_us: won.first_commit_us,
    })
}

fn server_state_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Learner => "learner",
        ServerState::Candidate => "candidate",
        ServerState::Shutdown => "shutdown",
    }
}

/// The members as the given metrics see them, with roles.
pub fn members(metrics: &RaftMetrics) -> Vec<Member> {
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let i_lead = metrics.state == ServerState::Leader;
    membership
        .nodes()
        .map(|(id, node)| {
            let reachable = if !i_lead || *id == metrics.id {
                true
            } else {
                metrics
                    .heartbeat
                    .as_ref()
                    .and_then(|h| h.get(id).cloned().flatten())
                    .is_some_and(|at| at.elapsed() < UNREACHABLE_AFTER)
            };
            let role = if metrics.current_leader == Some(*id) {
                "leader"
            } else if !reachable {
                "unreachable"
            } else if voters.contains(id) {
                "follower"
            } else {
                "learner"
            };
            let matched_index = metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map(|l| l.index());
            Member {
                id: *id,
                addr: node.addr.clone(),
                role: role.to_string(),
                matched_index,
                version: None,
                max_cluster_version: None,
            }
        })
        .collect()
}

/// A client of the replica at `addr` on a fresh connection, every call bounded by `timeout`.
pub(super) async fn cluster_client(
    transport: &Transport,
    addr: &str,
    timeout: Duration,
) -> Option<ClusterClient<tonic::transport::Channel>> {
    cluster_client_within(transport, addr, timeout, timeout)
        .await
        .ok()
}

/// `cluster_client` with a connect deadline of its own (a call that may take long must
/// still find out soon that nobody is there).
pub(super) async fn cluster_client_within(
    transport: &Transport,
    addr: &str,
    connect: Duration,
    call: Duration,
) -> Result<ClusterClient<tonic::transport::Channel>, crate::security::SecurityError> {
    let channel = transport
        .connect(
            addr,
            |endpoint| endpoint.connect_timeout(connect).timeout(call),
            None,
        )
        .await?;
    Ok(ClusterClient::new(channel))
}

/// One replica's own view (`Cluster.Status`, local), straight from `addr`, on a fresh
/// connection; `None` if it does not answer within `timeout`.
pub async fn local_status_of(
    transport: &Transport,
    addr: &str,
    timeout: Duration,
) -> Option<ClusterStatusReply> {
    let reply = cluster_client(transport, addr, timeout)
        .await?
        .status(ClusterStatusRequest { local: true })
        .await
        .ok()?;
    Some(reply.into_inner())
}

/// Wait (a bounded while) until a newly promoted replica has seen its promotion and opened
/// its Raft gate, so that `cluster add` returns with a replica that votes.
async fn wait_until_votes(transport: &Transport, addr: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let status = local_status_of(transport, addr, Duration::from_millis(500)).await;
        if status.is_some_and(|s| s.raft_gate == GateState::Open.name()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::warn!("replica at {addr} is a voter but has not opened its Raft gate yet");
}

/// openraft refused a change because another one is under way or just happened.
fn is_concurrent_change(
    err: &openraft::errors::RaftError<TypeConfig, openraft::errors::ClientWriteError<TypeConfig>>,
) -> bool {
    use openraft::errors::{ChangeMembershipError, ClientWriteError, RaftError};
    matches!(
        err,
        RaftError::APIError(ClientWriteError::PreconditionFailed(_))
            | RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(_)
            ))
    )
}

/// Pieces a backup is streamed in.
const BACKUP_CHUNK_BYTES: usize = 1024 * 1024;

pub type BackupStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<BackupChunk, Status>> + Send>>;

/// A replica's release and newest cluster version, straight from `addr`; `None` if it does
/// not answer within `timeout`.
pub async fn version_of(transport: &Transport, addr: &str, timeout: Duration) -> Option<PingReply> {
    let reply = cluster_client(transport, addr, timeout)
        .await?
        .ping(PingRequest {})
        .await
        .ok()?;
    Some(reply.into_inner())
}

impl ClusterService {
    /// Each member's release and newest cluster version, asked of it now (all at once, each
    /// within `upgrade::survey::PING_TIMEOUT`; this replica answers for itself).
    async fn fill_versions(&self, members: &mut [Member]) {
        let asked = members.iter().map(|m| (m.id, m.addr.clone())).collect();
        let round = ask_members(
            &self.ctx.transport,
            self.ctx.node_id,
            &self.ctx.versions,
            asked,
        )
        .await;
        for member in members.iter_mut() {
            if let Some((release, max)) =
                round.members.get(&member.id).and_then(|m| m.answer.clone())
            {
                member.version = Some(release);
                member.max_cluster_version = Some(max);
            }
        }
    }

    /// A replica whose release does not run in the cluster version could not read the log:
    /// refused before it becomes a member. One that does not answer yet is let in (it may be
    /// started after it is added); it stops with what to do if it is too old.
    async fn refuse_an_older_release(&self, req: &AddMemberRequest) -> Result<(), ApiError> {
        let current = self.ctx.shared.read().state.cluster_version.0;
        if current <= 1 {
            return Ok(());
        }
        let Some(ping) = version_of(
            &self.ctx.transport,
            &req.addr,
            crate::upgrade::survey::PING_TIMEOUT,
        )
        .await
        else {
            return Ok(());
        };
        if ping.max_cluster_version.max(1) >= current {
            return Ok(());
        }
        Err(ApiError::FailedPrecondition(format!(
            "replica {} at {} runs release {}, which runs in cluster versions up to {}, and the \
             cluster runs at {current}: start it on the release the other replicas run",
            req.id,
            req.addr,
            if ping.version.is_empty() {
                "unknown"
            } else {
                &ping.version
            },
            ping.max_cluster_version.max(1)
        )))
    }

    /// Build a snapshot now, wait until it covers what was applied when asked, and return it.
    async fn build_snapshot(&self) -> Result<crate::raft::Snapshot, ApiError> {
        let applied = self.metrics().last_applied.map(|l| l.index()).unwrap_or(0);
        let stopped =
            |e: &dyn std::fmt::Display| ApiError::Unavailable(format!("raft stopped: {e}"));
        self.ctx
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| stopped(&e))?;
        self.ctx
            .raft
            .wait(Some(SNAPSHOT_WAIT))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index() >= applied),
                "snapshot built",
            )
            .await
            .map_err(|e| ApiError::Unavailable(format!("snapshot not built in time: {e}")))?;
        self.ctx
            .raft
            .get_snapshot()
            .await
            .map_err(|e| stopped(&e))?
            .ok_or_else(|| ApiError::Unavailable("no snapshot after building one".into()))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(
        &self,
        request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusReply>, Status> {
        let local = request.get_ref().local;
        if !local {
            linearizable(&self.ctx).await?;
        }
        let metrics = self.metrics();
        let (last_applied, digest, cluster_version) = {
            let applied = self.ctx.shared.read();
            let index = applied
                .last_applied
                .as_ref()
                .map(|l| l.index())
                .unwrap_or(0);
            let digest = local.then(|| applied.state.digest().to_string());
            (index, digest, applied.state.cluster_version.0)
        };
        let initialized = metrics
            .membership_config
            .membership()
            .nodes()
            .next()
            .is_some();
        let mut members = members(&metrics);
        if !local {
            self.fill_versions(&mut members).await;
        }
        Ok(Response::new(ClusterStatusReply {
            leader_id: metrics.current_leader,
            term: metrics.current_term,
            last_applied,
            members,
            node_id: self.ctx.node_id,
            state_digest: digest.unwrap_or_default(),
            committed: metrics.local_committed.map(|l| l.index()).unwrap_or(0),
            last_log_index: metrics.last_log_index.unwrap_or(0),
            snapshot_index: metrics.snapshot.map(|l| l.index()),
            purged_index: metrics.purged.map(|l| l.index()),
            server_state: server_state_name(metrics.state).to_string(),
            initialized,
            raft_gate: self.ctx.gate.get().name().to_string(),
            has_history: metrics.current_term > 0 || metrics.last_log_index.is_some(),
            peer_troubles: if local {
                self.ctx
                    .peer_troubles
                    .current()
                    .into_iter()
                    .map(|t| PeerTrouble {
                        id: t.id,
                        addr: t.addr,
                        error: t.error,
                        since_ms: t.since_ms,
                    })
                    .collect()
            } else {
                Vec::new()
            },
            cluster_version: Some(cluster_version),
            last_election: last_election(&self.ctx),
            max_cluster_version: self.ctx.versions.max_cluster_version(),
            held_at_version: self.ctx.versions.held_at(),
        }))
    }

    async fn downgrade(
        &self,
        request: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeReply>, Status> {
        let reply = super::downgrade::downgrade(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(reply))
    }

    async fn prepare_downgrade(
        &self,
        request: Request<PrepareDowngradeRequest>,
    ) -> Result<Response<PrepareDowngradeReply>, Status> {
        let reply = super::downgrade::prepare(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(reply))
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderReply>, Status> {
        let request = request.into_inner();
        let (leader_id, leader_addr) = if request.wait_ms > 0 {
            let wait = Duration::from_millis(u64::from(request.wait_ms).min(LEADER_WAIT_MAX_MS));
            await_leader(&self.ctx, request.not_leader, wait).await
        } else {
            known_leader(&self.ctx)
        };
        Ok(Response::new(LeaderReply {
            node_id: self.ctx.node_id,
            leader_id,
            leader_addr,
        }))
    }

    async fn ping(&self, _request: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        Ok(Response::new(PingReply {
            node_id: self.ctx.node_id,
            version: crate::formats::release().to_string(),
            max_cluster_version: self.ctx.versions.max_cluster_version(),
            held_at_version: self.ctx.versions.held_at(),
        }))
    }

    async fn snapshot(
        &self,
        _request: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotReply>, Status> {
        let snapshot = self.build_snapshot().await?;
        Ok(Response::new(SnapshotReply {
            snapshot_index: snapshot.meta.last_log_id.map(|l| l.index()).unwrap_or(0),
            size_bytes: snapshot.snapshot.len() as u64,
        }))
    }

    type BackupStream = BackupStream;

    async fn backup(
        &self,
        _request: Request<BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let snapshot = self.build_snapshot().await?;
        let file = crate::raft::backup::encode_backup(&snapshot.meta, &snapshot.snapshot)
            .map_err(|e| ApiError::Internal(format!("cannot encode the backup: {e}")))?;
        let chunks: Vec<Result<BackupChunk, Status>> = file
            .chunks(BACKUP_CHUNK_BYTES)
            .map(|c| Ok(BackupChunk { data: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn add_member(
        &self,
        request: Request<AddMemberRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let req = request.into_inner();
        validate_address(&req.addr).map_err(ApiError::from)?;
        if req.id == 0 {
            return Err(ApiError::InvalidArgument("replica ids start at 1".into()).into());
        }
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        if let Some(existing) = membership.get_node(&req.id) {
            if existing.addr != req.addr {
                return Err(ApiError::FailedPrecondition(format!(
                    "replica {} is already a member at {}; remove it first to move it",
                    req.id, existing.addr
                ))
                .into());
            }
        }
        // No raise between the check of the new member's release and its joining: the raise
        // loop's round of pings, taken alone, sees the member.
        let _no_raise = self
            .ctx
            .versions
            .shared()
            .await
            .map_err(|_| super::raft_access::busy())?;
        self.refuse_an_older_release(&req).await?;
        let node = Node {
            addr: req.addr.clone(),
        };
        // The new replica's own rejoin prompt may change the membership too (it asks the
        // leader to promote it once caught up), and openraft refuses a change while another
        // is under way: check where things stand and try again.
        let deadline = std::time::Instant::now() + MEMBERSHIP_RETRY;
        loop {
            let committed = self.metrics().committed_membership_config.clone();
            if committed.membership().get_node(&req.id).is_some() {
                break;
            }
            match self.ctx.raft.add_learner(req.id, node.clone(), true).await {
                Ok(_) => break,
                Err(e) if std::time::Instant::now() < deadline && is_concurrent_change(&e) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(write_error(e).into()),
            }
        }
        loop {
            let committed = self.metrics().committed_membership_config.clone();
            let configs = committed.membership().get_joint_config();
            if configs.len() == 1 && configs[0].contains(&req.id) {
                break;
            }
            let change = ChangeMembers::AddVoterIds(BTreeSet::from([req.id]));
            match self.ctx.raft.change_membership(change, false).await {
                Ok(_) => break,
                Err(e) if std::time::Instant::now() < deadline && is_concurrent_change(&e) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(write_error(e).into()),
            }
        }
        wait_until_votes(&self.ctx.transport, &req.addr).await;
        Ok(Response::new(MembershipReply {
            members: members(&self.metrics()),
        }))
    }

    async fn remove_member(
        &self,
        request: Request<RemoveMemberRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let id = request.into_inner().id;
        let metrics = self.metrics();
        if metrics.state != ServerState::Leader {
            return Err(not_leader_here(&self.ctx).into());
        }
        let membership = metrics.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Err(ApiError::NotFound(format!(
                "replica {id} is not a member; see `dispatcher cluster status`"
            ))
            .into());
        }
        let is_voter = membership.voter_ids().any(|v| v == id);
        let change = if is_voter {
            let remaining = membership.voter_ids().filter(|v| *v != id).count();
            if remaining == 0 {
                return Err(
                    ApiError::FailedPrecondition("cannot remove the last voter".into()).into(),
                );
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        // A change just made (a leader that removed itself, a member just added) may still be
        // in its joint phase: wait for it, as adding does, rather than refuse.
        let deadline = std::time::Instant::now() + MEMBERSHIP_RETRY;
        loop {
            match self.ctx.raft.change_membership(change.clone(), false).await {
                Ok(_) => break,
                Err(e) if std::time::Instant::now() < deadline && is_concurrent_change(&e) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(write_error(e).into()),
            }
        }
        Ok(Response::new(MembershipReply {
            members: members(&self.metrics()),
        }))
    }

    async fn rejoin(
        &self,
        request: Request<RejoinRequest>,
    ) -> Result<Response<RejoinReply>, Status> {
        // A replica asks only for itself: another replica's certificate cannot demote or
        // restore a voter.
        match caller(&request)? {
            Caller::Anyone => {}
            Caller::Replica(id) if id == request.get_ref().id => {}
            other => {
                return Err(ApiError::PermissionDenied(format!(
                    "{other:?} may not rejoin on behalf of replica {}",
                    request.get_ref().id
                ))
                .into())
            }
        }
        let reply = super::rejoin::handle(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(reply))
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let to = request.into_inner().id;
        let metrics = self.metrics();
        if metrics.state != ServerState::Leader {
            return Err(not_leader_here(&self.ctx).into());
        }
        if !metrics
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == to)
        {
            return Err(ApiError::NotFound(format!(
                "replica {to} is not a voter; leadership can only go to a voter"
            ))
            .into());
        }
        if to != self.ctx.node_id {
            self.ctx
                .raft
                .trigger()
                .transfer_leader(to)
                .await
                .map_err(|e| ApiError::Unavailable(e.to_string()))?;
            let mut rx = self.ctx.raft.metrics();
            let waited = tokio::time::timeout(TRANSFER_WAIT, async {
                loop {
                    if rx.borrow_watched().current_leader == Some(to) {
                        return;
                    }
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            })
            .await;
            if waited.is_err() {
                return Err(ApiError::Unavailable(format!(
                    "replica {to} did not take over within {TRANSFER_WAIT:?}; check `dispatcher cluster status`"
                ))
                .into());
            }
        }
        Ok(Response::new(MembershipReply {
            members: members(&self.metrics()),
        }))
    }
}
