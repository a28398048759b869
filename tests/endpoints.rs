//! A fresh client (a CLI call, an agent's first registration) whose list of endpoints names a
//! replica that does not answer (paused with SIGSTOP: its kernel still accepts connections,
//! nothing answers on them). Every endpoint is asked at once where the leader is, so the dead
//! one costs nothing; before, each fresh CLI call waited out 5 s on it.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// Median time of five fresh `job list` calls with `first` listed first.
fn fresh_calls(cluster: &TestCluster, first: u64) -> anyhow::Result<Duration> {
    let mut endpoints = vec![cluster.addr(first)?];
    for id in cluster.ids() {
        if id != first {
            endpoints.push(cluster.addr(id)?);
        }
    }
    let took = five_timed_calls(|| {
        let mut command = Command::new(BINARY);
        command
            .args(["job", "list", "--endpoints", &endpoints.join(",")])
            .args(cluster.client_flags());
        command
    })?;
    eprintln!("fresh calls with replica {first} paused and listed first: {took:?}");
    Ok(took[2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_clients_go_past_a_replica_that_does_not_answer() -> anyhow::Result<()> {
    let mut cluster = start_cluster(3, test_config()).await?;
    let mut leader = cluster.wait_for_leader(&cluster.ids(), DEADLINE).await?;
    if leader == 1 {
        // Replica 1 is the first endpoint an agent of the harness is given: make it a
        // follower, to pause it.
        cluster.client()?.transfer_leader(2).await?;
        leader = cluster.wait_for_leader(&[2], DEADLINE).await?;
    }
    let follower = 1;

    log_phase("a paused follower listed first");
    cluster.pause(follower)?;
    // A generous bound: the figure is in the bench; it was 5 s.
    let median = fresh_calls(&cluster, follower)?;
    assert!(median < Duration::from_secs(2), "median {median:?}");

    log_phase("an agent whose first endpoint is the paused follower registers at once");
    let started = Instant::now();
    cluster.start_taskmanager("tm-a", 2, &[])?;
    let client = cluster.client_via(leader)?;
    wait_taskmanagers_alive(&client, 1).await?;
    let registered = started.elapsed();
    eprintln!("agent registered {registered:?} after its start");
    assert!(registered < Duration::from_secs(4), "{registered:?}");
    cluster.resume(follower)?;

    log_phase("a paused leader listed first, once another leads");
    cluster.pause(leader)?;
    let others: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    cluster.wait_for_leader(&others, DEADLINE).await?;
    let median = fresh_calls(&cluster, leader)?;
    assert!(median < Duration::from_secs(2), "median {median:?}");
    cluster.resume(leader)?;
    Ok(())
}

/// The leader every replica names (one back from a pause may still call itself leader for a
/// moment: wait until all agree).
async fn agreed_leader(cluster: &TestCluster) -> anyhow::Result<u64> {
    let ids = cluster.ids();
    let leader = dispatcher::local_cluster::wait_for(DEADLINE, "one leader named by all", || {
        let ids = ids.clone();
        async move {
            let mut named = None;
            for id in &ids {
                let status = cluster.local_status(*id).await?;
                let leader = status.leader_id?;
                if named.is_some_and(|n| n != leader) {
                    return None;
                }
                named = Some(leader);
            }
            named
        }
    })
    .await?;
    Ok(leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_a_leader_that_stops_answering_goes_to_the_next_one() -> anyhow::Result<()> {
    let cluster = start_cluster(3, test_config()).await?;
    let client = cluster.client()?;
    let first = client
        .submit(submit_request("before", 1, "hedge-0"))
        .await?;
    let mut jobs = vec![first.job_id];
    let mut took = Vec::new();
    for round in 1..=3u32 {
        log_phase(&format!("round {round}: the leader paused, then a write"));
        let leader = agreed_leader(&cluster).await?;
        cluster.pause(leader)?;
        let started = Instant::now();
        let reply = match client
            .submit(submit_request(
                &format!("after-{round}"),
                1,
                &format!("hedge-{round}"),
            ))
            .await
        {
            Ok(reply) => reply,
            Err(e) => {
                // Seen once in CI (no leader found in 35 s), never here: say what each saw.
                explain_replicas(&cluster, Some(leader)).await;
                return Err(e.into());
            }
        };
        took.push(started.elapsed());
        // (`created` may be false: an attempt left behind that still landed is found again
        // by its key when retried.)
        jobs.push(reply.job_id);
        cluster.resume(leader)?;
    }
    eprintln!("writes acknowledged after the leader was paused: {took:?}");
    jobs.sort();
    jobs.dedup();
    assert_eq!(jobs.len(), 4, "one job per key: {jobs:?}");
    took.sort();
    // Without moving on, each waited out the 5 s attempt deadline; a generous bound.
    assert!(took[1] < Duration::from_secs(3), "{took:?}");
    Ok(())
}

/// A replica asked where the leader is, by a client that could not reach the old one, answers
/// as soon as it knows a new leader: without the wait it names the dead one (its lease has
/// not run out), and the client polls through the election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_says_when_it_knows_a_leader_past_a_dead_one() -> anyhow::Result<()> {
    use dispatcher::pb::api::cluster_client::ClusterClient;
    use dispatcher::pb::api::LeaderRequest;
    let mut cluster = start_cluster(3, test_config()).await?;
    let leader = agreed_leader(&cluster).await?;
    let follower = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .unwrap_or(0);
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.addr(follower)?))?
            .connect()
            .await?;
    let mut asked = ClusterClient::new(channel);
    let now = asked.leader(LeaderRequest::default()).await?.into_inner();
    assert_eq!(
        now.leader_id,
        Some(leader),
        "the follower names the live leader"
    );

    cluster.kill(leader)?;
    let killed = Instant::now();
    let new_leader = loop {
        anyhow::ensure!(killed.elapsed() < DEADLINE, "no new leader named");
        let started = Instant::now();
        let reply = asked
            .leader(LeaderRequest {
                not_leader: Some(leader),
                wait_ms: 2_000,
            })
            .await?
            .into_inner();
        let took = started.elapsed();
        if reply.leader_id.is_some() && reply.leader_id != Some(leader) {
            assert!(reply.leader_addr.is_some());
            if took >= Duration::from_millis(1_900) {
                // The election ended just as the wait did (a loaded machine): that answer
                // cannot tell an early reply from a late one, so ask again; a replica that
                // knows the new leader must now answer at once.
                continue;
            }
            // It answered when the election ended, not at the end of its wait.
            break reply.leader_id;
        }
        // Still no other leader: it waited the whole while before saying so.
        assert!(
            took >= Duration::from_millis(1_900),
            "answered {reply:?} after {took:?}"
        );
    };
    let elected = cluster
        .wait_for_leader(&[new_leader.unwrap_or(0)], DEADLINE)
        .await?;
    assert_eq!(Some(elected), new_leader);
    Ok(())
}
