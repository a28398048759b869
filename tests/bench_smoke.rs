//! `dispatcher bench` end to end with tiny sizes, so the benchmark cannot rot between runs:
//! every figure it promises is in the JSON, and the plot is a PNG.

use std::process::{Command, Stdio};

const BINARY: &str = env!("CARGO_BIN_EXE_dispatcher");

#[test]
fn bench_reports_every_figure_and_draws_the_plot() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let json = dir.path().join("bench.json");
    let png = dir.path().join("bench.png");
    let output = Command::new(BINARY)
        .args([
            "bench",
            "--seconds",
            "0.5",
            "--clients",
            "1,4",
            "--failover-rounds",
            "1",
            "--tm-loss-rounds",
            "1",
            "--progress-shards",
            "0",
            "--fleets",
            "20,50",
            "--placement-shards",
            "500",
            "--memory-shards",
            "2000",
            "--heartbeat-seconds",
            "0.5",
            "--flood-clients",
            "1",
            "--flood-shards-per-job",
            "100000",
            "--dispatch-runs",
            "2",
            "--end-to-end-shards",
            "20",
            "--end-to-end-runs",
            "2",
            "--end-to-end-tenants",
            "2",
            "--dependents",
            "50",
            "--dependents-runs",
            "1",
            "--planning-shards",
            "2000",
            "--planning-job-shards",
            "20",
        ])
        .arg("--dir")
        .arg(dir.path().join("run"))
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&png)
        .stdin(Stdio::null())
        .output()?;
    assert!(
        output.status.success(),
        "bench failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("submit, 4 clients"), "{table}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json)?)?;
    assert!(report["fsync"]["latency"]["median_ms"].as_f64() > Some(0.0));
    assert!(report["grpc_ping"]["per_second"].as_f64() > Some(0.0));
    assert_eq!(report["submissions"].as_array().map(Vec::len), Some(2));
    assert!(report["submissions"][1]["result"]["per_second"].as_f64() > Some(0.0));
    assert!(table.contains("submit, 4 clients, TLS + token"), "{table}");
    assert!(report["submissions_tls"][1]["result"]["per_second"].as_f64() > Some(0.0));
    for (i, via_cli) in [true, false].into_iter().enumerate() {
        let latency = &report["dispatch_latency"][i];
        assert_eq!(latency["via_cli"].as_bool(), Some(via_cli));
        assert!(
            latency["latency"]["median_ms"].as_f64() > Some(0.0),
            "{latency}"
        );
    }
    assert!(report["wait_latency"]["median_ms"].as_f64() > Some(0.0));
    assert!(report["end_to_end"]["per_second"].as_f64() > Some(0.0));
    assert_eq!(report["end_to_end"]["tenants"], 2);
    assert!(
        table.contains("20 `true` shards on 3×8 slots, 2 tenants"),
        "{table}"
    );
    assert!(report["dependents"]["ratio"].as_f64() > Some(0.0));
    let planning = &report["planning"];
    assert_eq!(planning["shards"], 2000, "{planning}");
    assert!(planning["placements"].as_u64() > Some(0), "{planning}");
    assert!(planning["full_turn"]["median_ms"].as_f64() > Some(0.0));
    assert!(report["end_to_end"]["floor_per_second"].as_f64() > Some(0.0));
    assert_eq!(
        report["end_to_end"]["runs"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(
        report["failover"]["samples_ms"].as_array().map(Vec::len),
        Some(1)
    );
    assert!(report["taskmanager_loss"]["summary"]["median_ms"].as_f64() > Some(0.0));
    let scale = report["scale"].as_array().expect("scale figures");
    assert_eq!(scale.len(), 2);
    assert!(scale[0]["placement"]["per_second"].as_f64() > Some(0.0));
    assert!(scale[0]["placement_with_rules"]["per_second"].as_f64() > Some(0.0));
    assert_eq!(scale[0]["keepalive_refused"], 0, "{}", scale[0]);
    let largest = &scale[1];
    assert!(largest["heartbeats"]["per_second"].as_f64() > Some(0.0));
    assert!(largest["memory"]["snapshot_bytes"].as_u64() > Some(0));
    assert!(largest["memory"]["follower_rss_full_bytes"].as_u64() > Some(0));
    assert!(largest["memory"]["restart_seconds"].as_f64() > Some(0.0));
    // etcd's column beside ours: measured when `etcd` is on PATH (.ci/run installs Debian's
    // etcd-server), and said to be missing otherwise.
    let etcd_on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("etcd").is_file()));
    if etcd_on_path {
        let etcd = report["etcd"]["results"].as_array().expect("etcd figures");
        assert_eq!(etcd.len(), 2, "{}", report["etcd"]);
        for figure in etcd {
            assert!(
                figure["result"]["per_second"].as_f64() > Some(0.0),
                "{figure}"
            );
        }
        assert!(table.contains("etcd put (3 members"), "{table}");
    } else {
        assert!(table.contains("no `etcd` on PATH"), "{table}");
    }
    assert_eq!(&std::fs::read(&png)?[1..4], b"PNG");
    // One client from one address: the per-client cap (250,000) stops it after two jobs.
    let flood = &report["flood"];
    assert_eq!(flood["admitted_shards"], 200_000, "{flood}");
    assert!(
        flood["refusal_message"]
            .as_str()
            .is_some_and(|m| m.contains("limits.max_pending_shards_per_client")),
        "{flood}"
    );
    assert!(flood["small_job_outcome"]
        .as_str()
        .is_some_and(|m| m.starts_with("accepted")));
    Ok(())
}
