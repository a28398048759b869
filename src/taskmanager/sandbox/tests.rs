//! The sandbox's parts against the real kernel: they need root (CI runs as root) and skip
//! otherwise.

use super::cgroup::{Cgroups, RunLimits};
use crate::taskmanager::spawn::{Confinement, Ended, Launch, Spawner};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Run `script` under `sh -c` confined as given; its exit and stdout.
fn run(
    dir: &Path,
    script: &str,
    user: Option<(u32, u32)>,
    limits: Option<(&mut Cgroups, RunLimits)>,
) -> (Ended, String, Option<super::cgroup::RunCgroup>) {
    let null = File::open("/dev/null").unwrap();
    let out = File::create(dir.join("out")).unwrap();
    let err = File::create(dir.join("err")).unwrap();
    let cgroup = limits.map(|(c, l)| c.prepare(&l).unwrap());
    let procs = cgroup.as_ref().map(|p| p.procs()).unwrap_or_default();
    let args = vec!["-c".to_string(), script.to_string()];
    let mut spawner = Spawner::default();
    let child = spawner
        .spawn(&Launch {
            program: "/bin/sh",
            args: &args,
            env: &[],
            dir,
            stdin: &null,
            stdout: &out,
            stderr: &err,
            default_signals: &[],
            orphan_exit_code: 75,
            confinement: Confinement {
                user,
                namespaces: true,
                cgroup_procs: &procs,
            },
        })
        .unwrap();
    let ended = crate::taskmanager::spawn::wait_pidfd(child.pidfd.as_raw_fd()).unwrap();
    let stdout = std::fs::read_to_string(dir.join("out")).unwrap();
    (ended, stdout, cgroup)
}

#[test]
fn a_confined_run_is_pid_1_of_its_own_namespace_as_its_own_user() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cgroups = Cgroups::open(super::cgroup::root(None), "unit-identity").unwrap();
    let (ended, out, cgroup) = run(
        dir.path(),
        "echo $$ $(id -u) $(ls /proc | grep -c '^[0-9]')",
        Some((1_900_065_000, 1_900_065_000)),
        Some((&mut cgroups, RunLimits::default())),
    );
    assert_eq!(ended.code, Some(0), "{out}");
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields[..2], ["1", "1900065000"], "{out}");
    // sh, its subshells, ls and grep: nothing of the host's.
    let seen: usize = fields[2].parse().unwrap();
    assert!(seen <= 5, "{out}");
    cgroups.release(cgroup.unwrap());
    cgroups.remove_base();
}

#[test]
fn a_run_over_its_memory_limit_is_killed_and_counted() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cgroups = Cgroups::open(super::cgroup::root(None), "unit-oom").unwrap();
    let limits = RunLimits {
        memory_bytes: Some(32 << 20),
        ..Default::default()
    };
    // 128 MiB of zeros held in one shell variable.
    let (ended, _, cgroup) = run(
        dir.path(),
        "x=$(head -c 134217728 /dev/zero | tr '\\0' a); echo ${#x}",
        None,
        Some((&mut cgroups, limits)),
    );
    let cgroup = cgroup.unwrap();
    assert_ne!(ended.code, Some(0), "{ended:?}");
    assert_eq!(cgroup.memory_limit(), Some(32 << 20));
    assert!(cgroups.release(cgroup) > 0, "{ended:?}");
    cgroups.remove_base();
}

#[test]
fn a_busy_loop_limited_to_half_a_cpu_uses_at_most_six_tenths_of_one() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cgroups = Cgroups::open(super::cgroup::root(None), "unit-cpu").unwrap();
    let limits = RunLimits {
        cpu_millis: Some(500),
        ..Default::default()
    };
    // Busy for 5 s of wall time; then the CPU time of everything it reaped, in clock ticks.
    let (ended, out, cgroup) = run(
        dir.path(),
        "timeout 5 sh -c 'while :; do :; done'; awk '{print $16 + $17}' /proc/$$/stat",
        None,
        Some((&mut cgroups, limits)),
    );
    cgroups.release(cgroup.unwrap());
    cgroups.remove_base();
    assert_eq!(ended.code, Some(0), "{out}");
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let used = out.trim().parse::<f64>().unwrap() / ticks_per_second;
    assert!(used <= 0.6 * 5.0, "{used:.2} s of CPU in 5 s");
    assert!(used > 0.5, "the loop barely ran: {used:.2} s");
}

/// Where a sandboxed start's time goes (by hand: `cargo test --lib sandbox_costs -- --ignored
/// --nocapture`, as root).
#[test]
#[ignore]
fn sandbox_costs() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cgroups = Cgroups::open(super::cgroup::root(None), "unit-cost").unwrap();
    let null = File::open("/dev/null").unwrap();
    let out = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .unwrap();
    let mut spawner = Spawner::default();
    let n = 300;
    for (name, ns, user, cg) in [
        ("bare", false, false, false),
        ("namespaces", true, false, false),
        ("user", false, true, false),
        ("cgroup", false, false, true),
        ("all", true, true, true),
    ] {
        let started = std::time::Instant::now();
        for _ in 0..n {
            let prepared = cg.then(|| {
                cgroups
                    .prepare(&RunLimits {
                        pids: Some(4096),
                        ..Default::default()
                    })
                    .unwrap()
            });
            let procs = prepared.as_ref().map(|p| p.procs()).unwrap_or_default();
            let child = spawner
                .spawn(&Launch {
                    program: "/bin/true",
                    args: &[],
                    env: &[],
                    dir: dir.path(),
                    stdin: &null,
                    stdout: &out,
                    stderr: &out,
                    default_signals: &[],
                    orphan_exit_code: 75,
                    confinement: Confinement {
                        user: user.then_some((1_900_065_001, 1_900_065_001)),
                        namespaces: ns,
                        cgroup_procs: &procs,
                    },
                })
                .unwrap();
            crate::taskmanager::spawn::wait_pidfd(child.pidfd.as_raw_fd()).unwrap();
            if let Some(p) = prepared {
                cgroups.release(p);
            }
        }
        let each = started.elapsed() / n;
        eprintln!("{name}: {each:?} per run");
    }
    cgroups.remove_base();
}
