//! `dispatcher demo` end to end, as a new user runs it: it must finish with a verified
//! result after its leader and TaskManager kills, and leave no process behind, also when
//! interrupted with Ctrl-C (SIGINT) in the middle.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_dispatcher");

/// Pids of processes whose command line mentions `dir` (everything the demo started does).
fn processes_using(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn demo_finishes_with_a_verified_result_and_leaves_nothing_running() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let output = Command::new(BINARY)
        .args([
            "demo",
            "--output",
            "json",
            "--parts",
            "12",
            "--pace-ms",
            "2500",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(summary["result_verified"], true, "{summary}");
    assert_eq!(summary["shards_finished"], 25, "{summary}");
    assert!(summary["shards_replaced"].as_u64() >= Some(1), "{summary}");
    assert_ne!(summary["killed_leader"], summary["new_leader"], "{summary}");
    // Generous bounds: a loaded CI machine is slow, but not by this much.
    assert!(summary["failover_ms"].as_u64() < Some(10_000), "{summary}");
    assert!(
        summary["taskmanager_recovery_ms"].as_u64() < Some(20_000),
        "{summary}"
    );
    assert!(stderr.contains("kill -9 replica"), "{stderr}");
    assert!(stderr.contains("re-placed"), "{stderr}");
    assert!(processes_using(dir.path()).is_empty());
    Ok(())
}

#[test]
fn ctrl_c_stops_everything_the_demo_started() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut demo = Command::new(BINARY)
        .args(["demo", "--output", "json"])
        .arg("--dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(demo.stderr.take().expect("piped")).lines();
    // Interrupt once the aggregation runs, when every kind of process is up.
    for line in lines.by_ref() {
        if line?.contains("submitted job 'aggregate'") {
            break;
        }
    }
    // Keep reading, as a terminal would.
    let drain = std::thread::spawn(move || lines.count());
    assert!(!processes_using(dir.path()).is_empty());
    // SAFETY: kill(2) on the pid of the child this test started.
    assert_eq!(unsafe { libc::kill(demo.id() as i32, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = demo.try_wait()? {
            break status;
        }
        assert!(Instant::now() < deadline, "the demo did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    drain.join().expect("stderr reader");
    assert_eq!(status.code(), Some(130));
    let left: Vec<String> = processes_using(dir.path())
        .iter()
        .map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            format!(
                "{pid}: {}",
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            )
        })
        .collect();
    assert!(left.is_empty(), "left behind: {left:#?}");
    Ok(())
}
