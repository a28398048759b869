//! Raft's "amnesia" failure with real processes: a replica that lost its disk must not vote.
//!
//! Replica B is down (killed) while the leader A and replica C acknowledge a job; C's data
//! dir is then wiped and C restarted empty; A is killed and B restarted. B and the empty C are a
//! numeric majority, and B lacks the job: if C voted, B would lead and the acknowledged job
//! would be gone. The cluster must instead wait until A returns, then converge with the job,
//! and take C back as a voter once it has caught up.

mod common;

use common::*;
use dispatcher::local_cluster::wait_for;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_replica_never_votes_until_restored() -> anyhow::Result<()> {
    let mut cluster = start_cluster(3, test_config()).await?;
    let ids = cluster.ids();
    let a = cluster.wait_for_leader(&ids, DEADLINE).await?;
    let others: Vec<u64> = ids.iter().copied().filter(|i| *i != a).collect();
    let (b, c) = (others[0], others[1]);
    let client = cluster.client()?;
    client.submit(submit_request("before", 1, "before")).await?;

    // Killed, not paused: a paused replica still takes bytes into its socket, and reads the
    // appends that carry the job once resumed.
    log_phase("kill B; the leader A and C acknowledge a job B never sees");
    cluster.kill(b)?;
    let job = client.submit(submit_request("acked", 2, "acked")).await?;
    assert!(job.created);

    log_phase("wipe C and restart it empty: it must not accept entries or votes");
    cluster.kill(c)?;
    let data_dir = cluster.replica(c)?.data_dir.clone();
    std::fs::remove_dir_all(&data_dir)?;
    cluster.restart(c)?;
    let status = wait_for(DEADLINE, "C to report a closed Raft gate", || async {
        cluster
            .local_status(c)
            .await
            .filter(|s| s.raft_gate == "closed")
    })
    .await?;
    assert_eq!(status.last_log_index, 0, "C accepted entries while closed");

    log_phase("kill A, restart B: B and the empty C must not elect a leader");
    cluster.kill(a)?;
    cluster.restart(b)?;
    // Several election timeouts (500-1000 ms here): without the gate, B wins within one.
    let watch_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < watch_until {
        for id in [b, c] {
            if let Some(s) = cluster.local_status(id).await {
                assert_ne!(
                    s.server_state, "leader",
                    "replica {id} became leader without the only up-to-date replica"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    log_phase("A returns: the cluster converges with the acknowledged job");
    cluster.restart(a)?;
    let leader = match cluster.wait_for_leader(&[a, b], DEADLINE).await {
        Ok(leader) => leader,
        Err(e) => {
            // Seen once in a CI run (no leader in 30 s), never in 12 runs under load here.
            explain_replicas(&cluster, None).await;
            return Err(e.into());
        }
    };
    assert_eq!(leader, a, "only A holds every acknowledged entry");
    let status = client.job_status(&job.job_id).await?;
    assert_eq!(status.name, "acked");

    log_phase("C is demoted, caught up and restored to voter");
    wait_for(Duration::from_secs(60), "C to vote again", || async {
        let s = cluster.local_status(c).await?;
        (s.raft_gate == "open").then_some(())
    })
    .await?;
    let members = client.cluster_status().await?.members;
    let c_role = members.iter().find(|m| m.id == c).map(|m| m.role.clone());
    assert!(
        matches!(c_role.as_deref(), Some("follower") | Some("leader")),
        "C is a voter again: {members:?}"
    );
    cluster.wait_converged(&ids, DEADLINE).await?;

    log_phase("with A gone again, B and the restored C keep the job");
    cluster.kill(a)?;
    cluster.wait_for_leader(&[b, c], DEADLINE).await?;
    let status = client.job_status(&job.job_id).await?;
    assert_eq!(status.name, "acked");
    Ok(())
}
