//! Backup and restore with the real binary: `cluster snapshot save` from a running cluster,
//! every replica of it gone, `cluster snapshot restore` into the data dirs of a new cluster on
//! other ports, and the new cluster holds the old jobs (and their output), elects a leader
//! and runs new work.

mod common;

use common::*;
use dispatcher::local_cluster::{free_port, LocalCluster};
use std::process::Command;

fn cli(args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(BINARY)
        .args(args)
        .args(["--insecure", "--output", "json"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "dispatcher {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_a_new_cluster_that_goes_on() -> anyhow::Result<()> {
    let mut old = start_cluster(3, test_config()).await?;
    old.start_taskmanager("before", 2, &[])?;
    let client = old.client()?;
    wait_taskmanagers_alive(&client, 1).await?;
    let job = client
        .submit(job_request(
            "backed-up",
            2,
            1,
            1,
            (
                "/bin/sh".to_string(),
                vec!["-c".to_string(), "echo kept in the backup".to_string()],
            ),
        ))
        .await?
        .job_id;
    wait_job_state(&client, &job, &["finished"], DEADLINE).await?;

    log_phase("save a backup from the running cluster");
    let file = old.dir.path().join("state.backup");
    let file_arg = file.display().to_string();
    let endpoints = old.endpoints().join(",");
    let saved = tokio::task::block_in_place(|| {
        cli(&[
            "cluster",
            "snapshot",
            "save",
            &file_arg,
            "--endpoints",
            &endpoints,
        ])
    })?;
    assert!(saved["jobs"].as_u64() >= Some(1), "{saved}");
    let again = Command::new(BINARY)
        .args(["cluster", "snapshot", "save", &file_arg, "--insecure"])
        .args(["--endpoints", &endpoints])
        .output()?;
    assert!(!again.status.success(), "a backup is never overwritten");

    log_phase("every replica of the old cluster is gone");
    old.kill_taskmanager("before")?;
    for id in old.ids() {
        old.kill(id)?;
    }

    log_phase("restore into three new data dirs, on new ports");
    let root = tempfile::tempdir()?;
    let replicas: Vec<(u64, String, String)> = (1..=3)
        .map(|id| {
            let addr = format!("127.0.0.1:{}", free_port().expect("a free port"));
            (id, addr.clone(), addr)
        })
        .collect();
    let peers: Vec<String> = replicas
        .iter()
        .map(|(id, addr, _)| format!("{id}={addr}"))
        .collect();
    let peers = peers.join(",");
    for (id, _, _) in &replicas {
        let data_dir = root.path().join(format!("replica-{id}"));
        let restored = cli(&[
            "cluster",
            "snapshot",
            "restore",
            &file_arg,
            "--data-dir",
            &data_dir.display().to_string(),
            "--id",
            &id.to_string(),
            "--peers",
            &peers,
        ])?;
        assert_eq!(restored["id"].as_u64(), Some(*id));
    }
    let mut new = LocalCluster::start_proxied(BINARY, root.path(), &replicas, &test_config())?;
    new.wait_for_leader(&new.ids(), DEADLINE).await?;
    let client = new.client()?;

    log_phase("the new cluster holds the old jobs and their output");
    let status = client.job_status(&job).await?;
    assert_eq!(status.state, "finished");
    let output = client.shard_output(&job, 1).await?;
    assert_eq!(output.stdout, b"kept in the backup\n");
    let members = client.cluster_status().await?.members;
    let addrs: Vec<&str> = members.iter().map(|m| m.addr.as_str()).collect();
    for (_, addr, _) in &replicas {
        assert!(addrs.contains(&addr.as_str()), "{addrs:?} lacks {addr}");
    }

    log_phase("and runs new work");
    new.start_taskmanager("after", 2, &[])?;
    wait_taskmanagers_alive(&client, 1).await?;
    let next = client
        .submit(job_request(
            "after-restore",
            2,
            1,
            1,
            ("/bin/true".to_string(), vec![]),
        ))
        .await?
        .job_id;
    wait_job_state(&client, &next, &["finished"], DEADLINE).await?;
    Ok(())
}
