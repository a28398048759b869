//! The agent's main loop: register, heartbeat, reconcile runs with the leader's assignment
//! list, keep the lease.

use super::host::ShardHost;
use super::identity::{claim, AgentIdentity, IdentityError};
use super::lease::Lease;
use super::output_tap::OutputTaps;
use super::reporter;
use super::runner::{self, RunContext, RunHandle, RunKey, KEEPALIVE_TIMEOUT};
use super::specs::SpecCache;
use super::watcher;
use super::workdir::{RunRecord, RunResult, WorkDir};
use crate::client::{Client, ClientError, ClientOptions};
use crate::domain::Labels;
use crate::http::AgentView;
use crate::metrics::AgentMetrics;
use crate::pb::api::task_managers_client::TaskManagersClient;
use crate::pb::api::{
    Assignment, HeartbeatRequest, RegisterTaskManagerRequest, ReportKind, ShardKey,
};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("work directory {path}: {source}")]
    WorkDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot find this executable to run shards under its shard host: {0}")]
    Executable(std::io::Error),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
}

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub id: String,
    pub slots: u32,
    pub labels: Labels,
    pub work_dir: PathBuf,
    pub endpoints: Vec<String>,
    /// Dial the replicas from this local address.
    pub source_ip: Option<std::net::IpAddr>,
    /// The address this TaskManager registers (default: its `--http-listen` address, else
    /// its host name with port 0).
    pub advertise: Option<String>,
    /// Mutual TLS with this agent's `tm-<id>` certificate, or plaintext with `--insecure`.
    pub credentials: crate::security::Credentials,
    /// `--http-listen`: metrics, health and readiness.
    pub http_listen: Option<std::net::SocketAddr>,
    /// `--cpus`, `--memory`, `--resources`: what it offers (CPU and memory default to the
    /// host's).
    pub capacity: crate::domain::Resources,
    /// `--sandbox`, `--run-as-uids`, `--run-as`.
    pub sandbox: super::sandbox::SandboxRequest,
}

/// The address an agent registers when `--advertise` is not given: where its HTTP side
/// (metrics, health) answers, as `--http-listen` names it (the host name for an unspecified
/// IP), else the host name with port 0 (it takes no inbound connections; work comes on the
/// streams it opens).
fn default_advertise(opts: &AgentOptions) -> String {
    match opts.http_listen {
        Some(listen) if !listen.ip().is_unspecified() => listen.to_string(),
        Some(listen) => format!("{}:{}", hostname(), listen.port()),
        None => format!("{}:0", hostname()),
    }
}

/// Until the first heartbeat reply says otherwise.
const DEFAULT_INTERVAL: Duration = Duration::from_millis(250);
const DEFAULT_LEASE: Duration = Duration::from_secs(1);
/// A report re-derived from the work directory is sent again after this long if the leader
/// still lists the run.
const REREPORT_AFTER: Duration = Duration::from_secs(5);

/// Largest heartbeat reply accepted: a full assignment list (ids only, some 40 bytes per
/// shard) of the largest TaskManager allowed fits many times over.
const MAX_HEARTBEAT_REPLY_BYTES: usize = 64 * 1024 * 1024;

type Runs = Arc<Mutex<HashMap<RunKey, RunHandle>>>;

fn lock<T>(shared: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty() && !h.contains(char::is_whitespace))
        .unwrap_or_else(|| "localhost".to_string())
}

/// Register, retrying for as long as it takes to find a leader. Only a refusal (bad id,
/// slots, labels) is an error: retrying would not change the answer.
async fn register(
    client: &Client,
    opts: &AgentOptions,
    identity: &AgentIdentity,
    isolation: &super::sandbox::Isolation,
) -> Result<u64, ClientError> {
    let request = RegisterTaskManagerRequest {
        id: opts.id.clone(),
        addr: opts
            .advertise
            .clone()
            .unwrap_or_else(|| default_advertise(opts)),
        slots: opts.slots,
        labels: opts.labels.clone().into_iter().collect(),
        incarnation: identity.incarnation,
        successor_of: identity.successor_of,
        capacity: Some((&opts.capacity).into()),
        isolation: isolation.level().to_string(),
        isolation_missing: match isolation {
            super::sandbox::Isolation::Full => String::new(),
            other => other.describe(),
        },
    };
    loop {
        match client.register_taskmanager(request.clone()).await {
            Ok(reply) => {
                if let Err(e) = identity.record_admitted() {
                    tracing::warn!("cannot record this incarnation in the work dir: {e}");
                }
                tracing::info!(id = %opts.id, registration_epoch = reply.registration_epoch, "registered");
                return Ok(reply.registration_epoch);
            }
            Err(e @ ClientError::Rejected(_)) => return Err(e),
            Err(e) => {
                tracing::warn!("cannot register yet, retrying: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Run the agent until `shutdown` resolves. Its runs stop with it.
pub async fn run(opts: AgentOptions, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    // Before anything is written: the journal, the incarnation and shards' output are private.
    crate::private_files::restrict_umask();
    crate::security::identity::reload_on_sighup(&opts.credentials.transport);
    let workdir = WorkDir::open(&opts.work_dir).map_err(|source| AgentError::WorkDir {
        path: opts.work_dir.display().to_string(),
        source,
    })?;
    let identity = claim(&opts.work_dir, &format!("{}/{}", hostname(), opts.id))?;
    tracing::info!(
        incarnation = identity.incarnation,
        successor_of = ?identity.successor_of,
        "agent process identity"
    );
    let executable = std::env::current_exe().map_err(AgentError::Executable)?;
    let http_listener = match opts.http_listen {
        Some(addr) => Some(crate::http::bind(addr).await?),
        None => None,
    };
    let metrics = Arc::new(AgentMetrics::new(opts.slots));
    let (sandbox, isolation) = super::sandbox::probe(
        &super::sandbox::cgroup_name(&opts.id, workdir.root()),
        &opts.sandbox,
    );
    match &isolation {
        super::sandbox::Isolation::Full => {
            tracing::info!("shard sandbox {}", isolation.describe())
        }
        _ => tracing::warn!("shard sandbox {}", isolation.describe()),
    }
    metrics.set_isolation(isolation.level());
    let work_path = std::fs::canonicalize(workdir.root()).unwrap_or_default();
    if sandbox.namespaces && work_path.starts_with("/tmp") {
        tracing::warn!(
            "the work dir is under /tmp: runs share this host's /tmp (a private one would hide \
             their directories); put the work dir elsewhere, e.g. /var/lib/dispatcher"
        );
    }
    // Registration and reports may wait out a leader change; heartbeats must not block
    // the loop for long.
    let client = Arc::new(Client::with_options(
        opts.endpoints.clone(),
        ClientOptions {
            source_ip: opts.source_ip,
            ..ClientOptions::new(opts.credentials.clone())
        },
    )?);
    let heartbeat_client = Client::with_options(
        opts.endpoints.clone(),
        ClientOptions {
            rpc_timeout: Duration::from_millis(1000),
            call_timeout: Duration::from_millis(1000),
            source_ip: opts.source_ip,
            credentials: opts.credentials.clone(),
        },
    )?;
    let (in_flight, in_flight_rx) = tokio::sync::watch::channel(0usize);
    let (reports, reporter_task) = reporter::start(client.clone(), in_flight_rx);
    let lease = Arc::new(Lease::new(DEFAULT_LEASE));
    let runs: Runs = Arc::new(Mutex::new(HashMap::new()));
    // Runs whose outcome was reported lately (by the run itself, or again from the work
    // directory): not reported again from the work directory while the leader's list,
    // which may trail the report, still names them.
    let reported: Reported = Arc::new(Mutex::new(HashMap::new()));
    let ctx = RunContext {
        in_flight: Arc::new(in_flight),
        taskmanager_id: opts.id.clone(),
        incarnation: identity.incarnation,
        host: Arc::new(ShardHost::new(
            executable,
            workdir.root().to_path_buf(),
            KEEPALIVE_TIMEOUT,
            lease.clone(),
            sandbox,
        )),
        workdir,
        lease: lease.clone(),
        reports,
        specs: SpecCache::new(client.clone()),
        on_exit: {
            // A freed slot needs no early heartbeat: the report frees it in the leader's
            // state, and the next placement is pushed here at once.
            let runs = runs.clone();
            let reported = reported.clone();
            let metrics = metrics.clone();
            Arc::new(move |key: &RunKey, was_reported: bool| {
                metrics.run_ended();
                if was_reported {
                    lock(&reported).insert(key.clone(), Instant::now());
                }
                lock(&runs).remove(key);
            })
        },
        metrics: metrics.clone(),
        capacity: super::local_capacity::LocalCapacity::new(opts.slots, &opts.capacity),
        output_tail_bytes: Arc::new(std::sync::atomic::AtomicU64::new(
            crate::config::DEFAULT_OUTPUT_TAIL_BYTES as u64,
        )),
    };
    // Directories of runs a previous agent process finished with: nothing needs them.
    ctx.host.recycle(ctx.workdir.leftovers());

    // Pushed assignments: a task keeps a stream open to the leader for the registration the
    // main loop publishes here.
    let (registration_tx, registration_rx) = tokio::sync::watch::channel(0u64);
    let http_task = http_listener.map(|listener| {
        let tls = match &opts.credentials.transport {
            crate::security::Transport::Plain => None,
            crate::security::Transport::Tls(config) => Some(config.https_server()),
        };
        let view = AgentView {
            metrics: metrics.clone(),
            ready: readiness(registration_rx.clone(), lease.clone()),
        };
        tokio::spawn(crate::http::serve(
            listener,
            tls,
            crate::http::agent_routes(view),
            std::future::pending(),
        ))
    });
    let (updates_tx, mut updates) = tokio::sync::mpsc::channel(16);
    let watcher_task = tokio::spawn(watcher::run(
        watcher::Watch {
            client: client.clone(),
            taskmanager_id: opts.id.clone(),
            incarnation: identity.incarnation,
            registration: registration_rx,
            max_message_bytes: MAX_HEARTBEAT_REPLY_BYTES,
        },
        updates_tx,
    ));

    let main = async {
        let mut registration_epoch = register(&client, &opts, &identity, &isolation).await?;
        metrics.registered(registration_epoch);
        let _ = registration_tx.send(registration_epoch);
        // The assignment list last acted on: its version and the log index it comes from.
        let mut held = Held::default();
        let mut interval = DEFAULT_INTERVAL;
        let mut lease_was_valid = false;
        // Runs whose output someone follows (`job logs`), as the leader lists them.
        let mut taps = OutputTaps::default();
        loop {
            let sent_at = Instant::now();
            let sent_at_boot = crate::clock::boottime();
            let running: Vec<ShardKey> = lock(&runs)
                .keys()
                .map(|(job_id, index, epoch)| ShardKey {
                    job_id: job_id.clone(),
                    index: *index,
                    epoch: *epoch,
                })
                .collect();
            let request = HeartbeatRequest {
                taskmanager_id: opts.id.clone(),
                registration_epoch,
                incarnation: identity.incarnation,
                running,
                assignments_max_epoch: held.version.0,
                assignments_count: held.version.1,
                output: taps.collect(&ctx.workdir, |key| lock(&runs).contains_key(key)),
            };
            let reply = heartbeat_client
                .call(|ch| {
                    let r = request.clone();
                    async move {
                        TaskManagersClient::new(ch)
                            .max_decoding_message_size(MAX_HEARTBEAT_REPLY_BYTES)
                            .heartbeat(r)
                            .await
                    }
                })
                .await;
            metrics.heartbeat(reply.is_ok(), sent_at.elapsed());
            match reply {
                Ok(reply) if !reply.registered => {
                    tracing::warn!("the leader does not know this registration (declared lost?): stopping every run and registering again");
                    lock(&runs).clear();
                    held = Held::default();
                    registration_epoch = register(&client, &opts, &identity, &isolation).await?;
                    metrics.registered(registration_epoch);
                    let _ = registration_tx.send(registration_epoch);
                    continue;
                }
                Ok(reply) => {
                    interval = Duration::from_millis(reply.heartbeat_interval_ms.max(50));
                    ctx.output_tail_bytes.store(
                        reply
                            .output_tail_bytes
                            .min(crate::config::MAX_OUTPUT_TAIL_BYTES as u64),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    lease.renew(sent_at_boot, Duration::from_millis(reply.lease_ms));
                    // A reply that arrives (or is handled) after the lease it grants has run
                    // out may be stale: act on nothing in it.
                    taps.update(&ctx.workdir, &reply.output_taps);
                    if lease.is_valid() {
                        if reply.assignments_unchanged {
                            // The list held is the leader's list as of this index: a push
                            // from before it is older than what is held.
                            held.applied_index = held.applied_index.max(reply.applied_index);
                        } else {
                            held.replace_if_newer(
                                reply.applied_index,
                                (reply.assignments_max_epoch, reply.assignments_count),
                                reply.assignments,
                            );
                        }
                        reconcile(&ctx, &runs, &reported, held.list.clone());
                    }
                }
                Err(e) => tracing::debug!("heartbeat failed: {e}"),
            }
            let valid = lease.is_valid();
            if lease_was_valid && !valid {
                tracing::warn!("no leader reached within the lease: stopping every run");
                lock(&runs).clear();
            }
            lease_was_valid = valid;
            metrics.set_lease_valid(valid);
            metrics.set_running(lock(&runs).len());
            // Until the next heartbeat, act on every pushed list as it arrives.
            let next_heartbeat = tokio::time::Instant::from_std(sent_at + interval);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next_heartbeat) => break,
                    Some((pushed_under, update)) = updates.recv() => {
                        // Pushes do not renew the lease; without one, nothing is acted on. A
                        // list streamed for an earlier registration predates being declared
                        // lost: its shards may run elsewhere by now.
                        if update.unchanged
                            || !lease.is_valid()
                            || pushed_under != registration_epoch
                        {
                            continue;
                        }
                        let newer = held.replace_if_newer(
                            update.applied_index,
                            (update.assignments_max_epoch, update.assignments_count),
                            update.assignments,
                        );
                        if newer {
                            reconcile(&ctx, &runs, &reported, held.list.clone());
                        }
                    }
                }
            }
        }
        #[allow(unreachable_code)]
        Ok::<(), AgentError>(())
    };
    let result = tokio::select! {
        r = main => r,
        _ = shutdown => Ok(()),
    };
    lock(&runs).clear();
    reporter_task.abort();
    watcher_task.abort();
    if let Some(task) = http_task {
        task.abort();
    }
    result
}

/// The assignment list the agent acts on, with its version and the log index it comes
/// from. Heartbeat replies and pushes may cross on the way: a list from an older index than
/// the one held is ignored.
#[derive(Default)]
struct Held {
    version: (u64, u64),
    applied_index: u64,
    list: Vec<Assignment>,
}

impl Held {
    fn replace_if_newer(
        &mut self,
        applied_index: u64,
        version: (u64, u64),
        list: Vec<Assignment>,
    ) -> bool {
        if applied_index < self.applied_index {
            return false;
        }
        self.applied_index = applied_index;
        self.version = version;
        self.list = list;
        true
    }
}

type Reported = Arc<Mutex<HashMap<RunKey, Instant>>>;

/// Ready while registered and holding a lease: the agent may run what it is given.
fn readiness(
    registration: tokio::sync::watch::Receiver<u64>,
    lease: Arc<Lease>,
) -> Arc<dyn Fn() -> Result<String, String> + Send + Sync> {
    Arc::new(move || {
        let epoch = *registration.borrow();
        if epoch == 0 {
            return Err("not registered with the cluster yet".into());
        }
        if !lease.is_valid() {
            return Err(format!(
                "registered (epoch {epoch}) but no leader has answered within the lease"
            ));
        }
        Ok(format!("registered (epoch {epoch}), lease held"))
    })
}

/// Run exactly the assigned shards: stop runs no longer assigned, start new assignments
/// unless the work directory shows they already ran.
fn reconcile(ctx: &RunContext, runs: &Runs, reported: &Reported, assignments: Vec<Assignment>) {
    let wanted: HashSet<RunKey> = assignments
        .iter()
        .map(|a| (a.job_id.clone(), a.index, a.epoch))
        .collect();
    ctx.specs
        .retain(&assignments.iter().map(|a| a.job_id.as_str()).collect());
    ctx.host.recycle(ctx.workdir.forget_except(&wanted));
    let mut runs_now = lock(runs);
    runs_now.retain(|key, _| {
        let keep = wanted.contains(key);
        if !keep {
            tracing::info!(job = %key.0, shard = key.1, epoch = key.2, "no longer assigned here: stopping");
        }
        keep
    });
    // Reports re-sent from the work directory: once per few seconds per run, not on every
    // heartbeat while the first is still on its way.
    let mut rereported = lock(reported);
    rereported.retain(|key, at| wanted.contains(key) && at.elapsed() < REREPORT_AFTER);
    for a in assignments {
        let key = (a.job_id.clone(), a.index, a.epoch);
        if runs_now.contains_key(&key) || rereported.contains_key(&key) {
            continue;
        }
        match ctx.workdir.record(&a.job_id, a.index, a.epoch) {
            RunRecord::Ended(result) => {
                rereported.insert(key, Instant::now());
                ctx.report_result(&a, &result);
            }
            RunRecord::Interrupted => {
                rereported.insert(key, Instant::now());
                let result = RunResult {
                    exit_code: None,
                    run_ms: 0,
                    error: "the TaskManager agent restarted while the shard ran".into(),
                    cannot_start: false,
                    over_limit: false,
                };
                ctx.report(&a, ReportKind::Interrupted, Some(&result));
            }
            RunRecord::NeverStarted => {
                // Debug, not info: at a thousand shards a second a line per start is most of
                // the log; the cluster's events (`dispatcher events`) record every start.
                tracing::debug!(job = %a.job_id, shard = a.index, epoch = a.epoch, attempt = a.attempt, "starting");
                ctx.metrics.run_started();
                runs_now.insert(key, runner::start(ctx.clone(), a));
            }
        }
    }
}
