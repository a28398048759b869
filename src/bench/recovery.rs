//! Recovery as users feel it, with real TaskManager agents (this binary) running real shard
//! processes: the time from kill -9 of a TaskManager to all its shards running elsewhere,
//! and the longest pause in shard progress (gap between consecutive shard starts) across a
//! kill -9 of the leader.

use super::job_request;
use super::stats::Summary;
use super::BenchError;
use crate::client::Client;
use crate::local_cluster::{wait_for, LocalCluster};
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Serialize)]
pub struct TaskManagerLossResult {
    pub rounds: usize,
    pub heartbeat_interval_ms: u64,
    pub timeout_ms: u64,
    pub samples_ms: Vec<f64>,
    pub summary: Option<Summary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProgressPauseResult {
    pub shards: u32,
    pub longest_gap_ms: u64,
    pub median_gap_ms: u64,
    pub job_seconds: f64,
}

async fn wait_alive(client: &Client, count: usize) -> Result<(), BenchError> {
    wait_for(DEADLINE, "TaskManagers to be alive", || async {
        let tms = client.list_taskmanagers().await.ok()?;
        (tms.iter().filter(|t| t.state == "alive").count() >= count).then_some(())
    })
    .await?;
    Ok(())
}

/// Start `count` agents `agent-0..` with `slots` each and wait until they are alive.
pub async fn start_agents(
    cluster: &mut LocalCluster,
    count: usize,
    slots: u32,
) -> Result<(), BenchError> {
    for i in 0..count {
        cluster.start_taskmanager(&format!("agent-{i}"), slots, &[])?;
    }
    wait_alive(&cluster.client()?, count).await
}

/// Replace the agents `start_agents` started with as many that sandbox their shards
/// (`sandboxed-0..`): the old ones are drained first, so nothing is placed on them meanwhile.
pub async fn replace_with_sandboxed_agents(
    cluster: &mut LocalCluster,
    count: usize,
    slots: u32,
) -> Result<(), BenchError> {
    let client = cluster.client()?;
    for i in 0..count {
        let id = format!("agent-{i}");
        client.drain_taskmanager(&id, Some(0)).await?;
        cluster.kill_taskmanager(&id)?;
    }
    cluster.set_sandbox(true);
    for i in 0..count {
        cluster.start_taskmanager(&format!("sandboxed-{i}"), slots, &[])?;
    }
    wait_alive(&client, count).await
}

/// Kill a TaskManager holding long-running shards `rounds` times.
pub async fn measure_taskmanager_loss(
    cluster: &mut LocalCluster,
    agents: usize,
    rounds: usize,
    heartbeat_interval_ms: u64,
    timeout_ms: u64,
    grace_ms: u64,
) -> Result<TaskManagerLossResult, BenchError> {
    let client = cluster.client()?;
    // A new leader declares nobody lost during its grace period; the cluster was just
    // formed, so the first kill would measure the grace, not the detector.
    tokio::time::sleep(Duration::from_millis(grace_ms)).await;
    let mut samples = Vec::new();
    for round in 0..rounds {
        let submitted = client
            .submit(job_request(
                &format!("tm-loss-{round}"),
                agents as u32,
                "/bin/sleep",
                &["600"],
            ))
            .await?;
        let job_id = submitted.job_id;
        let running = wait_for(DEADLINE, "shards to run", || async {
            let s = client.job_status(&job_id).await.ok()?;
            s.shards.iter().all(|sh| sh.state == "running").then_some(s)
        })
        .await?;
        let victim = running.shards[0].taskmanager.clone().unwrap_or_default();
        let lost: BTreeSet<u32> = running
            .shards
            .iter()
            .filter(|s| s.taskmanager.as_deref() == Some(victim.as_str()))
            .map(|s| s.index)
            .collect();
        let killed = Instant::now();
        cluster.kill_taskmanager(&victim)?;
        wait_for(DEADLINE, "the lost shards to run elsewhere", || async {
            let s = client.job_status(&job_id).await.ok()?;
            s.shards
                .iter()
                .filter(|sh| lost.contains(&sh.index))
                .all(|sh| {
                    sh.state == "running" && sh.taskmanager.as_deref() != Some(victim.as_str())
                })
                .then_some(())
        })
        .await?;
        let took = killed.elapsed();
        tracing::info!(round, %victim, ms = took.as_millis() as u64, "TaskManager loss recovered");
        samples.push(took);
        client.cancel_job(&job_id).await?;
        cluster.restart_taskmanager(&victim)?;
        wait_alive(&client, agents).await?;
    }
    Ok(TaskManagerLossResult {
        rounds,
        heartbeat_interval_ms,
        timeout_ms,
        samples_ms: samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect(),
        summary: Summary::of(&samples),
    })
}

/// Run many short shards, kill the leader in the middle, and find the longest gap between
/// consecutive shard starts.
pub async fn measure_progress_pause(
    cluster: &mut LocalCluster,
    dir: &Path,
    shards: u32,
) -> Result<ProgressPauseResult, BenchError> {
    let client = cluster.client()?;
    let starts = dir.join("shard-starts.log");
    std::fs::write(&starts, "")?;
    let script = format!("date +%s%3N >> '{}'; sleep 0.2", starts.display());
    let began = Instant::now();
    let submitted = client
        .submit(job_request("progress", shards, "/bin/sh", &["-c", &script]))
        .await?;
    // Let it get going, then kill the leader.
    wait_for(DEADLINE, "shards to start", || async {
        let n = std::fs::read_to_string(&starts).ok()?.lines().count();
        (n as u32 >= shards / 4).then_some(())
    })
    .await?;
    let ids = cluster.ids();
    let leader = cluster.wait_for_leader(&ids, DEADLINE).await?;
    cluster.kill(leader)?;
    let job_id = submitted.job_id;
    wait_for(DEADLINE, "the job to finish", || async {
        let s = client.job_status(&job_id).await.ok()?;
        (s.state == "finished").then_some(())
    })
    .await?;
    let job_seconds = began.elapsed().as_secs_f64();
    cluster.restart(leader)?;
    let mut times: Vec<u64> = std::fs::read_to_string(&starts)?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    times.sort();
    let mut gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    Ok(ProgressPauseResult {
        shards,
        longest_gap_ms: gaps.last().copied().unwrap_or(0),
        median_gap_ms: gaps.get(gaps.len() / 2).copied().unwrap_or(0),
        job_seconds,
    })
}
