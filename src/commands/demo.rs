//! `dispatcher demo`: run `crate::demo` in a directory of its own, stop on Ctrl-C, and make
//! sure nothing it started outlives it.

use super::CliError;
use crate::cli::{DemoArgs, OutputFormat};
use crate::demo::{self, DemoOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Processes whose command line names `dir`: what the demo started and must not leave.
fn processes_using(dir: &Path) -> Vec<u32> {
    let needle = dir.as_os_str().as_encoded_bytes();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

/// Shards die shortly after their agent (parent-death signal, keep-alive timeout): wait
/// for that, and say so if something is still there.
async fn ensure_nothing_left(dir: &Path) -> Result<(), CliError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_using(dir);
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(CliError::Usage(format!(
                "processes {left:?} started by the demo are still running"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn demo(args: DemoArgs) -> Result<super::ExitCode, CliError> {
    if args.parts == 0 || args.parts > 1000 {
        return Err(CliError::Usage("--parts must be between 1 and 1000".into()));
    }
    let (dir, temporary) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("dispatcher-demo-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::Usage(format!("cannot create {}: {e}", dir.display())))?;
    let dir = dir.canonicalize().unwrap_or(dir);
    let json = args.output == OutputFormat::Json;
    let options = DemoOptions {
        dir: dir.clone(),
        parts: args.parts,
        pace: Duration::from_millis(args.pace_ms),
        taskmanagers: 3,
        slots: 6,
        view_on_stderr: json,
    };
    // Dropping the demo's future stops every process it started.
    let outcome = tokio::select! {
        r = demo::run(&options) => Some(r),
        _ = tokio::signal::ctrl_c() => None,
    };
    let left = ensure_nothing_left(&dir).await;
    let keep = !temporary || matches!(outcome, Some(Err(_)));
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    left?;
    match outcome {
        None => {
            // The terminal may be gone already; that is no reason to panic.
            let _ = writeln!(
                std::io::stderr(),
                "\ninterrupted: every process the demo started has been stopped"
            );
            Ok(130)
        }
        Some(Err(e)) => Err(CliError::Usage(format!(
            "demo failed: {e} (logs kept in {})",
            dir.display()
        ))),
        Some(Ok(summary)) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&summary)
                        .map_err(|e| CliError::Usage(e.to_string()))?
                );
            } else {
                println!("{}", demo::summary_text(&summary));
            }
            Ok(0)
        }
    }
}
