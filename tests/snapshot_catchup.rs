//! A replica kept down while the log is compacted past it receives a snapshot and
//! converges; a replica restarted from its own snapshot replays the log after it.

mod common;

use common::*;
use dispatcher::config::SnapshotSettings;
use dispatcher::local_cluster::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_behind_a_compacted_log_receives_a_snapshot() -> anyhow::Result<()> {
    let mut config = test_config();
    config.snapshot = SnapshotSettings {
        every_entries: 20,
        keep_entries: 5,
    };
    log_phase("start three replicas with aggressive snapshotting");
    let mut cluster = start_cluster(3, config).await?;
    let ids = cluster.ids();
    let leader = cluster.wait_for_leader(&ids, DEADLINE).await?;
    let lagger = *ids.iter().find(|i| **i != leader).expect("a follower");
    let client = cluster.client()?;
    register_taskmanagers(&client, 2, 8).await?;

    log_phase("stop one follower, then write well past the snapshot threshold");
    let before = cluster
        .local_status(lagger)
        .await
        .expect("lagger answers")
        .last_applied;
    cluster.kill(lagger)?;
    for i in 0..80 {
        client
            .submit(submit_request(&format!("job-{i}"), 1, &format!("key-{i}")))
            .await?;
    }
    let alive: Vec<u64> = ids.iter().copied().filter(|i| *i != lagger).collect();
    let purged = wait_for(
        DEADLINE,
        "the leader to purge its log past the stopped follower",
        || async {
            let s = cluster.local_status(leader).await?;
            s.purged_index.filter(|p| *p > before + 5)
        },
    )
    .await?;
    eprintln!("stopped follower was at {before}; leader purged up to {purged}");

    log_phase("restart the follower: it must be sent a snapshot");
    cluster.restart(lagger)?;
    let (applied, digest) = cluster.wait_converged(&ids, DEADLINE).await?;
    let lagger_status = cluster.local_status(lagger).await.expect("lagger answers");
    assert_eq!(lagger_status.state_digest, digest);
    assert!(applied > purged);
    assert!(
        lagger_status.snapshot_index.is_some_and(|s| s > before),
        "the follower should hold a snapshot newer than where it stopped: {lagger_status:?}"
    );

    log_phase("restart every replica from snapshot + log; the state survives");
    for id in &ids {
        cluster.kill(*id)?;
    }
    for id in &ids {
        cluster.restart(*id)?;
    }
    cluster.wait_for_leader(&ids, DEADLINE).await?;
    let jobs = client.list_jobs().await?;
    assert_eq!(jobs.len(), 80);
    let (_, digest_after) = cluster.wait_converged(&ids, DEADLINE).await?;
    let _ = alive;
    // New entries (a blank entry per new term) do not change the state itself.
    assert_eq!(digest_after, digest);
    Ok(())
}
