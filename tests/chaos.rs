//! The bounded chaos run of CI: every fault kind at least once against three replicas,
//! three TaskManagers and four clients, then every checker over the history. A violation
//! fails the test; the seed is printed so the run can be replayed with
//! `scripts/chaos.sh --seed <seed>`.

use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_dispatcher");

#[test]
fn bounded_chaos_run_finds_no_violation() {
    let seed = std::env::var("DISPATCHER_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(1)
        });
    let dir = tempfile::Builder::new()
        .prefix("dispatcher-chaos-")
        .disable_cleanup(std::env::var_os("DISPATCHER_TEST_KEEP").is_some())
        .tempdir()
        .expect("temp dir");
    eprintln!("chaos seed {seed}, record in {}", dir.path().display());
    let out = Command::new(BINARY)
        .args([
            "chaos",
            "--duration",
            "100",
            "--seed",
            &seed.to_string(),
            "--dir",
        ])
        .arg(dir.path())
        .env("DISPATCHER_LOG", "warn")
        .output()
        .expect("run dispatcher chaos");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}");
    assert!(
        out.status.success(),
        "chaos run with seed {seed} found violations:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The run covered every fault kind.
    for fault in [
        "kill-leader",
        "kill-replica",
        "pause-leader",
        "isolate-leader",
        "split",
        "one-way",
        "kill-all",
        "kill-tm",
        "pause-tm",
        "isolate-tm",
    ] {
        assert!(
            report.contains(fault),
            "fault {fault} was not injected:\n{report}"
        );
    }
    for checker in [
        "liveness",
        "convergence",
        "submissions",
        "executions",
        "leaders-and-commits",
    ] {
        assert!(
            report.contains(&format!("ok   {checker}")),
            "checker {checker} did not pass:\n{report}"
        );
    }
}
