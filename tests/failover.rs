//! Three real replicas: election, registration, placement, kill -9 of the leader, writes
//! through any replica, and the killed replica catching up to the same state digest.

mod common;

use common::*;
use dispatcher::local_cluster::wait_for;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_keeps_the_cluster_working_and_the_restarted_replica_catches_up(
) -> anyhow::Result<()> {
    log_phase("start three replicas and wait for a leader");
    let mut cluster = start_cluster(3, test_config()).await?;
    let client = cluster.client()?;

    log_phase("register TaskManagers and submit a job");
    register_taskmanagers(&client, 3, 4).await?;
    let tms = client.list_taskmanagers().await?;
    assert_eq!(tms.len(), 3);
    assert!(tms.iter().all(|t| t.state == "alive" && t.slots == 4));
    let job = client.submit(submit_request("before-kill", 6, "")).await?;
    assert!(job.created);
    let status = wait_placed(&client, &job.job_id).await?;
    assert_eq!(status.state, "running");
    // Spread: six shards over three TaskManagers, two each.
    for tm in ["tm-0", "tm-1", "tm-2"] {
        let n = status
            .shards
            .iter()
            .filter(|s| s.taskmanager.as_deref() == Some(tm))
            .count();
        assert_eq!(n, 2, "shards per TaskManager: {:?}", status.shards);
    }
    assert!(status
        .shards
        .iter()
        .all(|s| s.attempt == 1 && s.epoch > 0 && s.state == "assigned"));

    log_phase("the CLI sees the same job, in the contract's JSON shape");
    let out = Command::new(BINARY)
        .args([
            "job",
            "status",
            &job.job_id,
            "--output",
            "json",
            "--endpoints",
        ])
        .arg(cluster.endpoints().join(","))
        .args(cluster.client_flags())
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(json["job_id"], job.job_id.as_str());
    assert_eq!(json["state"], "running");
    assert_eq!(json["shards"].as_array().map(|a| a.len()), Some(6));
    assert!(json["shards"][0]["epoch"].as_u64().is_some());

    log_phase("kill -9 the leader");
    let ids = cluster.ids();
    let old_leader = cluster.wait_for_leader(&ids, DEADLINE).await?;
    cluster.kill(old_leader)?;
    let survivors: Vec<u64> = ids.iter().copied().filter(|i| *i != old_leader).collect();
    let new_leader = cluster.wait_for_leader(&survivors, DEADLINE).await?;
    assert_ne!(new_leader, old_leader);

    log_phase("submissions through every surviving replica succeed");
    for id in &survivors {
        let via = cluster.client_via(*id)?;
        let reply = via
            .submit(submit_request(&format!("via-{id}"), 2, ""))
            .await?;
        assert!(reply.created);
        wait_placed(&via, &reply.job_id).await?;
    }
    let jobs = client.list_jobs().await?;
    assert_eq!(jobs.len(), 3, "{jobs:?}");

    log_phase("restart the killed replica on its data dir; it catches up");
    cluster.restart(old_leader)?;
    let (applied, digest) = cluster.wait_converged(&ids, DEADLINE).await?;
    assert!(applied > 0 && !digest.is_empty());
    let restarted = wait_for(DEADLINE, "the restarted replica to follow", || async {
        cluster
            .local_status(old_leader)
            .await
            .filter(|s| s.leader_id == Some(new_leader))
    })
    .await?;
    assert_eq!(restarted.state_digest, digest);
    Ok(())
}
