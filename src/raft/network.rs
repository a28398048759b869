//! Outbound Raft RPCs over tonic: one lazily connected channel per peer, shared by the
//! replication, heartbeat and snapshot clients; a deadline on every call; openraft's
//! messages encoded with bincode inside a bytes field. Snapshots are streamed in chunks.

use super::append_stream::AppendAnswer;
use super::heartbeat_lane::HeartbeatLane;
use super::types::{Node, NodeId, Snapshot, TypeConfig, Vote};
use crate::pb::raft::raft_service_client::RaftServiceClient;
use crate::pb::raft::{RaftPayload, SnapshotChunk};
use crate::raft::election_timeline::ElectionTimeline;
use crate::raft::peer_troubles::PeerTroubles;
use crate::security::Transport;
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{stream_append_sequential, RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkV2};

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::Channel;

/// Largest message on the Raft service, both ways. A full AppendEntries batch of maximal
/// job specs (300 × 256 KiB) fits with room to spare; snapshots are chunked anyway.
pub const RAFT_MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// Size of one snapshot chunk on the wire.
const SNAPSHOT_CHUNK_BYTES: usize = 4 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

/// The wire encoding of Raft messages (tests craft messages with it).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| e.to_string())
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    crate::decode::decode_untrusted(bytes).map_err(|e| e.to_string())
}

/// Creates per-peer clients; keeps one channel per peer address for the process lifetime.
#[derive(Clone)]
pub struct GrpcNetworkFactory {
    channels: Arc<Mutex<HashMap<(NodeId, String), Channel>>>,
    /// Dial peers from this address (the one the replica listens on), so that a peer, a
    /// firewall or a fault proxy sees which replica is calling.
    source_ip: Option<IpAddr>,
    /// Mutual TLS with this replica's certificate (plaintext only with `--insecure`).
    transport: Transport,
    /// Why each unreachable peer is unreachable.
    troubles: Arc<PeerTroubles>,
    /// The certificate generation the cached channels were opened with.
    generation: Arc<std::sync::atomic::AtomicU64>,
    /// Told when a campaign sends its requests (for the failover breakdown).
    timeline: Arc<ElectionTimeline>,
    /// AppendEntries batches in flight per follower (`append_stream`).
    pub(super) append_pipeline: usize,
    /// When each peer last refused the append stream (a release without it). Kept here, not
    /// in a `PeerClient`: openraft makes a new client after an error.
    pub(super) stream_refused: Arc<Mutex<HashMap<NodeId, std::time::Instant>>>,
}

impl GrpcNetworkFactory {
    pub fn new(
        source_ip: Option<IpAddr>,
        transport: Transport,
        troubles: Arc<PeerTroubles>,
        timeline: Arc<ElectionTimeline>,
        append_pipeline: usize,
    ) -> Self {
        GrpcNetworkFactory {
            channels: Arc::default(),
            source_ip,
            transport,
            troubles,
            generation: Arc::default(),
            timeline,
            append_pipeline,
            stream_refused: Arc::default(),
        }
    }
    /// The generation of this replica's certificate (a rotation raises it).
    pub(super) fn transport_generation(&self) -> u64 {
        self.transport.generation()
    }

    fn channel(&self, target: NodeId, addr: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let generation = self.transport.generation();
        if self
            .generation
            .swap(generation, std::sync::atomic::Ordering::AcqRel)
            != generation
        {
            // A rotated certificate: new connections present it to the peers.
            channels.clear();
        }
        if let Some(ch) = channels.get(&(target, addr.to_string())) {
            return Ok(ch.clone());
        }
        let ch = self
            .transport
            .channel(
                addr,
                |endpoint| {
                    endpoint
                        .connect_timeout(CONNECT_TIMEOUT)
                        .tcp_nodelay(true)
                        .http2_keep_alive_interval(Duration::from_secs(5))
                        .keep_alive_timeout(Duration::from_secs(5))
                },
                self.source_ip,
            )
            .map_err(|e| e.to_string())?;
        channels.insert((target, addr.to_string()), ch.clone());
        Ok(ch)
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Self::Network {
        let client = self.raft_client(target, &node.addr);
        if let Err(e) = &client {
            self.troubles.failed(target, &node.addr, e);
        }
        PeerClient {
            target,
            addr: node.addr.clone(),
            client,
            troubles: self.troubles.clone(),
            generation: self.transport.generation(),
            factory: self.clone(),
            heartbeat: None,
        }
    }

    /// A client whose heartbeats share one long-lived stream (`heartbeat_lane`).
    async fn new_heartbeat_client(&mut self, target: NodeId, node: &Node) -> Self::Network {
        let mut client = self.new_client(target, node).await;
        client.heartbeat = Some(HeartbeatLane::default());
        client
    }
}

impl GrpcNetworkFactory {
    fn raft_client(
        &self,
        target: NodeId,
        addr: &str,
    ) -> Result<RaftServiceClient<Channel>, String> {
        self.channel(target, addr).map(|ch| {
            RaftServiceClient::new(ch)
                .max_decoding_message_size(RAFT_MAX_MESSAGE_BYTES)
                .max_encoding_message_size(RAFT_MAX_MESSAGE_BYTES)
        })
    }
}

/// Raft RPCs to one peer.
pub struct PeerClient {
    pub(super) target: NodeId,
    pub(super) addr: String,
    client: Result<RaftServiceClient<Channel>, String>,
    pub(super) troubles: Arc<PeerTroubles>,
    /// The certificate generation `client` was opened with; a newer one gets a new channel.
    generation: u64,
    pub(super) factory: GrpcNetworkFactory,
    /// `Some` for the heartbeat client: its heartbeats go down one stream kept open.
    pub(super) heartbeat: Option<HeartbeatLane>,
}

pub(super) fn unreachable(msg: String) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(&TransportError(msg)))
}

pub(super) fn network(msg: String) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&TransportError(msg)))
}

pub(super) fn status_to_rpc_error(
    target: NodeId,
    addr: &str,
    status: tonic::Status,
) -> RPCError<TypeConfig> {
    let msg = format!("raft rpc to {target} at {addr}: {status}");
    match status.code() {
        tonic::Code::Unavailable => unreachable(msg),
        _ => network(msg),
    }
}

/// What went wrong with a call, with the causes a status carries (a refused handshake says
/// why only in its source chain).
pub(super) fn why_failed(status: &tonic::Status) -> String {
    // The message, then each cause that says something new.
    let mut parts: Vec<String> = vec![status.message().to_string()];
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.retain(|p| !text.contains(p.as_str()));
            parts.push(text);
        }
        source = cause.source();
    }
    let chain = parts.join(": ");
    match status.code() {
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
            format!("the peer refused this replica: {chain}")
        }
        tonic::Code::DeadlineExceeded => format!("no answer in time: {chain}"),
        _ => chain,
    }
}

/// Shortest deadline of one AppendEntries call (see `append_entries`).
pub(super) const APPEND_DEADLINE_FLOOR: Duration = Duration::from_secs(1);

impl PeerClient {
    pub(super) fn client(&self) -> Result<RaftServiceClient<Channel>, RPCError<TypeConfig>> {
        if self.factory.transport.generation() != self.generation {
            return self
                .factory
                .raft_client(self.target, &self.addr)
                .map_err(unreachable);
        }
        self.client.clone().map_err(unreachable)
    }

    /// Encode `req`, call `rpc` with a deadline, decode the reply. The server answers
    /// `Result<Resp, String>`: `Err` is a fatal error on the remote replica.
    async fn unary<Req, Resp, F, Fut>(
        &self,
        req: &Req,
        timeout: Duration,
        rpc: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: FnOnce(RaftServiceClient<Channel>, tonic::Request<RaftPayload>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftPayload>, tonic::Status>>,
    {
        let data = encode(req).map_err(network)?;
        let mut request = tonic::Request::new(RaftPayload { data });
        request.set_timeout(timeout);
        let reply = rpc(self.client()?, request).await.map_err(|status| {
            self.troubles
                .failed(self.target, &self.addr, &why_failed(&status));
            status_to_rpc_error(self.target, &self.addr, status)
        })?;
        self.troubles.answered(self.target);
        let result: Result<Resp, String> = decode(&reply.into_inner().data).map_err(network)?;
        result.map_err(|remote| unreachable(format!("replica {} failed: {remote}", self.target)))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        // openraft gives replication the heartbeat interval (30 ms) as its deadline. A large
        // batch, or a follower with a slow disk, can need longer than that every time, and
        // would then never replicate; so appends get at least `APPEND_DEADLINE_FLOOR`.
        let deadline = option.hard_ttl().max(APPEND_DEADLINE_FLOOR);
        self.unary(&rpc, deadline, |mut c, r| async move {
            c.append_entries(r).await
        })
        .await
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, AppendAnswer>, RPCError<TypeConfig>>>
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>>
            + OptionalSend
            + Unpin
            + 'static,
    {
        // A peer on a release without the stream gets unary calls, one at a time, for a while.
        if self.stream_refused_recently() {
            stream_append_sequential(self, input, option)
        } else if self.heartbeat.is_some() {
            self.heartbeat_append(input, option)
        } else {
            self.append_stream(input, option)
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.factory.timeline.campaigning();
        self.unary(&rpc, option.hard_ttl(), |mut c, r| async move {
            c.vote(r).await
        })
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.factory.timeline.campaigning();
        self.unary(&rpc, option.hard_ttl(), |mut c, r| async move {
            c.pre_vote(r).await
        })
        .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(&req, option.hard_ttl(), |mut c, r| async move {
            c.transfer_leader(r).await
        })
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let to_streaming = |e: RPCError<TypeConfig>| match e {
            RPCError::Unreachable(u) => StreamingError::Unreachable(u),
            RPCError::Network(n) => StreamingError::Network(n),
            RPCError::Timeout(t) => StreamingError::Timeout(t),
            RPCError::RemoteError(r) => {
                StreamingError::Network(NetworkError::new(&TransportError(r.to_string())))
            }
        };
        let header =
            encode(&(vote, snapshot.meta.clone())).map_err(|e| to_streaming(network(e)))?;
        let data = snapshot.snapshot;
        let mut chunks = Vec::with_capacity(data.len() / SNAPSHOT_CHUNK_BYTES + 1);
        chunks.push(SnapshotChunk {
            header,
            data: Vec::new(),
        });
        chunks.extend(data.chunks(SNAPSHOT_CHUNK_BYTES).map(|c| SnapshotChunk {
            header: Vec::new(),
            data: c.to_vec(),
        }));
        let mut request = tonic::Request::new(futures::stream::iter(chunks));
        request.set_timeout(option.hard_ttl());
        let mut client = self.client().map_err(to_streaming)?;
        let (target, addr) = (self.target, self.addr.clone());
        let call = async move {
            let reply = client
                .install_snapshot(request)
                .await
                .map_err(|s| status_to_rpc_error(target, &addr, s))?;
            let result: Result<SnapshotResponse<TypeConfig>, String> =
                decode(&reply.into_inner().data).map_err(network)?;
            result.map_err(|remote| unreachable(format!("replica {target} failed: {remote}")))
        };
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = call => result.map_err(to_streaming),
        }
    }
}
