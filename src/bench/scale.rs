//! Scale figures on one cluster with many simulated TaskManagers (see `fleet`): how fast the
//! leader places shards, how many heartbeats it absorbs and at what CPU cost, and what a
//! replica holding a large state costs in memory, on disk and to restart.

use super::fleet::{self, Heartbeaters, Registrations};
use super::process::{cpu_time, rss_bytes};
use super::{job_request, BenchError};
use crate::client::Client;
use crate::local_cluster::{wait_for, LocalCluster};
use crate::security::Credentials;
use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct ScaleOptions {
    pub taskmanagers: usize,
    pub slots: u32,
    /// Shards submitted for the placement rate.
    pub placement_shards: u32,
    /// Shards per job.
    pub job_shards: u32,
    /// Each simulated TaskManager heartbeats this often in the background.
    pub keepalive: Duration,
    /// Seconds of heartbeats as fast as the leader answers (0 skips).
    pub heartbeat_seconds: f64,
    pub heartbeat_workers: usize,
    /// Fill the state to this many shards for the memory figures (0 skips).
    pub memory_shards: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlacementResult {
    pub shards: u64,
    pub seconds: f64,
    pub per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HeartbeatResult {
    pub seconds: f64,
    pub workers: usize,
    /// Heartbeats the leader answered per second (load plus keep-alive).
    pub per_second: f64,
    /// CPU the leader process used meanwhile, in cores (1.0 = one core busy).
    pub leader_cpu_cores: f64,
    pub leader_cpu_us_per_heartbeat: f64,
    /// Shards assigned per TaskManager meanwhile: every reply lists them all.
    pub assignments_per_taskmanager: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryResult {
    pub taskmanagers: usize,
    pub shards: u64,
    /// Resident size of a follower: empty, with the TaskManagers, with the shards too.
    pub follower_rss_empty_bytes: u64,
    pub follower_rss_taskmanagers_bytes: u64,
    pub follower_rss_full_bytes: u64,
    pub leader_rss_full_bytes: u64,
    pub bytes_per_taskmanager: f64,
    pub bytes_per_shard: f64,
    pub snapshot_bytes: u64,
    pub snapshot_build_seconds: f64,
    /// kill -9 of the follower → restarted and caught up to where the cluster was.
    pub restart_seconds: f64,
    pub fill_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScaleResult {
    pub taskmanagers: usize,
    pub slots_per_taskmanager: u32,
    pub registrations_per_second: f64,
    /// Keep-alive heartbeats refused or failed (a TaskManager declared lost shows here).
    pub keepalive_refused: u64,
    pub placement: PlacementResult,
    /// The same number of shards again with the scheduling rules at work (see
    /// `submit_and_place_with_rules`).
    pub placement_with_rules: PlacementResult,
    pub heartbeats: Option<HeartbeatResult>,
    pub memory: Option<MemoryResult>,
}

/// Tenants of the placement run with rules: the first has a quota (larger than what it
/// submits, so it never blocks the run), the weights differ.
const RULE_TENANTS: [(&str, u32); 4] = [
    ("bench-a", 1),
    ("bench-b", 2),
    ("bench-c", 3),
    ("bench-d", 1),
];

/// Submit `total` shards as jobs of `job_shards` and time until none is pending.
async fn submit_and_place(
    endpoints: &[String],
    name: &str,
    total: u64,
    job_shards: u32,
) -> Result<PlacementResult, BenchError> {
    submit_and_place_as(endpoints, name, total, job_shards, |_, _| {}).await
}

/// As `submit_and_place`, with the rules at work: four tenants with weights 1 to 3 (one of
/// them with a quota), priorities from 100 to 900, and every fourth job a gang, so that the
/// planner takes its fair-share path and checks gangs whole. (`--after` is left out: the
/// simulated TaskManagers never finish a shard, so a dependent would never run.)
async fn submit_and_place_with_rules(
    endpoints: &[String],
    total: u64,
    job_shards: u32,
) -> Result<PlacementResult, BenchError> {
    let admin = Client::new(endpoints.to_vec(), Credentials::insecure())?;
    for (i, (tenant, weight)) in RULE_TENANTS.iter().enumerate() {
        let quota = (i == 0).then_some(total);
        admin.set_quota(tenant, quota, false, Some(*weight)).await?;
    }
    submit_and_place_as(endpoints, "rules", total, job_shards, |i, request| {
        request.tenant = RULE_TENANTS[i % RULE_TENANTS.len()].0.to_string();
        request.priority = Some(100 + (i as u32 * 200) % 900);
        request.gang = i % 4 == 3;
    })
    .await
}

async fn submit_and_place_as(
    endpoints: &[String],
    name: &str,
    total: u64,
    job_shards: u32,
    options: impl Fn(usize, &mut crate::pb::api::SubmitRequest),
) -> Result<PlacementResult, BenchError> {
    let started = Instant::now();
    let client = Client::new(endpoints.to_vec(), Credentials::insecure())?;
    let mut remaining = total;
    let mut submits = Vec::new();
    while remaining > 0 {
        let n = remaining.min(u64::from(job_shards)) as u32;
        remaining -= u64::from(n);
        let client = Client::new(endpoints.to_vec(), Credentials::insecure())?;
        let mut request = job_request(name, n, "/bin/true", &[]);
        options(submits.len(), &mut request);
        submits.push(tokio::spawn(async move { client.submit(request).await }));
    }
    let mut ids = BTreeSet::new();
    for s in submits {
        let reply = s
            .await
            .map_err(|e| BenchError::Failed(format!("submit task: {e}")))??;
        ids.insert(reply.job_id);
    }
    wait_for(DEADLINE, "every shard to be placed", || async {
        let jobs = client.list_jobs().await.ok()?;
        jobs.iter()
            .filter(|j| ids.contains(&j.job_id))
            .all(|j| j.shards_pending == 0)
            .then_some(())
    })
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(PlacementResult {
        shards: total,
        seconds,
        per_second: total as f64 / seconds,
    })
}

fn pid_of(cluster: &LocalCluster, id: u64) -> Result<u32, BenchError> {
    cluster
        .replica(id)?
        .pid()
        .ok_or_else(|| BenchError::Failed(format!("replica {id} is not running")))
}

fn rss(cluster: &LocalCluster, id: u64) -> Result<u64, BenchError> {
    rss_bytes(pid_of(cluster, id)?)
        .ok_or_else(|| BenchError::Failed(format!("cannot read the memory of replica {id}")))
}

async fn measure_heartbeats(
    cluster: &LocalCluster,
    fleet: &Arc<Registrations>,
    keepalive: &Heartbeaters,
    options: &ScaleOptions,
) -> Result<HeartbeatResult, BenchError> {
    let leader = cluster.wait_for_leader(&cluster.ids(), DEADLINE).await?;
    let pid = pid_of(cluster, leader)?;
    let load = Heartbeaters::start(
        &cluster.endpoints(),
        fleet.clone(),
        options.heartbeat_workers,
        Duration::ZERO,
    )?;
    // Let the connections open before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (load0, keep0) = (load.answered(), keepalive.answered());
    let cpu0 = cpu_time(pid);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(options.heartbeat_seconds)).await;
    let seconds = started.elapsed().as_secs_f64();
    let cpu1 = cpu_time(pid);
    let answered = (load.answered() - load0) + (keepalive.answered() - keep0);
    load.stop().await;
    let cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => b.saturating_sub(a).as_secs_f64(),
        _ => {
            return Err(BenchError::Failed(
                "cannot read the leader's CPU time".into(),
            ))
        }
    };
    Ok(HeartbeatResult {
        seconds,
        workers: options.heartbeat_workers,
        per_second: answered as f64 / seconds,
        leader_cpu_cores: cpu / seconds,
        leader_cpu_us_per_heartbeat: cpu * 1e6 / (answered.max(1) as f64),
        assignments_per_taskmanager: f64::from(options.placement_shards)
            / fleet.len().max(1) as f64,
    })
}

/// Register the fleet, keep it alive, and take the scale figures on `cluster`.
pub async fn measure_scale(
    cluster: &mut LocalCluster,
    options: &ScaleOptions,
) -> Result<ScaleResult, BenchError> {
    let endpoints = cluster.endpoints();
    let ids = cluster.ids();
    let leader = cluster.wait_for_leader(&ids, DEADLINE).await?;
    let follower = ids
        .iter()
        .copied()
        .find(|id| *id != leader)
        .ok_or_else(|| BenchError::Failed("the scale bench needs at least two replicas".into()))?;
    let rss_empty = rss(cluster, follower)?;
    let prefix = format!("sim{}", options.taskmanagers);
    let (fleet, took) =
        fleet::register(&endpoints, &prefix, options.taskmanagers, options.slots).await?;
    let registrations_per_second = fleet.len() as f64 / took.as_secs_f64();
    let fleet = Arc::new(fleet);
    let keepalive = Heartbeaters::start(&endpoints, fleet.clone(), 32, options.keepalive)?;
    // Every TaskManager has been heard from once before the load starts.
    wait_for(
        DEADLINE,
        "a first heartbeat from every TaskManager",
        || async { (keepalive.answered() >= fleet.len() as u64).then_some(()) },
    )
    .await?;
    let rss_taskmanagers = rss(cluster, follower)?;

    let placement = submit_and_place(
        &endpoints,
        "placement",
        u64::from(options.placement_shards),
        options.job_shards,
    )
    .await?;
    tracing::info!(?placement, "placement rate");
    let placement_with_rules = submit_and_place_with_rules(
        &endpoints,
        u64::from(options.placement_shards),
        // Smaller jobs, so that tenants, priorities and gangs mix.
        (options.job_shards / 10).max(1),
    )
    .await?;
    tracing::info!(
        ?placement_with_rules,
        "placement rate with scheduling rules"
    );

    let heartbeats = if options.heartbeat_seconds > 0.0 {
        Some(measure_heartbeats(cluster, &fleet, &keepalive, options).await?)
    } else {
        None
    };

    let mut memory = None;
    if options.memory_shards > 2 * u64::from(options.placement_shards) {
        let fill = submit_and_place(
            &endpoints,
            "memory",
            options.memory_shards - 2 * u64::from(options.placement_shards),
            options.job_shards,
        )
        .await?;
        let leader = cluster.wait_for_leader(&ids, DEADLINE).await?;
        let follower = ids
            .iter()
            .copied()
            .find(|id| *id != leader)
            .unwrap_or(follower);
        let rss_full = rss(cluster, follower)?;
        let leader_rss = rss(cluster, leader)?;
        let follower_addr = cluster.addr(follower)?;
        let client = Client::new(endpoints.clone(), Credentials::insecure())?;
        let built = Instant::now();
        let snapshot = client.snapshot(Some(&follower_addr)).await?;
        let snapshot_build_seconds = built.elapsed().as_secs_f64();
        let target = client.cluster_status().await?.last_applied;
        cluster.kill(follower)?;
        let restarted = Instant::now();
        cluster.restart(follower)?;
        wait_for(DEADLINE, "the restarted replica to catch up", || async {
            let s = client.local_status(Some(&follower_addr)).await.ok()?;
            (s.last_applied >= target).then_some(())
        })
        .await?;
        let restart_seconds = restarted.elapsed().as_secs_f64();
        memory = Some(MemoryResult {
            taskmanagers: fleet.len(),
            shards: options.memory_shards,
            follower_rss_empty_bytes: rss_empty,
            follower_rss_taskmanagers_bytes: rss_taskmanagers,
            follower_rss_full_bytes: rss_full,
            leader_rss_full_bytes: leader_rss,
            bytes_per_taskmanager: rss_taskmanagers.saturating_sub(rss_empty) as f64
                / fleet.len().max(1) as f64,
            bytes_per_shard: rss_full.saturating_sub(rss_taskmanagers) as f64
                / options.memory_shards.max(1) as f64,
            snapshot_bytes: snapshot.size_bytes,
            snapshot_build_seconds,
            restart_seconds,
            fill_seconds: fill.seconds + placement.seconds,
        });
    }
    let keepalive_refused = keepalive.refused();
    keepalive.stop().await;
    Ok(ScaleResult {
        keepalive_refused,
        taskmanagers: fleet.len(),
        slots_per_taskmanager: options.slots,
        registrations_per_second,
        placement,
        placement_with_rules,
        heartbeats,
        memory,
    })
}
