//! Starting a shard's command from the shard host without copying the host's address space.
//!
//! `fork` of the host (the 150 MB dispatcher binary, with a thread per pipe) copied its page
//! tables and shot down TLBs on every shard: a fifth of the machine in the end-to-end run.
//! Here the child is a `clone(CLONE_VM | CLONE_VFORK)`, as `posix_spawn` makes it, so it
//! shares the host's memory and the host's calling thread waits until it has exec'd. Unlike
//! `posix_spawn`, the child also sets `PR_SET_PDEATHSIG` (a shard must die with its host,
//! however the host dies), which is why this is written by hand.
//!
//! `CLONE_PIDFD` hands back a file descriptor for exactly that process: the host's loop waits
//! on all of them with epoll, beside its pipes, and reaps each with `waitid(P_PIDFD)`, so a
//! recycled pid can never be mistaken for a run (`Reaper`).
//!
//! What the child may do: it shares the host's heap and runs beside the host's other
//! threads, so between `clone` and `execve` it calls only async-signal-safe system calls on
//! data the parent prepared (no allocation, no locks, no Rust std I/O), and reports a failure
//! by storing `errno` where the parent reads it.

use super::poller::{Poller, READABLE};
use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

/// The child's stack: it only makes system calls, but `execve` and the dynamic symbols it
/// reaches get room to spare.
const CHILD_STACK_BYTES: usize = 128 * 1024;

/// Exit code of a child that could not exec (the parent reports the errno instead).
const EXIT_EXEC_FAILED: libc::c_int = 127;

/// The `PATH` a run gets unless its job sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How a run is confined (the sandbox's steps inside the new process).
#[derive(Debug, Clone, Copy, Default)]
pub struct Confinement<'a> {
    /// Switch to this uid and gid (no supplementary groups, no new privileges) just before
    /// exec.
    pub user: Option<(u32, u32)>,
    /// New PID, mount and IPC namespaces; a fresh `/proc` and private `/tmp`, `/var/tmp`
    /// and `/dev/shm`. The command is PID 1 of its namespace, as in a container: when it
    /// ends, everything it left behind is killed.
    pub namespaces: bool,
    /// `cgroup.procs` descriptors the process writes `0` to (joins) before anything else.
    pub cgroup_procs: &'a [RawFd],
}

/// What a shard's process is started with, prepared before the clone.
pub struct Launch<'a> {
    pub program: &'a str,
    pub args: &'a [String],
    /// The run's variables: its environment is these, `PATH` (`DEFAULT_PATH` unless set)
    /// and `HOME` (its directory unless set); nothing is inherited from the host.
    pub env: &'a [(String, String)],
    pub dir: &'a Path,
    pub stdin: &'a File,
    pub stdout: &'a File,
    pub stderr: &'a File,
    /// Signals the host ignores: the command gets them back at their defaults (SIGPIPE,
    /// which the Rust runtime ignores, always does).
    pub default_signals: &'a [libc::c_int],
    /// The child exits with this code at once if its parent is no longer `parent_pid`.
    pub orphan_exit_code: libc::c_int,
    pub confinement: Confinement<'a>,
}

/// A started child: its pid (also its process group) and a pidfd for it.
pub struct Child {
    pub pid: u32,
    pub pidfd: OwnedFd,
}

/// Everything the child reads, laid out before the clone so it allocates nothing.
struct ChildPlan {
    path: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    dir: CString,
    fds: [(RawFd, RawFd); 3],
    default_signals: Vec<libc::c_int>,
    parent: libc::pid_t,
    orphan_exit_code: libc::c_int,
    user: Option<(libc::uid_t, libc::gid_t)>,
    namespaces: bool,
    cgroup_procs: Vec<RawFd>,
    mounts: *const MountNames,
    /// Which of `TEMP_DIRS` get a private tmpfs (not one that holds the run's
    /// own directory, which it would hide).
    private_temp: [bool; 3],
    /// The errno of the step that failed, written by the child before it exits.
    error: AtomicI32,
    /// Which step failed (`Step`).
    step: AtomicI32,
}

/// The directories a sandboxed run gets a private tmpfs on.
const TEMP_DIRS: [&str; 3] = ["/tmp", "/var/tmp", "/dev/shm"];

/// The strings the namespace steps pass to mount(2), made once.
struct MountNames {
    root: CString,
    proc_type: CString,
    proc_dir: CString,
    tmpfs: CString,
    /// `TEMP_DIRS`.
    temp_dirs: [CString; 3],
    temp_options: CString,
}

impl Default for MountNames {
    fn default() -> Self {
        let c = |s: &str| CString::new(s).unwrap_or_default();
        MountNames {
            root: c("/"),
            proc_type: c("proc"),
            proc_dir: c("/proc"),
            tmpfs: c("tmpfs"),
            temp_dirs: TEMP_DIRS.map(c),
            temp_options: c("mode=1777"),
        }
    }
}

/// The step of the child that failed, for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
enum Step {
    Exec = 0,
    Group = 1,
    Cgroup = 2,
    Mounts = 3,
    Files = 4,
    Dir = 5,
    User = 6,
}

impl Step {
    fn from_code(code: i32) -> Step {
        match code {
            1 => Step::Group,
            2 => Step::Cgroup,
            3 => Step::Mounts,
            4 => Step::Files,
            5 => Step::Dir,
            6 => Step::User,
            _ => Step::Exec,
        }
    }

    fn doing(self) -> &'static str {
        match self {
            Step::Exec => "",
            Step::Group => "making its process group",
            Step::Cgroup => "joining its cgroup",
            Step::Mounts => "mounting its /proc and temp dirs",
            Step::Files => "setting up its output files",
            Step::Dir => "entering its run directory",
            Step::User => "switching to its user",
        }
    }
}

/// Reused across spawns: the calling thread is suspended while a child runs on it.
pub struct Spawner {
    stack: Vec<u8>,
    mounts: Box<MountNames>,
}

impl Default for Spawner {
    fn default() -> Self {
        Spawner {
            stack: vec![0; CHILD_STACK_BYTES],
            mounts: Box::default(),
        }
    }
}

impl Spawner {
    /// Start the command; an error carries the errno of the step that failed (exec's
    /// `ENOENT` for a missing program, say).
    pub fn spawn(&mut self, launch: &Launch<'_>) -> io::Result<Child> {
        let cstr = |bytes: &[u8]| {
            CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
        };
        let env = environment(launch.env, launch.dir);
        let path = resolve_program(launch.program, &env)?;
        let args: Vec<CString> = std::iter::once(launch.program.as_bytes())
            .chain(launch.args.iter().map(|a| a.as_bytes()))
            .map(cstr)
            .collect::<io::Result<_>>()?;
        let vars: Vec<CString> = env
            .iter()
            .map(|(k, v)| {
                let mut pair = k.as_bytes().to_vec();
                pair.push(b'=');
                pair.extend_from_slice(v.as_bytes());
                cstr(&pair)
            })
            .collect::<io::Result<_>>()?;
        let plan = ChildPlan {
            path: cstr(path.as_os_str().as_bytes())?,
            argv: null_terminated(&args),
            envp: null_terminated(&vars),
            dir: cstr(launch.dir.as_os_str().as_bytes())?,
            fds: [
                (launch.stdin.as_raw_fd(), 0),
                (launch.stdout.as_raw_fd(), 1),
                (launch.stderr.as_raw_fd(), 2),
            ],
            default_signals: launch
                .default_signals
                .iter()
                .copied()
                .chain(std::iter::once(libc::SIGPIPE))
                .collect(),
            // SAFETY: getpid has no preconditions.
            parent: unsafe { libc::getpid() },
            orphan_exit_code: launch.orphan_exit_code,
            user: launch.confinement.user,
            namespaces: launch.confinement.namespaces,
            cgroup_procs: launch.confinement.cgroup_procs.to_vec(),
            mounts: &*self.mounts,
            private_temp: TEMP_DIRS.map(|t| !launch.dir.starts_with(t)),
            error: AtomicI32::new(0),
            step: AtomicI32::new(0),
        };
        let namespaces = if plan.namespaces {
            libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWIPC
        } else {
            0
        };
        let mut pidfd: libc::c_int = -1;
        // SAFETY: the stack is ours and unused while the child runs (CLONE_VFORK suspends
        // this thread until the child execs or exits); `plan` outlives the child's use of it
        // for the same reason. Signals are blocked around the clone so that no handler runs
        // in the child on memory it shares with us; the child sets its own mask.
        let pid = unsafe {
            let stack_top = self.stack.as_mut_ptr().add(self.stack.len());
            let stack_top = stack_top.sub(stack_top as usize % 16);
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
            let pid = libc::clone(
                child_main,
                stack_top.cast(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | namespaces | libc::SIGCHLD,
                (&plan as *const ChildPlan).cast_mut().cast(),
                &mut pidfd as *mut libc::c_int,
            );
            let clone_error = io::Error::last_os_error();
            libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
            if pid < 0 {
                return Err(clone_error);
            }
            pid
        };
        // SAFETY: CLONE_PIDFD stored a new descriptor that nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        let error = plan.error.load(Ordering::Acquire);
        if error != 0 {
            // The child has already exited; reap it here (it never reaches the reaper).
            let _ = wait_pidfd(pidfd.as_raw_fd());
            let step = Step::from_code(plan.step.load(Ordering::Acquire));
            let cause = io::Error::from_raw_os_error(error);
            if step == Step::Exec {
                return Err(cause);
            }
            return Err(io::Error::new(
                cause.kind(),
                format!("the sandbox failed {}: {cause}", step.doing()),
            ));
        }
        Ok(Child {
            pid: pid as u32,
            pidfd,
        })
    }
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// The run's environment, in a stable order: `PATH` and `HOME` (unless the run sets them)
/// and its own variables; nothing of the host's (the agent's secrets stay there).
fn environment(vars: &[(String, String)], dir: &Path) -> Vec<(OsString, OsString)> {
    let mut env: BTreeMap<OsString, OsString> = BTreeMap::new();
    env.insert("PATH".into(), DEFAULT_PATH.into());
    env.insert("HOME".into(), dir.as_os_str().to_owned());
    for (key, value) in vars {
        env.insert(key.into(), value.into());
    }
    env.into_iter().collect()
}

/// A program named with a slash is used as it is; otherwise the first executable file of
/// that name on the run's `PATH`, as a shell would find it.
fn resolve_program(program: &str, env: &[(OsString, OsString)]) -> io::Result<PathBuf> {
    if program.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path = env
        .iter()
        .find(|(k, _)| k == OsStr::new("PATH"))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    let mut denied = false;
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        let Ok(name) = CString::new(candidate.as_os_str().as_bytes()) else {
            continue;
        };
        // SAFETY: access(2) on a valid C string.
        if unsafe { libc::access(name.as_ptr(), libc::X_OK) } == 0 {
            if candidate.is_file() {
                return Ok(candidate);
            }
        } else if candidate.exists() {
            denied = true;
        }
    }
    Err(io::Error::from_raw_os_error(if denied {
        libc::EACCES
    } else {
        libc::ENOENT
    }))
}

/// The child, between clone and exec. Async-signal-safe system calls only.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ChildPlan`, alive and unchanged while we run (the
    // parent is suspended until we exec or exit). Every call below is async-signal-safe and
    // uses only memory prepared by the parent.
    unsafe {
        let plan = &*(arg as *const ChildPlan);
        let fail = |plan: &ChildPlan, step: Step| -> ! {
            plan.step.store(step as i32, Ordering::Release);
            plan.error
                .store(*libc::__errno_location(), Ordering::Release);
            libc::_exit(EXIT_EXEC_FAILED)
        };
        // The shard dies if the host dies, however it dies. (Set again after a change of
        // user, which clears it.)
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // In a PID namespace the parent is outside it and getppid says 0.
        if !plan.namespaces && libc::getppid() != plan.parent {
            libc::_exit(plan.orphan_exit_code);
        }
        // Its own process group: signals for the agent's terminal do not reach it, and the
        // whole group can be killed at once.
        if libc::setpgid(0, 0) != 0 {
            fail(plan, Step::Group);
        }
        // Into its cgroups before anything it runs can fork.
        for &fd in &plan.cgroup_procs {
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                fail(plan, Step::Cgroup);
            }
        }
        if plan.namespaces {
            let m = &*plan.mounts;
            let none: *const libc::c_char = std::ptr::null();
            // Nothing mounted here reaches the host's mount table.
            if libc::mount(
                none,
                m.root.as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                fail(plan, Step::Mounts);
            }
            let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            if libc::mount(
                m.proc_type.as_ptr(),
                m.proc_dir.as_ptr(),
                m.proc_type.as_ptr(),
                flags,
                std::ptr::null(),
            ) != 0
            {
                fail(plan, Step::Mounts);
            }
            for (dir, _) in m
                .temp_dirs
                .iter()
                .zip(plan.private_temp)
                .filter(|(_, p)| *p)
            {
                // A host without one of these just has one place less to share.
                let rc = libc::mount(
                    m.tmpfs.as_ptr(),
                    dir.as_ptr(),
                    m.tmpfs.as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    m.temp_options.as_ptr().cast(),
                );
                if rc != 0 && *libc::__errno_location() != libc::ENOENT {
                    fail(plan, Step::Mounts);
                }
            }
        }
        for &signal in &plan.default_signals {
            libc::signal(signal, libc::SIG_DFL);
        }
        for &(from, to) in &plan.fds {
            if from == to {
                // dup2 onto itself keeps close-on-exec; clear it instead.
                if libc::fcntl(from, libc::F_SETFD, 0) != 0 {
                    fail(plan, Step::Files);
                }
            } else if libc::dup2(from, to) < 0 {
                fail(plan, Step::Files);
            }
        }
        if libc::chdir(plan.dir.as_ptr()) != 0 {
            fail(plan, Step::Dir);
        }
        if let Some((uid, gid)) = plan.user {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(uid, uid, uid) != 0
                || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            {
                fail(plan, Step::User);
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(plan.path.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr());
        fail(plan, Step::Exec)
    }
}

/// Start `/bin/true` in new namespaces, as a sandboxed run starts, and wait for it: whether
/// this host lets the agent make them.
pub fn try_namespaces() -> io::Result<()> {
    let null = File::open("/dev/null")?;
    let out = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    let dir = Path::new("/");
    let mut spawner = Spawner::default();
    let child = spawner.spawn(&Launch {
        program: "true",
        args: &[],
        env: &[],
        dir,
        stdin: &null,
        stdout: &out,
        stderr: &out,
        default_signals: &[],
        orphan_exit_code: EXIT_EXEC_FAILED,
        confinement: Confinement {
            namespaces: true,
            ..Default::default()
        },
    })?;
    match wait_pidfd(child.pidfd.as_raw_fd())? {
        Ended { code: Some(0), .. } => Ok(()),
        ended => Err(io::Error::other(format!("a test run ended with {ended:?}"))),
    }
}

/// How a child ended: its exit code, or the signal that ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// Reap the child behind a pidfd (waiting for it to end, if it has not).
pub fn wait_pidfd(pidfd: RawFd) -> io::Result<Ended> {
    // SAFETY: waitid fills the zeroed siginfo for a pidfd we own.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        loop {
            if libc::waitid(libc::P_PIDFD, pidfd as libc::id_t, &mut info, libc::WEXITED) == 0 {
                break;
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
        let status = info.si_status();
        Ok(match info.si_code {
            libc::CLD_EXITED => Ended {
                code: Some(status),
                signal: None,
            },
            _ => Ended {
                code: None,
                signal: Some(status),
            },
        })
    }
}

/// Every running child's pidfd, by the token it is polled under. The host's loop waits on
/// them with its other descriptors (`Poller`) and reaps a child as soon as its pidfd turns
/// readable, so an exit costs no hand-off between threads.
#[derive(Default)]
pub struct Reaper {
    pidfds: BTreeMap<u64, OwnedFd>,
}

impl Reaper {
    /// Watch a child in `poller` under `token` (unique per child).
    pub fn watch(&mut self, poller: &Poller, token: u64, pidfd: OwnedFd) -> io::Result<()> {
        poller.add(pidfd.as_raw_fd(), READABLE, token)?;
        self.pidfds.insert(token, pidfd);
        Ok(())
    }

    /// Reap the child watched under `token`, which the poller reported readable (exited);
    /// `None` if no child is watched under it.
    pub fn reap(&mut self, token: u64) -> Option<io::Result<Ended>> {
        let pidfd = self.pidfds.remove(&token)?;
        // Closing the pidfd (at the end of this scope) also takes it out of the epoll set.
        Some(wait_pidfd(pidfd.as_raw_fd()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Wait for the child watched under `token` to end, and reap it.
    fn end_of(poller: &mut Poller, reaper: &mut Reaper, token: u64) -> Ended {
        let mut ready = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            poller.wait(Duration::from_millis(100), &mut ready).unwrap();
            if ready.iter().any(|r| r.token == token) {
                return reaper.reap(token).expect("watched").unwrap();
            }
        }
        panic!("the child under token {token} did not end");
    }

    fn launch_in<'a>(
        dir: &'a Path,
        files: &'a (File, File, File),
        program: &'a str,
        args: &'a [String],
        env: &'a [(String, String)],
    ) -> Launch<'a> {
        Launch {
            program,
            args,
            env,
            dir,
            stdin: &files.0,
            stdout: &files.1,
            stderr: &files.2,
            default_signals: &[libc::SIGTERM],
            orphan_exit_code: 75,
            confinement: Confinement::default(),
        }
    }

    fn files(dir: &Path) -> (File, File, File) {
        (
            File::open("/dev/null").unwrap(),
            File::create(dir.join("stdout")).unwrap(),
            File::create(dir.join("stderr")).unwrap(),
        )
    }

    #[test]
    fn runs_a_command_in_its_dir_with_its_env_and_reaps_it_by_pidfd() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let args = vec![
            "-c".to_string(),
            "pwd; echo \"$SHARD_VALUE\"; echo oops >&2; exit 7".to_string(),
        ];
        let env = vec![("SHARD_VALUE".to_string(), "forty-two".to_string())];
        let mut poller = Poller::new().unwrap();
        let mut reaper = Reaper::default();
        let mut spawner = Spawner::default();
        let child = spawner
            .spawn(&launch_in(dir.path(), &files, "sh", &args, &env))
            .unwrap();
        reaper.watch(&poller, 9, child.pidfd).unwrap();
        let ended = end_of(&mut poller, &mut reaper, 9);
        assert!(reaper.reap(9).is_none(), "a child is reaped once");
        assert_eq!(
            ended,
            Ended {
                code: Some(7),
                signal: None
            }
        );
        let out = std::fs::read_to_string(dir.path().join("stdout")).unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(out, format!("{}\nforty-two\n", real.display()));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("stderr")).unwrap(),
            "oops\n"
        );
    }

    #[test]
    fn a_missing_program_is_enoent_and_leaves_no_child() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let mut spawner = Spawner::default();
        for program in ["/nonexistent/program", "no-such-program-anywhere"] {
            let error = match spawner.spawn(&launch_in(dir.path(), &files, program, &[], &[])) {
                Ok(_) => panic!("{program} started"),
                Err(e) => e,
            };
            assert_eq!(error.raw_os_error(), Some(libc::ENOENT), "{program}");
        }
        // A file that is not executable is refused as such.
        let script = dir.path().join("not-executable");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let error = match spawner.spawn(&launch_in(
            dir.path(),
            &files,
            script.to_str().unwrap(),
            &[],
            &[],
        )) {
            Ok(_) => panic!("a non-executable file started"),
            Err(e) => e,
        };
        assert_eq!(error.raw_os_error(), Some(libc::EACCES));
    }

    #[test]
    fn the_child_leads_its_own_group_with_default_signals_and_a_signal_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        // The test process ignores SIGTERM as the host does; the child must not.
        // SAFETY: changing a disposition in a test binary; restored below.
        let previous = unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
        let mut poller = Poller::new().unwrap();
        let mut reaper = Reaper::default();
        let mut spawner = Spawner::default();
        let args = vec!["60".to_string()];
        let child = spawner
            .spawn(&launch_in(dir.path(), &files, "sleep", &args, &[]))
            .unwrap();
        // SAFETY: getpgid of our own child.
        let group = unsafe { libc::getpgid(child.pid as i32) };
        assert_eq!(group, child.pid as i32, "the child leads its own group");
        let pid = child.pid;
        reaper.watch(&poller, 1, child.pidfd).unwrap();
        // SAFETY: signalling the group we just made.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGTERM);
            libc::signal(libc::SIGTERM, previous);
        }
        let ended = end_of(&mut poller, &mut reaper, 1);
        assert_eq!(
            ended,
            Ended {
                code: None,
                signal: Some(libc::SIGTERM)
            }
        );
    }
}
