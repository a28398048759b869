//! `dispatcher bench`: starts local clusters of this very binary on loopback (durable
//! replicas, default timings) and measures what users feel and what the machine allows:
//! - `throughput`: submissions per second and their latency at several client counts;
//! - `failover`: SIGKILL or SIGSTOP of the leader → first acknowledged submission sent after
//!   it, with where the time went;
//! - `recovery`: TaskManager loss and the pause in shard progress, with real agents;
//! - `dispatch`: submit → process start, and shards end to end against the machine's floor;
//! - `scale` (with `fleet`'s simulated TaskManagers): placements, heartbeats, memory,
//!   snapshot size and restart time;
//! - `limits`: the floors, fdatasync and a bare gRPC round trip;
//! - `flood`: admission control under a flood of shards that can never run, with the
//!   replicas' memory;
//! - `process`: CPU and memory of a process, from /proc;
//! - `dependents`: a job's shard rate when many jobs wait for it, against alone;
//! - `planning`: one planning turn of the pure scheduler on a large state, in this process;
//! - `etcd`: etcd's write rate at the same client counts, when it is installed.
//!
//! It must not reach into a replica: everything goes through the public API and signals
//! (`planning` starts none).

mod dependents;
mod dispatch;
pub mod etcd;
mod failover;
mod fleet;
mod flood;
mod limits;
mod planning;
pub mod process;
mod recovery;
mod scale;
mod stats;
mod throughput;

pub use dependents::{measure_dependents, DependentsResult};
pub use dispatch::{
    measure_dispatch_latency, measure_end_to_end, measure_wait_latency, DispatchLatency, EndToEnd,
    COMMANDS_CPU, CPU_GROUPS, DISPATCHER_CPU,
};
pub use failover::{measure_failover, measure_idle_elections, Fault};
pub use flood::{measure_flood, FloodResult};
pub use limits::{measure_fsync, measure_ping, FsyncResult, PingResult};
pub use planning::{measure_planning, PlanningOptions, PlanningResult};
pub use recovery::{
    measure_progress_pause, measure_taskmanager_loss, replace_with_sandboxed_agents, start_agents,
};
pub use scale::{measure_scale, ScaleOptions, ScaleResult};
pub use stats::Summary;
pub use throughput::measure_submissions;

use crate::config::ServeConfig;
use crate::local_cluster::{LocalCluster, LocalClusterError};
use crate::pb::api::{JobSpec, SubmitRequest};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Cluster(#[from] LocalClusterError),
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Failed(String),
}

/// A job of `shards` one-slot shards running `command args`; the client adds a fresh
/// idempotency key, so every request creates a job.
pub fn job_request(name: &str, shards: u32, command: &str, args: &[&str]) -> SubmitRequest {
    SubmitRequest {
        name: name.to_string(),
        spec: Some(JobSpec {
            command: command.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Default::default(),
            shard_count: shards,
            slots_per_shard: 1,
            max_attempts: 3,
            selector: Default::default(),
        }),
        idempotency_key: String::new(),
        priority: None,
        ..Default::default()
    }
}

pub const STARTUP_DEADLINE: Duration = Duration::from_secs(30);

/// Start `replicas` replicas of the running executable under `root` and wait for a leader.
pub async fn start_cluster(
    root: &Path,
    replicas: u64,
    config: &ServeConfig,
) -> Result<LocalCluster, BenchError> {
    start_cluster_with(root, replicas, config, false).await
}

/// `start_cluster`, with mutual TLS and tokens when `secure`.
pub async fn start_cluster_with(
    root: &Path,
    replicas: u64,
    config: &ServeConfig,
    secure: bool,
) -> Result<LocalCluster, BenchError> {
    let binary = std::env::current_exe()?;
    let cluster = LocalCluster::start_with(binary, root, replicas, config, secure)?;
    cluster
        .wait_for_leader(&cluster.ids(), STARTUP_DEADLINE)
        .await?;
    Ok(cluster)
}
