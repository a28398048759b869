//! `dispatcher shard-exec`: the small supervisor between a TaskManager agent and a shard's
//! process. It runs the command in a process group of its own and keeps it alive only while
//! the agent keeps writing keep-alive bytes to its stdin. When the agent dies (even by
//! kill -9: the pipe closes), is paused (SIGSTOP: the bytes stop), or stops writing because
//! it lost its lease on the leader, the supervisor kills the whole process group. So no
//! shard outlives its agent as an orphan, and a cut-off agent's shards die within
//! `lease + keep-alive timeout`, before the leader places them elsewhere.
//!
//! Synchronous std code on purpose: it must work even when nothing else does.

use crate::clock::boottime;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Exit code when the supervisor stopped the shard because the agent went away.
pub const EXIT_STOPPED: i32 = 75;
/// What the supervisor prints on stderr when it stops the shard for that reason.
pub const STOPPED_MESSAGE: &str = "shard-exec: stopped the shard";
/// Exit code when the command could not be started at all (as a shell's "not found").
pub const EXIT_CANNOT_START: i32 = 127;
/// What the supervisor prints on stderr, first, when that happens.
pub const CANNOT_START_MESSAGE: &str = "shard-exec: cannot start";
/// How often the keep-alive deadline is checked when nothing else happens.
const POLL: Duration = Duration::from_millis(50);
/// Signals a terminal or a stray `kill` may send: the supervisor ignores them, the shard
/// gets them back at their defaults.
const IGNORED_SIGNALS: [libc::c_int; 7] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
];

fn kill_group(pgid: u32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        libc::kill(-(pgid as i32), libc::SIGKILL);
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Run `command` under keep-alive supervision; returns the exit code to exit with.
pub fn shard_exec(command: &[String], keepalive_timeout: Duration) -> i32 {
    use std::os::unix::process::CommandExt;
    let Some((program, args)) = command.split_first() else {
        eprintln!("shard-exec: no command given");
        return 2;
    };
    // Signals meant for a terminal's foreground group (Ctrl-C, Ctrl-Z, hang-up) or a stray
    // TERM must not kill or stop the supervisor and leave the shard unsupervised: the one way
    // to stop it is to close its stdin.
    // SAFETY: setting signal dispositions to SIG_IGN before any other thread exists.
    unsafe {
        for sig in IGNORED_SIGNALS {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null()).process_group(0);
    // SAFETY: pre_exec runs in the forked child before exec; it only calls async-signal-safe
    // functions (prctl, signal, getppid).
    unsafe {
        let supervisor = libc::getpid();
        command.pre_exec(move || {
            // The shard dies if the supervisor dies, however it dies.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != supervisor {
                libc::_exit(EXIT_STOPPED);
            }
            // The shard itself gets default signal handling back.
            for sig in IGNORED_SIGNALS {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("{CANNOT_START_MESSAGE} '{program}': {e}");
            return EXIT_CANNOT_START;
        }
    };
    let pgid = child.id();

    // Three things can happen: a keep-alive byte, the agent's end of the pipe closing, and
    // the shard exiting. Each comes from its own thread, so the exit is seen at once.
    let (tx, rx) = mpsc::channel::<Event>();
    let keepalives = tx.clone();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 64];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = keepalives.send(Event::AgentGone);
                    return;
                }
                Ok(_) => {
                    if keepalives.send(Event::Keepalive).is_err() {
                        return;
                    }
                }
            }
        }
    });
    std::thread::spawn(move || {
        let _ = tx.send(Event::Exited(child.wait()));
    });

    // On CLOCK_BOOTTIME: a suspend of the machine counts as silence.
    let mut last_keepalive = boottime();
    loop {
        let agent_gone = match rx.recv_timeout(POLL) {
            Ok(Event::Exited(Ok(status))) => {
                // Take any background processes the shard left behind with it.
                kill_group(pgid);
                return exit_code(status);
            }
            Ok(Event::Exited(Err(e))) => {
                eprintln!("shard-exec: waiting for the shard failed: {e}");
                kill_group(pgid);
                return EXIT_STOPPED;
            }
            Ok(Event::Keepalive) => {
                last_keepalive = boottime();
                false
            }
            Ok(Event::AgentGone) | Err(mpsc::RecvTimeoutError::Disconnected) => true,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                boottime().saturating_sub(last_keepalive) > keepalive_timeout
            }
        };
        if agent_gone {
            kill_group(pgid);
            // Reaped by the waiting thread, which reports the exit.
            while let Ok(event) = rx.recv() {
                if matches!(event, Event::Exited(_)) {
                    break;
                }
            }
            eprintln!("{STOPPED_MESSAGE}: its TaskManager agent went away or lost its lease");
            return EXIT_STOPPED;
        }
    }
}

enum Event {
    Keepalive,
    AgentGone,
    Exited(std::io::Result<ExitStatus>),
}
