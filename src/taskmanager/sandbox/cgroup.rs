//! A cgroup per run, with the run's limits, under the agent's own cgroup.
//!
//! Layout: `<the agent's cgroup>/dispatcher-<name>/run-<n>` in every hierarchy used: on
//! cgroup v1 the `memory`, `cpu` and `pids` hierarchies each get the same path. Creating below
//! its own cgroup is what a delegating service manager (systemd's `Delegate=yes`, a pod's
//! cgroup) allows.
//!
//! On cgroup v2 (one unified tree, `cgroup.controllers` at the root given) a cgroup with
//! processes may not hand controllers to its children (the "no internal processes" rule),
//! and the agent's delegated cgroup holds the agent. So the agent and its shard hosts first
//! move into a leaf of their own, `<delegated>/dispatcher-processes`, and the `memory`, `cpu`
//! and `pids` controllers are then enabled down to the runs. Those the delegated cgroup was
//! not given are named (`Cgroups::missing`) and their limits left unwritten; the rest of the
//! cgroup (a run's processes kept together and killed together) works without them.
//!
//! The run's first process joins its cgroups itself, between clone and exec, by writing `0`
//! to descriptors of their `cgroup.procs` files opened here (`RunCgroup::procs`): so nothing
//! the command forks can start outside them. After the run, `Cgroups::release` ends whatever
//! is left and says how many processes the memory limit killed.
//!
//! Making and removing a cgroup in three hierarchies was most of what the sandbox cost a run
//! (0.6 ms of 1.6 ms, `sandbox_costs`), so an emptied cgroup goes back to a pool with its
//! descriptors open and the next run takes it, its limits written again where they differ. A
//! cgroup that had a memory limit is not reused: the page cache its run left stays charged to
//! it.
//!
//! What a run's end costs is counted in system calls, since every run pays it: the cgroup's
//! `cgroup.procs` files are read once (the kill of strays and the check that it is empty are
//! one pass), its out-of-memory counter once (read after it is empty, the count is final for
//! this run and the starting point of the next), and each small file with an open, a read and
//! a close (`read_small`; `fs::read_to_string` adds a stat and a seek).
//!
//! Plain file writes: the few files involved are simpler to write than to wrap (the cgroups
//! crates do not offer the join-by-descriptor a vfork-style child needs).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

/// The controllers used: on v1 each a hierarchy mounted at `<root>/<name>`, on v2 enabled
/// down the unified tree.
const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];
/// Where the cgroup filesystem is mounted unless `taskmanager --cgroup-root` says otherwise.
const DEFAULT_ROOT: &str = "/sys/fs/cgroup";
/// Where the cgroup filesystem is mounted: `custom` (`--cgroup-root`), else the usual place.
pub fn root(custom: Option<&Path>) -> &Path {
    custom.unwrap_or(Path::new(DEFAULT_ROOT))
}
/// On v2, the leaf of the delegated cgroup that the agent and its shard hosts move into.
const PROCESS_LEAF: &str = "dispatcher-processes";
/// CFS period for CPU limits, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;
/// Emptied run cgroups kept for reuse; more than an agent runs at once is of no use.
const MAX_POOLED: usize = 256;

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

/// Where this agent's run cgroups go, and the emptied ones kept for reuse.
#[derive(Debug)]
pub struct Cgroups {
    version: Version,
    /// The agent's directory in each hierarchy used (one on v2).
    bases: Vec<(String, PathBuf)>,
    pool: Vec<RunCgroup>,
    /// Run cgroups made so far (they are named by this count).
    made: u64,
    /// v2: the controllers the delegated cgroup was not given (their limits are not written).
    missing: Vec<&'static str>,
}

/// A run's cgroup, made (or taken from the pool) and limited.
#[derive(Debug)]
pub struct RunCgroup {
    version: Version,
    /// (controller, dir); the controller is empty on v2.
    dirs: Vec<(String, PathBuf)>,
    /// Each dir's `cgroup.procs`, open for writing: the run's first process joins through them.
    procs: Vec<File>,
    /// The limits written now.
    limits: RunLimits,
    /// Out-of-memory kills counted before this run (the counter lives as long as the cgroup).
    oom_before: u64,
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

/// v2: move this process into the leaf of its delegated cgroup, enable what it may of
/// `CONTROLLERS` down to `<delegated>/<name>`, and return that directory with the
/// controllers it could not enable.
fn open_v2(root: &Path, name: &str) -> io::Result<(PathBuf, Vec<&'static str>)> {
    let own = own_path("")?;
    // A shard host started by the agent is already in the leaf.
    let delegated = match own.file_name() {
        Some(last) if last == PROCESS_LEAF => {
            own.parent().map(Path::to_path_buf).unwrap_or_default()
        }
        _ => own,
    };
    let delegated = root.join(delegated);
    let leaf = delegated.join(PROCESS_LEAF);
    fs::create_dir_all(&leaf)?;
    // "0": the writing process, with all its threads.
    write(&leaf.join("cgroup.procs"), "0")?;
    let available = fs::read_to_string(delegated.join("cgroup.controllers"))?;
    let (usable, missing): (Vec<&'static str>, Vec<&'static str>) = CONTROLLERS
        .into_iter()
        .partition(|c| available.split_whitespace().any(|a| a == *c));
    let enable = |dir: &Path| -> io::Result<()> {
        if usable.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = usable.iter().map(|c| format!("+{c}")).collect();
        write(&dir.join("cgroup.subtree_control"), &list.join(" ")).map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                io::Error::new(
                    e.kind(),
                    format!(
                        "{} holds processes other than this agent's, so it cannot give \
                         controllers to runs; give the agent a cgroup of its own (systemd: \
                         Delegate=yes)",
                        dir.display()
                    ),
                )
            } else {
                e
            }
        })
    };
    enable(&delegated)?;
    let base = delegated.join(name);
    fs::create_dir_all(&base)?;
    enable(&base)?;
    Ok((base, missing))
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).open(path)?;
    file.write_all(value.as_bytes())
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// A small cgroup file's text: an open, a read or two and a close. (A `File`'s own
/// `read_to_string` first stats the file and seeks for a size hint, which cgroup files do not
/// give anyway.)
fn read_small(path: &Path) -> io::Result<String> {
    let mut text = String::with_capacity(256);
    File::open(path)?.take(u64::MAX).read_to_string(&mut text)?;
    Ok(text)
}

impl Cgroups {
    /// The agent's cgroup directories under the cgroup filesystem mounted at `root`, made if
    /// missing; an error says what is missing.
    pub fn open(root: &Path, agent: &str) -> io::Result<Self> {
        let name = format!("dispatcher-{agent}");
        let mut cgroups = Cgroups {
            version: Version::V1,
            bases: Vec::new(),
            pool: Vec::new(),
            made: 0,
            missing: Vec::new(),
        };
        if root.join("cgroup.controllers").exists() {
            let (base, missing) = open_v2(root, &name)?;
            cgroups.version = Version::V2;
            cgroups.bases.push((String::new(), base));
            cgroups.missing = missing;
            return Ok(cgroups);
        }
        for controller in CONTROLLERS {
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
            cgroups.bases.push((controller.to_string(), base));
        }
        Ok(cgroups)
    }

    /// The controllers whose limits runs do not get (v2: not delegated to the agent).
    pub fn missing(&self) -> &[&'static str] {
        &self.missing
    }

    /// A cgroup for a run with `limits`: a pooled one when it can, else a new one.
    pub fn prepare(&mut self, limits: &RunLimits) -> io::Result<RunCgroup> {
        if limits.memory_bytes.is_none() {
            if let Some(mut cgroup) = self.pool.pop() {
                match self.relimit(&mut cgroup, limits) {
                    Ok(()) => return Ok(cgroup),
                    Err(_) => cgroup.remove(),
                }
            }
        }
        self.made += 1;
        let name = format!("run-{}", self.made);
        let mut cgroup = self.handle(Vec::new());
        for (controller, base) in &self.bases {
            let dir = base.join(&name);
            if dir.exists() {
                self.handle(vec![(controller.clone(), dir.clone())])
                    .remove();
            }
            if let Err(e) = fs::create_dir(&dir) {
                cgroup.remove();
                return Err(e);
            }
            cgroup.dirs.push((controller.clone(), dir));
        }
        let opened = cgroup
            .dirs
            .iter()
            .map(|(_, dir)| {
                OpenOptions::new()
                    .write(true)
                    .open(dir.join("cgroup.procs"))
            })
            .collect::<io::Result<Vec<File>>>();
        let limited = opened.and_then(|procs| {
            cgroup.procs = procs;
            self.relimit(&mut cgroup, limits)
        });
        match limited {
            Ok(()) => Ok(cgroup),
            Err(e) => {
                cgroup.remove();
                Err(e)
            }
        }
    }

    /// The run is over: kill what is left, and pool the cgroup (or remove it). Returns how
    /// many processes its memory limit killed during the run.
    pub fn release(&mut self, mut cgroup: RunCgroup) -> u64 {
        let empty = cgroup.kill_all();
        // Read once it is empty: nothing can be killed in it again before the next run, so
        // the count is final for this one and where the next one's starts.
        let total = cgroup.oom_total();
        let oom_kills = total.saturating_sub(cgroup.oom_before);
        cgroup.oom_before = total;
        let reusable =
            cgroup.limits.memory_bytes.is_none() && self.pool.len() < MAX_POOLED && empty;
        if reusable {
            self.pool.push(cgroup);
        } else {
            cgroup.remove();
        }
        oom_kills
    }

    /// A handle on cgroup dirs without limits written or descriptors open.
    fn handle(&self, dirs: Vec<(String, PathBuf)>) -> RunCgroup {
        RunCgroup {
            version: self.version,
            dirs,
            procs: Vec::new(),
            limits: RunLimits::default(),
            // A new cgroup's counters start at zero; a pooled one keeps the count its last
            // run ended with (`release`).
            oom_before: 0,
        }
    }

    /// Write `limits` where they differ from what `cgroup` has, and note its OOM count.
    fn relimit(&self, cgroup: &mut RunCgroup, limits: &RunLimits) -> io::Result<()> {
        for (controller, dir) in &cgroup.dirs {
            self.limit(controller, dir, &cgroup.limits, limits)?;
        }
        cgroup.limits = *limits;
        Ok(())
    }

    fn limit(
        &self,
        controller: &str,
        dir: &Path,
        old: &RunLimits,
        new: &RunLimits,
    ) -> io::Result<()> {
        let v2 = self.version == Version::V2;
        // v1: each hierarchy its own controller; v2: one dir, for those the agent was given.
        let applies = |c: &str| {
            if v2 {
                !self.missing.contains(&c)
            } else {
                controller == c
            }
        };
        if applies("memory") && new.memory_bytes != old.memory_bytes {
            let bytes = new
                .memory_bytes
                .map_or_else(|| "max".to_string(), |b| b.to_string());
            if v2 {
                write(&dir.join("memory.max"), &bytes)?;
                // No swap beyond the limit: the limit is what the run gets.
                let _ = write(&dir.join("memory.swap.max"), "0");
            } else {
                let bytes = if new.memory_bytes.is_some() {
                    bytes
                } else {
                    "-1".into()
                };
                // memsw may not go below the limit, nor the limit above memsw: order them.
                let _ = write(&dir.join("memory.memsw.limit_in_bytes"), "-1");
                write(&dir.join("memory.limit_in_bytes"), &bytes)?;
                let _ = write(&dir.join("memory.memsw.limit_in_bytes"), &bytes);
            }
        }
        if applies("cpu") && new.cpu_millis != old.cpu_millis {
            let quota = new
                .cpu_millis
                .map(|millis| (u64::from(millis) * CPU_PERIOD_US / 1000).max(1000));
            match (v2, quota) {
                (true, Some(quota)) => {
                    write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?
                }
                (true, None) => write(&dir.join("cpu.max"), "max")?,
                (false, Some(quota)) => {
                    write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
                (false, None) => write(&dir.join("cpu.cfs_quota_us"), "-1")?,
            }
        }
        if applies("pids") && new.pids != old.pids {
            let max = new
                .pids
                .map_or_else(|| "max".to_string(), |p| p.to_string());
            write(&dir.join("pids.max"), &max)?;
        }
        Ok(())
    }

    /// Remove the run cgroups a previous host left (killing what is in them).
    pub fn sweep(&self) {
        for (controller, base) in &self.bases {
            let Ok(entries) = fs::read_dir(base) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.path().is_dir() {
                    self.handle(vec![(controller.clone(), entry.path())])
                        .remove();
                }
            }
        }
    }

    /// Remove the pooled cgroups and the agent's own directories (once its runs' are gone).
    pub fn remove_base(&mut self) {
        for cgroup in self.pool.drain(..) {
            cgroup.remove();
        }
        for (_, base) in &self.bases {
            let _ = fs::remove_dir(base);
        }
    }
}

impl RunCgroup {
    /// The `cgroup.procs` descriptors the run's first process writes `0` to: on v1 only
    /// the hierarchies its limits need (`pids` always; `memory` and `cpu` when limited),
    /// since each move of a process between cgroups costs the kernel an RCU grace period,
    /// and on a busy host three of them per run cost a fifth of the shard rate.
    pub fn procs(&self) -> Vec<RawFd> {
        self.dirs
            .iter()
            .zip(&self.procs)
            .filter(|((controller, _), _)| match controller.as_str() {
                "memory" => self.limits.memory_bytes.is_some(),
                "cpu" => self.limits.cpu_millis.is_some(),
                _ => true,
            })
            .map(|(_, file)| file.as_raw_fd())
            .collect()
    }

    /// The memory limit, if one is set (for the out-of-memory reason).
    pub fn memory_limit(&self) -> Option<u64> {
        self.limits.memory_bytes
    }

    /// Out-of-memory kills over the cgroup's life.
    fn oom_total(&self) -> u64 {
        let file = match self.version {
            Version::V2 => "memory.events",
            Version::V1 => "memory.oom_control",
        };
        self.dirs
            .iter()
            .filter(|(c, _)| c.is_empty() || c == "memory")
            .filter_map(|(_, dir)| read_small(&dir.join(file)).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|l| l.strip_prefix("oom_kill ")?.trim().parse::<u64>().ok())
                    .collect::<Vec<_>>()
            })
            .sum()
    }

    /// SIGKILL every process in the cgroup (a stray that left the run's process group);
    /// whether none is left, as its `cgroup.procs` files said.
    pub fn kill_all(&self) -> bool {
        let mut empty = true;
        for (_, dir) in &self.dirs {
            let procs = dir.join("cgroup.procs");
            if self.version == Version::V2 && write(&dir.join("cgroup.kill"), "1").is_ok() {
                // Killed, but maybe not gone yet.
                empty &= read_small(&procs).is_ok_and(|t| t.trim().is_empty());
                continue;
            }
            // v1 (or a v2 kernel before 5.14): one by one, until none is left or none dies.
            let mut emptied = false;
            for _ in 0..10 {
                let Ok(text) = read_small(&procs) else {
                    break;
                };
                let pids: Vec<i32> = text.lines().filter_map(|l| l.parse().ok()).collect();
                if pids.is_empty() {
                    emptied = true;
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
            empty &= emptied;
        }
        empty
    }

    /// Kill what is left and remove the cgroup (a cgroup with a process cannot go; it is
    /// tried again by the next host's `sweep`).
    pub fn remove(self) {
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
}
