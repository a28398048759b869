//! A running replica: opens storage, starts Raft and the gRPC server, forms or joins the
//! cluster, and runs the leader-only loops while it leads. `serve` is what `dispatcher serve`
//! runs and what tests start in-process.

mod bootstrap;
mod health;
mod rejoin;

use crate::config::{ConfigError, ServeConfig};
use crate::http::{access::HttpAccess, ReplicaHttp};
use crate::leader::{LeaderDuties, Liveness};
use crate::metrics::Metrics;
use crate::pb::api::access_server::AccessServer;
use crate::pb::api::cluster_server::ClusterServer;
use crate::pb::api::dispatcher_server::DispatcherServer;
use crate::pb::api::periodic_server::PeriodicServer;
use crate::pb::api::task_managers_server::TaskManagersServer;
use crate::pb::raft::raft_service_server::RaftServiceServer;
use crate::raft::network::RAFT_MAX_MESSAGE_BYTES;
use crate::raft::snapshot_store::SnapshotStore;
use crate::raft::{GateState, GrpcNetworkFactory, Raft, RaftGate, StateMachineStore, WalLogStore};
use crate::rpc::{
    AccessLayer, AccessService, CallMetricsLayer, ClusterService, DispatcherService, Guard,
    PeriodicService, RaftService, ServiceContext, TaskManagerService, API_MAX_MESSAGE_BYTES,
};
use crate::security::{Secret, Transport};
use bootstrap::Bootstrap;
use openraft::storage::{RaftLogReader, RaftLogStorage};
use rejoin::RejoinMarker;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("storage in {path}: {source}")]
    Storage {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("raft failed to start: {0}")]
    Raft(String),
    #[error("gRPC server failed: {0}")]
    Server(#[from] tonic::transport::Error),
    #[error("the protobuf descriptors for server reflection do not load: {0}")]
    Reflection(String),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
}

/// Everything `dispatcher serve` is given.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub id: u64,
    pub listen: SocketAddr,
    /// The address the others dial, if it differs from `listen`; must match `peers[id]`.
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    /// Every replica of the initial cluster, this one included: id → host:port.
    pub peers: BTreeMap<u64, String>,
    pub config: ServeConfig,
    pub security: ServeSecurity,
    /// `--http-listen`: metrics, health, readiness and the dashboard.
    pub http_listen: Option<SocketAddr>,
    /// `--otlp-endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT`): where the leader sends jobs'
    /// traces; none: no traces.
    pub otlp_endpoint: Option<String>,
}

/// How a replica secures its connections and seeds its first token.
#[derive(Debug, Clone)]
pub struct ServeSecurity {
    /// Mutual TLS with the replica's certificate, or plaintext with `--insecure`.
    pub transport: Transport,
    /// `--bootstrap-token-file`: the first admin token, seeded on first formation only.
    pub bootstrap_token: Option<Secret>,
}

impl ServeSecurity {
    /// No TLS, no tokens (`--insecure`): for development on one machine.
    pub fn insecure() -> Self {
        ServeSecurity {
            transport: Transport::Plain,
            bootstrap_token: None,
        }
    }
}

fn storage_err(path: &std::path::Path) -> impl Fn(std::io::Error) -> NodeError + '_ {
    move |source| NodeError::Storage {
        path: path.display().to_string(),
        source,
    }
}

/// Run a replica until `shutdown` resolves.
pub async fn serve(
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    check_advertise(&opts)?;
    if !opts.security.transport.is_tls() {
        tracing::warn!(
            "INSECURE: replica {} runs without TLS and without tokens (--insecure); anyone who \
             reaches {} can submit commands that TaskManagers run. Use it only for development \
             on one machine",
            opts.id,
            opts.listen
        );
    }
    let raft_config = Arc::new(opts.config.openraft_config()?);
    // Before anything is written: the log and snapshots hold jobs' environments.
    crate::private_files::restrict_umask();
    crate::security::identity::reload_on_sighup(&opts.security.transport);
    crate::private_files::make_private(&opts.data_dir).map_err(storage_err(&opts.data_dir))?;
    let db_path = opts.data_dir.join("raft.sled");
    let db = sled::Config::new()
        .path(&db_path)
        .mode(sled::Mode::LowSpace)
        .open()
        .map_err(|e| NodeError::Storage {
            path: db_path.display().to_string(),
            source: std::io::Error::other(e),
        })?;
    refuse_old_log_layout(&db, &db_path)?;
    let log_dir = opts.data_dir.join("raft-log");
    let mut log_store = WalLogStore::open(&log_dir).map_err(storage_err(&log_dir))?;
    let has_history = has_history(&mut log_store)
        .await
        .map_err(storage_err(&log_dir))?;
    let marker = RejoinMarker::open(&db, &db_path).map_err(storage_err(&db_path))?;
    let rejoin_phase = marker.load().map_err(storage_err(&db_path))?;
    let gate = Arc::new(RaftGate::new(bootstrap::initial_gate(
        has_history,
        rejoin_phase,
    )));
    // A replica that may not vote must not campaign either, from its first tick.
    let raft_config = Arc::new(openraft::Config {
        enable_elect: gate.get() == GateState::Open,
        ..(*raft_config).clone()
    });
    let snapshot_dir = opts.data_dir.join("snapshots");
    let snapshots = SnapshotStore::open(&snapshot_dir).map_err(storage_err(&snapshot_dir))?;
    let metrics = Arc::new(Metrics::new(log_store.sync_stats().fsync_seconds.clone()));
    let state_machine =
        StateMachineStore::open(snapshots, metrics.clone()).map_err(storage_err(&snapshot_dir))?;
    let shared = state_machine.shared();

    // Bind before starting Raft so a taken port fails fast and loudly.
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| NodeError::Listen {
            addr: opts.listen,
            source,
        })?;

    let http_listener = match opts.http_listen {
        Some(addr) => Some(crate::http::bind(addr).await?),
        None => None,
    };

    let peer_troubles = Arc::new(crate::raft::peer_troubles::PeerTroubles::default());
    // Dial peers from the address we listen on, unless that is a wildcard.
    let source_ip = Some(opts.listen.ip()).filter(|ip| !ip.is_unspecified());
    let wal = log_store.clone();
    let versions = Arc::new(
        crate::upgrade::VersionSurvey::open(&opts.data_dir).map_err(storage_err(&opts.data_dir))?,
    );
    let election_timeline = Arc::new(crate::raft::election_timeline::ElectionTimeline::default());
    let raft: Raft = Raft::new(
        opts.id,
        raft_config,
        GrpcNetworkFactory::new(
            source_ip,
            opts.security.transport.clone(),
            peer_troubles.clone(),
            election_timeline.clone(),
            opts.config.raft.append_pipeline,
        ),
        log_store,
        state_machine,
    )
    .await
    .map_err(|e| NodeError::Raft(e.to_string()))?;
    tracing::info!(id = opts.id, listen = %opts.listen, data_dir = %opts.data_dir.display(), "replica started");

    let liveness = Arc::new(Liveness::default());
    let placements_behind = Arc::new(crate::leader::PlacementsBehind::default());
    let leader_contact = Arc::new(crate::rpc::leader_contact::LeaderContact::default());
    let ctx = ServiceContext {
        node_id: opts.id,
        raft: raft.clone(),
        shared: shared.clone(),
        liveness: liveness.clone(),
        placements_behind: placements_behind.clone(),
        tm_settings: opts.config.taskmanagers.clone(),
        leader_lease: Duration::from_millis(opts.config.raft.election_timeout_min_ms),
        gate: gate.clone(),
        limits: opts.config.limits.clone(),
        require_isolation: opts.config.security.require_isolation,
        default_timeout_ms: opts
            .config
            .jobs
            .default_timeout_secs
            .map(|secs| secs.saturating_mul(1000)),
        transport: opts.security.transport.clone(),
        taps: Arc::default(),
        report_budget: Arc::default(),
        peer_troubles,
        leader_contact: leader_contact.clone(),
        contact_bound: Duration::from_millis(opts.config.raft.election_timeout_max_ms),
        versions: versions.clone(),
        wal,
        election_timeline: election_timeline.clone(),
    };
    let timeline_watch = tokio::spawn(election_timeline.watch(raft.clone()));
    let raiser = tokio::spawn(
        crate::upgrade::raise::Raiser {
            raft: raft.clone(),
            shared: shared.clone(),
            survey: versions,
            transport: opts.security.transport.clone(),
            node_id: opts.id,
        }
        .run(),
    );
    let bootstrap = tokio::spawn(bootstrap::form_or_join(Bootstrap {
        raft: raft.clone(),
        gate: gate.clone(),
        marker,
        id: opts.id,
        peers: opts.peers.clone(),
        source_ip,
        transport: opts.security.transport.clone(),
        has_history,
        rejoin_phase,
    }));
    let leader_duties = LeaderDuties::start(
        raft.clone(),
        shared.clone(),
        liveness,
        placements_behind,
        opts.config.clone(),
        opts.security.bootstrap_token.as_ref().map(Secret::hash),
        opts.otlp_endpoint.clone(),
    );

    let http_task = http_listener.map(|listener| {
        let (tls, access) = match &opts.security.transport {
            Transport::Plain => (None, HttpAccess::Open),
            Transport::Tls(config) => (
                Some(config.https_server()),
                HttpAccess::Tokens(shared.clone()),
            ),
        };
        let touch = crate::rpc::stream_right::Touch {
            raft: raft.clone(),
            contact: leader_contact.clone(),
            bound: Duration::from_millis(opts.config.raft.election_timeout_max_ms),
        };
        let dashboard = &opts.config.dashboard;
        let history = Arc::new(crate::metrics::history::HistoryRing::new(
            Duration::from_secs(dashboard.history_sample_secs),
            Duration::from_secs(dashboard.history_hours * 3_600),
        ));
        tokio::spawn(crate::metrics::history::run(history.clone(), shared.clone()));
        let routes = crate::http::replica_routes(ReplicaHttp::new(
            raft.clone(),
            shared.clone(),
            opts.security.transport.clone(),
            access,
            Some(touch),
            history,
        ));
        tracing::info!(listen = ?opts.http_listen, "HTTP side listening (/metrics, /healthz, /readyz, /)");
        tokio::spawn(crate::http::serve(listener, tls, routes, std::future::pending()))
    });

    let guard = match &opts.security.transport {
        Transport::Plain => Guard::insecure(),
        Transport::Tls(_) => Guard::secure(shared.clone(), raft.clone()),
    };
    let (reflection_v1, reflection_v1alpha) =
        health::reflection().map_err(|e| NodeError::Reflection(e.to_string()))?;
    let health = health::service(raft.clone(), opts.id).await;
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(120))
        .layer(
            tower::ServiceBuilder::new()
                .layer(CallMetricsLayer::new(metrics))
                .layer(AccessLayer::new(guard))
                .into_inner(),
        )
        .add_service(
            RaftServiceServer::new(RaftService::new(raft.clone(), gate, leader_contact.clone()))
                .max_decoding_message_size(RAFT_MAX_MESSAGE_BYTES)
                .max_encoding_message_size(RAFT_MAX_MESSAGE_BYTES),
        )
        .add_service(
            DispatcherServer::new(DispatcherService::new(ctx.clone()))
                .max_decoding_message_size(API_MAX_MESSAGE_BYTES)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            TaskManagersServer::new(TaskManagerService::new(ctx.clone()))
                .max_decoding_message_size(API_MAX_MESSAGE_BYTES)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            ClusterServer::new(ClusterService::new(ctx.clone()))
                .max_decoding_message_size(API_MAX_MESSAGE_BYTES),
        )
        .add_service(
            PeriodicServer::new(PeriodicService::new(ctx.clone()))
                .max_decoding_message_size(API_MAX_MESSAGE_BYTES),
        )
        .add_service(
            AccessServer::new(AccessService::new(ctx))
                .max_decoding_message_size(API_MAX_MESSAGE_BYTES),
        )
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let transport = opts.security.transport.clone();
    let server = async move {
        match &transport {
            // `serve_with_incoming` ignores the builder's `tcp_nodelay`: without setting it
            // here, Nagle's algorithm held small replies back until the peer's delayed ACK,
            // up to 40 ms per call (seen as a p99 of 31 ms and 30 ms heartbeats). The TLS
            // acceptor sets it on every connection itself.
            Transport::Plain => {
                router
                    .serve_with_incoming_shutdown(
                        tonic::transport::server::TcpIncoming::from(listener)
                            .with_nodelay(Some(true)),
                        shutdown,
                    )
                    .await
            }
            Transport::Tls(config) => {
                router
                    .serve_with_incoming_shutdown(
                        crate::security::transport::tls_incoming(listener, config),
                        shutdown,
                    )
                    .await
            }
        }
    };
    // If the Raft core stops on its own (a fatal storage error or a panic), the replica can no
    // longer do its job: exit with an error so a supervisor restarts it from disk.
    let result = tokio::select! {
        served = server => served.map_err(NodeError::from),
        fatal = raft_stopped(raft.clone()) => Err(NodeError::Raft(fatal)),
    };

    tracing::info!(id = opts.id, "replica shutting down");
    bootstrap.abort();
    raiser.abort();
    timeline_watch.abort();
    if let Some(task) = http_task {
        task.abort();
    }
    leader_duties.stop();
    if let Err(e) = raft.shutdown().await {
        tracing::warn!("raft shutdown: {e}");
    }
    if let Err(e) = db.flush_async().await {
        tracing::warn!("final flush: {e}");
    }
    result
}

/// `--advertise` and this replica's `--peers` entry name the same address: the others dial
/// the one in `--peers` (it is what the membership records).
fn check_advertise(opts: &ServeOptions) -> Result<(), NodeError> {
    let Some(advertise) = &opts.advertise else {
        return Ok(());
    };
    crate::fsm::validate_address(advertise)
        .map_err(|e| NodeError::Config(ConfigError::Invalid(format!("--advertise: {e}"))))?;
    match opts.peers.get(&opts.id) {
        Some(peer) if peer != advertise => Err(NodeError::Config(ConfigError::Invalid(format!(
            "--advertise {advertise} differs from replica {}'s entry in --peers ({peer}); the \
             others dial the --peers address, so make the two agree",
            opts.id
        )))),
        _ => Ok(()),
    }
}

/// Versions before the write-ahead log kept the Raft log in sled (tree `raft_log`). Such a
/// data dir is refused rather than silently treated as empty.
fn refuse_old_log_layout(db: &sled::Db, db_path: &std::path::Path) -> Result<(), NodeError> {
    if db
        .tree_names()
        .iter()
        .any(|name| name.as_ref() == b"raft_log")
    {
        return Err(NodeError::Storage {
            path: db_path.display().to_string(),
            source: std::io::Error::other(
                "this data dir holds a Raft log in the old sled layout; move the data dir away \
                 and start this replica on an empty one: it rejoins and is caught up by the \
                 leader",
            ),
        });
    }
    Ok(())
}

/// Whether the log store remembers anything this replica did: a vote or log entries (or a
/// purge point, after a snapshot). A replica without history cannot have forgotten anything.
async fn has_history(store: &mut WalLogStore) -> std::io::Result<bool> {
    let state = store.get_log_state().await?;
    let vote = store.read_vote().await?;
    Ok(vote.is_some() || state.last_log_id.is_some() || state.last_purged_log_id.is_some())
}

/// Resolves with the reason when the Raft core stops running.
async fn raft_stopped(raft: Raft) -> String {
    use openraft::async_runtime::watch::WatchReceiver;
    // The server metrics change only with the role, leader or membership, and their sender
    // goes when the core stops; the full metrics change several times per log entry, and a
    // watcher of them would wake this (main) thread for every one.
    let mut server = raft.server_metrics();
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        if let Err(fatal) = &raft.metrics().borrow_watched().running_state {
            return format!("raft core stopped: {fatal}");
        }
        tokio::select! {
            changed = server.changed() => if changed.is_err() {
                return match &raft.metrics().borrow_watched().running_state {
                    Err(fatal) => format!("raft core stopped: {fatal}"),
                    Ok(()) => "raft core stopped".to_string(),
                };
            },
            _ = check.tick() => {}
        }
    }
}
