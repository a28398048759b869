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
//! that copies nothing (`spawn`) and the exec of the command itself, and one reaper thread
//! sees every end.
//!
//! Synchronous std code on purpose: it must work even when nothing else does.

use super::host_protocol::{Event, Request, RunId, SpawnRequest, Stopped, MAX_MESSAGE_BYTES};
use super::run_dir_pool::RunDirPool;
use super::spawn::{self, Ended, Launch, Reaper, Spawner};
use crate::clock::boottime;
use crate::domain::STOP_GRACE_MS;
use crate::framing::{encode_frame, read_frame};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
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

enum Input {
    Request(Request),
    AgentGone,
    Exited(RunId, std::io::Result<Ended>),
}

struct Running {
    pgid: u32,
    started: Instant,
    stopped: Option<Stopped>,
    /// Asked to stop: SIGTERM went out, SIGKILL follows at this instant.
    kill_at: Option<Instant>,
    dir: PathBuf,
    /// The agent is done with the directory: recycle it when the run has exited.
    recycle_on_exit: bool,
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

/// Run the host until the agent goes away; returns the exit code.
/// `run_dir_pool`: where finished run directories wait to be used again (`None`: made and
/// removed each time).
pub fn shard_host(keepalive_timeout: Duration, run_dir_pool: Option<PathBuf>) -> i32 {
    // SAFETY: setting signal dispositions to SIG_IGN before any other thread exists.
    unsafe {
        for sig in IGNORED_SIGNALS {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
    let (inputs, input) = mpsc::channel::<Input>();
    let requests = inputs.clone();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            match read_frame::<Request>(&mut stdin, MAX_MESSAGE_BYTES) {
                Ok(Some(request)) => {
                    if requests.send(Input::Request(request)).is_err() {
                        return;
                    }
                }
                // A closed pipe, or bytes that are not ours: either way the agent is gone.
                Ok(None) | Err(_) => {
                    let _ = requests.send(Input::AgentGone);
                    return;
                }
            }
        }
    });
    // Events go out from a thread of their own: a paused agent stops reading, and a full
    // pipe must not stop this loop from noticing the silence.
    let (events, outgoing) = mpsc::channel::<Event>();
    std::thread::spawn(move || {
        let mut stdout = std::io::stdout().lock();
        let mut bytes = Vec::new();
        while let Ok(first) = outgoing.recv() {
            bytes.clear();
            for event in std::iter::once(first).chain(outgoing.try_iter()) {
                if encode_frame(&event, MAX_MESSAGE_BYTES, &mut bytes).is_err() {
                    continue;
                }
            }
            if stdout
                .write_all(&bytes)
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return;
            }
        }
    });

    let exits = inputs.clone();
    let reaper = Reaper::start(move |run, ended| {
        let _ = exits.send(Input::Exited(run, ended));
    });
    let (reaper, null) = match reaper.and_then(|r| Ok((r, File::open("/dev/null")?))) {
        Ok(parts) => parts,
        Err(e) => {
            eprintln!("shard host cannot start: {e}");
            return EXIT_CANNOT_START;
        }
    };
    drop(inputs);
    let mut host = Host {
        runs: BTreeMap::new(),
        events,
        spawner: Spawner::default(),
        reaper,
        null,
        dirs: RunDirPool::open(run_dir_pool),
    };
    // On CLOCK_BOOTTIME: a suspend of the machine counts as silence.
    let mut last_keepalive = boottime();
    let mut silent = false;
    loop {
        match input.recv_timeout(POLL) {
            Ok(Input::Request(Request::Keepalive)) => {
                last_keepalive = boottime();
                silent = false;
            }
            Ok(Input::Request(Request::Spawn(request))) => {
                if silent {
                    // Keep-alives stopped and nothing came back yet: this request is older
                    // than the silence, or the agent is not itself. Do not start it.
                    host.send(Event::Exited {
                        run: request.run,
                        code: None,
                        signal: None,
                        run_ms: 0,
                        stopped: Some(Stopped::Silence),
                    });
                } else {
                    host.spawn(request);
                }
            }
            Ok(Input::Request(Request::Stop(run))) => host.terminate(run),
            Ok(Input::Request(Request::Recycle(dir))) => host.recycle(&dir),
            Ok(Input::Exited(run, status)) => host.exited(run, status),
            Ok(Input::AgentGone) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                host.stop_all(Stopped::Requested);
                return EXIT_AGENT_GONE;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        host.kill_overdue();
        if !silent && boottime().saturating_sub(last_keepalive) > keepalive_timeout {
            silent = true;
            host.stop_all(Stopped::Silence);
        }
    }
}

struct Host {
    runs: BTreeMap<RunId, Running>,
    events: mpsc::Sender<Event>,
    spawner: Spawner,
    /// Reaps every run by its pidfd, on a thread of its own, and reports it as an input.
    reaper: Reaper,
    /// A shard's stdin.
    null: File,
    dirs: RunDirPool,
}

impl Host {
    fn send(&self, event: Event) {
        let _ = self.events.send(event);
    }

    fn spawn(&mut self, request: SpawnRequest) {
        let run = request.run;
        if self.runs.contains_key(&run) {
            // Already running: the agent asked twice, and one process is what it wants.
            return;
        }
        match start(&mut self.spawner, &mut self.dirs, &self.null, &request) {
            Ok(child) => {
                let pgid = child.pid;
                if let Err(e) = self.reaper.watch(run, child.pidfd) {
                    // Without a watch its end would never be seen: stop it now.
                    kill_group(pgid);
                    self.send(Event::CannotStart {
                        run,
                        error: format!("cannot watch the shard's process: {e}"),
                        job_fault: false,
                    });
                    return;
                }
                self.runs.insert(
                    run,
                    Running {
                        pgid,
                        started: Instant::now(),
                        stopped: None,
                        kill_at: None,
                        dir: request.dir.clone(),
                        recycle_on_exit: false,
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
        });
    }
}

/// Make the run directory and its output files, and start the command in it.
fn start(
    spawner: &mut Spawner,
    dirs: &mut RunDirPool,
    null: &File,
    request: &SpawnRequest,
) -> Result<spawn::Child, (String, bool)> {
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
    };
    spawner.spawn(&launch).map_err(|e| {
        let job_fault = is_job_fault(&e);
        (
            format!("cannot start '{}': {e}", request.program),
            job_fault,
        )
    })
}
