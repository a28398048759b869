//! The leader-following client used by the CLI, TaskManagers, tests and benchmarks.
//!
//! Give it every replica's address. Each call goes to the replica it last found leading; a
//! follower's `UNAVAILABLE` answer carries the leader's address (`x-leader-addr`), which the
//! client follows at once; with no hint, or when a replica does not answer, it tries the next
//! address with a short growing pause, until the call's overall deadline. Submissions always
//! carry an idempotency key (one is made up if the caller gave none), so retrying a
//! submission whose outcome was unknown cannot create a second job.

use crate::pb::api::access_client::AccessClient;
use crate::pb::api::cluster_client::ClusterClient;
use crate::pb::api::dispatcher_client::DispatcherClient;
use crate::pb::api::*;
use crate::rpc::LEADER_ADDR_HEADER;
use crate::security::Credentials;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

mod discovery;
mod periodic;

/// A channel to one replica that adds the caller's token to every request.
pub type ClientChannel = InterceptedService<Channel, TokenHeader>;

/// Puts `authorization: Bearer <token>` on every request (nothing without a token).
#[derive(Clone)]
pub struct TokenHeader(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for TokenHeader {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no endpoints given; pass --endpoints host:port[,host:port...] or set DISPATCHER_ENDPOINTS"
    )]
    NoEndpoints,
    #[error("endpoint '{0}' is not host:port")]
    BadEndpoint(String),
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
    /// The cluster answered and refused the request.
    #[error("{}", refusal_text(.0))]
    Rejected(Status),
    /// No leader answered within the deadline.
    #[error("no leader reachable within {waited:?} (tried {endpoints}): {last}")]
    Unavailable {
        waited: Duration,
        endpoints: String,
        last: String,
    },
}

/// A refusal's message; a replica of an older release does not know a newer request at all
/// and says nothing, so say what that means.
fn refusal_text(status: &Status) -> String {
    if status.code() == Code::Unimplemented && status.message().is_empty() {
        return "the replica that answered does not know this request: it runs an older \
                release (see `dispatcher cluster status`); every replica must be upgraded \
                before it can be used"
            .to_string();
    }
    status.message().to_string()
}

impl ClientError {
    /// The gRPC code of a refusal, if the cluster refused.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Rejected(s) => Some(s.code()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Deadline of one RPC attempt.
    pub rpc_timeout: Duration,
    /// Deadline of a whole call, retries included.
    pub call_timeout: Duration,
    /// Dial from this local address (multi-homed hosts; fault injection by source address).
    pub source_ip: Option<std::net::IpAddr>,
    /// TLS or plaintext, and the token sent with each call.
    pub credentials: Credentials,
}

impl ClientOptions {
    /// How long a client without a known leader waits for the first replica to say where
    /// the leader is (all are asked at once; `discovery`): a second, or one attempt's
    /// deadline if shorter.
    pub fn discovery_timeout(&self) -> Duration {
        Duration::from_secs(1).min(self.rpc_timeout)
    }

    /// The usual deadlines (5 s per attempt, 30 s per call) with these credentials.
    pub fn new(credentials: Credentials) -> Self {
        ClientOptions {
            rpc_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(30),
            source_ip: None,
            credentials,
        }
    }
}

struct Routing {
    /// Address that answered as leader last time (or the leader's hint).
    preferred: Option<String>,
    /// Next endpoint to try when there is no preferred one.
    next: usize,
    channels: HashMap<String, Channel>,
    /// Replica ids by address, as replicas said (`discovery`).
    ids: HashMap<String, u64>,
    /// The certificate generation the channels were opened with.
    generation: u64,
}

pub struct Client {
    endpoints: Vec<String>,
    options: ClientOptions,
    token_header: TokenHeader,
    routing: Mutex<Routing>,
}

/// A fresh idempotency key, unique per process and call.
pub fn new_idempotency_key() -> String {
    let bytes = crate::entropy::fresh_bytes(b"idempotency-key");
    let hex: String = bytes[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("auto-{hex}")
}

fn leader_hint(status: &Status) -> Option<String> {
    status
        .metadata()
        .get(LEADER_ADDR_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The replica did not answer at all: the connection failed (the error is this side's
/// transport's, not a status the replica sent) or no answer came in time.
fn went_silent(status: &Status) -> bool {
    std::error::Error::source(status).is_some() || status.code() == Code::DeadlineExceeded
}

/// Codes after which another replica (or the same one a moment later) may succeed.
fn is_retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Aborted
    )
}

impl Client {
    pub fn new(endpoints: Vec<String>, credentials: Credentials) -> Result<Self, ClientError> {
        Self::with_options(endpoints, ClientOptions::new(credentials))
    }

    pub fn with_options(
        endpoints: Vec<String>,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        for e in &endpoints {
            crate::fsm::validate_address(e).map_err(|_| ClientError::BadEndpoint(e.clone()))?;
        }
        let token_header = TokenHeader(match &options.credentials.token {
            Some(_)
                if matches!(
                    options.credentials.transport,
                    crate::security::Transport::Plain
                ) =>
            {
                // Anyone on the path would read it, and could use it against a secure cluster.
                return Err(crate::security::SecurityError::Token(
                    "a token is set (--token or DISPATCHER_TOKEN) but --insecure sends everything \
                     in cleartext: it is not sent. Unset the token, or use --tls-dir instead of \
                     --insecure"
                        .into(),
                )
                .into());
            }
            Some(secret) => {
                let mut value: MetadataValue<Ascii> = secret.bearer().parse().map_err(|_| {
                    crate::security::SecurityError::Token(
                        "the token cannot be sent as a header".into(),
                    )
                })?;
                // Kept out of HPACK's table and out of Debug output.
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        });
        Ok(Client {
            endpoints,
            options,
            token_header,
            routing: Mutex::new(Routing {
                preferred: None,
                next: 0,
                channels: HashMap::new(),
                ids: HashMap::new(),
                generation: 0,
            }),
        })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Routing> {
        self.routing.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn channel_for(&self, addr: &str) -> Result<ClientChannel, ClientError> {
        let mut routing = self.lock();
        let generation = self.options.credentials.transport.generation();
        if routing.generation != generation {
            // A rotated certificate: open new connections, which present it.
            routing.channels.clear();
            routing.generation = generation;
        }
        let channel = match routing.channels.get(addr) {
            Some(channel) => channel.clone(),
            None => {
                let options = &self.options;
                let channel = options.credentials.transport.channel(
                    addr,
                    |endpoint| {
                        endpoint
                            .connect_timeout(Duration::from_millis(500).min(options.rpc_timeout))
                            .timeout(options.rpc_timeout)
                            .tcp_nodelay(true)
                    },
                    options.source_ip,
                )?;
                routing.channels.insert(addr.to_string(), channel.clone());
                channel
            }
        };
        Ok(InterceptedService::new(channel, self.token_header.clone()))
    }

    fn pick(&self) -> String {
        let mut routing = self.lock();
        if let Some(addr) = &routing.preferred {
            return addr.clone();
        }
        let addr = self.endpoints[routing.next % self.endpoints.len()].clone();
        routing.next = routing.next.wrapping_add(1);
        addr
    }

    fn remember(&self, addr: Option<String>) {
        self.lock().preferred = addr;
    }

    /// Run `op` against the leader, following hints and retrying until the call deadline.
    pub async fn call<T, F, Fut>(&self, op: F) -> Result<T, ClientError>
    where
        F: Fn(ClientChannel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call_on(None, op).await
    }

    /// Like `call`, but with `target` set, only that replica is asked (for `--local` views).
    pub async fn call_on<T, F, Fut>(&self, target: Option<&str>, op: F) -> Result<T, ClientError>
    where
        F: Fn(ClientChannel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = Instant::now();
        let mut pause = Duration::from_millis(10);
        // With one endpoint (or a target) there is nothing to choose: it is asked, and its
        // hint followed. With more, the leader is looked for among them.
        let choosing = target.is_none() && self.endpoints.len() > 1;
        loop {
            if choosing && self.lock().preferred.is_none() {
                self.discover().await;
            }
            let addr = target.map(str::to_string).unwrap_or_else(|| self.pick());
            let channel = self.channel_for(&addr)?;
            // tonic's deadline covers the wait for response headers only; this one covers the
            // whole attempt (connecting, queueing in the channel, reading the body), so a link
            // cut mid-call cannot hold a caller past its deadline.
            let attempt = tokio::time::timeout(self.options.rpc_timeout, op(channel));
            let attempt = if choosing {
                // A leader that stops answering (paused, cut off) is not waited out: once the
                // others name another leader, the call goes there.
                tokio::pin!(attempt);
                tokio::select! {
                    done = &mut attempt => done,
                    leader = self.leader_moved_from(&addr) => {
                        tracing::debug!(%addr, %leader, "the leader moved during the call");
                        self.remember(Some(leader));
                        if started.elapsed() >= self.options.call_timeout {
                            return Err(ClientError::Unavailable {
                                waited: started.elapsed(),
                                endpoints: self.endpoints.join(","),
                                last: format!("{addr}: no answer; the leader moved"),
                            });
                        }
                        continue;
                    }
                }
            } else {
                attempt.await
            };
            let attempt = attempt.unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(format!(
                    "no answer within {:?}",
                    self.options.rpc_timeout
                )))
            });
            match attempt {
                Ok(reply) => {
                    if target.is_none() {
                        self.remember(Some(addr));
                    }
                    return Ok(reply.into_inner());
                }
                Err(status) if is_retryable(status.code()) => {
                    let last = format!("{addr}: {}", status.message());
                    tracing::debug!(%addr, code = ?status.code(), "attempt failed: {}", status.message());
                    let hint = leader_hint(&status);
                    // A hint to another replica is followed at once; a hint to this very
                    // replica means a fresh leader not yet ready for writes: stay and pause.
                    let followed = target.is_none() && hint.as_ref().is_some_and(|h| *h != addr);
                    if target.is_none() {
                        self.remember(hint.clone());
                    }
                    if started.elapsed() >= self.options.call_timeout {
                        return Err(ClientError::Unavailable {
                            waited: started.elapsed(),
                            endpoints: self.endpoints.join(","),
                            last,
                        });
                    }
                    // No leader named: rather than poll through an election, ask the others
                    // to say when they know one.
                    let found = !followed
                        && hint.is_none()
                        && choosing
                        && self.discover_past(&addr, went_silent(&status)).await;
                    if !followed && !found {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(100));
                    }
                }
                Err(status) => return Err(ClientError::Rejected(status)),
            }
        }
    }

    fn dispatcher(channel: ClientChannel) -> DispatcherClient<ClientChannel> {
        DispatcherClient::new(channel).max_decoding_message_size(usize::MAX)
    }

    fn cluster(channel: ClientChannel) -> ClusterClient<ClientChannel> {
        ClusterClient::new(channel)
    }

    fn access(channel: ClientChannel) -> AccessClient<ClientChannel> {
        AccessClient::new(channel)
    }

    /// Submit a job. Without an idempotency key one is made up, so retries stay safe.
    pub async fn submit(&self, mut request: SubmitRequest) -> Result<SubmitReply, ClientError> {
        if request.idempotency_key.is_empty() {
            request.idempotency_key = new_idempotency_key();
        }
        self.call(|ch| {
            let req = request.clone();
            async move { Self::dispatcher(ch).submit(req).await }
        })
        .await
    }

    pub async fn job_status(&self, job_id: &str) -> Result<JobStatus, ClientError> {
        let req = JobRequest {
            job_id: job_id.to_string(),
        };
        self.call(|ch| {
            let req = req.clone();
            async move { Self::dispatcher(ch).get_job(req).await }
        })
        .await
    }

    pub async fn list_jobs(&self) -> Result<Vec<JobSummary>, ClientError> {
        let reply = self
            .call(|ch| async move { Self::dispatcher(ch).list_jobs(ListJobsRequest {}).await })
            .await?;
        Ok(reply.jobs)
    }

    pub async fn cancel_job(&self, job_id: &str) -> Result<CancelJobReply, ClientError> {
        let req = JobRequest {
            job_id: job_id.to_string(),
        };
        self.call(|ch| {
            let req = req.clone();
            async move { Self::dispatcher(ch).cancel_job(req).await }
        })
        .await
    }

    pub async fn register_taskmanager(
        &self,
        request: RegisterTaskManagerRequest,
    ) -> Result<RegisterTaskManagerReply, ClientError> {
        self.call(|ch| {
            let req = request.clone();
            async move { Self::dispatcher(ch).register_task_manager(req).await }
        })
        .await
    }

    pub async fn list_taskmanagers(&self) -> Result<Vec<TaskManagerInfo>, ClientError> {
        let reply = self
            .call(|ch| async move {
                Self::dispatcher(ch)
                    .list_task_managers(ListTaskManagersRequest {})
                    .await
            })
            .await?;
        Ok(reply.taskmanagers)
    }

    pub async fn drain_taskmanager(
        &self,
        id: &str,
        deadline_secs: Option<u64>,
    ) -> Result<DrainTaskManagerReply, ClientError> {
        let req = DrainTaskManagerRequest {
            id: id.to_string(),
            deadline_secs,
        };
        self.call(|ch| {
            let req = req.clone();
            async move { Self::dispatcher(ch).drain_task_manager(req).await }
        })
        .await
    }

    /// A draining TaskManager takes new shards again (needs cluster version 2).
    pub async fn undrain_taskmanager(
        &self,
        id: &str,
    ) -> Result<UndrainTaskManagerReply, ClientError> {
        let req = UndrainTaskManagerRequest { id: id.to_string() };
        self.call(|ch| {
            let req = req.clone();
            async move { Self::dispatcher(ch).undrain_task_manager(req).await }
        })
        .await
    }

    /// Lower the cluster version (or with `cancel`, let it rise again). Each member compacts
    /// its data dir, which may take a while: give the client deadlines of a minute or two.
    pub async fn downgrade(
        &self,
        version: u32,
        cancel: bool,
    ) -> Result<DowngradeReply, ClientError> {
        self.call(|ch| async move {
            Self::cluster(ch)
                .downgrade(DowngradeRequest { version, cancel })
                .await
        })
        .await
    }

    /// Revoke every certificate naming `party`, or only the one with `fingerprint` (admin).
    pub async fn revoke_certificate(
        &self,
        party: &str,
        fingerprint: Option<[u8; 32]>,
    ) -> Result<RevokeCertificateReply, ClientError> {
        let req = RevokeCertificateRequest {
            party: party.to_string(),
            fingerprint: fingerprint.map(|f| f.to_vec()),
        };
        self.call(|ch| {
            let req = req.clone();
            async move { Self::access(ch).revoke_certificate(req).await }
        })
        .await
    }

    /// Pin what TaskManager `id` may claim (admin); no labels and no slots removes the pin.
    pub async fn pin_taskmanager(
        &self,
        id: &str,
        labels: std::collections::BTreeMap<String, String>,
        slots: Option<u32>,
    ) -> Result<PinTaskManagerReply, ClientError> {
        self.pin_taskmanager_with(id, labels, slots, Default::default())
            .await
    }

    /// `tm pin` with the most CPU, memory and named resources the agent may declare
    /// (cluster version 4).
    pub async fn pin_taskmanager_with(
        &self,
        id: &str,
        labels: std::collections::BTreeMap<String, String>,
        slots: Option<u32>,
        resources: crate::domain::ResourcePin,
    ) -> Result<PinTaskManagerReply, ClientError> {
        let req = PinTaskManagerRequest {
            id: id.to_string(),
            labels: labels.into_iter().collect(),
            slots,
            cpu_millis: resources.cpu_millis,
            memory_bytes: resources.memory_bytes,
            resources: resources.named.into_iter().collect(),
        };
        self.call(|ch| {
            let req = req.clone();
            async move { Self::dispatcher(ch).pin_task_manager(req).await }
        })
        .await
    }

    /// The leader's view of the cluster.
    pub async fn cluster_status(&self) -> Result<ClusterStatusReply, ClientError> {
        self.call(|ch| async move {
            Self::cluster(ch)
                .status(ClusterStatusRequest { local: false })
                .await
        })
        .await
    }

    /// One replica's own view (the first endpoint unless `target` is given).
    pub async fn local_status(
        &self,
        target: Option<&str>,
    ) -> Result<ClusterStatusReply, ClientError> {
        let target = target.unwrap_or(&self.endpoints[0]).to_string();
        self.call_on(Some(&target), |ch| async move {
            Self::cluster(ch)
                .status(ClusterStatusRequest { local: true })
                .await
        })
        .await
    }

    /// A bare round trip to one replica (the first endpoint unless `target` is given).
    pub async fn ping(&self, target: Option<&str>) -> Result<PingReply, ClientError> {
        let target = target.unwrap_or(&self.endpoints[0]).to_string();
        self.call_on(Some(&target), |ch| async move {
            Self::cluster(ch).ping(PingRequest {}).await
        })
        .await
    }

    /// Build a snapshot on one replica now (the first endpoint unless `target` is given).
    pub async fn snapshot(&self, target: Option<&str>) -> Result<SnapshotReply, ClientError> {
        let target = target.unwrap_or(&self.endpoints[0]).to_string();
        self.call_on(Some(&target), |ch| async move {
            Self::cluster(ch).snapshot(SnapshotRequest {}).await
        })
        .await
    }

    pub async fn add_member(&self, id: u64, addr: &str) -> Result<MembershipReply, ClientError> {
        let req = AddMemberRequest {
            id,
            addr: addr.to_string(),
        };
        self.call(|ch| {
            let req = req.clone();
            async move { Self::cluster(ch).add_member(req).await }
        })
        .await
    }

    pub async fn remove_member(&self, id: u64) -> Result<MembershipReply, ClientError> {
        self.call(|ch| async move {
            Self::cluster(ch)
                .remove_member(RemoveMemberRequest { id })
                .await
        })
        .await
    }

    pub async fn transfer_leader(&self, id: u64) -> Result<MembershipReply, ClientError> {
        self.call(|ch| async move {
            Self::cluster(ch)
                .transfer_leader(TransferLeaderRequest { id })
                .await
        })
        .await
    }

    /// Create a token with a new secret; returns the secret (shown once, never stored).
    pub async fn create_token(
        &self,
        name: &str,
        role: crate::domain::Role,
        tenant: Option<&str>,
    ) -> Result<(CreateTokenReply, crate::security::Secret), ClientError> {
        let secret = crate::security::Secret::generate()?;
        let reply = self.create_token_with(name, role, tenant, &secret).await?;
        Ok((reply, secret))
    }

    /// Create a token whose secret the caller made (so that a retry sends the same one).
    pub async fn create_token_with(
        &self,
        name: &str,
        role: crate::domain::Role,
        tenant: Option<&str>,
        secret: &crate::security::Secret,
    ) -> Result<CreateTokenReply, ClientError> {
        let req = CreateTokenRequest {
            name: name.to_string(),
            role: role.to_string(),
            secret_hash: secret.hash().0.to_vec(),
            tenant: tenant.unwrap_or_default().to_string(),
        };
        self.call(|ch| {
            let req = req.clone();
            async move { Self::access(ch).create_token(req).await }
        })
        .await
    }

    /// Set a tenant's quota: `slots` (None: keep; `unlimited` removes it) and `weight`.
    pub async fn set_quota(
        &self,
        tenant: &str,
        slots: Option<u64>,
        unlimited: bool,
        weight: Option<u32>,
    ) -> Result<QuotaInfo, ClientError> {
        self.set_quota_limits(SetQuotaRequest {
            tenant: tenant.to_string(),
            slots,
            unlimited,
            weight,
            max_priority: None,
            resources: None,
        })
        .await
    }

    /// `set_quota` with every field of the request, the highest priority included.
    pub async fn set_quota_limits(&self, req: SetQuotaRequest) -> Result<QuotaInfo, ClientError> {
        self.call(|ch| {
            let req = req.clone();
            async move { Self::dispatcher(ch).set_quota(req).await }
        })
        .await
    }

    pub async fn list_quotas(&self) -> Result<Vec<QuotaInfo>, ClientError> {
        let reply = self
            .call(|ch| async move { Self::dispatcher(ch).list_quotas(ListQuotasRequest {}).await })
            .await?;
        Ok(reply.quotas)
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, ClientError> {
        let reply = self
            .call(|ch| async move { Self::access(ch).list_tokens(ListTokensRequest {}).await })
            .await?;
        Ok(reply.tokens)
    }

    pub async fn revoke_token(&self, name: &str) -> Result<RevokeTokenReply, ClientError> {
        let req = RevokeTokenRequest {
            name: name.to_string(),
        };
        self.call(|ch| {
            let req = req.clone();
            async move { Self::access(ch).revoke_token(req).await }
        })
        .await
    }

    /// The token this client presents, as one replica sees it (`target`, or the leader).
    pub async fn who_am_i(&self, target: Option<&str>) -> Result<WhoAmIReply, ClientError> {
        self.call_on(target, |ch| async move {
            Self::access(ch).who_am_i(WhoAmIRequest {}).await
        })
        .await
    }

    /// A backup file of the state, built now by the first endpoint's replica (or whichever
    /// answers), as its bytes. At most `MAX_BACKUP_BYTES`.
    pub async fn backup(&self) -> Result<Vec<u8>, ClientError> {
        const MAX_BACKUP_BYTES: usize = 16 * 1024 * 1024 * 1024;
        let mut stream = self
            .call(|ch| async move {
                ClusterClient::new(ch)
                    .max_decoding_message_size(4 * 1024 * 1024)
                    .backup(BackupRequest {})
                    .await
            })
            .await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.message().await.map_err(ClientError::Rejected)? {
            if bytes.len() + chunk.data.len() > MAX_BACKUP_BYTES {
                return Err(ClientError::Rejected(tonic::Status::out_of_range(
                    "the backup is larger than this client takes (16 GiB)",
                )));
            }
            bytes.extend_from_slice(&chunk.data);
        }
        Ok(bytes)
    }

    /// What shard `shard` of `job_id` printed, as kept in the state, and where it runs.
    pub async fn shard_output(
        &self,
        job_id: &str,
        shard: u32,
    ) -> Result<ShardOutputReply, ClientError> {
        let req = ShardOutputRequest {
            job_id: job_id.to_string(),
            shard,
        };
        self.call(|ch| {
            let req = req.clone();
            async move { Self::dispatcher(ch).get_shard_output(req).await }
        })
        .await
    }

    /// Follow a running shard's output on the leader: `on_chunk` sees each chunk as its
    /// agent sends it and says whether to go on. A broken stream (a leader change) is
    /// opened again on the leader; chunks carry their offsets, so the caller skips what it
    /// has seen. Returns when the run is over (or `on_chunk` says stop).
    pub async fn follow_shard_output(
        &self,
        job_id: &str,
        shard: u32,
        mut on_chunk: impl FnMut(&OutputChunk) -> bool,
    ) -> Result<(), ClientError> {
        let req = ShardOutputRequest {
            job_id: job_id.to_string(),
            shard,
        };
        loop {
            let mut stream = self
                .call(|ch| {
                    let r = req.clone();
                    async move { Self::dispatcher(ch).follow_shard_output(r).await }
                })
                .await?;
            loop {
                match stream.message().await {
                    Ok(Some(chunk)) => {
                        if !on_chunk(&chunk) || chunk.ended {
                            return Ok(());
                        }
                    }
                    Ok(None) => return Ok(()),
                    Err(status) if !is_retryable(status.code()) => {
                        return Err(ClientError::Rejected(status))
                    }
                    Err(_) => break,
                }
            }
            self.remember(None);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Follow the cluster's events from `(index, seq)` (only `job_id`'s, if given): `on_event`
    /// sees each and says whether to go on. A broken stream is resumed after the last event
    /// seen, on whichever replica answers, so none is missed or repeated. Ends when
    /// `on_event` says so, when a job's stream ends with the job, or with a refusal
    /// (`OUT_OF_RANGE` when the start is no longer held).
    pub async fn follow_events(
        &self,
        index: u64,
        seq: u32,
        job_id: Option<&str>,
        on_event: impl FnMut(&Event) -> bool,
    ) -> Result<(), ClientError> {
        self.follow(index, seq, job_id, false, on_event).await
    }

    /// `follow_events` of one job, asking only for its end: a replica that knows the
    /// request sends nothing before it (an older one sends every event of the job).
    pub async fn follow_job_end(
        &self,
        index: u64,
        job_id: &str,
        on_event: impl FnMut(&Event) -> bool,
    ) -> Result<(), ClientError> {
        self.follow(index, 0, Some(job_id), true, on_event).await
    }

    async fn follow(
        &self,
        mut index: u64,
        mut seq: u32,
        job_id: Option<&str>,
        job_end_only: bool,
        mut on_event: impl FnMut(&Event) -> bool,
    ) -> Result<(), ClientError> {
        loop {
            let req = WatchEventsRequest {
                from_index: index,
                from_seq: seq,
                job_id: job_id.unwrap_or_default().to_string(),
                job_end_only,
            };
            let mut stream = self
                .call(|ch| {
                    let r = req.clone();
                    async move { Self::dispatcher(ch).watch_events(r).await }
                })
                .await?;
            loop {
                match stream.message().await {
                    Ok(Some(event)) => {
                        (index, seq) = (event.index, event.seq + 1);
                        if !on_event(&event) {
                            return Ok(());
                        }
                    }
                    // A job's stream ends with the job; the cluster's only when its replica
                    // goes away.
                    Ok(None) if job_id.is_some() => return Ok(()),
                    Ok(None) => break,
                    Err(status) if !is_retryable(status.code()) => {
                        return Err(ClientError::Rejected(status))
                    }
                    Err(_) => break,
                }
            }
            // Whichever replica answers next: forget the one that broke.
            self.remember(None);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
