//! Messages between a TaskManager agent and its shard host (`dispatcher shard-host`): requests
//! on the host's stdin, events on its stdout, each one frame (`crate::framing`).

use super::sandbox::cgroup::RunLimits;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A message is a command line, an environment and a few ids; exec's own limit on arguments
/// and environment is a few MiB.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Identifies a run between the agent and its host (the agent numbers them).
pub type RunId = u64;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpawnRequest {
    pub run: RunId,
    pub program: String,
    pub args: Vec<String>,
    /// Set on top of the host's own environment (which is the agent's).
    pub env: Vec<(String, String)>,
    /// The run's directory: made if missing (from the pool when it can); the command runs there, its stdout and stderr
    /// go to files of those names in it.
    pub dir: PathBuf,
    /// Its cgroup's limits (when the host makes cgroups).
    pub limits: RunLimits,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    Spawn(SpawnRequest),
    /// Stop the run's process group: SIGTERM, then SIGKILL after `STOP_GRACE_MS`; its
    /// `Exited` says `Stopped::Requested`.
    Stop(RunId),
    /// The agent holds its lease: keep every run alive.
    Keepalive,
    /// Nothing will read this run directory again (the leader no longer lists its run):
    /// once no run in it is alive, empty it into the pool for reuse.
    Recycle(PathBuf),
}

/// Why a run ended without the shard choosing to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stopped {
    /// The agent asked (the run was moved, cancelled, or the lease was lost).
    Requested,
    /// No keep-alive came in time: the agent is paused, stuck or cut off.
    Silence,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The command runs, as the leader of process group `pgid`.
    Started { run: RunId, pgid: u32 },
    /// Nothing ran. `job_fault`: the command cannot be started as given (not found, not
    /// executable, arguments too large); otherwise the TaskManager could not (no processes
    /// left, its disk refused the run directory).
    CannotStart {
        run: RunId,
        error: String,
        job_fault: bool,
    },
    Exited {
        run: RunId,
        /// The exit code, or `None` when a signal ended it.
        code: Option<i32>,
        signal: Option<i32>,
        run_ms: u64,
        stopped: Option<Stopped>,
        /// Why, when the sandbox knows better than the exit status ("out of memory (limit
        /// 512 MiB)").
        reason: Option<String>,
    },
}
