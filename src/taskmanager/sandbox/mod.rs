//! The shard sandbox: each run executes under a user of its own (`uids`), in its own PID,
//! mount and IPC namespaces with its own `/proc` and private `/tmp`, `/var/tmp` and
//! `/dev/shm`, in a cgroup of its own with its limits (`cgroup`), with a clean environment.
//! What it takes: root (or `CAP_SYS_ADMIN`, `CAP_SETUID`, `CAP_SETGID`, `CAP_CHOWN`) and a
//! cgroup tree the agent may write below its own cgroup.
//!
//! The agent finds out at start what this host lets it enforce (`probe`) and says so: `full`
//! (all of it), `partial` (naming what is missing) or `none` (not root, or `--sandbox off`).
//! The shard host enforces what the agent resolved (`SandboxConfig`); the steps inside the
//! new process are in `spawn` (they must run between clone and exec).
//!
//! This module does not decide which runs may start (the agent does) nor report anything to
//! the cluster.

pub mod cgroup;
pub mod uids;

use serde::{Deserialize, Serialize};
use uids::RunAs;

/// Processes one run may have at once, unless the job asks otherwise.
pub const DEFAULT_PIDS_MAX: u32 = 4096;

/// What the shard host enforces, as the agent resolved it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxConfig {
    /// Switch each run to this user (`None`: the agent's own user).
    pub run_as: Option<RunAs>,
    /// Own PID, mount and IPC namespaces, own `/proc`, private temp dirs.
    pub namespaces: bool,
    /// Per-run cgroups under `dispatcher-<this name>` (`None`: none).
    pub cgroup_name: Option<String>,
    /// Where the cgroup filesystem is mounted (`None`: `/sys/fs/cgroup`).
    #[serde(default)]
    pub cgroup_root: Option<std::path::PathBuf>,
}

impl SandboxConfig {
    /// The cgroup filesystem's mount point.
    pub fn cgroup_root(&self) -> &std::path::Path {
        cgroup::root(self.cgroup_root.as_deref())
    }
}

/// How much of the sandbox an agent gives its runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Isolation {
    Full,
    /// Some of it; what is missing, each in a few words.
    Partial(Vec<String>),
    /// None of it, and why.
    None(String),
}

impl Isolation {
    /// `full`, `partial` or `none`, as `tm list` and the metrics say it.
    pub fn level(&self) -> &'static str {
        match self {
            Isolation::Full => "full",
            Isolation::Partial(_) => "partial",
            Isolation::None(_) => "none",
        }
    }

    /// One line for the log.
    pub fn describe(&self) -> String {
        match self {
            Isolation::Full => "full: own user, PID namespace, /proc, cgroup per run".into(),
            Isolation::Partial(missing) => format!("partial: no {}", missing.join(", no ")),
            Isolation::None(why) => format!("none: {why}"),
        }
    }
}

/// What the agent asks for (`taskmanager --sandbox`, `--run-as-uids`, `--run-as`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRequest {
    pub enabled: bool,
    /// `None`: the default pool.
    pub run_as: Option<RunAs>,
    /// Where the cgroup filesystem is mounted (`taskmanager --cgroup-root`; `None`: the
    /// usual place).
    pub cgroup_root: Option<std::path::PathBuf>,
}

/// The name of an agent's cgroups: its id and its work dir, so that two agents of one id on
/// one host (of two clusters) never take each other's runs for leftovers.
pub fn cgroup_name(agent: &str, work_dir: &std::path::Path) -> String {
    let path = std::fs::canonicalize(work_dir).unwrap_or_else(|_| work_dir.to_path_buf());
    // FNV-1a: stable across builds, unlike std's hasher.
    let hash = path
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{agent}-{:08x}", hash as u32)
}

/// Resolve what this host lets the agent whose cgroups are named `agent` enforce, trying
/// each part for real.
pub fn probe(agent: &str, request: &SandboxRequest) -> (SandboxConfig, Isolation) {
    if !request.enabled {
        return (
            SandboxConfig::default(),
            Isolation::None("turned off (--sandbox off): shards run as the agent's user".into()),
        );
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return (
            SandboxConfig::default(),
            Isolation::None(
                "the agent is not root: shards run as its user, see the README's sandbox section"
                    .into(),
            ),
        );
    }
    let mut missing = Vec::new();
    let run_as = request.run_as.unwrap_or(RunAs::Pool {
        from: uids::DEFAULT_POOL.0,
        to: uids::DEFAULT_POOL.1,
    });
    let cgroup_name =
        match cgroup::Cgroups::open(cgroup::root(request.cgroup_root.as_deref()), agent) {
            Ok(mut cgroups) => {
                if !cgroups.missing().is_empty() {
                    missing.push(format!(
                        "limits on {} (the agent's cgroup was not given those controllers)",
                        cgroups.missing().join(", ")
                    ));
                }
                // The shard host makes them again when it starts.
                cgroups.remove_base();
                Some(agent.to_string())
            }
            Err(e) => {
                missing.push(format!("cgroups ({e})"));
                None
            }
        };
    let namespaces = match namespaces_work() {
        Ok(()) => true,
        Err(e) => {
            missing.push(format!("namespaces ({e})"));
            false
        }
    };
    if matches!(run_as, RunAs::Fixed { .. }) {
        missing.push("own user per run (--run-as gives one user to every run)".into());
    }
    let config = SandboxConfig {
        run_as: Some(run_as),
        namespaces,
        cgroup_name,
        cgroup_root: request.cgroup_root.clone(),
    };
    let isolation = if missing.is_empty() {
        Isolation::Full
    } else {
        Isolation::Partial(missing)
    };
    (config, isolation)
}

/// Start `/bin/true` in new PID, mount and IPC namespaces (as a run would be) and wait for it.
fn namespaces_work() -> std::io::Result<()> {
    super::spawn::try_namespaces()
}

#[cfg(test)]
mod tests;
