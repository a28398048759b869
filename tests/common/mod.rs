//! Shared test harness: a real three-replica cluster of the `dispatcher` binary on free
//! loopback ports, and helpers that wait on conditions with deadlines.
#![allow(dead_code, unused_imports)]

pub mod cdp;
pub mod http_client;
pub mod records;

use dispatcher::client::Client;
use dispatcher::config::{RaftTimings, ServeConfig, SnapshotSettings, TaskManagerSettings};
use dispatcher::local_cluster::{wait_for, LocalCluster};
use dispatcher::pb::api::{JobSpec, JobStatus, RegisterTaskManagerRequest, SubmitRequest};
use std::time::Duration;

pub const BINARY: &str = env!("CARGO_BIN_EXE_dispatcher");
/// Generous: CI machines have two cores and run several clusters at once.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Slower Raft timings than the defaults, so a loaded test machine does not trigger
/// spurious elections (safety never depends on them); TaskManager heartbeats every 200 ms
/// with a lease of 3 s that outlasts a leader failover at these timings, loss after 4.5 s.
pub fn test_config() -> ServeConfig {
    ServeConfig {
        raft: RaftTimings {
            heartbeat_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            ..RaftTimings::default()
        },
        snapshot: SnapshotSettings::default(),
        taskmanagers: TaskManagerSettings {
            heartbeat_interval_ms: 200,
            lease_ms: 3_000,
            timeout_ms: 4_500,
            grace_ms: 4_500,
            ..TaskManagerSettings::default()
        },
        jobs: Default::default(),
        limits: Default::default(),
        security: Default::default(),
        dashboard: Default::default(),
    }
}

/// A job whose shards run `command args`.
pub fn job_request(
    name: &str,
    shards: u32,
    slots: u32,
    max_attempts: u32,
    command: (String, Vec<String>),
) -> SubmitRequest {
    SubmitRequest {
        name: name.to_string(),
        spec: Some(JobSpec {
            command: command.0,
            args: command.1,
            env: Default::default(),
            shard_count: shards,
            slots_per_shard: slots,
            max_attempts,
            selector: Default::default(),
        }),
        idempotency_key: String::new(),
        priority: None,
        ..Default::default()
    }
}

/// Wait until the job reaches one of `states`.
pub async fn wait_job_state(
    client: &Client,
    job_id: &str,
    states: &[&str],
    within: Duration,
) -> anyhow::Result<JobStatus> {
    let status = wait_for(within, &format!("{job_id} to reach {states:?}"), || async {
        let s = client.job_status(job_id).await.ok()?;
        states.contains(&s.state.as_str()).then_some(s)
    })
    .await?;
    Ok(status)
}

/// Wait until every shard of the job is running.
pub async fn wait_all_running(client: &Client, job_id: &str) -> anyhow::Result<JobStatus> {
    let status = wait_for(DEADLINE, "every shard to run", || async {
        let s = client.job_status(job_id).await.ok()?;
        s.shards.iter().all(|sh| sh.state == "running").then_some(s)
    })
    .await?;
    Ok(status)
}

/// Wait until `count` TaskManagers are registered and alive.
pub async fn wait_taskmanagers_alive(client: &Client, count: usize) -> anyhow::Result<()> {
    wait_for(DEADLINE, "TaskManagers to register", || async {
        let tms = client.list_taskmanagers().await.ok()?;
        (tms.iter().filter(|t| t.state == "alive").count() >= count).then_some(())
    })
    .await?;
    Ok(())
}

pub fn now_ms() -> u64 {
    dispatcher::clock::now_ms()
}

pub fn log_phase(phase: &str) {
    eprintln!("=== {phase}");
}

pub struct TestCluster {
    pub cluster: LocalCluster,
    /// Keeps the data directories alive for the test's duration.
    pub dir: tempfile::TempDir,
}

impl std::ops::Deref for TestCluster {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.cluster
    }
}

impl std::ops::DerefMut for TestCluster {
    fn deref_mut(&mut self) -> &mut LocalCluster {
        &mut self.cluster
    }
}

/// A cluster of replicas started with `--insecure` (no TLS, no tokens).
pub async fn start_cluster(replicas: u64, config: ServeConfig) -> anyhow::Result<TestCluster> {
    start_cluster_with(replicas, config, false).await
}

/// A cluster with mutual TLS and tokens; its `client()` presents `client-admin` and the
/// bootstrap admin token.
pub async fn start_secure_cluster(
    replicas: u64,
    config: ServeConfig,
) -> anyhow::Result<TestCluster> {
    start_cluster_with(replicas, config, true).await
}

/// A cluster of replicas of another build of the dispatcher (an older release).
pub async fn start_cluster_on(
    binary: &std::path::Path,
    replicas: u64,
    config: ServeConfig,
) -> anyhow::Result<TestCluster> {
    start_cluster_of(binary, replicas, config, false).await
}

async fn start_cluster_with(
    replicas: u64,
    config: ServeConfig,
    secure: bool,
) -> anyhow::Result<TestCluster> {
    start_cluster_of(std::path::Path::new(BINARY), replicas, config, secure).await
}

pub async fn start_cluster_of(
    binary: &std::path::Path,
    replicas: u64,
    config: ServeConfig,
    secure: bool,
) -> anyhow::Result<TestCluster> {
    // DISPATCHER_TEST_KEEP=1 keeps data dirs and replica logs for a post-mortem.
    let keep = std::env::var_os("DISPATCHER_TEST_KEEP").is_some();
    let dir = tempfile::Builder::new()
        .prefix("dispatcher-test-")
        .disable_cleanup(keep)
        .tempdir()?;
    if keep {
        eprintln!("replica data and logs kept in {}", dir.path().display());
    }
    let cluster = LocalCluster::start_with(binary, dir.path(), replicas, &config, secure)?;
    let ids = cluster.ids();
    cluster.wait_for_leader(&ids, DEADLINE).await?;
    if binary == std::path::Path::new(BINARY) {
        // The leader raises the cluster version a second after it forms: settled before
        // the test looks, so no test sees that entry arrive.
        wait_for(
            DEADLINE,
            "the cluster version raised on every replica",
            || async {
                for id in &ids {
                    let status = cluster.local_status(*id).await?;
                    (status.cluster_version == Some(dispatcher::formats::MAX_CLUSTER_VERSION))
                        .then_some(())?;
                }
                Some(())
            },
        )
        .await?;
    }
    Ok(TestCluster { cluster, dir })
}

pub fn spec(shards: u32, command: &str) -> JobSpec {
    JobSpec {
        command: command.to_string(),
        args: vec![],
        env: Default::default(),
        shard_count: shards,
        slots_per_shard: 1,
        max_attempts: 3,
        selector: Default::default(),
    }
}

pub fn submit_request(name: &str, shards: u32, key: &str) -> SubmitRequest {
    SubmitRequest {
        name: name.to_string(),
        spec: Some(spec(shards, "/bin/true")),
        idempotency_key: key.to_string(),
        priority: None,
        ..Default::default()
    }
}

pub async fn register_taskmanagers(
    client: &Client,
    count: usize,
    slots: u32,
) -> anyhow::Result<()> {
    for i in 0..count {
        client
            .register_taskmanager(RegisterTaskManagerRequest {
                id: format!("tm-{i}"),
                addr: format!("127.0.0.1:{}", 9000 + i),
                slots,
                labels: Default::default(),
                ..Default::default()
            })
            .await?;
    }
    Ok(())
}

/// Wait until every shard of the job is placed.
pub async fn wait_placed(client: &Client, job_id: &str) -> anyhow::Result<JobStatus> {
    let status = wait_for(DEADLINE, "every shard to be placed", || async {
        let s = client.job_status(job_id).await.ok()?;
        s.shards
            .iter()
            .all(|sh| sh.taskmanager.is_some())
            .then_some(s)
    })
    .await?;
    Ok(status)
}

/// Run `ip` with `args`; an error names the command and what it said.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("ip").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Network namespaces need root (CI runs as root).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The code of a refusal; panics if the call was accepted.
pub fn code<T: std::fmt::Debug>(
    result: Result<T, dispatcher::client::ClientError>,
) -> Option<tonic::Code> {
    match result {
        Ok(value) => panic!("expected a refusal, got {value:?}"),
        Err(e) => e.code(),
    }
}

/// The leader's applied index and state digest: a refused call must move neither.
pub async fn leader_view(cluster: &TestCluster) -> anyhow::Result<(u64, String)> {
    let leader = cluster.wait_for_leader(&cluster.ids(), DEADLINE).await?;
    let status = cluster
        .local_status(leader)
        .await
        .ok_or_else(|| anyhow::anyhow!("leader does not answer"))?;
    Ok((status.last_applied, status.state_digest))
}

/// The leader's state digest.
pub async fn leader_digest(cluster: &TestCluster) -> anyhow::Result<String> {
    Ok(leader_view(cluster).await?.1)
}

/// A replica of the cluster other than those in `excluded`.
pub fn replica_other_than(cluster: &TestCluster, excluded: &[u64]) -> anyhow::Result<u64> {
    cluster
        .ids()
        .into_iter()
        .find(|id| !excluded.contains(id))
        .ok_or_else(|| anyhow::anyhow!("no replica other than {excluded:?}"))
}

/// A client of a secure cluster that presents the harness's `client-admin` certificate and
/// `secret` as its token (so the token's role decides), with short deadlines.
pub fn client_with_token(
    cluster: &TestCluster,
    secret: &dispatcher::security::Secret,
) -> anyhow::Result<dispatcher::client::Client> {
    use dispatcher::security::{Credentials, TlsConfig, TlsFiles};
    let dir = cluster.root().join("certs");
    Ok(dispatcher::client::Client::with_options(
        cluster.endpoints(),
        dispatcher::client::ClientOptions {
            rpc_timeout: Duration::from_secs(2),
            call_timeout: Duration::from_secs(5),
            source_ip: None,
            credentials: Credentials::tls(
                TlsConfig::load(&TlsFiles::new(&dir, "client-admin"))?,
                Some(secret.clone()),
            ),
        },
    )?)
}

/// Run the CLI against the cluster (its endpoints and the harness's credentials appended).
pub fn cli(cluster: &TestCluster, args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(std::process::Command::new(BINARY)
        .args(args)
        .arg("--endpoints")
        .arg(cluster.endpoints().join(","))
        .args(cluster.client_flags())
        .output()?)
}

/// The previous release (v0.1.0), for mixed-version tests: built by `.ci/run` before the
/// tests, or here (slowly, in a target dir of its own: this `cargo test` holds the lock on
/// the usual one) by scripts/build-release.sh.
pub fn old_release_binary() -> anyhow::Result<std::path::PathBuf> {
    const OLD_RELEASE: &str = "v0.1.0";
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let binary = root
        .join("target/releases")
        .join(OLD_RELEASE)
        .join("dispatcher");
    if !binary.exists() {
        log_phase(&format!("building {OLD_RELEASE} from its tag"));
        let status = std::process::Command::new(root.join("scripts/build-release.sh"))
            .arg(OLD_RELEASE)
            .env("CARGO_TARGET_DIR", root.join("target/releases/build"))
            .status()?;
        anyhow::ensure!(
            status.success(),
            "scripts/build-release.sh {OLD_RELEASE} failed"
        );
    }
    Ok(binary)
}

/// Five runs of the CLI call `command` makes, each of which must succeed: their times,
/// shortest first (the median is `[2]`).
pub fn five_timed_calls(
    mut command: impl FnMut() -> std::process::Command,
) -> anyhow::Result<Vec<std::time::Duration>> {
    let mut took = Vec::new();
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let out = command().output()?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        took.push(started.elapsed());
    }
    took.sort();
    Ok(took)
}

/// On a failure that may be a rare timing, say what each replica saw: its own status (term,
/// leader) and the end of its log. For tests whose failure cannot be reproduced at will.
pub async fn explain_replicas(cluster: &TestCluster, paused: Option<u64>) {
    for id in cluster.ids() {
        if Some(id) == paused {
            eprintln!("--- replica {id}: paused");
        } else {
            let status = cluster.local_status(id).await;
            eprintln!(
                "--- replica {id}: leader {:?}, term {:?}",
                status.as_ref().and_then(|s| s.leader_id),
                status.as_ref().map(|s| s.term)
            );
        }
        let log = cluster.root().join(format!("replica-{id}.log"));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        for line in &lines[lines.len().saturating_sub(40)..] {
            eprintln!("    {line}");
        }
    }
}
