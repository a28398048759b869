//! `dispatcher bench`: run the measurements of `crate::bench` and print a table.

use super::table::Table;
use super::CliError;
use crate::bench::{self, BenchError};
use crate::cli::BenchArgs;
use crate::client::Client;
use crate::config::ServeConfig;
use crate::domain::MAX_TASKMANAGER_SLOTS;
use crate::pb::api::RegisterTaskManagerRequest;
use serde_json::json;
use std::time::Duration;

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores, {cpu}")
}

pub async fn bench(args: BenchArgs) -> Result<super::ExitCode, CliError> {
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        return Err(CliError::Usage(
            "--seconds must be a positive number".into(),
        ));
    }
    let (dir, remove_after) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("dispatcher-bench-{}", std::process::id())),
            true,
        ),
    };
    let config = ServeConfig::default();
    let result = run(&args, &dir, &config).await;
    if remove_after {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let report = result?;
    println!("{}", report.0);
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_vec_pretty(&report.1).map_err(|e| BenchError::Failed(e.to_string()))?,
        )
        .map_err(BenchError::from)?;
    }
    Ok(0)
}

async fn run(
    args: &BenchArgs,
    dir: &std::path::Path,
    config: &ServeConfig,
) -> Result<(String, serde_json::Value), BenchError> {
    let mut cluster = bench::start_cluster(&dir.join("throughput"), args.replicas, config).await?;
    let client = Client::new(cluster.endpoints())?;
    // Enough capacity that every submitted shard is placed, as in real use.
    for i in 0..16 {
        client
            .register_taskmanager(RegisterTaskManagerRequest {
                id: format!("bench-tm-{i}"),
                addr: format!("127.0.0.1:{}", 20000 + i),
                slots: MAX_TASKMANAGER_SLOTS,
                labels: Default::default(),
            })
            .await?;
    }
    let mut table = Table::new(&["MEASUREMENT", "RESULT", "MEDIAN ms", "P99 ms", "MAX ms"]);
    let mut throughput = Vec::new();
    for &clients in &args.clients {
        let r = bench::measure_submissions(
            &cluster.endpoints(),
            clients,
            Duration::from_secs_f64(args.seconds),
        )
        .await?;
        let l = r.latency.clone();
        table.row(vec![
            format!("submit, {clients} clients"),
            format!("{:.0}/s", r.per_second),
            l.as_ref()
                .map(|l| format!("{:.2}", l.median_ms))
                .unwrap_or_default(),
            l.as_ref()
                .map(|l| format!("{:.2}", l.p99_ms))
                .unwrap_or_default(),
            l.as_ref()
                .map(|l| format!("{:.2}", l.max_ms))
                .unwrap_or_default(),
        ]);
        throughput.push(r);
    }
    let failover = bench::measure_failover(&mut cluster, args.failover_rounds).await?;
    if let Some(s) = &failover.summary {
        table.row(vec![
            format!("leader failover, {} kills", s.count),
            String::new(),
            format!("{:.0}", s.median_ms),
            format!("{:.0}", s.p99_ms),
            format!("{:.0}", s.max_ms),
        ]);
    }
    drop(cluster);

    // Recovery runs on a fresh cluster whose only TaskManagers are real agents.
    let mut recovery_cluster =
        bench::start_cluster(&dir.join("recovery"), args.replicas, config).await?;
    let agents = 4;
    bench::start_agents(&mut recovery_cluster, agents, 4).await?;
    let tm = &config.taskmanagers;
    let mut tm_loss = None;
    if args.tm_loss_rounds > 0 {
        let r = bench::measure_taskmanager_loss(
            &mut recovery_cluster,
            agents,
            args.tm_loss_rounds,
            tm.heartbeat_interval_ms,
            tm.timeout_ms,
        )
        .await?;
        if let Some(s) = &r.summary {
            table.row(vec![
                format!(
                    "TaskManager kill -9 → shards running elsewhere, {} kills",
                    s.count
                ),
                format!("timeout {} ms", tm.timeout_ms),
                format!("{:.0}", s.median_ms),
                format!("{:.0}", s.p99_ms),
                format!("{:.0}", s.max_ms),
            ]);
        }
        tm_loss = Some(r);
    }
    let mut progress = None;
    if args.progress_shards > 0 {
        let r =
            bench::measure_progress_pause(&mut recovery_cluster, dir, args.progress_shards).await?;
        table.row(vec![
            format!(
                "longest gap between shard starts across a leader kill ({} shards)",
                r.shards
            ),
            format!("{:.1} s job", r.job_seconds),
            format!("{}", r.median_gap_ms),
            String::new(),
            format!("{}", r.longest_gap_ms),
        ]);
        progress = Some(r);
    }

    let header = format!(
        "dispatcher bench: {} durable replicas on loopback, heartbeat {} ms, election timeout {}-{} ms; {}",
        args.replicas,
        config.raft.heartbeat_ms,
        config.raft.election_timeout_min_ms,
        config.raft.election_timeout_max_ms,
        machine()
    );
    let json = json!({
        "machine": machine(),
        "replicas": args.replicas,
        "raft": {"heartbeat_ms": config.raft.heartbeat_ms,
                 "election_timeout_min_ms": config.raft.election_timeout_min_ms,
                 "election_timeout_max_ms": config.raft.election_timeout_max_ms},
                "submissions": throughput,
        "failover": failover,
        "taskmanager": {"heartbeat_interval_ms": tm.heartbeat_interval_ms, "lease_ms": tm.lease_ms,
                        "timeout_ms": tm.timeout_ms},
        "taskmanager_loss": tm_loss,
        "progress_pause_across_leader_kill": progress,
    });
    Ok((format!("{header}\n{}", table.render()), json))
}
