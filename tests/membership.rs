//! Grow the cluster from three replicas to five and shrink it back to three (removing the
//! leader among others) while a client keeps submitting; no submission is lost.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_to_five_and_shrink_to_three_while_submitting() -> anyhow::Result<()> {
    log_phase("start three replicas");
    let mut cluster = start_cluster(3, test_config()).await?;
    let admin = cluster.client()?;

    log_phase("start two more replica processes; they must not form a cluster of their own");
    let addr4 = cluster.start_extra_replica(4)?;
    let addr5 = cluster.start_extra_replica(5)?;

    log_phase("submit continuously in the background");
    let stop = Arc::new(AtomicBool::new(false));
    let submitter = {
        let client = cluster.client()?;
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("member-{i}");
                let reply = client.submit(submit_request(&key, 1, &key)).await?;
                acknowledged.push(reply.job_id);
                i += 1;
            }
            anyhow::Ok(acknowledged)
        })
    };

    log_phase("add replicas 4 and 5");
    admin.add_member(4, &addr4).await?;
    let reply = admin.add_member(5, &addr5).await?;
    let voters: BTreeSet<u64> = reply.members.iter().map(|m| m.id).collect();
    assert_eq!(voters, BTreeSet::from([1, 2, 3, 4, 5]));
    for new in [4u64, 5] {
        let s = dispatcher::local_cluster::wait_for(
            DEADLINE,
            "the new replica to catch up",
            || async {
                cluster
                    .local_status(new)
                    .await
                    .filter(|s| s.initialized && s.last_applied > 0)
            },
        )
        .await?;
        eprintln!(
            "replica {new}: {} applied, {}",
            s.last_applied, s.server_state
        );
    }

    log_phase("transfer leadership with the CLI");
    let leader = cluster.wait_for_leader(&[1, 2, 3, 4, 5], DEADLINE).await?;
    let target = if leader == 5 { 4 } else { 5 };
    let out = std::process::Command::new(BINARY)
        .args([
            "cluster",
            "transfer-leader",
            &target.to_string(),
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
    assert_eq!(cluster.wait_for_leader(&[target], DEADLINE).await?, target);

    log_phase("remove the leader and one more original replica");
    let leader = cluster.wait_for_leader(&[1, 2, 3, 4, 5], DEADLINE).await?;
    let other = [1u64, 2, 3]
        .into_iter()
        .find(|i| *i != leader)
        .expect("another original");
    admin.remove_member(leader).await?;
    admin.remove_member(other).await?;
    let status = admin.cluster_status().await?;
    let members: BTreeSet<u64> = status.members.iter().map(|m| m.id).collect();
    assert_eq!(members.len(), 3, "{status:?}");
    assert!(!members.contains(&leader) && !members.contains(&other));
    let remaining: Vec<u64> = members.iter().copied().collect();
    let new_leader = cluster.wait_for_leader(&remaining, DEADLINE).await?;
    assert!(members.contains(&new_leader));

    log_phase("stop the submitter; every acknowledged submission is there");
    stop.store(true, Ordering::Relaxed);
    let acknowledged = submitter.await??;
    assert!(
        acknowledged.len() > 3,
        "submissions kept flowing: {}",
        acknowledged.len()
    );
    cluster.kill(leader)?;
    cluster.kill(other)?;
    let client = cluster.client()?;
    let jobs: BTreeSet<String> = client
        .list_jobs()
        .await?
        .into_iter()
        .map(|j| j.job_id)
        .collect();
    for id in &acknowledged {
        assert!(jobs.contains(id), "acknowledged job {id} missing");
    }
    cluster.wait_converged(&remaining, DEADLINE).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_shows_every_replicas_release_and_an_unreachable_one_without(
) -> anyhow::Result<()> {
    let mut cluster = start_cluster(3, test_config()).await?;
    let release = env!("CARGO_PKG_VERSION");
    let status = |cluster: &TestCluster| -> anyhow::Result<serde_json::Value> {
        let out = cli(cluster, &["cluster", "status", "--output", "json"])?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    // Every replica runs this build: the leader raises the cluster version to the newest.
    let newest = dispatcher::formats::MAX_CLUSTER_VERSION;
    let json =
        dispatcher::local_cluster::wait_for(DEADLINE, "the newest cluster version", || async {
            let json = status(&cluster).ok()?;
            (json["cluster_version"] == newest).then_some(json)
        })
        .await?;
    let members = json["members"].as_array().cloned().unwrap_or_default();
    assert_eq!(members.len(), 3, "{json}");
    for member in &members {
        assert_eq!(member["version"], release, "{member}");
        assert_eq!(member["max_cluster_version"], newest, "{member}");
    }
    log_phase("a follower stops: it has no version, the others still do");
    let leader = cluster.wait_for_leader(&cluster.ids(), DEADLINE).await?;
    let follower = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    cluster.kill(follower)?;
    let json = status(&cluster)?;
    for member in json["members"].as_array().cloned().unwrap_or_default() {
        if member["id"] == follower {
            assert!(member["version"].is_null(), "{member}");
        } else {
            assert_eq!(member["version"], release, "{member}");
        }
    }
    let out = std::process::Command::new(BINARY)
        .arg("--version")
        .output()?;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(release) && said.contains("snapshot format"),
        "{said}"
    );
    Ok(())
}
