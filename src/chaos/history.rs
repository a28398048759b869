//! The run's record, as JSON lines: client operations with invocation and completion times
//! (monotonic, ns since the run began) and outcome; faults as they start and heal; samples
//! of every replica's own status. Shard executions are recorded by the shard command itself
//! in a separate file (see `workload::RECORD_SCRIPT`).

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// Definitely did not happen (the cluster refused it).
    Fail,
    /// May or may not have happened (timed out, connection lost).
    Unknown,
}

/// What the cluster did with one attempt of the hostile tenant (`chaos::hostile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// The wall held: refused with a code the attack expects, or answered with only what is
    /// the attacker's own.
    Held,
    /// Not answered (no leader, a cut link): says nothing either way.
    Unanswered,
    /// Let through, or answered with something the attacker must not see.
    Breach,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Op {
        client: usize,
        /// `submit`, `invalid_submit` or `read`.
        op: String,
        key: String,
        invoke_ns: u64,
        complete_ns: u64,
        outcome: Outcome,
        job_id: Option<String>,
        created: Option<bool>,
        error: Option<String>,
    },
    /// One attempt of the hostile tenant: which attack, on which job, and the answer.
    Attack {
        at_ns: u64,
        attack: String,
        answer: Answer,
        target: Option<String>,
        detail: String,
    },
    Fault {
        at_ns: u64,
        fault: String,
        detail: String,
        /// `start` or `heal`.
        phase: String,
    },
    Sample {
        at_ns: u64,
        replica: u64,
        /// Bumped every time the runner (re)starts the replica's process.
        incarnation: u64,
        term: u64,
        leader_id: Option<u64>,
        state: String,
        committed: u64,
        last_applied: u64,
    },
}

pub struct History {
    start: Instant,
    out: Mutex<BufWriter<File>>,
}

impl History {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(History {
            start: Instant::now(),
            out: Mutex::new(BufWriter::new(File::create(path)?)),
        })
    }

    /// Nanoseconds since the run began.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn record(&self, event: &Event) {
        if let Ok(line) = serde_json::to_string(event) {
            let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
            let _ = writeln!(out, "{line}");
        }
    }

    pub fn flush(&self) {
        let _ = self.out.lock().unwrap_or_else(|p| p.into_inner()).flush();
    }
}

/// Read a history file back; lines that do not parse are skipped.
pub fn read(path: &Path) -> std::io::Result<Vec<Event>> {
    let file = File::open(path)?;
    Ok(BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect())
}
