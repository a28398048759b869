//! `dispatcher shard-host`: the one process per TaskManager agent that starts its shards and
//! keeps them alive only while the agent keeps writing keep-alives to its stdin. Each shard
//! runs in a process group of its own and dies with the host (`PR_SET_PDEATHSIG`). When the
//! agent dies (even by kill -9: the pipe closes) the host kills every group and exits; when
//! the keep-alives stop (the agent is paused, or stopped sending them because it lost its
//! lease) it kills every group and waits for the agent to come back. So no shard outlives its
//! agent as an orphan, and a cut-off agent's shards die within `lease + keep-alive timeout`,
//! before the leader places them elsewhere.
//!
//! One exec per agent rather than one per shard: starting a shard costs a vfork-style clone
//! that copies nothing (`spawn`) and the exec of the command itself.
//!
//! One thread, one loop: it waits on the agent's pipes and every run's pidfd at once
//! (`poller`), so a request, a shard's end and the events they cause are handled where they
//! woke the host, and the events of a round go out in one write (`host_pipes`).
//!
//! Synchronous std code on purpose: it must work even when nothing else does.

use super::host_pipes::{Arrived, Inbox, Outbox};
use super::host_protocol::{Event, Request, RunId, SpawnRequest, Stopped, MAX_MESSAGE_BYTES};
use super::poller::{set_nonblocking, Poller, CLOSED, READABLE, WRITABLE};
use super::run_dir_pool::RunDirPool;
use super::sandbox::cgroup::{Cgroups, RunCgroup};
use super::sandbox::uids::{Identity, UidLeases};
use super::sandbox::SandboxConfig;
use super::spawn::{self, Confinement, Ended, Launch, Reaper, Spawner};
use crate::clock::boottime;
use crate::domain::STOP_GRACE_MS;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often the keep-alive deadline is checked when nothing else happens.
const POLL: Duration = Duration::from_millis(50);
/// Exit code when the agent went away.
pub const EXIT_AGENT_GONE: i32 = 75;
/// Exit code when the host could not set itself up (no threads or descriptors left).
const EXIT_CANNOT_START: i32 = 71;
/// Signals a terminal or a stray `kill` may send: the host ignores them, the shard gets them
/// back at their defaults.
const IGNORED_SIGNALS: [libc::c_int; 7] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
];

struct Running {
    pgid: u32,
    started: Instant,
    stopped: Option<Stopped>,
    /// Asked to stop: SIGTERM went out, SIGKILL follows at this instant.
    kill_at: Option<Instant>,
    dir: PathBuf,
    /// The agent is done with the directory: recycle it when the run has exited.
    recycle_on_exit: bool,
    /// Its user, when it has one of its own (given back when the run is over).
    user: Option<Identity>,
    cgroup: Option<RunCgroup>,
}

fn kill_group(pgid: u32) {
    signal_group(pgid, libc::SIGKILL);
}

fn signal_group(pgid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        libc::kill(-(pgid as i32), signal);
    }
}

/// Errors that say the command itself cannot run as given.
fn is_job_fault(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ENOENT
                | libc::EACCES
                | libc::ENOEXEC
                | libc::E2BIG
                | libc::ENOTDIR
                | libc::ELOOP
                | libc::ENAMETOOLONG
                | libc::EISDIR
        )
    )
}

/// Poller tokens: the agent's two pipes, then one per run (the host's own counter, so nothing
/// the agent sends can collide with the pipes).
const STDIN: u64 = 0;
const STDOUT: u64 = 1;
const FIRST_RUN_TOKEN: u64 = 2;
/// Events the agent has not read beyond this: it is not reading at all, so treat it as gone
/// rather than hold them without bound.
const MAX_UNREAD_EVENTS_BYTES: usize = 64 * 1024 * 1024;

/// Run the host until the agent goes away; returns the exit code.
/// `run_dir_pool`: where finished run directories wait to be used again (`None`: made and
/// removed each time).
pub fn shard_host(
    keepalive_timeout: Duration,
    run_dir_pool: Option<PathBuf>,
    sandbox: SandboxConfig,
) -> i32 {
    // SAFETY: setting signal dispositions to SIG_IGN before any other thread exists.
    unsafe {
        for sig in IGNORED_SIGNALS {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
    let mut host = match Host::open(run_dir_pool, sandbox) {
        Ok(host) => host,
        Err(e) => {
            eprintln!("shard host cannot start: {e}");
            return EXIT_CANNOT_START;
        }
    };
    let mut inbox = Inbox::new(libc::STDIN_FILENO, MAX_MESSAGE_BYTES);
    let mut ready = Vec::new();
    loop {
        let timeout = host.next_kill_in().map_or(POLL, |due| due.min(POLL));
        if let Err(e) = host.poller.wait(timeout, &mut ready) {
            eprintln!("shard host cannot wait: {e}");
            host.shut_down();
            return EXIT_AGENT_GONE;
        }
        let mut agent_gone = false;
        for event in &ready {
            match event.token {
                STDIN => {
                    let arrived = inbox.fill();
                    let arrived_at = boottime();
                    // Whatever whole requests came before a close or bad bytes still count.
                    loop {
                        match inbox.next::<Request>() {
                            Ok(Some(request)) => host.handle(request, arrived_at),
                            Ok(None) => break,
                            // Bytes that are not ours: the agent is not itself.
                            Err(_) => {
                                agent_gone = true;
                                break;
                            }
                        }
                    }
                    if !matches!(arrived, Ok(Arrived::More)) {
                        agent_gone = true;
                    }
                }
                STDOUT => {
                    if event.events & CLOSED != 0 {
                        agent_gone = true;
                    }
                }
                token => host.reap(token),
            }
        }
        // One write for every event of this round.
        if host.flush_events().is_err() {
            agent_gone = true;
        }
        if agent_gone {
            host.shut_down();
            return EXIT_AGENT_GONE;
        }
        host.kill_overdue();
        // Silence is nothing arriving, not a host too busy to read: after a long batch (a
        // burst of spawns), what the agent wrote meanwhile is read before judging.
        if !host.silent
            && boottime().saturating_sub(host.last_keepalive) > keepalive_timeout
            && !readable(libc::STDIN_FILENO)
        {
            host.silent = true;
            host.stop_all(Stopped::Silence);
        }
    }
}

/// Whether `fd` has bytes (or its end) waiting to be read, without waiting.
fn readable(fd: libc::c_int) -> bool {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no timeout.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready > 0 && poll.revents != 0
}

struct Host {
    runs: BTreeMap<RunId, Running>,
    /// The poller token of each run that has a process.
    tokens: BTreeMap<u64, RunId>,
    next_token: u64,
    poller: Poller,
    events: Outbox,
    /// Whether the poller watches stdout for room (events wait to be written).
    waiting_for_room: bool,
    spawner: Spawner,
    /// Reaps every run by its pidfd when the poller reports it readable.
    reaper: Reaper,
    /// A shard's stdin.
    null: File,
    dirs: RunDirPool,
    /// When the agent's last keep-alive came, on CLOCK_BOOTTIME (a suspend of the machine
    /// counts as silence).
    last_keepalive: Duration,
    /// Keep-alives stopped and none came back since: every run was stopped.
    silent: bool,
    sandbox: Sandbox,
}

/// The sandbox's state in the host.
struct Sandbox {
    namespaces: bool,
    users: Option<UidLeases>,
    cgroups: Option<Cgroups>,
}

impl Host {
    fn open(run_dir_pool: Option<PathBuf>, sandbox: SandboxConfig) -> std::io::Result<Self> {
        let root = sandbox.cgroup_root().to_path_buf();
        let opened = sandbox
            .cgroup_name
            .as_deref()
            .map(|name| Cgroups::open(&root, name));
        let cgroups = match opened {
            Some(Ok(cgroups)) => {
                // Runs of a host before this one are over: take their cgroups away.
                cgroups.sweep();
                Some(cgroups)
            }
            Some(Err(e)) => {
                eprintln!("shard host: runs get no cgroups: {e}");
                None
            }
            None => None,
        };
        if sandbox.run_as.is_some() {
            // Runs of other users must reach their own directories (and nothing else in
            // it: every file here is 0600, every other run's directory 0700 and theirs).
            if let Some(work_dir) = run_dir_pool.as_deref().and_then(Path::parent) {
                traversable(work_dir)?;
            }
        }
        let sandbox = Sandbox {
            namespaces: sandbox.namespaces,
            users: sandbox.run_as.map(UidLeases::new),
            cgroups,
        };
        let poller = Poller::new()?;
        for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO] {
            set_nonblocking(fd)?;
        }
        poller.add(libc::STDIN_FILENO, READABLE, STDIN)?;
        // Watched for room only while events wait; a closed pipe is reported regardless.
        poller.add(libc::STDOUT_FILENO, 0, STDOUT)?;
        Ok(Host {
            runs: BTreeMap::new(),
            tokens: BTreeMap::new(),
            next_token: FIRST_RUN_TOKEN,
            poller,
            events: Outbox::new(libc::STDOUT_FILENO, MAX_MESSAGE_BYTES),
            waiting_for_room: false,
            spawner: Spawner::default(),
            reaper: Reaper::default(),
            null: File::open("/dev/null")?,
            dirs: RunDirPool::open(run_dir_pool),
            last_keepalive: boottime(),
            silent: false,
            sandbox,
        })
    }

    /// Handle one request whose bytes arrived at `arrived_at` (CLOCK_BOOTTIME).
    fn handle(&mut self, request: Request, arrived_at: Duration) {
        match request {
            Request::Keepalive => {
                self.last_keepalive = self.last_keepalive.max(arrived_at);
                self.silent = false;
            }
            Request::Spawn(request) => {
                if self.silent {
                    // Keep-alives stopped and nothing came back yet: this request is older
                    // than the silence, or the agent is not itself. Do not start it.
                    self.send(Event::Exited {
                        run: request.run,
                        code: None,
                        signal: None,
                        run_ms: 0,
                        stopped: Some(Stopped::Silence),
                        reason: None,
                    });
                } else {
                    // The agent asks for a run only while it holds its lease: a spawn is as
                    // good a sign of life as a keep-alive, and in a burst the keep-alives
                    // wait behind the spawns.
                    self.last_keepalive = self.last_keepalive.max(arrived_at);
                    self.spawn(request);
                }
            }
            Request::Stop(run) => self.terminate(run),
            Request::Recycle(dir) => self.recycle(&dir),
        }
    }

    fn send(&mut self, event: Event) {
        self.events.push(&event);
    }

    /// Write the events queued; watch stdout for room while some wait. An error means the
    /// agent is gone (or reads nothing at all).
    fn flush_events(&mut self) -> std::io::Result<()> {
        let done = self.events.flush()?;
        if done == self.waiting_for_room {
            let interest = if done { 0 } else { WRITABLE };
            self.poller.modify(libc::STDOUT_FILENO, interest, STDOUT)?;
            self.waiting_for_room = !done;
        }
        if self.events.waiting() > MAX_UNREAD_EVENTS_BYTES {
            return Err(std::io::Error::other("the agent reads none of its events"));
        }
        Ok(())
    }

    fn spawn(&mut self, request: SpawnRequest) {
        let run = request.run;
        if self.runs.contains_key(&run) {
            // Already running: the agent asked twice, and one process is what it wants.
            return;
        }
        match start(
            &mut self.spawner,
            &mut self.dirs,
            &mut self.sandbox,
            &self.null,
            &request,
        ) {
            Ok((child, user, cgroup)) => {
                let pgid = child.pid;
                let token = self.next_token;
                self.next_token += 1;
                if let Err(e) = self.reaper.watch(&self.poller, token, child.pidfd) {
                    // Without a watch its end would never be seen: stop it now.
                    kill_group(pgid);
                    self.sandbox.release(user, cgroup);
                    self.send(Event::CannotStart {
                        run,
                        error: format!("cannot watch the shard's process: {e}"),
                        job_fault: false,
                    });
                    return;
                }
                self.tokens.insert(token, run);
                self.runs.insert(
                    run,
                    Running {
                        pgid,
                        started: Instant::now(),
                        stopped: None,
                        kill_at: None,
                        dir: request.dir.clone(),
                        recycle_on_exit: false,
                        user,
                        cgroup,
                    },
                );
                self.send(Event::Started { run, pgid });
            }
            Err((error, job_fault)) => self.send(Event::CannotStart {
                run,
                error,
                job_fault,
            }),
        }
    }

    /// The process polled under `token` ended: reap it and report its run.
    fn reap(&mut self, token: u64) {
        let Some(ended) = self.reaper.reap(token) else {
            return;
        };
        if let Some(run) = self.tokens.remove(&token) {
            self.exited(run, ended);
        }
    }

    /// How long until the next SIGKILL is due, if one is.
    fn next_kill_in(&self) -> Option<Duration> {
        let now = Instant::now();
        self.runs
            .values()
            .filter_map(|r| r.kill_at)
            .min()
            .map(|at| at.saturating_duration_since(now))
    }

    /// Kill a run's process group now (its agent is gone or silent: no grace, since the
    /// leader counts on these runs being dead within the lease margin).
    fn stop(&mut self, run: RunId, why: Stopped) {
        if let Some(running) = self.runs.get_mut(&run) {
            running.stopped.get_or_insert(why);
            running.kill_at = None;
            kill_group(running.pgid);
        }
    }

    /// The agent asked: SIGTERM the run's process group, and SIGKILL it if it has not ended
    /// after `STOP_GRACE_MS`.
    fn terminate(&mut self, run: RunId) {
        if let Some(running) = self.runs.get_mut(&run) {
            if running.stopped.is_none() {
                running.stopped = Some(Stopped::Requested);
                running.kill_at = Some(Instant::now() + Duration::from_millis(STOP_GRACE_MS));
                signal_group(running.pgid, libc::SIGTERM);
            }
        }
    }

    /// SIGKILL the runs whose grace ran out.
    fn kill_overdue(&mut self) {
        let now = Instant::now();
        for running in self.runs.values_mut() {
            if running.kill_at.is_some_and(|at| at <= now) {
                running.kill_at = None;
                kill_group(running.pgid);
            }
        }
    }

    /// The agent is done with a run directory: pool it now, or when its run has exited.
    fn recycle(&mut self, dir: &Path) {
        match self.runs.values_mut().find(|r| r.dir == dir) {
            Some(running) => running.recycle_on_exit = true,
            None => self.dirs.recycle(dir),
        }
    }

    /// The agent is gone: kill every run, and take the sandbox's cgroups with them.
    fn shut_down(&mut self) {
        self.stop_all(Stopped::Requested);
        let runs = std::mem::take(&mut self.runs);
        for (_, running) in runs {
            self.sandbox.release(running.user, running.cgroup);
        }
        if let Some(cgroups) = self.sandbox.cgroups.as_mut() {
            cgroups.remove_base();
        }
    }

    fn stop_all(&mut self, why: Stopped) {
        let runs: Vec<RunId> = self.runs.keys().copied().collect();
        for run in runs {
            self.stop(run, why);
        }
    }

    fn exited(&mut self, run: RunId, ended: std::io::Result<Ended>) {
        let Some(running) = self.runs.remove(&run) else {
            return;
        };
        // Take any background processes the shard left behind with it.
        kill_group(running.pgid);
        let memory_limit = running.cgroup.as_ref().and_then(RunCgroup::memory_limit);
        let oom_kills = self.sandbox.release(running.user, running.cgroup);
        let reason = out_of_memory(oom_kills, memory_limit);
        if running.recycle_on_exit {
            self.dirs.recycle(&running.dir);
        }
        let (code, signal) = match ended {
            Ok(ended) => (ended.code, ended.signal),
            Err(_) => (None, None),
        };
        self.send(Event::Exited {
            run,
            code,
            signal,
            run_ms: running.started.elapsed().as_millis() as u64,
            stopped: running.stopped,
            reason,
        });
    }
}

impl Sandbox {
    /// The run is over: its cgroup goes (with anything left in it), then its user. Returns
    /// how many of its processes the memory limit killed.
    fn release(&mut self, user: Option<Identity>, cgroup: Option<RunCgroup>) -> u64 {
        let oom_kills = match (cgroup, self.cgroups.as_mut()) {
            (Some(cgroup), Some(cgroups)) => cgroups.release(cgroup),
            (Some(cgroup), None) => {
                cgroup.remove();
                0
            }
            (None, _) => 0,
        };
        if let (Some(users), Some(user)) = (self.users.as_mut(), user) {
            users.release(user.uid);
        }
        oom_kills
    }
}

/// "out of memory (limit 512 MiB)" when the run's memory limit killed something in it.
fn out_of_memory(oom_kills: u64, memory_limit: Option<u64>) -> Option<String> {
    if oom_kills == 0 {
        return None;
    }
    Some(match memory_limit {
        Some(bytes) => format!("out of memory (limit {} MiB)", bytes.div_ceil(1 << 20)),
        None => "out of memory".to_string(),
    })
}

/// Let other users pass through `dir` to what is theirs below it, without listing it.
fn traversable(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
}

/// Give the run its directory, reachable through its job's: it may make files there (group
/// write for its gid), no other user may enter, and the sticky bit with root as the owner
/// keeps it from renaming or removing `stdout` and `stderr`. Were the directory its own, it
/// could put a link to the agent's key in their place, and the agent (root) would read that
/// back as the run's output tail or truncate it when it recycles the directory.
fn hand_over(dir: &Path, user: Identity) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(job_dir) = dir.parent() {
        traversable(job_dir)?;
    }
    std::os::unix::fs::chown(dir, Some(0), Some(user.gid))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1770))
}

type Started = (spawn::Child, Option<Identity>, Option<RunCgroup>);

/// Make the run directory and its output files, confine the run as the sandbox says, and
/// start the command in it.
fn start(
    spawner: &mut Spawner,
    dirs: &mut RunDirPool,
    sandbox: &mut Sandbox,
    null: &File,
    request: &SpawnRequest,
) -> Result<Started, (String, bool)> {
    let files = dirs.prepare(&request.dir);
    let files = files.map_err(|e| {
        (
            format!(
                "cannot prepare the run directory {} and its output files: {e}",
                request.dir.display()
            ),
            false,
        )
    })?;
    let host_fault = |what: &str, e: std::io::Error| (format!("{what}: {e}"), false);
    let user = match sandbox.users.as_mut() {
        Some(users) => {
            let user = users
                .lease()
                .map_err(|e| host_fault("no user for the run", e))?;
            if let Err(e) = hand_over(&request.dir, user) {
                users.release(user.uid);
                return Err(host_fault("cannot give the run its directory", e));
            }
            Some(user)
        }
        None => None,
    };
    let cgroup = match sandbox.cgroups.as_mut() {
        Some(cgroups) => match cgroups.prepare(&request.limits) {
            Ok(prepared) => Some(prepared),
            Err(e) => {
                sandbox.release(user, None);
                return Err(host_fault("cannot make the run's cgroup", e));
            }
        },
        None => None,
    };
    let procs = cgroup.as_ref().map(|c| c.procs()).unwrap_or_default();
    let launch = Launch {
        program: &request.program,
        args: &request.args,
        env: &request.env,
        dir: &request.dir,
        stdin: null,
        stdout: &files.stdout,
        stderr: &files.stderr,
        default_signals: &IGNORED_SIGNALS,
        orphan_exit_code: EXIT_AGENT_GONE,
        confinement: Confinement {
            user: user.map(|u| (u.uid, u.gid)),
            namespaces: sandbox.namespaces,
            cgroup_procs: &procs,
        },
    };
    let spawned = spawner.spawn(&launch);
    match spawned {
        Ok(child) => Ok((child, user, cgroup)),
        Err(e) => {
            sandbox.release(user, cgroup);
            let job_fault = is_job_fault(&e);
            Err((
                format!("cannot start '{}': {e}", request.program),
                job_fault,
            ))
        }
    }
}
