//! Shard executions as the shard command itself records them, so checkers count executions
//! instead of trusting the dispatcher's state.
//!
//! The recording command appends one line per event to a shared file:
//! `<event> <job> <shard> <attempt> <epoch> <taskmanager> <pid> <unix ms>`, with events
//! `start`, `tick` (every 100 ms while running), `end` (exit 0) and `fail` (exit non-zero).
//! The pid tells apart two processes of one shard with the same epoch (two agents that both
//! believe they hold one TaskManager id).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The recording shard command:
/// `record.sh <record-file> <run-ms> [always-fail | fail-on:<tm> | fail-once:<shard>]`
/// (`fail-once`: that shard fails its first attempt).
pub const RECORD_SCRIPT: &str = r#"#!/bin/sh
rec="$1"; dur="$2"; mode="$3"
id="$DISPATCHER_JOB_ID $DISPATCHER_SHARD_INDEX $DISPATCHER_ATTEMPT $DISPATCHER_EPOCH $DISPATCHER_TASKMANAGER $$"
now() { date +%s%3N; }
echo "start $id $(now)" >> "$rec"
end=$(( $(now) + dur ))
while [ "$(now)" -lt "$end" ]; do
  echo "tick $id $(now)" >> "$rec"
  sleep 0.1
done
case "$mode" in
  always-fail) echo "fail $id $(now)" >> "$rec"; echo "failing on purpose" >&2; exit 7 ;;
  fail-on:*) if [ "$DISPATCHER_TASKMANAGER" = "${mode#fail-on:}" ]; then
               echo "fail $id $(now)" >> "$rec"; echo "this TaskManager is flaky" >&2; exit 9; fi ;;
  fail-once:*) if [ "$DISPATCHER_SHARD_INDEX" = "${mode#fail-once:}" ] && [ "$DISPATCHER_ATTEMPT" = 1 ]; then
               echo "fail $id $(now)" >> "$rec"; echo "first attempt fails" >&2; exit 3; fi ;;
esac
echo "end $id $(now)" >> "$rec"
"#;

/// One run of one shard, from its first to its last recorded line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    pub job: String,
    pub shard: u32,
    pub attempt: u32,
    pub epoch: u64,
    pub taskmanager: String,
    /// The shard process that recorded it.
    pub pid: u32,
    pub start_ms: u64,
    pub last_ms: u64,
    pub ended: bool,
    pub failed: bool,
}

pub fn parse(text: &str) -> Vec<Execution> {
    let mut runs: BTreeMap<(String, u32, u64, u32), Execution> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 8 {
            continue;
        }
        let (Ok(shard), Ok(attempt), Ok(epoch), Ok(pid), Ok(at)) = (
            f[2].parse::<u32>(),
            f[3].parse::<u32>(),
            f[4].parse::<u64>(),
            f[6].parse::<u32>(),
            f[7].parse::<u64>(),
        ) else {
            continue;
        };
        let key = (f[1].to_string(), shard, epoch, pid);
        let run = runs.entry(key).or_insert_with(|| Execution {
            job: f[1].to_string(),
            shard,
            attempt,
            epoch,
            taskmanager: f[5].to_string(),
            pid,
            start_ms: at,
            last_ms: at,
            ended: false,
            failed: false,
        });
        run.start_ms = run.start_ms.min(at);
        run.last_ms = run.last_ms.max(at);
        match f[0] {
            "end" => run.ended = true,
            "fail" => run.failed = true,
            _ => {}
        }
    }
    runs.into_values().collect()
}

/// Read and parse a record file (missing file: no executions).
pub fn read(path: &Path) -> Vec<Execution> {
    parse(&std::fs::read_to_string(path).unwrap_or_default())
}

/// Executions of one job.
pub fn of_job<'a>(all: &'a [Execution], job: &str) -> Vec<&'a Execution> {
    all.iter().filter(|e| e.job == job).collect()
}

/// Pairs of executions of one shard that overlapped in time.
pub fn overlaps(all: &[Execution]) -> Vec<(Execution, Execution)> {
    let mut by_shard: BTreeMap<(String, u32), Vec<&Execution>> = BTreeMap::new();
    for e in all {
        by_shard
            .entry((e.job.clone(), e.shard))
            .or_default()
            .push(e);
    }
    let mut found = Vec::new();
    for (_, mut runs) in by_shard {
        runs.sort_by_key(|e| e.start_ms);
        for pair in runs.windows(2) {
            if pair[0].last_ms >= pair[1].start_ms {
                found.push((pair[0].clone(), pair[1].clone()));
            }
        }
    }
    found
}

/// The most of `runs` that ran at the same time (each from its start to its last record).
pub fn max_concurrent<'a>(runs: impl IntoIterator<Item = &'a Execution>) -> usize {
    let mut edges: Vec<(u64, i64)> = Vec::new();
    for e in runs {
        edges.push((e.start_ms, 1));
        edges.push((e.last_ms + 1, -1));
    }
    // Ends sort before starts at the same instant.
    edges.sort();
    let (mut now, mut most) = (0i64, 0i64);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}

/// Writes the recording script into a directory and reads back what it records.
pub struct Recorder {
    pub script: PathBuf,
    pub file: PathBuf,
}

impl Recorder {
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let script = dir.join("record.sh");
        std::fs::write(&script, RECORD_SCRIPT)?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        let file = dir.join("executions.log");
        std::fs::write(&file, "")?;
        // Sandboxed shards run as users of their own: every one of them appends here.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666))?;
        Ok(Recorder { script, file })
    }

    /// Command and args for a job whose shards run `run_ms` then exit per `mode`.
    pub fn command(&self, run_ms: u64, mode: &str) -> (String, Vec<String>) {
        (
            self.script.display().to_string(),
            vec![
                self.file.display().to_string(),
                run_ms.to_string(),
                mode.to_string(),
            ],
        )
    }

    pub fn executions(&self) -> Vec<Execution> {
        read(&self.file)
    }
}
