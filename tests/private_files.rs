//! Files are private, from outside: after a cluster has run jobs with secrets in their
//! environment, taken a snapshot and been restarted, every directory of every replica's data
//! dir and every agent's work dir is 0700 and every file in them 0600, though the processes
//! were started with the usual umask (022), and an older data dir left readable is tightened
//! at start.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Every path under `root` (itself included) whose mode lets anyone but its owner in.
fn exposed(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    let mut work = vec![root.to_path_buf()];
    while let Some(path) = work.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        let mode = meta.permissions().mode() & 0o777;
        let private = if meta.is_dir() {
            mode == 0o700
        } else if meta.is_file() {
            mode == 0o600
        } else {
            true
        };
        if !private {
            found.push(format!("{} {mode:04o}", path.display()));
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                work.push(entry?.path());
            }
        }
    }
    Ok(found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dirs_and_work_dirs_are_private_whatever_the_umask() -> anyhow::Result<()> {
    // SAFETY: umask(2) cannot fail; the processes started below inherit it.
    unsafe {
        libc::umask(0o022);
    }
    let mut cluster = start_secure_cluster(3, test_config()).await?;
    let admin = cluster.client()?;
    cluster.start_taskmanager("a", 2, &[])?;
    wait_taskmanagers_alive(&admin, 1).await?;

    log_phase("jobs with a secret in their environment run and print");
    let mut request = job_request(
        "secret",
        2,
        1,
        1,
        ("/bin/sh".into(), vec!["-c".into(), "echo $TOKEN".into()]),
    );
    if let Some(spec) = request.spec.as_mut() {
        spec.env.insert("TOKEN".into(), "s3cret".into());
    }
    let job = admin.submit(request).await?;
    wait_job_state(&admin, &job.job_id, &["finished"], DEADLINE).await?;
    let leader = cluster.wait_for_leader(&cluster.ids(), DEADLINE).await?;
    admin.snapshot(Some(&cluster.replica(leader)?.addr)).await?;

    log_phase("every directory is 0700 and every file 0600");
    let mut roots = Vec::new();
    for id in cluster.ids() {
        roots.push(cluster.replica(id)?.data_dir.clone());
    }
    roots.push(cluster.taskmanager("a")?.work_dir.clone());
    for root in &roots {
        let found = exposed(root)?;
        assert!(found.is_empty(), "readable by others: {found:#?}");
    }

    log_phase("a data dir an older version left readable is tightened at start");
    let follower = replica_other_than(&cluster, &[leader])?;
    cluster.kill(follower)?;
    let data_dir = cluster.replica(follower)?.data_dir.clone();
    let mut loosened = 0;
    let mut work = vec![data_dir.clone()];
    while let Some(path) = work.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
            for entry in std::fs::read_dir(&path)? {
                work.push(entry?.path());
            }
        } else if meta.is_file() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
            loosened += 1;
        }
    }
    assert!(loosened > 0);
    cluster.restart(follower)?;
    cluster.wait_for_leader(&cluster.ids(), DEADLINE).await?;
    wait_for_private(&data_dir).await?;
    Ok(())
}

async fn wait_for_private(root: &Path) -> anyhow::Result<()> {
    dispatcher::local_cluster::wait_for(DEADLINE, "the data dir to be private again", || async {
        exposed(root).ok()?.is_empty().then_some(())
    })
    .await?;
    Ok(())
}
