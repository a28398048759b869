//! A cgroup per run, with the run's limits, under the agent's own cgroup.
//!
//! Layout: `<the agent's cgroup>/dispatcher-<tm-id>/run-<n>` in every hierarchy used: on
//! cgroup v2 (one unified tree, `/sys/fs/cgroup/cgroup.controllers` present) the `memory`,
//! `cpu` and `pids` controllers are enabled down to the runs; on cgroup v1 the `memory`, `cpu`
//! and `pids` hierarchies each get the same path. Creating below its own cgroup is what a
//! delegating service manager (systemd's `Delegate=yes`, a pod's cgroup) allows.
//!
//! The run's first process joins its cgroups itself, between clone and exec, by writing `0`
//! to descriptors of their `cgroup.procs` files opened here (`Prepared::procs`): so nothing the
//! command forks can start outside them. After the run, `oom_kills` says whether the memory
//! limit killed something, `kill_all` ends whatever is left, and `remove` takes the cgroup away.
//!
//! Plain file writes: the few files involved are simpler to write than to wrap (the cgroups
//! crates do not offer the join-by-descriptor a vfork-style child needs).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

/// cgroup v1 hierarchies used, each mounted at `/sys/fs/cgroup/<name>`.
const V1_CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];
/// CFS period for CPU limits, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// The limits a run gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunLimits {
    pub memory_bytes: Option<u64>,
    /// Thousandths of a CPU.
    pub cpu_millis: Option<u32>,
    pub pids: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// Where this agent's run cgroups go.
#[derive(Debug, Clone)]
pub struct Cgroups {
    version: Version,
    /// The agent's directory in each hierarchy used (one on v2).
    bases: Vec<(String, PathBuf)>,
}

/// A run's cgroup, made and limited; the descriptors its first process writes `0` to.
pub struct Prepared {
    dirs: Vec<(String, PathBuf)>,
    procs: Vec<File>,
}

impl Prepared {
    pub fn procs(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }

    pub fn into_run(self) -> RunCgroup {
        RunCgroup {
            version: if self.dirs.iter().any(|(c, _)| c.is_empty()) {
                Version::V2
            } else {
                Version::V1
            },
            dirs: self.dirs,
        }
    }
}

/// A run's cgroup after its start.
#[derive(Debug, Clone)]
pub struct RunCgroup {
    version: Version,
    /// (controller, dir); the controller is empty on v2.
    dirs: Vec<(String, PathBuf)>,
}

/// This process's cgroup path in a hierarchy (`/proc/self/cgroup`): the controller list
/// names it on v1, the empty list on v2.
fn own_path(controller: &str) -> io::Result<PathBuf> {
    let table = fs::read_to_string("/proc/self/cgroup")?;
    for line in table.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, list, path) = (parts.next(), parts.next(), parts.next());
        let (Some(list), Some(path)) = (list, path) else {
            continue;
        };
        if list.split(',').any(|c| c == controller) {
            return Ok(PathBuf::from(path.trim_start_matches('/')));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("this process is in no '{controller}' cgroup"),
    ))
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).open(path)?;
    file.write_all(value.as_bytes())
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl Cgroups {
    /// The agent's cgroup directories, made if missing; an error says what is missing.
    pub fn open(agent: &str) -> io::Result<Self> {
        let name = format!("dispatcher-{agent}");
        let root = Path::new("/sys/fs/cgroup");
        if root.join("cgroup.controllers").exists() {
            let own = own_path("")?;
            let parent = root.join(&own);
            let base = parent.join(&name);
            let enable =
                |dir: &Path| write(&dir.join("cgroup.subtree_control"), "+memory +cpu +pids");
            enable(&parent)?;
            fs::create_dir_all(&base)?;
            enable(&base)?;
            return Ok(Cgroups {
                version: Version::V2,
                bases: vec![(String::new(), base)],
            });
        }
        let mut bases = Vec::new();
        for controller in V1_CONTROLLERS {
            let mount = root.join(controller);
            if !mount.join("cgroup.procs").exists() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "no cgroup v1 '{controller}' hierarchy at {}",
                        mount.display()
                    ),
                ));
            }
            let base = mount.join(own_path(controller)?).join(&name);
            fs::create_dir_all(&base)?;
            bases.push((controller.to_string(), base));
        }
        Ok(Cgroups {
            version: Version::V1,
            bases,
        })
    }

    /// Make run `run`'s cgroup with `limits` (any left from before is emptied first).
    pub fn prepare(&self, run: &str, limits: &RunLimits) -> io::Result<Prepared> {
        let mut dirs = Vec::with_capacity(self.bases.len());
        for (controller, base) in &self.bases {
            let dir = base.join(run);
            if dir.exists() {
                RunCgroup {
                    version: self.version,
                    dirs: vec![(controller.clone(), dir.clone())],
                }
                .remove();
            }
            fs::create_dir(&dir)?;
            dirs.push((controller.clone(), dir));
        }
        let prepared_dirs = dirs.clone();
        let cleanup = |e: io::Error| {
            RunCgroup {
                version: self.version,
                dirs: prepared_dirs.clone(),
            }
            .remove();
            e
        };
        for (controller, dir) in &dirs {
            self.limit(controller, dir, limits).map_err(cleanup)?;
        }
        let procs = dirs
            .iter()
            .map(|(_, dir)| {
                OpenOptions::new()
                    .write(true)
                    .open(dir.join("cgroup.procs"))
            })
            .collect::<io::Result<Vec<File>>>()
            .map_err(cleanup)?;
        Ok(Prepared { dirs, procs })
    }

    fn limit(&self, controller: &str, dir: &Path, limits: &RunLimits) -> io::Result<()> {
        let v2 = self.version == Version::V2;
        if (v2 || controller == "memory") && limits.memory_bytes.is_some() {
            let bytes = limits.memory_bytes.unwrap_or_default().to_string();
            if v2 {
                write(&dir.join("memory.max"), &bytes)?;
                // No swap beyond the limit: the limit is what the run gets.
                let _ = write(&dir.join("memory.swap.max"), "0");
            } else {
                write(&dir.join("memory.limit_in_bytes"), &bytes)?;
                let _ = write(&dir.join("memory.memsw.limit_in_bytes"), &bytes);
            }
        }
        if let Some(millis) = limits.cpu_millis.filter(|_| v2 || controller == "cpu") {
            let quota = (u64::from(millis) * CPU_PERIOD_US / 1000).max(1000);
            if v2 {
                write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
            } else {
                write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
            }
        }
        if let Some(pids) = limits.pids.filter(|_| v2 || controller == "pids") {
            write(&dir.join("pids.max"), &pids.to_string())?;
        }
        Ok(())
    }

    /// Remove the agent's own cgroup directories (when its runs' are gone).
    pub fn remove_base(&self) {
        for (_, base) in &self.bases {
            let _ = fs::remove_dir(base);
        }
    }

    /// Remove the run cgroups a previous host left (killing what is in them).
    pub fn sweep(&self) {
        for (controller, base) in &self.bases {
            let Ok(entries) = fs::read_dir(base) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.path().is_dir() {
                    RunCgroup {
                        version: self.version,
                        dirs: vec![(controller.clone(), entry.path())],
                    }
                    .remove();
                }
            }
        }
    }
}

impl RunCgroup {
    /// How many processes the memory limit killed.
    pub fn oom_kills(&self) -> u64 {
        let (file, key) = match self.version {
            Version::V2 => ("memory.events", "oom_kill"),
            Version::V1 => ("memory.oom_control", "oom_kill"),
        };
        self.dirs
            .iter()
            .filter(|(c, _)| c.is_empty() || c == "memory")
            .filter_map(|(_, dir)| fs::read_to_string(dir.join(file)).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
                    .collect::<Vec<_>>()
            })
            .sum()
    }

    /// SIGKILL every process in the cgroup (a stray that left the run's process group).
    pub fn kill_all(&self) {
        for (_, dir) in &self.dirs {
            if self.version == Version::V2 && write(&dir.join("cgroup.kill"), "1").is_ok() {
                continue;
            }
            // v1 (or a v2 kernel before 5.14): one by one, until none is left or none dies.
            for _ in 0..10 {
                let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) else {
                    break;
                };
                let pids: Vec<i32> = text.lines().filter_map(|l| l.parse().ok()).collect();
                if pids.is_empty() {
                    break;
                }
                for pid in pids {
                    // SAFETY: kill(2) of a process in the run's own cgroup.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
                std::thread::yield_now();
            }
        }
    }

    /// Kill what is left and remove the cgroup (a cgroup with a process cannot go; it is
    /// tried again by the next host's `sweep`).
    pub fn remove(&self) {
        self.kill_all();
        for (_, dir) in &self.dirs {
            for _ in 0..50 {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    // EBUSY while the last killed process is being torn down.
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
                }
            }
        }
    }

    /// The memory limit, if one is set (for the out-of-memory reason).
    pub fn memory_limit(&self) -> Option<u64> {
        let (file, _) = match self.version {
            Version::V2 => ("memory.max", ()),
            Version::V1 => ("memory.limit_in_bytes", ()),
        };
        self.dirs
            .iter()
            .filter(|(c, _)| c.is_empty() || c == "memory")
            .filter_map(|(_, dir)| fs::read_to_string(dir.join(file)).ok())
            .filter_map(|t| t.trim().parse::<u64>().ok())
            .find(|&b| b < (1 << 62))
    }
}
