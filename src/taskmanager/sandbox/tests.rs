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
    limits: Option<(&Cgroups, &str, RunLimits)>,
) -> (Ended, String, Option<super::cgroup::RunCgroup>) {
    let null = File::open("/dev/null").unwrap();
    let out = File::create(dir.join("out")).unwrap();
    let err = File::create(dir.join("err")).unwrap();
    let prepared = limits.map(|(c, name, l)| c.prepare(name, &l).unwrap());
    let procs = prepared.as_ref().map(|p| p.procs()).unwrap_or_default();
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
    let cgroup = prepared.map(|p| p.into_run());
    let ended = crate::taskmanager::spawn::wait_for_exit(child.pidfd.as_raw_fd()).unwrap();
    let stdout = std::fs::read_to_string(dir.join("out")).unwrap();
    (ended, stdout, cgroup)
}

#[test]
fn a_confined_run_is_pid_1_of_its_own_namespace_as_its_own_user() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cgroups = Cgroups::open("unit-test").unwrap();
    let (ended, out, cgroup) = run(
        dir.path(),
        "echo $$ $(id -u) $(ls /proc | grep -c '^[0-9]')",
        Some((1_900_065_000, 1_900_065_000)),
        Some((&cgroups, "run-identity", RunLimits::default())),
    );
    assert_eq!(ended.code, Some(0), "{out}");
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields[..2], ["1", "1900065000"], "{out}");
    // sh, its subshells, ls and grep: nothing of the host's.
    let seen: usize = fields[2].parse().unwrap();
    assert!(seen <= 5, "{out}");
    cgroup.unwrap().remove();
}

#[test]
fn a_run_over_its_memory_limit_is_killed_and_counted() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cgroups = Cgroups::open("unit-test").unwrap();
    let limits = RunLimits {
        memory_bytes: Some(32 << 20),
        ..Default::default()
    };
    // 128 MiB of zeros held in one shell variable.
    let (ended, _, cgroup) = run(
        dir.path(),
        "x=$(head -c 134217728 /dev/zero | tr '\\0' a); echo ${#x}",
        None,
        Some((&cgroups, "run-oom", limits)),
    );
    let cgroup = cgroup.unwrap();
    assert_ne!(ended.code, Some(0), "{ended:?}");
    assert!(cgroup.oom_kills() > 0, "{ended:?}");
    assert_eq!(cgroup.memory_limit(), Some(32 << 20));
    cgroup.remove();
}
