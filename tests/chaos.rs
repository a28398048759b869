//! The bounded chaos run of CI: every fault kind at least once (restart-upgrade with the
//! previous release, v0.1.0) against three replicas,
//! three TaskManagers and four clients over mutual TLS, while a hostile tenant attacks the
//! others (`--hostile`), then every checker over the history. A violation
//! fails the test; the seed is printed so the run can be replayed with
//! `scripts/chaos.sh --seed <seed>`.

mod common;

use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_dispatcher");

/// Run `dispatcher chaos` with `args` in a new directory (kept with DISPATCHER_TEST_KEEP);
/// fails the test on any violation, naming the arguments to replay it with. Runs one at a
/// time.
fn run_chaos(prefix: &str, args: &[&str]) -> String {
    // One run at a time: two clusters and a soak's busy threads at once would load the
    // machine far past what the soak means to test (and the test harness runs tests in
    // parallel).
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .disable_cleanup(std::env::var_os("DISPATCHER_TEST_KEEP").is_some())
        .tempdir()
        .expect("temp dir");
    eprintln!("chaos {args:?}, record in {}", dir.path().display());
    let out = Command::new(BINARY)
        .arg("chaos")
        .args(args)
        .arg("--dir")
        .arg(dir.path())
        .env("DISPATCHER_LOG", "warn")
        .output()
        .expect("run dispatcher chaos");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{report}");
    assert!(
        out.status.success(),
        "chaos run {args:?} found violations:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    report
}

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
    let old = common::old_release_binary().expect("the previous release");
    let report = run_chaos(
        "dispatcher-chaos-",
        &[
            "--duration",
            "115",
            "--hostile",
            "--other-binary",
            &old.display().to_string(),
            "--seed",
            &seed.to_string(),
        ],
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
        "restart-upgrade",
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
        "no-false-suspicion",
        "dependencies",
        "gangs",
        "quotas",
        "walls",
        "periodic",
    ] {
        assert!(
            report.contains(&format!("ok   {checker}")),
            "checker {checker} did not pass:\n{report}"
        );
    }
}

/// A short soak: no faults, one core of load beside the cluster. (With `--load 2` on the 2-core
/// CI VM, an agent now and then misses its 1 s lease: seen on 2026-12-02 with this build and the
/// one before it alike, 1 to 2 runs in 3; issue 11 keeps that open. Run it by hand with
/// `dispatcher chaos --faults none --load 2 --duration 20 --seed 7`.) The failure detector must
/// not declare a live TaskManager lost, and no agent may go so long without its keep-alives
/// that its shard host interrupts a shard. (The 10-minute version is in BENCHMARKS.md.)
#[test]
fn a_loaded_machine_raises_no_false_suspicion() {
    let report = run_chaos(
        "dispatcher-soak-",
        &[
            "--faults",
            "none",
            "--load",
            "1",
            "--duration",
            "20",
            "--seed",
            "7",
        ],
    );
    assert!(
        report.contains("ok   no-false-suspicion"),
        "the suspicion checker did not run:\n{report}"
    );
    let runs: u64 = report
        .lines()
        .find(|l| l.starts_with("shard runs"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(runs > 0, "the soak ran no work:\n{report}");
}
