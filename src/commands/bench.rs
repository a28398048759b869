//! `dispatcher bench`: run the measurements of `crate::bench`, print them as one table and
//! optionally write them as JSON and draw the throughput plot.

use super::table::Table;
use super::CliError;
use crate::bench::process::CpuMeter;
use crate::bench::{self, BenchError, Fault, ScaleOptions, Summary};
use crate::cli::BenchArgs;
use crate::client::Client;
use crate::config::ServeConfig;
use crate::domain::MAX_TASKMANAGER_SLOTS;
use crate::local_cluster::LocalCluster;
use crate::pb::api::RegisterTaskManagerRequest;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

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

fn usage(message: &str) -> CliError {
    CliError::Usage(message.to_string())
}

fn check(args: &BenchArgs) -> Result<(), CliError> {
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        return Err(usage("--seconds must be a positive number"));
    }
    if !(args.heartbeat_seconds.is_finite() && args.heartbeat_seconds >= 0.0) {
        return Err(usage("--heartbeat-seconds must be zero or more"));
    }
    if args.replicas < 2 || args.replicas > 9 {
        return Err(usage("--replicas must be between 2 and 9"));
    }
    if args.clients.iter().any(|c| *c == 0 || *c > 4096) {
        return Err(usage("--clients must be between 1 and 4096 each"));
    }
    if args.fleets.iter().any(|f| *f == 0 || *f > 100_000) {
        return Err(usage("--fleets must be between 1 and 100000 each"));
    }
    Ok(())
}

pub async fn bench(args: BenchArgs) -> Result<super::ExitCode, CliError> {
    check(&args)?;
    let (dir, remove_after) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("dispatcher-bench-{}", std::process::id())),
            true,
        ),
    };
    // The capacity figures fill the state far past the default admission limits (which the
    // flood figure measures on a cluster of its own).
    let mut config = ServeConfig::default();
    config.limits.max_pending_shards = u64::MAX / 4;
    config.limits.max_pending_shards_per_client = u64::MAX / 4;
    config.limits.max_spec_bytes = u64::MAX / 4;
    config.raft.append_pipeline = args.append_pipeline;
    config.validate().map_err(|e| usage(&e.to_string()))?;
    let started = Instant::now();
    let result = run(&args, &dir, &config).await;
    if remove_after {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (mut table, mut report) = result?;
    report["total_seconds"] = json!(started.elapsed().as_secs_f64());
    table.push_str(&format!(
        "\nwhole run: {:.0} s\n",
        started.elapsed().as_secs_f64()
    ));
    println!("{table}");
    if let Some(path) = &args.json {
        let text = serde_json::to_vec_pretty(&report).map_err(|e| usage(&e.to_string()))?;
        std::fs::write(path, text).map_err(BenchError::from)?;
    }
    if let Some(path) = &args.plot {
        super::plot::throughput_plot(&report, path).map_err(|e| usage(&e))?;
    }
    Ok(0)
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn summary_cells(s: &Option<Summary>, p: fn(&Summary) -> f64) -> [String; 3] {
    match s {
        Some(s) => [ms(s.median_ms), ms(p(s)), ms(s.max_ms)],
        None => Default::default(),
    }
}

fn row(table: &mut Table, what: String, result: String, cells: [String; 3]) {
    let [a, b, c] = cells;
    table.row(vec![what, result, a, b, c]);
}

/// The replicas (leader and followers) and this process, for CPU accounting.
fn processes(cluster: &crate::local_cluster::LocalCluster, leader: u64) -> Vec<(String, u32)> {
    let mut out = vec![("bench clients".to_string(), std::process::id())];
    for id in cluster.ids() {
        if let Some(pid) = cluster.replica(id).ok().and_then(|r| r.pid()) {
            let name = if id == leader { "leader" } else { "followers" };
            out.push((name.to_string(), pid));
        }
    }
    out
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// One planning turn on a state of `shards` shards, a tenth of them running.
fn planning(table: &mut Table, args: &BenchArgs) -> Result<bench::PlanningResult, BenchError> {
    let shards = args.planning_shards;
    let options = bench::PlanningOptions {
        shards,
        running: (shards / 10).max(1),
        shards_per_job: args.planning_job_shards.max(1),
        ..Default::default()
    };
    let r = bench::measure_planning(&options).map_err(BenchError::Failed)?;
    let held = format!(
        "{} shards held on {} TaskManagers",
        r.shards, r.taskmanagers
    );
    row(
        table,
        format!("planning turn with room, {held}"),
        format!("{} placed", r.placements),
        summary_cells(&Some(r.plan.clone()), |s| s.p95_ms),
    );
    row(
        table,
        format!("planning turn when full, {} running", r.running),
        format!(
            "{}preemption search {} ms (median)",
            if r.preempts { "1 preemption; " } else { "" },
            ms(r.preemption.median_ms)
        ),
        summary_cells(&Some(r.full_turn.clone()), |s| s.p95_ms),
    );
    Ok(r)
}

/// The dispatch measurements' agents, and their slots each.
const AGENTS: usize = 3;
const SLOTS: u32 = 8;

/// Submit → process start and end-to-end shard rates, on a secure cluster with three real
/// agents of eight slots each.
async fn dispatch(
    table: &mut Table,
    report: &mut serde_json::Value,
    args: &BenchArgs,
    dir: &Path,
    config: &ServeConfig,
) -> Result<(), BenchError> {
    let mut cluster =
        bench::start_cluster_with(&dir.join("dispatch"), args.replicas, config, true).await?;
    bench::start_agents(&mut cluster, AGENTS, SLOTS).await?;
    let binary = std::env::current_exe()?;
    if args.dispatch_runs > 0 {
        let mut rows = Vec::new();
        for cli in [Some(binary.as_path()), None] {
            let r = bench::measure_dispatch_latency(&cluster, args.dispatch_runs, cli).await?;
            let how = if cli.is_some() {
                "CLI"
            } else {
                "library client"
            };
            let cells = summary_cells(&r.latency, |s| s.p90_ms);
            row(
                table,
                format!("submit → shard process started ({how}), {} jobs", r.runs),
                "p90".into(),
                cells,
            );
            rows.push(json!(r));
        }
        report["dispatch_latency"] = json!(rows);
        let wait = bench::measure_wait_latency(&cluster, &binary, args.dispatch_runs).await?;
        row(
            table,
            format!(
                "shard ended → `job wait` returned (CLI), {} jobs",
                args.dispatch_runs
            ),
            "p90".into(),
            summary_cells(&wait, |s| s.p90_ms),
        );
        report["wait_latency"] = json!(wait);
    }
    if args.end_to_end_shards > 0 {
        let r = end_to_end(&cluster, &binary, args).await?;
        end_to_end_row(table, &r, "");
        report["end_to_end"] = json!(r);
        if args.dependents > 0 {
            let d = bench::measure_dependents(
                &cluster,
                &binary,
                dir,
                args.end_to_end_shards,
                args.dependents,
                args.dependents_runs,
            )
            .await?;
            row(
                table,
                format!(
                    "{} `true` shards named in `--after` by {} jobs, against alone",
                    d.shards, d.dependents
                ),
                format!(
                    "{:.0}/s against {:.0}/s: {:.2}× (medians of {})",
                    d.named_median,
                    d.alone_median,
                    d.ratio,
                    d.named_per_second.len()
                ),
                Default::default(),
            );
            report["dependents"] = json!(d);
        }
        // The same flow with every shard sandboxed (own uid, namespaces, cgroup), when this
        // machine lets the agents do it.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            bench::replace_with_sandboxed_agents(&mut cluster, AGENTS, SLOTS).await?;
            let sandboxed = end_to_end(&cluster, &binary, args).await?;
            end_to_end_row(table, &sandboxed, ", sandboxed");
            report["end_to_end_sandboxed"] = json!(sandboxed);
            report["sandbox_rate_ratio"] = json!(sandboxed.per_second / r.per_second);
        }
    }
    Ok(())
}

/// `end_to_end_runs` jobs of `end_to_end_shards` `true` shards through the CLI.
async fn end_to_end(
    cluster: &LocalCluster,
    binary: &Path,
    args: &BenchArgs,
) -> Result<bench::EndToEnd, BenchError> {
    bench::measure_end_to_end(
        cluster,
        binary,
        args.end_to_end_shards,
        AGENTS as u32 * SLOTS,
        args.end_to_end_runs,
        args.end_to_end_tenants,
    )
    .await
}

/// One row for an end-to-end measurement.
fn end_to_end_row(table: &mut Table, r: &bench::EndToEnd, how: &str) {
    // Every run's rate when there are a few; the range when there are many (all are
    // in the JSON).
    let rates: Vec<f64> = r.runs.iter().map(|run| run.per_second).collect();
    let shown = if rates.len() <= 5 {
        rates
            .iter()
            .map(|rate| format!("{rate:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        let low = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let high = rates.iter().copied().fold(0.0, f64::max);
        format!("{low:.0}–{high:.0}")
    };
    row(
        table,
        format!(
            "{} `true` shards on {AGENTS}×{SLOTS} slots{}, submit → job wait{how}",
            r.shards,
            if r.tenants > 1 {
                format!(", {} tenants", r.tenants)
            } else {
                String::new()
            }
        ),
        format!(
            "{:.0}/s = {:.0}% of the spawn floor ({:.0}/s), {:.2} log entries per shard; \
             medians of {} runs ({}/s)",
            r.per_second,
            r.share_of_floor * 100.0,
            r.floor_per_second,
            r.log_entries_per_shard,
            r.runs.len(),
            shown
        ),
        [format!("{:.2} s", r.seconds), String::new(), String::new()],
    );
    let ms = |group: &str| r.cpu_ms_per_shard.get(group).copied().unwrap_or(0.0);
    let groups: Vec<String> = bench::CPU_GROUPS
        .iter()
        .filter(|group| **group != bench::COMMANDS_CPU)
        .map(|group| format!("{group} {:.2}", ms(group)))
        .collect();
    row(
        table,
        format!("  CPU per shard{how}, ms (medians)"),
        format!(
            "dispatcher {:.2} ({}); the commands {:.2}",
            ms(bench::DISPATCHER_CPU),
            groups.join(", "),
            ms(bench::COMMANDS_CPU)
        ),
        Default::default(),
    );
}

/// `config` with TaskManagers declared lost only after ten minutes: the submission figures'
/// simulated TaskManagers send no heartbeats (a heartbeat would carry their growing
/// assignment lists), yet must stay alive so that every shard is placed, as in real use, and
/// not requeued into a backlog nothing can run.
fn simulated_taskmanagers_stay(config: &ServeConfig) -> ServeConfig {
    let mut config = config.clone();
    config.taskmanagers.lease_ms = 600_000;
    config.taskmanagers.timeout_ms = 601_000;
    config
}

/// Submissions per second at each client count (one row each), with enough TaskManager
/// capacity that every shard is placed, as in real use.
async fn submissions(
    table: &mut Table,
    cluster: &LocalCluster,
    leader: u64,
    args: &BenchArgs,
    suffix: &str,
) -> Result<Vec<serde_json::Value>, BenchError> {
    for i in 0..16 {
        let id = format!("bench-tm-{i}");
        // Each simulated TaskManager registers as itself (its own certificate under TLS).
        let client = Client::new(
            cluster.endpoints(),
            cluster.credentials_as(&format!("tm-{id}"))?,
        )?;
        client
            .register_taskmanager(RegisterTaskManagerRequest {
                id,
                addr: format!("127.0.0.1:{}", 20000 + i),
                slots: MAX_TASKMANAGER_SLOTS,
                labels: Default::default(),
                ..Default::default()
            })
            .await?;
    }
    let mut throughput = Vec::new();
    for &clients in &args.clients {
        let meter = CpuMeter::start(&processes(cluster, leader));
        let r = bench::measure_submissions(
            &cluster.endpoints(),
            &cluster.credentials()?,
            clients,
            Duration::from_secs_f64(args.seconds),
        )
        .await?;
        let cpu = meter.cores();
        let core = |k: &str| cpu.get(k).copied().unwrap_or(0.0);
        row(
            table,
            format!("submit, {clients} clients{suffix}"),
            format!(
                "{:.0}/s (CPU: leader {:.2}, followers {:.2}, clients {:.2})",
                r.per_second,
                core("leader"),
                core("followers"),
                core("bench clients")
            ),
            summary_cells(&r.latency, |s| s.p99_ms),
        );
        throughput.push(json!({"result": r, "cpu_cores": cpu}));
    }
    Ok(throughput)
}

/// etcd's puts at the same client counts, on the same machine, when etcd is installed.
async fn etcd_puts(
    table: &mut Table,
    dir: &Path,
    args: &BenchArgs,
) -> Result<serde_json::Value, BenchError> {
    let Some(etcd) = bench::etcd::find_etcd() else {
        row(
            table,
            "etcd put: not measured, no `etcd` on PATH (Debian: etcd-server)".into(),
            String::new(),
            Default::default(),
        );
        return Ok(json!(null));
    };
    let cluster = bench::etcd::EtcdCluster::start(&etcd, &dir.join("etcd")).await?;
    let mut results = Vec::new();
    for &clients in &args.clients {
        let pids: Vec<(String, u32)> = cluster
            .pids()
            .into_iter()
            .map(|pid| ("etcd".to_string(), pid))
            .collect();
        let meter = CpuMeter::start(&pids);
        let r = cluster
            .measure_puts(clients, Duration::from_secs_f64(args.seconds))
            .await?;
        let cpu = meter.cores();
        row(
            table,
            format!("etcd put (3 members, same machine), {clients} clients"),
            format!(
                "{:.0}/s (CPU: members {:.2})",
                r.per_second,
                cpu.get("etcd").copied().unwrap_or(0.0)
            ),
            summary_cells(&r.latency, |s| s.p99_ms),
        );
        results.push(json!({"result": r, "cpu_cores": cpu}));
    }
    Ok(json!({"binary": etcd.display().to_string(), "results": results}))
}

/// Leader kills (with where the time went) and leader pauses, `--failover-rounds` of each.
async fn failovers(
    table: &mut Table,
    report: &mut serde_json::Value,
    cluster: &mut LocalCluster,
    args: &BenchArgs,
) -> Result<(), BenchError> {
    if args.idle_seconds > 0 {
        let idle = bench::measure_idle_elections(cluster, args.idle_seconds).await?;
        row(
            table,
            format!(
                "elections in {} idle seconds (none expected)",
                args.idle_seconds
            ),
            format!(
                "{} (term {} → {})",
                idle.elections, idle.term_before, idle.term_after
            ),
            Default::default(),
        );
        report["idle_elections"] = json!(idle);
    }
    if args.failover_rounds == 0 {
        return Ok(());
    }
    for (fault, what, key) in [
        (Fault::Kill, "kill -9", "failover"),
        (Fault::Pause, "SIGSTOP", "failover_paused"),
    ] {
        let failover = bench::measure_failover(cluster, args.failover_rounds, fault).await?;
        row(
            table,
            format!(
                "leader {what} → next write acknowledged, {} rounds",
                failover.rounds
            ),
            format!("{} extra terms; p95", failover.extra_terms),
            summary_cells(&failover.summary, |s| s.p95_ms),
        );
        if let Some(b) = failover.breakdown_median {
            row(
                table,
                format!(
                    "  of which (medians of {}): detection {:.0}, election {:.0}, first commit {:.0}, client {:.0}",
                    failover.breakdown.len(),
                    b.detection_ms,
                    b.election_ms,
                    b.first_commit_ms,
                    b.client_ms
                ),
                String::new(),
                Default::default(),
            );
        }
        report[key] = json!(failover);
    }
    Ok(())
}

async fn run(
    args: &BenchArgs,
    dir: &Path,
    config: &ServeConfig,
) -> Result<(String, serde_json::Value), BenchError> {
    let mut table = Table::new(&["MEASUREMENT", "RESULT", "MEDIAN ms", "P95/P99 ms", "MAX ms"]);
    let mut report = json!({
        "machine": machine(),
        "replicas": args.replicas,
        "raft": {"heartbeat_ms": config.raft.heartbeat_ms,
                 "append_pipeline": config.raft.append_pipeline,
                 "election_timeout_min_ms": config.raft.election_timeout_min_ms,
                 "election_timeout_max_ms": config.raft.election_timeout_max_ms},
        "taskmanager": {"heartbeat_interval_ms": config.taskmanagers.heartbeat_interval_ms,
                        "lease_ms": config.taskmanagers.lease_ms,
                        "timeout_ms": config.taskmanagers.timeout_ms},
    });

    if args.failover_only {
        let mut cluster =
            bench::start_cluster(&dir.join("failover"), args.replicas, config).await?;
        failovers(&mut table, &mut report, &mut cluster, args).await?;
        return Ok((table.render(), report));
    }
    if args.planning_shards > 0 {
        // First, on an idle machine: it is CPU alone.
        report["planning"] = json!(planning(&mut table, args)?);
    }
    if args.planning_only {
        return Ok((table.render(), report));
    }
    // The floors first, on an idle machine.
    let fsync = bench::measure_fsync(dir, 200, 4096)?;
    row(
        &mut table,
        "limit: 4 KiB write + fdatasync on this disk".into(),
        String::new(),
        summary_cells(&fsync.latency, |s| s.p99_ms),
    );
    report["fsync"] = json!(fsync);

    let throughput_config = simulated_taskmanagers_stay(config);
    let mut cluster =
        bench::start_cluster(&dir.join("throughput"), args.replicas, &throughput_config).await?;
    let leader = cluster
        .wait_for_leader(&cluster.ids(), bench::STARTUP_DEADLINE)
        .await?;
    let leader_pid = cluster
        .replica(leader)?
        .pid()
        .ok_or_else(|| BenchError::Failed("the leader is not running".into()))?;
    let ping = bench::measure_ping(
        &cluster.addr(leader)?,
        leader_pid,
        2000,
        64,
        Duration::from_secs_f64(args.seconds.min(5.0)),
    )
    .await?;
    row(
        &mut table,
        "limit: bare gRPC round trip to a replica, 1 client".into(),
        String::new(),
        summary_cells(&ping.latency, |s| s.p99_ms),
    );
    let ping_us = ping.server_cpu_us_per_call.unwrap_or(0.0);
    row(
        &mut table,
        format!("limit: bare gRPC round trips, {} clients", ping.clients),
        format!("{:.0}/s ({ping_us:.0} µs server CPU each)", ping.per_second),
        Default::default(),
    );
    report["grpc_ping"] = json!(ping);

    report["submissions"] = json!(submissions(&mut table, &cluster, leader, args, "").await?);
    if args.etcd {
        report["etcd"] = etcd_puts(&mut table, dir, args).await?;
    }
    if args.tls {
        // The same measurement on a cluster with mutual TLS and tokens, for the cost of both.
        let secure = bench::start_cluster_with(
            &dir.join("throughput-tls"),
            args.replicas,
            &throughput_config,
            true,
        )
        .await?;
        let leader = secure
            .wait_for_leader(&secure.ids(), bench::STARTUP_DEADLINE)
            .await?;
        report["submissions_tls"] =
            json!(submissions(&mut table, &secure, leader, args, ", TLS + token").await?);
    }
    failovers(&mut table, &mut report, &mut cluster, args).await?;
    drop(cluster);

    // Recovery runs on a fresh cluster whose only TaskManagers are real agents.
    let mut recovery_cluster =
        bench::start_cluster(&dir.join("recovery"), args.replicas, config).await?;
    let agents = 4;
    bench::start_agents(&mut recovery_cluster, agents, 4).await?;
    let tm = &config.taskmanagers;
    if args.tm_loss_rounds > 0 {
        let r = bench::measure_taskmanager_loss(
            &mut recovery_cluster,
            agents,
            args.tm_loss_rounds,
            tm.heartbeat_interval_ms,
            tm.timeout_ms,
            tm.grace_ms,
        )
        .await?;
        row(
            &mut table,
            format!(
                "TaskManager kill -9 → its shards running elsewhere, {} kills",
                r.rounds
            ),
            format!("timeout {} ms", tm.timeout_ms),
            summary_cells(&r.summary, |s| s.p95_ms),
        );
        report["taskmanager_loss"] = json!(r);
    }
    if args.progress_shards > 0 {
        let r =
            bench::measure_progress_pause(&mut recovery_cluster, dir, args.progress_shards).await?;
        row(
            &mut table,
            format!(
                "longest gap between shard starts across a leader kill ({} shards)",
                r.shards
            ),
            format!("{:.1} s job", r.job_seconds),
            [
                r.median_gap_ms.to_string(),
                String::new(),
                r.longest_gap_ms.to_string(),
            ],
        );
        report["progress_pause_across_leader_kill"] = json!(r);
    }
    drop(recovery_cluster);

    if args.dispatch_runs > 0 || args.end_to_end_shards > 0 {
        dispatch(&mut table, &mut report, args, dir, config).await?;
    }

    if args.flood_clients > 0 {
        let flood_cluster =
            bench::start_cluster(&dir.join("flood"), args.replicas, &ServeConfig::default())
                .await?;
        let r = bench::measure_flood(
            &flood_cluster,
            args.flood_clients,
            args.flood_shards_per_job,
        )
        .await?;
        let largest_rss = r.replica_rss_bytes.values().copied().max().unwrap_or(0);
        row(
            &mut table,
            format!(
                "flood of unplaceable shards, {} clients (default limits)",
                r.clients
            ),
            format!(
                "{} shards admitted in {:.1} s, then RESOURCE_EXHAUSTED; largest replica {}",
                r.admitted_shards,
                r.seconds,
                mib(largest_rss)
            ),
            Default::default(),
        );
        report["flood"] = json!(r);
        drop(flood_cluster);
    }

    let mut scale = Vec::new();
    let largest = args.fleets.iter().copied().max().unwrap_or(0);
    for &fleet in &args.fleets {
        let mut cluster =
            bench::start_cluster(&dir.join(format!("scale-{fleet}")), args.replicas, config)
                .await?;
        let memory_shards = if fleet == largest {
            args.memory_shards
        } else {
            0
        };
        // Room for every shard of the memory fill (or both placement runs), spread over the
        // fleet, with a third more: a simulated TaskManager starved of CPU on a small
        // machine may be declared lost, and its shards must find room elsewhere.
        let needed = memory_shards.max(2 * u64::from(args.placement_shards));
        let slots =
            ((needed + needed / 3) / fleet as u64 + 1).min(u64::from(MAX_TASKMANAGER_SLOTS)) as u32;
        let options = ScaleOptions {
            taskmanagers: fleet,
            slots,
            placement_shards: args.placement_shards,
            job_shards: 10_000,
            keepalive: Duration::from_millis(1500),
            heartbeat_seconds: if fleet == largest {
                args.heartbeat_seconds
            } else {
                0.0
            },
            heartbeat_workers: 64,
            memory_shards,
        };
        let r = bench::measure_scale(&mut cluster, &options).await?;
        row(
            &mut table,
            format!("TaskManager registrations ({fleet} simulated)"),
            format!("{:.0}/s", r.registrations_per_second),
            Default::default(),
        );
        row(
            &mut table,
            format!(
                "shards placed, {} shards on {fleet} TaskManagers",
                r.placement.shards
            ),
            format!("{:.0}/s", r.placement.per_second),
            Default::default(),
        );
        row(
            &mut table,
            format!(
                "shards placed with tenants, quotas, priorities and gangs, {} shards",
                r.placement_with_rules.shards
            ),
            format!(
                "{:.0}/s ({:.2}× the plain rate)",
                r.placement_with_rules.per_second,
                r.placement_with_rules.per_second / r.placement.per_second.max(1e-9)
            ),
            Default::default(),
        );
        if let Some(h) = &r.heartbeats {
            row(
                &mut table,
                format!(
                    "heartbeats absorbed by the leader ({fleet} TaskManagers, {:.0} shards each)",
                    h.assignments_per_taskmanager
                ),
                format!(
                    "{:.0}/s at {:.2} cores ({:.0} µs CPU each)",
                    h.per_second, h.leader_cpu_cores, h.leader_cpu_us_per_heartbeat
                ),
                Default::default(),
            );
        }
        if let Some(m) = &r.memory {
            row(
                &mut table,
                format!(
                    "replica memory: {} TaskManagers, {} shards",
                    m.taskmanagers, m.shards
                ),
                format!(
                    "follower {}, leader {}; {:.0} B/shard, {:.0} B/TaskManager",
                    mib(m.follower_rss_full_bytes),
                    mib(m.leader_rss_full_bytes),
                    m.bytes_per_shard,
                    m.bytes_per_taskmanager
                ),
                Default::default(),
            );
            row(
                &mut table,
                "snapshot of that state".into(),
                format!(
                    "{} on disk, built in {:.1} s",
                    mib(m.snapshot_bytes),
                    m.snapshot_build_seconds
                ),
                Default::default(),
            );
            row(
                &mut table,
                "restart of that replica (kill -9 → caught up)".into(),
                format!("{:.1} s", m.restart_seconds),
                Default::default(),
            );
        }
        scale.push(r);
    }
    report["scale"] = json!(scale);

    let header = format!(
        "dispatcher bench: {} durable replicas on loopback, Raft heartbeat {} ms, election timeout {}-{} ms, {} append batches in flight per follower; {}",
        args.replicas,
        config.raft.heartbeat_ms,
        config.raft.election_timeout_min_ms,
        config.raft.election_timeout_max_ms,
        config.raft.append_pipeline,
        machine()
    );
    Ok((format!("{header}\n{}", table.render()), report))
}
