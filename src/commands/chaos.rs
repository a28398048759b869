//! `dispatcher chaos`: run the chaos suite and print its verdicts; exit 1 on any violation.

use super::table::Table;
use super::CliError;
use crate::chaos::nemesis::{FaultKind, ALL_FAULTS};
use crate::chaos::{self, ChaosOptions};
use crate::cli::ChaosArgs;
use crate::config::ServeConfig;
use std::time::Duration;

pub async fn chaos(args: ChaosArgs) -> Result<super::ExitCode, CliError> {
    let faults: Vec<FaultKind> = if args.faults.is_empty() {
        let mut all = ALL_FAULTS.to_vec();
        if args.other_binary.is_some() {
            all.push(FaultKind::RestartUpgrade);
        }
        all
    } else if args.faults == ["none"] {
        Vec::new()
    } else {
        args.faults
            .iter()
            .map(|f| f.parse::<FaultKind>())
            .collect::<Result<_, _>>()
            .map_err(CliError::Usage)?
    };
    if faults.contains(&FaultKind::RestartUpgrade) && args.other_binary.is_none() {
        return Err(CliError::Usage(
            "restart-upgrade needs --other-binary <an older release's dispatcher>".into(),
        ));
    }
    if !(3..=9).contains(&args.replicas)
        || args.taskmanagers == 0
        || args.taskmanagers > 100
        || args.clients == 0
        || args.load > 64
    {
        return Err(CliError::Usage(
            "use 3 to 9 replicas, 1 to 100 TaskManagers, at least one client and at most 64 load threads"
                .into(),
        ));
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let dir = args
        .dir
        .unwrap_or_else(|| std::env::temp_dir().join(format!("dispatcher-chaos-{seed}")));
    eprintln!(
        "chaos: seed {seed} (replay with --seed {seed}); record in {}",
        dir.display()
    );
    let binary = std::env::current_exe()
        .map_err(|e| CliError::Usage(format!("cannot find this executable: {e}")))?;
    let report = chaos::run(ChaosOptions {
        binary,
        dir: dir.clone(),
        duration: Duration::from_secs(args.duration),
        seed,
        replicas: args.replicas,
        taskmanagers: args.taskmanagers,
        clients: args.clients,
        faults,
        load: args.load,
        liveness_bound: Duration::from_secs(args.liveness_bound),
        config: ServeConfig::default(),
        tls: args.tls,
        hostile: args.hostile,
        other_binary: args.other_binary,
    })
    .await
    .map_err(|e| CliError::Usage(format!("chaos run failed: {e}")))?;

    let mut faults = Table::new(&["FAULT", "INJECTED"]);
    for (name, n) in &report.faults {
        faults.row(vec![name.clone(), n.to_string()]);
    }
    let mut ops = Table::new(&["OPERATION", "COUNT"]);
    for (name, n) in &report.operations {
        ops.row(vec![name.clone(), n.to_string()]);
    }
    println!("seed {}  ran {:.0} s", report.seed, report.duration_secs);
    println!("{}\n", faults.render());
    println!("{}\n", ops.render());
    if let Some(f) = &report.failover {
        println!(
            "failover (leader fault → first acknowledged submit sent after it): {} faults, median {:.0} ms, p95 {:.0} ms, max {:.0} ms\n",
            f.count, f.median_ms, f.p95_ms, f.max_ms
        );
    }
    for v in &report.verdicts {
        let mark = if v.ok() { "ok  " } else { "FAIL" };
        println!("{mark} {:<20} {}", v.name, v.checked);
        for violation in &v.violations {
            println!("       {violation}");
        }
    }
    if let Ok(json) = serde_json::to_vec_pretty(&report) {
        let _ = std::fs::write(dir.join("report.json"), json);
    }
    Ok(if report.ok() { 0 } else { 1 })
}
