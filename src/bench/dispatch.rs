//! What a user feels between asking and work running, measured from outside:
//! - submit → process start: one-shard jobs whose command is `/bin/date +%s%N`, so the shard
//!   itself writes the moment it started (to its stdout, kept in the agent's work dir);
//!   with the CLI (`dispatcher submit` as a child process) and with the library client;
//! - end to end: `shards` shards of `/bin/true` from `submit` until `job wait` returns;
//! - the floor: how fast this machine spawns and reaps `/bin/true` at all, with two
//!   spawners, so the end-to-end rate can be read as a share of what is possible.

use super::stats::Summary;
use super::{job_request, BenchError};
use crate::local_cluster::{wait_for, LocalCluster};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Serialize)]
pub struct DispatchLatency {
    pub runs: usize,
    pub via_cli: bool,
    pub latency: Option<Summary>,
}

/// One job of `/bin/true` shards, submit to `job wait`, beside the spawn floor measured just
/// before it.
#[derive(Debug, Clone, Serialize)]
pub struct EndToEndRun {
    pub seconds: f64,
    pub per_second: f64,
    /// `/bin/true` spawned and reaped per second by two threads doing nothing else.
    pub floor_per_second: f64,
    pub share_of_floor: f64,
    /// Raft log entries committed during the run, per shard.
    pub log_entries_per_shard: f64,
    /// CPU milliseconds per shard, by group of processes (see [`CPU_GROUPS`]).
    pub cpu_ms_per_shard: BTreeMap<String, f64>,
}

/// The medians of `runs` (each figure's own median), and every run in order: the first one
/// meets a cold cluster (the agents start their shard hosts and fetch the job's spec).
#[derive(Debug, Clone, Serialize)]
pub struct EndToEnd {
    pub shards: u32,
    pub slots: u32,
    /// Tenants the shards were shared out between, one job each.
    pub tenants: u32,
    pub seconds: f64,
    pub per_second: f64,
    pub floor_per_second: f64,
    pub share_of_floor: f64,
    pub log_entries_per_shard: f64,
    /// Each group's median CPU per shard, and their sum over the dispatcher's own processes.
    pub cpu_ms_per_shard: BTreeMap<String, f64>,
    pub runs: Vec<EndToEndRun>,
}

/// The groups of processes a run's CPU is counted in. All but the shards' own commands are
/// the dispatcher's: replicas, agents, the agents' shard hosts, and the two CLI calls.
pub const CPU_GROUPS: [&str; 5] = ["replicas", "agents", "shard hosts", "CLI", COMMANDS_CPU];

/// The shards' own commands, reaped by the shard hosts: not the dispatcher's CPU.
pub const COMMANDS_CPU: &str = "shard commands";

/// The sum of the dispatcher's own groups, under this key.
pub const DISPATCHER_CPU: &str = "dispatcher (all but the commands)";

/// Every process of the cluster, grouped: the replicas, agents and shard hosts by their own
/// CPU; the commands by what the shard hosts reaped, the CLI calls by what this process reaped.
fn cluster_processes(cluster: &LocalCluster) -> Vec<(String, u32, bool)> {
    let mut processes = Vec::new();
    for id in cluster.ids() {
        if let Some(pid) = cluster.replica(id).ok().and_then(|r| r.pid()) {
            processes.push(("replicas".to_string(), pid, false));
        }
    }
    for id in cluster.taskmanager_ids() {
        let Some(agent) = cluster.taskmanager(&id).ok().and_then(|a| a.pid()) else {
            continue;
        };
        processes.push(("agents".to_string(), agent, false));
        for host in super::process::children_named(agent, "shard-host") {
            processes.push(("shard hosts".to_string(), host, false));
            processes.push((COMMANDS_CPU.to_string(), host, true));
        }
    }
    processes.push(("CLI".to_string(), std::process::id(), true));
    processes
}

fn median_of(runs: &[EndToEndRun], figure: impl Fn(&EndToEndRun) -> f64) -> f64 {
    let values: Vec<f64> = runs.iter().map(figure).collect();
    super::stats::median(&values)
}

/// The number a finished one-shard job's run printed (a time in ns), from the output the
/// cluster keeps with the run's end (the agent's run directory is recycled once the run is
/// over).
async fn printed_ns(client: &crate::client::Client, job_id: &str) -> Option<u128> {
    let reply = client.shard_output(job_id, 0).await.ok()?;
    if !reply.kept {
        return None;
    }
    String::from_utf8_lossy(&reply.stdout).trim().parse().ok()
}

fn realtime_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// `/bin/true` spawned and reaped `count` times by `threads` threads; per second.
pub fn measure_spawn_floor(count: usize, threads: usize) -> Result<f64, BenchError> {
    let started = Instant::now();
    let per_thread = count.div_ceil(threads);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || -> std::io::Result<()> {
                for _ in 0..per_thread {
                    Command::new("/bin/true")
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()?;
                }
                Ok(())
            })
        })
        .collect();
    for handle in handles {
        handle
            .join()
            .map_err(|_| BenchError::Failed("a spawner thread panicked".into()))??;
    }
    Ok((per_thread * threads) as f64 / started.elapsed().as_secs_f64())
}

/// `dispatcher <args>` with this cluster's connection flags (after the subcommand's own).
pub(super) fn cli(binary: &Path, cluster: &LocalCluster, args: &[&str]) -> Command {
    let mut command = Command::new(binary);
    command
        .args(args)
        .args(cluster.client_flags())
        .env("DISPATCHER_ENDPOINTS", cluster.endpoints().join(","))
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Submit → the shard's process running, `runs` times, one job at a time.
pub async fn measure_dispatch_latency(
    cluster: &LocalCluster,
    runs: usize,
    cli_binary: Option<&Path>,
) -> Result<DispatchLatency, BenchError> {
    let client = cluster.client()?;
    let mut samples = Vec::with_capacity(runs);
    for run in 0..runs {
        let name = format!("latency-{run}-{}", cli_binary.is_some());
        let asked_ns = realtime_ns();
        let job_id = match cli_binary {
            Some(binary) => {
                let out = cli(
                    binary,
                    cluster,
                    &[
                        "submit", "--output", "json", "--name", &name, "--shards", "1",
                    ],
                )
                .args(["--", "/bin/date", "+%s%N"])
                .output()?;
                if !out.status.success() {
                    return Err(BenchError::Failed(format!(
                        "dispatcher submit: {}",
                        String::from_utf8_lossy(&out.stderr)
                    )));
                }
                let reply: serde_json::Value = serde_json::from_slice(&out.stdout)
                    .map_err(|e| BenchError::Failed(format!("submit output: {e}")))?;
                reply["job_id"].as_str().unwrap_or_default().to_string()
            }
            None => {
                client
                    .submit(job_request(&name, 1, "/bin/date", &["+%s%N"]))
                    .await?
                    .job_id
            }
        };
        let started_ns = wait_for(Duration::from_secs(30), "the shard to run", || async {
            let status = client.job_status(&job_id).await.ok()?;
            let shard = status.shards.first()?;
            if shard.state != "finished" {
                return None;
            }
            printed_ns(&client, &job_id).await
        })
        .await?;
        samples.push(Duration::from_nanos(
            started_ns.saturating_sub(asked_ns) as u64
        ));
    }
    Ok(DispatchLatency {
        runs,
        via_cli: cli_binary.is_some(),
        latency: Summary::of(&samples),
    })
}

/// A shard's end → `dispatcher job wait` returning, `runs` times: each job's one shard sleeps
/// 300 ms (while `job wait` starts and connects) and prints the time it ends.
pub async fn measure_wait_latency(
    cluster: &LocalCluster,
    binary: &Path,
    runs: usize,
) -> Result<Option<Summary>, BenchError> {
    let client = cluster.client()?;
    let mut samples = Vec::with_capacity(runs);
    for run in 0..runs {
        let job_id = client
            .submit(job_request(
                &format!("wait-{run}"),
                1,
                "/bin/sh",
                &["-c", "sleep 0.3; date +%s%N"],
            ))
            .await?
            .job_id;
        let waited = cli(
            binary,
            cluster,
            &["job", "wait", &job_id, "--timeout", "60"],
        )
        .stdout(Stdio::null())
        .status()?;
        let returned_ns = realtime_ns();
        if !waited.success() {
            return Err(BenchError::Failed(format!("job wait {job_id}: {waited}")));
        }
        let ended_ns = printed_ns(&client, &job_id).await.ok_or_else(|| {
            BenchError::Failed(format!(
                "{job_id}: no kept output with the shard's end time"
            ))
        })?;
        samples.push(Duration::from_nanos(
            returned_ns.saturating_sub(ended_ns) as u64
        ));
    }
    Ok(Summary::of(&samples))
}

/// The leader's commit index (0 if it cannot be had).
async fn committed_index(cluster: &LocalCluster) -> u64 {
    match cluster.client() {
        Ok(client) => client
            .cluster_status()
            .await
            .map(|s| s.committed)
            .unwrap_or(0),
        Err(_) => 0,
    }
}

/// `runs` rounds of `shards` shards of `/bin/true`, one after another: `dispatcher submit`
/// (one job per tenant, all at once; no `--tenant` when there is one), then `dispatcher job
/// wait` for each, each round after a measure of the spawn floor.
pub async fn measure_end_to_end(
    cluster: &LocalCluster,
    binary: &Path,
    shards: u32,
    slots: u32,
    runs: usize,
    tenants: u32,
) -> Result<EndToEnd, BenchError> {
    let mut measured = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        measured.push(end_to_end_run(cluster, binary, shards, tenants).await?);
    }
    Ok(EndToEnd {
        shards,
        slots,
        tenants: tenants.max(1),
        seconds: median_of(&measured, |r| r.seconds),
        per_second: median_of(&measured, |r| r.per_second),
        floor_per_second: median_of(&measured, |r| r.floor_per_second),
        share_of_floor: median_of(&measured, |r| r.share_of_floor),
        log_entries_per_shard: median_of(&measured, |r| r.log_entries_per_shard),
        cpu_ms_per_shard: std::iter::once(DISPATCHER_CPU)
            .chain(CPU_GROUPS)
            .map(|group| {
                let median = median_of(&measured, |r| {
                    r.cpu_ms_per_shard.get(group).copied().unwrap_or(0.0)
                });
                (group.to_string(), median)
            })
            .collect(),
        runs: measured,
    })
}

async fn end_to_end_run(
    cluster: &LocalCluster,
    binary: &Path,
    shards: u32,
    tenants: u32,
) -> Result<EndToEndRun, BenchError> {
    let floor = measure_spawn_floor(2000, 2)?;
    let committed_before = committed_index(cluster).await;
    // After the floor, whose processes this one reaped too.
    let cpu = super::process::CpuSpent::start(&cluster_processes(cluster));
    let started = Instant::now();
    // One job per tenant, submitted at once, the shards shared out evenly.
    let tenants = tenants.clamp(1, shards.max(1));
    let submits = (0..tenants)
        .map(|t| {
            let share = shards / tenants + u32::from(t < shards % tenants);
            let mut args = vec![
                "submit".to_string(),
                "--output".into(),
                "json".into(),
                "--name".into(),
                "end-to-end".into(),
                "--shards".into(),
                share.to_string(),
            ];
            if tenants > 1 {
                args.extend(["--tenant".into(), format!("bench-tenant-{t}")]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            // The command last: the cluster's flags go before the `--`.
            Ok(cli(binary, cluster, &args)
                .args(["--", "/bin/true"])
                .stdout(Stdio::piped())
                .spawn()?)
        })
        .collect::<Result<Vec<_>, BenchError>>()?;
    let mut job_ids = Vec::with_capacity(submits.len());
    for submit in submits {
        let out = submit.wait_with_output()?;
        let reply: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            BenchError::Failed(format!(
                "submit: {e}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        })?;
        job_ids.push(reply["job_id"].as_str().unwrap_or_default().to_string());
    }
    let waits = job_ids
        .iter()
        .map(|job_id| {
            Ok(cli(
                binary,
                cluster,
                &["job", "wait", job_id, "--timeout", "600"],
            )
            .stdout(Stdio::null())
            .spawn()?)
        })
        .collect::<Result<Vec<_>, BenchError>>()?;
    for (mut wait, job_id) in waits.into_iter().zip(&job_ids) {
        let waited = wait.wait()?;
        if !waited.success() {
            return Err(BenchError::Failed(format!(
                "job wait {job_id} ended with {waited}"
            )));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let per_second = f64::from(shards) / seconds;
    let mut cpu_ms_per_shard: BTreeMap<String, f64> = cpu
        .seconds(&cluster_processes(cluster))
        .into_iter()
        .map(|(group, s)| (group, s * 1000.0 / f64::from(shards)))
        .collect();
    let own: f64 = cpu_ms_per_shard
        .iter()
        .filter(|(group, _)| group.as_str() != COMMANDS_CPU)
        .map(|(_, ms)| ms)
        .sum();
    cpu_ms_per_shard.insert(DISPATCHER_CPU.to_string(), own);
    let entries = committed_index(cluster)
        .await
        .saturating_sub(committed_before);
    Ok(EndToEndRun {
        log_entries_per_shard: entries as f64 / f64::from(shards),
        cpu_ms_per_shard,
        seconds,
        per_second,
        floor_per_second: floor,
        share_of_floor: per_second / floor,
    })
}
