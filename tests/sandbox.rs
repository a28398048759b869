//! The shard sandbox, tried from inside a shard as a hostile tenant would, with a real agent
//! running as root (as CI does): each run has a user of its own, its own PID namespace and
//! /proc, a clean environment, a cgroup whose end takes every process with it, and no way to
//! the agent's key, journal or incarnation or to another run's directory or environment.

mod common;

use common::*;
use dispatcher::local_cluster::wait_for;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// What the probe script printed, as `key=value` lines.
fn findings(stdout: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sh(name: &str, script: &str) -> dispatcher::pb::api::SubmitRequest {
    job_request(
        name,
        1,
        1,
        1,
        (
            "/bin/sh".to_string(),
            vec!["-c".to_string(), script.to_string()],
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_sees_only_itself() -> anyhow::Result<()> {
    if !is_root() {
        eprintln!("skipped: the sandbox needs root (CI runs as root)");
        return Ok(());
    }
    let mut cluster = start_secure_cluster(3, test_config()).await?;
    // A real deployment's work dir sits under traversable parents (/var/lib); the test's
    // temp dir is 0700.
    std::fs::set_permissions(cluster.dir.path(), std::fs::Permissions::from_mode(0o711))?;
    cluster.set_sandbox(true);
    cluster.start_taskmanager("box", 2, &[])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 1).await?;
    let work = cluster.dir.path().join("tm-box");
    let key = cluster.dir.path().join("certs").join("tm-box-key.pem");
    assert!(key.exists(), "the agent's key is at {}", key.display());

    log_phase("another tenant's run holds a secret in its environment");
    let mut victim = sh("victim", "sleep 60");
    victim
        .spec
        .as_mut()
        .map(|s| s.env.insert("SECRET".into(), "alpha-secret".into()));
    let victim = client.submit(victim).await?.job_id;
    wait_all_running(&client, &victim).await?;
    let victim_dir = std::fs::read_dir(work.join(&victim))?
        .flatten()
        .next()
        .map(|e| e.path())
        .ok_or_else(|| anyhow::anyhow!("no run dir for {victim}"))?;

    log_phase("a shard looks for everything it must not see");
    let script = format!(
        r#"
        echo uid=$(id -u)
        echo pid=$$
        echo procs=$(ls /proc | grep -c '^[0-9]')
        cat /proc/*/environ 2>/dev/null | tr '\0' '\n' | grep -q alpha-secret && echo environ=leaked || echo environ=hidden
        cat /proc/*/cmdline 2>/dev/null | tr '\0' ' ' | grep -q 'slee[p] 60' && echo cmdline=leaked || echo cmdline=hidden
        cat {key} >/dev/null 2>&1 && echo key=read || echo key=refused
        cat {journal} >/dev/null 2>&1 && echo journal=read || echo journal=refused
        cat {incarnation} >/dev/null 2>&1 && echo incarnation=read || echo incarnation=refused
        ls {victim_dir} >/dev/null 2>&1 && echo victim_dir=listed || echo victim_dir=refused
        ls {work} >/dev/null 2>&1 && echo work_dir=listed || echo work_dir=refused
        echo own_dir=$(ls -ld "$PWD" | cut -d' ' -f1)
        touch mine && echo own_files=writable
        ln -sf {key} stderr 2>/dev/null || mv stderr stderr.moved 2>/dev/null && echo output_files=replaced || echo output_files=kept
        env | grep -v -E '^(DISPATCHER_|PWD=|SHLVL=|_=)' | cut -d= -f1 | sort | tr '\n' ',' | sed 's/^/env=/'; echo
        f=$(mktemp) && echo tmp=writable && rm -f "$f"
        "#,
        key = key.display(),
        journal = work.join("runs.journal").display(),
        incarnation = work.join("incarnation").display(),
        victim_dir = victim_dir.display(),
        work = work.display(),
    );
    let probe = client.submit(sh("probe", &script)).await?.job_id;
    let ended = wait_job_state(&client, &probe, &["finished", "failed"], DEADLINE).await?;
    let output = client.shard_output(&probe, 0).await?;
    assert_eq!(ended.state, "finished", "{ended:?} {output:?}");
    let found = findings(&output.stdout);
    eprintln!(
        "{found:#?}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let uid: u32 = found.get("uid").and_then(|u| u.parse().ok()).unwrap_or(0);
    assert_ne!(uid, 0, "a shard never runs as root: {found:?}");
    assert_eq!(
        found.get("pid").map(String::as_str),
        Some("1"),
        "own PID namespace"
    );
    let procs: usize = found
        .get("procs")
        .and_then(|p| p.parse().ok())
        .unwrap_or(99);
    assert!(
        procs <= 4,
        "its /proc shows only its own processes: {procs}"
    );
    for (what, expected) in [
        ("environ", "hidden"),
        ("cmdline", "hidden"),
        ("key", "refused"),
        ("journal", "refused"),
        ("incarnation", "refused"),
        ("victim_dir", "refused"),
        ("work_dir", "refused"),
        // Its group may write, nobody else may enter, and the sticky bit keeps its output
        // files (root's) where the agent reads them.
        ("own_dir", "drwxrwx--T"),
        ("own_files", "writable"),
        ("output_files", "kept"),
        ("env", "HOME,PATH,"),
        ("tmp", "writable"),
    ] {
        assert_eq!(
            found.get(what).map(String::as_str),
            Some(expected),
            "{what}: {found:?}"
        );
    }

    log_phase("two live runs never share a uid");
    let second = client
        .submit(sh("second", "echo uid=$(id -u)"))
        .await?
        .job_id;
    wait_job_state(&client, &second, &["finished"], DEADLINE).await?;
    let other_uid = findings(&client.shard_output(&second, 0).await?.stdout)
        .get("uid")
        .cloned()
        .unwrap_or_default();
    // The run's directory belongs to root and to the run's group, which in the uid pool
    // has the run's uid as its number.
    let victim_uid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&victim_dir)?.gid()
    };
    assert_ne!(
        other_uid,
        victim_uid.to_string(),
        "the victim still runs as {victim_uid}"
    );
    assert_ne!(victim_uid, 0);
    client.cancel_job(&victim).await?;
    Ok(())
}

/// Pids of live processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(marker)
                .then_some(pid)
        })
        .collect()
}

/// Submit a shard that starts a grandchild in a session of its own and waits; once the
/// grandchild runs, `while_running` sees its pid; then cancel, and the grandchild must die.
async fn an_escaper_dies_at_cancel(
    client: &dispatcher::client::Client,
    while_running: impl FnOnce(u32) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    log_phase("a shard starts a grandchild in a session of its own, then waits");
    let marker = format!("escape-{}", std::process::id());
    let script = format!("setsid sh -c 'exec -a {marker} sleep 300' & sleep 300");
    let job = client.submit(sh("escaper", &script)).await?.job_id;
    wait_all_running(client, &job).await?;
    let grandchild = wait_for(DEADLINE, "the grandchild to start", || async {
        processes_with(&marker).first().copied()
    })
    .await?;
    while_running(grandchild)?;

    log_phase("cancel: the grandchild dies with the run");
    client.cancel_job(&job).await?;
    wait_job_state(client, &job, &["cancelled"], DEADLINE).await?;
    wait_for(DEADLINE, "the setsid grandchild to be gone", || async {
        processes_with(&marker).is_empty().then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_shard_starts_outlives_its_cancel() -> anyhow::Result<()> {
    if !is_root() {
        eprintln!("skipped: the sandbox needs root (CI runs as root)");
        return Ok(());
    }
    let mut cluster = start_cluster(3, test_config()).await?;
    std::fs::set_permissions(cluster.dir.path(), std::fs::Permissions::from_mode(0o711))?;
    cluster.set_sandbox(true);
    cluster.start_taskmanager("box", 1, &[])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 1).await?;
    an_escaper_dies_at_cancel(&client, |_| Ok(())).await
}

/// A cgroup v2 directory this test made, emptied and removed (depth first) when dropped.
struct TestCgroup(std::path::PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        let mut dirs: Vec<std::path::PathBuf> = walk_dirs(&self.0);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in dirs {
            // EBUSY while the killed processes are torn down.
            for _ in 0..200 {
                if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

fn walk_dirs(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            all.extend(walk_dirs(&entry.path()));
        }
    }
    all
}

/// The process's cgroup v2 path (the `0::` line of /proc/<pid>/cgroup).
fn v2_path(pid: u32) -> anyhow::Result<String> {
    let table = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    table
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        .ok_or_else(|| anyhow::anyhow!("process {pid} is in no cgroup v2 directory: {table}"))
}

/// cgroup v2 as a service manager delegates it: the agent starts in a cgroup of its own, moves
/// into a leaf of it (a cgroup with processes may not give controllers to children), makes
/// each run a cgroup below, and kills a run's whole cgroup at its end. This host's v2 tree
/// (mounted beside the v1 hierarchies) has no memory, cpu or pids controller, so the agent
/// must say those limits are missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_cgroup_v2_a_run_is_a_cgroup_below_the_agents_own_and_ends_whole() -> anyhow::Result<()>
{
    let root = std::path::Path::new("/sys/fs/cgroup/unified");
    if !is_root() || !root.join("cgroup.controllers").exists() {
        eprintln!(
            "skipped: needs root and a cgroup v2 tree at {}",
            root.display()
        );
        return Ok(());
    }
    let name = format!("dispatcher-test-{}", std::process::id());
    std::fs::create_dir(root.join(&name))?;
    let delegated = TestCgroup(root.join(&name));
    let mut cluster = start_cluster(3, test_config()).await?;
    std::fs::set_permissions(cluster.dir.path(), std::fs::Permissions::from_mode(0o711))?;
    cluster.set_sandbox(true);
    cluster.set_agent_cgroup(Some(delegated.0.clone()));
    cluster.start_taskmanager_with(
        "v2",
        1,
        &[],
        None,
        &["--cgroup-root", "/sys/fs/cgroup/unified"],
    )?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 1).await?;

    log_phase("the agent says which limits it cannot give, and sits in its leaf");
    let tms = client.list_taskmanagers().await?;
    let available = std::fs::read_to_string(root.join("cgroup.controllers"))?;
    if !["memory", "cpu", "pids"]
        .iter()
        .any(|c| available.split_whitespace().any(|a| a == *c))
    {
        anyhow::ensure!(
            tms[0].isolation == "partial"
                && tms[0]
                    .isolation_missing
                    .contains("limits on memory, cpu, pids"),
            "{tms:?}"
        );
    }
    let agent = cluster.agent("v2")?.pid().expect("the agent was started");
    anyhow::ensure!(
        v2_path(agent)? == format!("/{name}/dispatcher-processes"),
        "the agent's cgroup: {}",
        v2_path(agent)?
    );

    an_escaper_dies_at_cancel(&client, |grandchild| {
        let path = v2_path(grandchild)?;
        let prefix = format!("/{name}/dispatcher-v2-");
        anyhow::ensure!(
            path.starts_with(&prefix) && path.contains("/run-"),
            "the run's grandchild is in {path}, not in a run cgroup below {prefix}"
        );
        Ok(())
    })
    .await?;
    drop(cluster);
    drop(delegated);
    anyhow::ensure!(!root.join(&name).exists(), "the test's cgroup is left");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_is_not_root_says_its_shards_are_not_sandboxed() -> anyhow::Result<()> {
    const NOBODY: u32 = 65534;
    let setpriv = std::path::Path::new("/usr/bin/setpriv");
    if !is_root() || !setpriv.exists() {
        eprintln!("skipped: needs root and setpriv to start an agent as another user");
        return Ok(());
    }
    let cluster = start_cluster(3, test_config()).await?;
    std::fs::set_permissions(cluster.dir.path(), std::fs::Permissions::from_mode(0o711))?;
    let work = cluster.dir.path().join("nobody-work");
    std::fs::create_dir(&work)?;
    std::os::unix::fs::chown(&work, Some(NOBODY), Some(NOBODY))?;
    let log = cluster.dir.path().join("nobody.log");
    let mut agent = std::process::Command::new(setpriv)
        .args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".to_string(),
        ])
        .arg(BINARY)
        .args([
            "taskmanager",
            "--insecure",
            "--id",
            "nobody",
            "--slots",
            "1",
        ])
        .arg("--work-dir")
        .arg(&work)
        .arg("--endpoints")
        .arg(cluster.endpoints().join(","))
        .env("DISPATCHER_LOG", "info")
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(
            cluster.dir.path().join("nobody.err"),
        )?)
        .spawn()?;
    let client = cluster.client()?;
    let outcome = async {
        wait_taskmanagers_alive(&client, 1).await?;
        log_phase("the agent says at start that its shards are not sandboxed, and why");
        let said = std::fs::read_to_string(&log)?
            + &std::fs::read_to_string(cluster.dir.path().join("nobody.err"))?;
        anyhow::ensure!(
            said.contains("shard sandbox none: the agent is not root"),
            "the agent's log: {said}"
        );
        log_phase("and they run as its own user");
        let job = client.submit(sh("who", "echo uid=$(id -u)")).await?.job_id;
        wait_job_state(&client, &job, &["finished"], DEADLINE).await?;
        let found = findings(&client.shard_output(&job, 0).await?.stdout);
        anyhow::ensure!(
            found.get("uid").map(String::as_str) == Some("65534"),
            "{found:?}"
        );
        log_phase("tm list says none, and a job that asks for full isolation waits, saying why");
        let tms = client.list_taskmanagers().await?;
        anyhow::ensure!(
            tms[0].isolation == "none" && tms[0].isolation_missing.contains("not root"),
            "{tms:?}"
        );
        let mut strict = sh("strict", "true");
        strict.isolation = "full".into();
        let job = client.submit(strict).await?.job_id;
        let reason = wait_for(DEADLINE, "a reason for the wait", || async {
            let status = client.job_status(&job).await.ok()?;
            (status.state == "pending" && status.reason.contains("needs full isolation"))
                .then_some(status.reason)
        })
        .await?;
        anyhow::ensure!(reason.contains("nobody: none"), "{reason}");
        Ok(())
    }
    .await;
    let _ = agent.kill();
    let _ = agent.wait();
    outcome
}
