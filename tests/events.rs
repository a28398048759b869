//! The event stream from outside: followed live across a leader kill, it misses and repeats
//! nothing (the resumed stream equals a replay from another replica and agrees with the
//! final state); `job wait` and `job watch` follow a job to its end; a replica that no longer
//! holds old events says so with OUT_OF_RANGE.

mod common;

use common::*;
use dispatcher::client::{Client, ClientError};
use dispatcher::pb::api::Event;
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::Code;

fn key(e: &Event) -> (u64, u32) {
    (e.index, e.seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_survive_a_leader_kill_without_loss_or_repeat() -> anyhow::Result<()> {
    let mut cluster = start_cluster(3, test_config()).await?;
    cluster.start_taskmanager("a", 4, &[])?;
    cluster.start_taskmanager("b", 4, &[])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 2).await?;

    log_phase("follow every event from the start, in the background");
    let seen: Arc<Mutex<Vec<Event>>> = Arc::default();
    let follower = {
        let seen = seen.clone();
        let client = cluster.client()?;
        tokio::spawn(async move {
            client
                .follow_events(1, 0, None, |event| {
                    let mut seen = seen.lock().unwrap();
                    seen.push(event.clone());
                    event.kind != "job_finished"
                })
                .await
        })
    };

    log_phase("a job of 8 shards; the leader is killed while they run");
    let job = client
        .submit(job_request(
            "evented",
            8,
            1,
            3,
            ("/bin/sleep".into(), vec!["1".into()]),
        ))
        .await?;
    wait_for_started(&seen, 2).await?;
    let leader = cluster.wait_for_leader(&cluster.ids(), DEADLINE).await?;
    cluster.kill(leader)?;

    log_phase("`job wait` follows the job to its end through the new leader");
    let started = Instant::now();
    let out = Command::new(BINARY)
        .args([
            "job",
            "wait",
            &job.job_id,
            "--timeout",
            "60",
            "--output",
            "json",
        ])
        .arg("--endpoints")
        .arg(cluster.endpoints().join(","))
        .args(cluster.client_flags())
        .output()?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(said["state"], "finished");
    assert!(started.elapsed() < Duration::from_secs(60));
    tokio::time::timeout(DEADLINE, follower).await???;
    let live = seen.lock().unwrap().clone();

    log_phase("the live stream: strictly increasing, and every shard finished exactly once");
    assert!(live.windows(2).all(|w| key(&w[0]) < key(&w[1])), "{live:?}");
    let of_job: Vec<&Event> = live.iter().filter(|e| e.job_id == job.job_id).collect();
    assert_eq!(
        of_job.first().map(|e| e.kind.as_str()),
        Some("job_submitted")
    );
    assert_eq!(of_job.last().map(|e| e.kind.as_str()), Some("job_finished"));
    log_phase("asked for the job's end alone, a replica sends that and nothing before");
    let mut ends = Vec::new();
    client
        .follow_job_end(1, &job.job_id, |event| {
            ends.push(event.kind.clone());
            true
        })
        .await?;
    assert_eq!(ends, ["job_finished"]);
    let mut finished: BTreeMap<u32, usize> = BTreeMap::new();
    for e in &of_job {
        if e.kind == "shard_finished" {
            *finished.entry(e.shard.expect("shard")).or_default() += 1;
        }
    }
    assert_eq!(finished.len(), 8, "{finished:?}");
    assert!(finished.values().all(|n| *n == 1), "{finished:?}");
    assert!(live
        .iter()
        .any(|e| e.kind == "leader_changed" && e.index > of_job[0].index));
    let status = client.job_status(&job.job_id).await?;
    assert!(status.shards.iter().all(|s| s.state == "finished"));

    log_phase("a replay from a replica that lived through it is the same stream");
    let survivor = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a survivor");
    let replay = cluster.client_via(survivor)?;
    let last = live.last().map(key).expect("events");
    let mut replayed = Vec::new();
    replay
        .follow_events(1, 0, None, |event| {
            replayed.push(event.clone());
            key(event) < last
        })
        .await?;
    assert_eq!(replayed, live);

    log_phase("`job watch` of an ended job prints it and exits 0");
    let out = Command::new(BINARY)
        .args(["job", "watch", &job.job_id])
        .arg("--endpoints")
        .arg(cluster.endpoints().join(","))
        .args(cluster.client_flags())
        .output()?;
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("finished"));

    log_phase("a replica restarted after a snapshot no longer holds the first events");
    cluster.restart(leader)?;
    cluster.wait_for_leader(&cluster.ids(), DEADLINE).await?;
    let only = cluster.client_via(survivor)?;
    only.snapshot(Some(&cluster.addr(survivor)?)).await?;
    cluster.kill(survivor)?;
    cluster.restart(survivor)?;
    let refused = wait_for_refusal(&cluster.client_via(survivor)?).await?;
    assert_eq!(refused, Code::OutOfRange);
    Ok(())
}

async fn wait_for_started(seen: &Arc<Mutex<Vec<Event>>>, count: usize) -> anyhow::Result<()> {
    dispatcher::local_cluster::wait_for(DEADLINE, "shards to start", || async {
        let n = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.kind == "shard_started")
            .count();
        (n >= count).then_some(())
    })
    .await?;
    Ok(())
}

/// The code a replica answers `events --from-index 1` with, once it answers at all.
async fn wait_for_refusal(client: &Client) -> anyhow::Result<Code> {
    let code = dispatcher::local_cluster::wait_for(DEADLINE, "the replica to answer", || async {
        match client.follow_events(1, 0, None, |_| false).await {
            Err(ClientError::Rejected(status)) => Some(status.code()),
            Ok(()) => Some(Code::Ok),
            Err(_) => None,
        }
    })
    .await?;
    Ok(code)
}
