//! Who may call what: the one table from gRPC method to the identity or role it needs, and
//! the tower layer in front of every service that enforces it before a handler runs.
//!
//! The caller's identity is the party its TLS certificate names (checked against the cluster
//! CA by the handshake) and, for client calls, the bearer token it sends, looked up by hash in
//! this replica's applied state on every call (so a revocation takes effect as soon as this
//! replica applies it). With `--insecure` there are neither and everyone may do everything.
//! What a handler must still check itself (a TaskManager acting only as its own name, a
//! `submit` token cancelling only its own jobs) it reads from the `Caller` put in the
//! request's extensions here.

use super::ApiError;
use crate::domain::{find_token, Permission, Role};
use crate::raft::{Raft, SharedState};
use crate::security::tokens::parse_bearer;
use crate::security::Party;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// The identity a call was admitted with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// `--insecure`: nobody is identified; everything is allowed.
    Anyone,
    /// A replica's certificate (Raft, rejoin and status calls between replicas).
    Replica(u64),
    /// A TaskManager's certificate: it may act only as this TaskManager.
    TaskManager(String),
    /// A client with a valid token; `hash` tells a stream opened with it whether the token
    /// it was opened with still exists (a token re-made under the same name is another).
    Token {
        name: String,
        role: Role,
        hash: crate::domain::TokenHash,
    },
}

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// A replica certificate of a current member (any replica while this one knows no
    /// membership yet: it is being formed or added).
    Member,
    /// Any replica certificate.
    Replica,
    /// A TaskManager certificate.
    TaskManager,
    /// A token whose role allows this.
    Token(Permission),
    /// A replica certificate, or a token whose role allows this.
    ReplicaOrToken(Permission),
    /// Anyone who completed the handshake with a certificate of the cluster CA (health
    /// checks, reflection: they reveal nothing of the state).
    Certificate,
}

/// The table. A method missing here is refused: a new RPC must be given a rule.
fn need(path: &str) -> Option<Need> {
    use Permission::*;
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    Some(match (service, method) {
        (
            "dispatcher.raft.v1.RaftService",
            "AppendEntries" | "AppendStream" | "Vote" | "PreVote" | "TransferLeader"
            | "InstallSnapshot",
        ) => Need::Member,
        (
            "dispatcher.v1.TaskManagers",
            "Heartbeat" | "ReportShard" | "ReportShards" | "GetJobSpec" | "WatchAssignments",
        ) => Need::TaskManager,
        ("dispatcher.v1.Dispatcher", "RegisterTaskManager") => Need::TaskManager,
        ("dispatcher.v1.Dispatcher", "Submit") => Need::Token(Submit),
        ("dispatcher.v1.Dispatcher", "CancelJob") => Need::Token(Cancel),
        ("dispatcher.v1.Dispatcher", "DrainTaskManager" | "UndrainTaskManager") => {
            Need::Token(Operate)
        }
        ("dispatcher.v1.Dispatcher", "SetQuota" | "PinTaskManager") => Need::Token(Admin),
        (
            "dispatcher.v1.Dispatcher",
            "GetJob" | "ListJobs" | "ListTaskManagers" | "WatchEvents" | "GetShardOutput"
            | "FollowShardOutput" | "ListQuotas",
        ) => Need::Token(Read),
        ("dispatcher.v1.Cluster", "Status" | "Ping") => Need::ReplicaOrToken(Read),
        // Where the leader is: no state, and every agent needs it before it has a token-less
        // registration through.
        ("dispatcher.v1.Cluster", "Leader") => Need::Certificate,
        ("dispatcher.v1.Cluster", "Rejoin" | "PrepareDowngrade") => Need::Replica,
        ("dispatcher.v1.Cluster", "Downgrade") => Need::Token(Admin),
        ("dispatcher.v1.Cluster", "Snapshot") => Need::Token(Operate),
        // A backup holds every job's environment and every token's hash.
        ("dispatcher.v1.Cluster", "Backup") => Need::Token(Admin),
        ("dispatcher.v1.Cluster", "AddMember" | "RemoveMember" | "TransferLeader") => {
            Need::Token(Admin)
        }
        (
            "dispatcher.v1.Access",
            "CreateToken" | "ListTokens" | "RevokeToken" | "RevokeCertificate",
        ) => Need::Token(Admin),
        ("dispatcher.v1.Access", "WhoAmI") => Need::Token(Read),
        (
            "dispatcher.v1.Periodic",
            "AddSchedule" | "SuspendSchedule" | "DeleteSchedule" | "RunSchedule",
        ) => Need::Token(Submit),
        ("dispatcher.v1.Periodic", "ListSchedules" | "GetSchedule") => Need::Token(Read),
        ("grpc.health.v1.Health", "Check" | "Watch") => Need::Certificate,
        (
            "grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection",
            "ServerReflectionInfo",
        ) => Need::Certificate,
        _ => return None,
    })
}

/// Whether `path` is a method some service here serves (and the table has a rule for).
pub fn is_known_method(path: &str) -> bool {
    need(path).is_some()
}

fn describe(permission: Permission) -> &'static str {
    match permission {
        Permission::Read => "reading needs any role",
        Permission::Submit => "submitting needs role submit or admin",
        Permission::Cancel => "cancelling needs role submit (own jobs), operator or admin",
        Permission::Operate => "this needs role operator or admin",
        Permission::Admin => "this needs role admin",
    }
}

/// Decides admission for one replica.
#[derive(Clone)]
pub struct Guard {
    /// `None`: `--insecure`.
    secure: Option<Secured>,
}

#[derive(Clone)]
struct Secured {
    shared: Arc<SharedState>,
    raft: Raft,
    parties: Arc<PartyCache>,
}

/// Parties already read from certificates, by the certificate's hash (its fingerprint): a
/// connection presents the same certificate on every call, and hashing it is cheaper than
/// parsing it again.
#[derive(Default)]
struct PartyCache(std::sync::Mutex<std::collections::HashMap<[u8; 32], Option<Party>>>);

/// A cache that fills up (a flood of distinct certificates from the CA) starts over.
const PARTY_CACHE_ENTRIES: usize = 10_000;

impl PartyCache {
    /// The party named by the caller's certificate and the certificate's fingerprint (none
    /// on a plaintext connection).
    fn peer_party(&self, extensions: &http::Extensions) -> Option<(Party, [u8; 32])> {
        let info = extensions.get::<TlsConnectInfo<TcpConnectInfo>>()?;
        let certs = info.peer_certs()?;
        let der = certs.first()?.as_ref();
        let key = crate::domain::fingerprint(der);
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(party) = cache.get(&key) {
            return party.clone().map(|p| (p, key));
        }
        let party = Party::from_certificate(der);
        if cache.len() >= PARTY_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(key, party.clone());
        party.map(|p| (p, key))
    }
}

impl Guard {
    pub fn insecure() -> Self {
        Guard { secure: None }
    }

    pub fn secure(shared: Arc<SharedState>, raft: Raft) -> Self {
        Guard {
            secure: Some(Secured {
                shared,
                raft,
                parties: Arc::default(),
            }),
        }
    }

    /// The caller of a request with this path, headers and connection, or the refusal.
    fn admit(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<Caller, ApiError> {
        let Some(secured) = &self.secure else {
            return Ok(Caller::Anyone);
        };
        let need = need(path).ok_or_else(|| {
            ApiError::PermissionDenied(format!("{path} is not a method this replica serves"))
        })?;
        let party = match secured.parties.peer_party(extensions) {
            Some((party, fingerprint)) => {
                secured.refuse_revoked(&party, &fingerprint)?;
                Some(party)
            }
            None => None,
        };
        match need {
            Need::Member => match party {
                Some(Party::Replica(id)) if secured.is_member_or_unformed(id) => {
                    Ok(Caller::Replica(id))
                }
                Some(Party::Replica(id)) => Err(ApiError::PermissionDenied(format!(
                    "replica-{id} is not a member of this cluster; add it with `dispatcher \
                     cluster add` first"
                ))),
                other => Err(ApiError::PermissionDenied(format!(
                    "only replicas may call the Raft service; the certificate names {}",
                    party_name(&other)
                ))),
            },
            Need::Replica => match party {
                Some(Party::Replica(id)) => Ok(Caller::Replica(id)),
                other => Err(ApiError::PermissionDenied(format!(
                    "only replicas may call {path}; the certificate names {}",
                    party_name(&other)
                ))),
            },
            Need::TaskManager => match party {
                Some(Party::TaskManager(name)) => Ok(Caller::TaskManager(name)),
                other => Err(ApiError::PermissionDenied(format!(
                    "only TaskManagers (certificate tm-<name>) may call {path}; the \
                     certificate names {}",
                    party_name(&other)
                ))),
            },
            Need::ReplicaOrToken(_) if matches!(party, Some(Party::Replica(_))) => {
                let Some(Party::Replica(id)) = party else {
                    unreachable!("matched above")
                };
                Ok(Caller::Replica(id))
            }
            Need::Token(permission) | Need::ReplicaOrToken(permission) => {
                secured.token_caller(headers, permission)
            }
            Need::Certificate => Ok(Caller::Anyone),
        }
    }
}

fn party_name(party: &Option<Party>) -> String {
    match party {
        Some(party) => party.to_string(),
        None => "no party".to_string(),
    }
}

impl Secured {
    /// A revoked certificate (`certs revoke`) is refused on every call, whatever it asks.
    fn refuse_revoked(&self, party: &Party, fingerprint: &[u8; 32]) -> Result<(), ApiError> {
        let applied = self.shared.read();
        let revocations = &applied.state.revocations;
        if revocations.is_empty() {
            return Ok(());
        }
        let name = party.to_string();
        if crate::domain::is_revoked(revocations, &name, fingerprint) {
            return Err(ApiError::Unauthenticated(format!(
                "the certificate of {name} was revoked; ask an admin for a new one"
            )));
        }
        Ok(())
    }

    fn is_member_or_unformed(&self, id: u64) -> bool {
        use openraft::async_runtime::watch::WatchReceiver;
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let membership = metrics.membership_config.membership();
        let mut nodes = membership.nodes().peekable();
        nodes.peek().is_none() || membership.nodes().any(|(node, _)| *node == id)
    }

    fn token_caller(
        &self,
        headers: &http::HeaderMap,
        permission: Permission,
    ) -> Result<Caller, ApiError> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(ApiError::Unauthenticated(
                "no token: pass --token <secret> or set DISPATCHER_TOKEN (an admin makes \
                 tokens with `dispatcher token create`)"
                    .into(),
            ));
        };
        let secret = value.to_str().ok().and_then(parse_bearer).ok_or_else(|| {
            ApiError::Unauthenticated(
                "the authorization header is not `Bearer <token>`; pass the token with --token"
                    .into(),
            )
        })?;
        let applied = self.shared.read();
        token_holder(&applied.state, secret, permission)
    }
}

/// The holder of token `secret`, if it is known and its role allows `permission`: checked
/// against this replica's applied state, so a revocation counts as soon as it is applied.
/// The HTTP side asks the same question.
pub fn token_holder(
    state: &crate::domain::ClusterState,
    secret: &str,
    permission: Permission,
) -> Result<Caller, ApiError> {
    let hash = crate::domain::TokenHash::of(secret);
    let Some((name, token)) = find_token(&state.tokens, &hash) else {
        if !state.tokens_seeded {
            // The cluster is forming and its leader has not seeded the bootstrap token
            // yet: worth a retry, unlike an unknown token.
            return Err(ApiError::Unavailable(
                "this cluster holds no tokens yet; it is forming (retry shortly), or its \
                 replicas were started without --bootstrap-token-file"
                    .into(),
            ));
        }
        return Err(ApiError::Unauthenticated(
            "unknown or revoked token; ask an admin for one (`dispatcher token create`)".into(),
        ));
    };
    if !token.role.allows(permission) {
        return Err(ApiError::PermissionDenied(format!(
            "token '{name}' has role {}; {}",
            token.role,
            describe(permission)
        )));
    }
    Ok(Caller::Token {
        name: name.to_string(),
        role: token.role,
        hash,
    })
}

/// The caller admitted by the layer. A request that did not pass it (a bug) has none and
/// is refused.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, ApiError> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("request reached a handler without admission".into()))
}

impl Caller {
    /// A token caller whose secret is its name, for unit tests.
    #[cfg(test)]
    pub(crate) fn test_token(name: &str, role: Role) -> Caller {
        Caller::Token {
            name: name.into(),
            role,
            hash: crate::domain::TokenHash::of(name),
        }
    }

    /// A TaskManager may act only as the name in its certificate.
    pub fn require_taskmanager(&self, id: &str) -> Result<(), ApiError> {
        match self {
            Caller::Anyone => Ok(()),
            Caller::TaskManager(name) if name == id => Ok(()),
            Caller::TaskManager(name) => Err(ApiError::PermissionDenied(format!(
                "this certificate is TaskManager '{name}'; it may not act as '{id}' (start the \
                 agent with --id {name}, or give it tm-{id}'s certificate)"
            ))),
            other => Err(ApiError::PermissionDenied(format!(
                "{other:?} may not act as TaskManager '{id}'"
            ))),
        }
    }

    /// Who owns the jobs this caller submits: the token's name, or with `--insecure` the
    /// client's address.
    pub fn owner(&self, remote: Option<std::net::SocketAddr>) -> String {
        match self {
            Caller::Token { name, .. } => format!("token:{name}"),
            _ => remote
                .map(|addr| addr.ip().to_string())
                .unwrap_or_else(|| "unknown".to_string()),
        }
    }

    /// `None` if this caller may cancel any job; else the owner whose jobs alone it may
    /// cancel (apply checks it against the job).
    pub fn cancels_only_own(&self, remote: Option<std::net::SocketAddr>) -> Option<String> {
        match self {
            Caller::Anyone => None,
            Caller::Token { role, .. } if role.cancels_any_job() => None,
            other => Some(other.owner(remote)),
        }
    }
}

/// The tower layer that runs `Guard::admit` in front of every service.
#[derive(Clone)]
pub struct AccessLayer {
    guard: Arc<Guard>,
}

impl AccessLayer {
    pub fn new(guard: Guard) -> Self {
        AccessLayer {
            guard: Arc::new(guard),
        }
    }
}

impl<S> tower::Layer<S> for AccessLayer {
    type Service = AccessService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AccessService {
            inner,
            guard: self.guard.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AccessService<S> {
    inner: S,
    guard: Arc<Guard>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for AccessService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match self.guard.admit(
            request.uri().path(),
            request.headers(),
            request.extensions(),
        ) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Box::pin(self.inner.call(request))
            }
            Err(refusal) => {
                tracing::debug!(path = request.uri().path(), "refused: {refusal}");
                let status: tonic::Status = refusal.into();
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `rpc` of every service in the protos, as a gRPC path.
    fn proto_methods() -> Vec<String> {
        let mut paths = Vec::new();
        for (package, text) in [
            (
                "dispatcher.v1",
                include_str!("../../proto/dispatcher.proto"),
            ),
            ("dispatcher.raft.v1", include_str!("../../proto/raft.proto")),
        ] {
            let mut service = None;
            for line in text.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("service ") {
                    service = rest.split_whitespace().next().map(str::to_string);
                } else if let (Some(rest), Some(service)) = (line.strip_prefix("rpc "), &service) {
                    let method = rest.split('(').next().unwrap_or_default().trim();
                    paths.push(format!("/{package}.{service}/{method}"));
                }
            }
        }
        paths
    }

    #[test]
    fn every_rpc_in_the_protos_has_a_rule() {
        let paths = proto_methods();
        assert!(paths.len() >= 25, "{paths:?}");
        for path in paths {
            assert!(need(&path).is_some(), "no access rule for {path}");
        }
    }

    #[test]
    fn every_served_method_has_a_rule() {
        for path in [
            "/dispatcher.raft.v1.RaftService/Vote",
            "/dispatcher.raft.v1.RaftService/AppendEntries",
            "/dispatcher.v1.TaskManagers/Heartbeat",
            "/dispatcher.v1.Dispatcher/Submit",
            "/dispatcher.v1.Dispatcher/RegisterTaskManager",
            "/dispatcher.v1.Cluster/Rejoin",
            "/dispatcher.v1.Cluster/AddMember",
            "/dispatcher.v1.Access/RevokeToken",
        ] {
            assert!(need(path).is_some(), "{path}");
        }
        for path in [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(need(path), Some(Need::Certificate), "{path}");
        }
        assert_eq!(need("/dispatcher.v1.Dispatcher/Nope"), None);
        assert_eq!(need("garbage"), None);
        assert_eq!(
            need("/dispatcher.v1.Dispatcher/RegisterTaskManager"),
            Some(Need::TaskManager)
        );
    }

    #[test]
    fn taskmanagers_act_only_as_themselves_and_submitters_cancel_their_own() {
        let tm = Caller::TaskManager("a".into());
        assert!(tm.require_taskmanager("a").is_ok());
        assert!(tm.require_taskmanager("b").is_err());
        assert!(Caller::Anyone.require_taskmanager("b").is_ok());
        assert!(Caller::Replica(1).require_taskmanager("a").is_err());

        let alice = Caller::test_token("alice", Role::Submit);
        let ops = Caller::test_token("ops", Role::Operator);
        assert_eq!(alice.cancels_only_own(None).as_deref(), Some("token:alice"));
        assert_eq!(ops.cancels_only_own(None), None);
        assert_eq!(Caller::Anyone.cancels_only_own(None), None);
    }
}
