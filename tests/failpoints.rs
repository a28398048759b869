//! Crashes at the worst moments, with the `failpoints` feature:
//! `cargo test --features failpoints --test failpoints`.
//! Each crash is followed by a restart, and then the checks: every acknowledged submission is
//! there exactly once, and every replica converges on the same state digest.
#![cfg(feature = "failpoints")]

mod common;

use common::*;
use dispatcher::config::SnapshotSettings;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

fn armed(point: &str, action: &str) -> Vec<(String, String)> {
    vec![("FAILPOINTS".to_string(), format!("{point}={action}"))]
}

/// Arm `point` on every replica (one at a time, keeping a quorum), submit until some replica
/// has crashed on it, restart crashed replicas disarmed, then check.
/// Wait for a leader while armed replicas may crash: every flush may abort one (votes of a
/// slow election on a loaded machine too), so crashed ones are started again, still armed,
/// rather than left to take the quorum with them.
async fn leader_while_armed(
    cluster: &mut dispatcher::local_cluster::LocalCluster,
    ids: &[u64],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        for id in ids {
            if !cluster.is_running(*id) {
                cluster.restart(*id)?;
            }
        }
        if cluster
            .wait_for_leader(ids, Duration::from_secs(2))
            .await
            .is_ok()
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no leader within {DEADLINE:?} while armed"
        );
    }
}

async fn crash_while_submitting(point: &str) -> anyhow::Result<()> {
    let mut cluster = start_cluster(3, test_config()).await?;
    let ids = cluster.ids();
    log_phase(&format!("arm {point} on every replica"));
    for id in &ids {
        cluster.kill(*id)?;
        cluster.set_env(*id, armed(point, "3%return"))?;
        cluster.restart(*id)?;
        leader_while_armed(&mut cluster, &ids).await?;
    }
    let client = cluster.client()?;
    let mut acknowledged: BTreeMap<String, String> = BTreeMap::new();
    let mut crashed: BTreeSet<u64> = BTreeSet::new();
    let started = Instant::now();
    let mut i = 0;
    while (crashed.is_empty() || i < 60) && started.elapsed() < Duration::from_secs(90) {
        let key = format!("fp-{i}");
        i += 1;
        if let Ok(reply) = client.submit(submit_request(&key, 1, &key)).await {
            acknowledged.insert(key, reply.job_id);
        }
        for id in &ids {
            if !cluster.is_running(*id) {
                crashed.insert(*id);
                cluster.set_env(*id, Vec::new())?;
                cluster.restart(*id)?;
            }
        }
    }
    assert!(!crashed.is_empty(), "failpoint {point} never fired");
    eprintln!(
        "{point}: replicas {crashed:?} crashed; {} submissions acknowledged",
        acknowledged.len()
    );

    log_phase("disarm and restart everything, then check");
    for id in &ids {
        cluster.kill(*id)?;
        cluster.set_env(*id, Vec::new())?;
        cluster.restart(*id)?;
    }
    cluster.wait_for_leader(&ids, DEADLINE).await?;
    // Resubmitting every key is idempotent: same job, nothing new.
    for (key, job_id) in &acknowledged {
        let again = client.submit(submit_request(key, 1, key)).await?;
        assert_eq!(&again.job_id, job_id, "{key}");
        assert!(!again.created);
    }
    let jobs = client.list_jobs().await?;
    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(names.len(), unique.len(), "a key produced two jobs");
    for job_id in acknowledged.values() {
        assert!(
            jobs.iter().any(|j| &j.job_id == job_id),
            "acknowledged {job_id} lost"
        );
    }
    cluster.wait_converged(&ids, DEADLINE).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_log_flush_before_apply() -> anyhow::Result<()> {
    crash_while_submitting("log-after-flush").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_apply_before_response() -> anyhow::Result<()> {
    crash_while_submitting("apply-before-response").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_snapshot_install() -> anyhow::Result<()> {
    let mut config = test_config();
    config.snapshot = SnapshotSettings {
        every_entries: 20,
        keep_entries: 5,
    };
    let mut cluster = start_cluster(3, config).await?;
    let ids = cluster.ids();
    let client = cluster.client()?;
    for point in [
        "snapshot-install-before-save",
        "snapshot-install-after-save",
    ] {
        log_phase(&format!(
            "a follower behind a compacted log, armed with {point}"
        ));
        let leader = cluster.wait_for_leader(&ids, DEADLINE).await?;
        let follower = *ids.iter().find(|i| **i != leader).expect("follower");
        let behind = cluster
            .local_status(follower)
            .await
            .map(|s| s.last_log_index)
            .unwrap_or(0);
        cluster.kill(follower)?;
        for i in 0..60 {
            let key = format!("{point}-{i}");
            client.submit(submit_request(&key, 1, &key)).await?;
        }
        // Only a snapshot can catch it up once the leader purged past where it stopped.
        dispatcher::local_cluster::wait_for(
            DEADLINE,
            "the leader to purge past the follower",
            || async {
                cluster
                    .local_status(leader)
                    .await?
                    .purged_index
                    .filter(|p| *p > behind)
            },
        )
        .await?;
        cluster.set_env(follower, armed(point, "1*return"))?;
        cluster.restart(follower)?;
        let crashed = dispatcher::local_cluster::wait_for(
            DEADLINE,
            "the follower to crash installing the snapshot",
            || {
                let running = cluster.is_running(follower);
                async move { (!running).then_some(()) }
            },
        )
        .await;
        crashed?;
        log_phase("restart it disarmed: it converges");
        cluster.set_env(follower, Vec::new())?;
        cluster.restart(follower)?;
        cluster.wait_converged(&ids, DEADLINE).await?;
    }
    assert_eq!(client.list_jobs().await?.len(), 120);
    Ok(())
}

/// A TaskManager must never be declared lost by the registration that introduces it. The
/// failure detector reads the state each tick; between the registration's apply and the
/// reply to the agent, it once saw a TaskManager it had never heard from, counted its silence
/// from when this replica became leader, and declared it lost at once (`silent_ms=0`). The
/// delay point holds every registration in that window for several ticks; without contact
/// recorded before the write, each one is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taskmanager_is_never_declared_lost_as_it_registers() -> anyhow::Result<()> {
    use dispatcher::pb::api::task_managers_client::TaskManagersClient;
    use dispatcher::pb::api::{HeartbeatRequest, RegisterTaskManagerRequest};
    use std::sync::{Arc, Mutex};

    let mut config = test_config();
    config.taskmanagers.grace_ms = 500;
    let mut cluster = start_cluster(3, config).await?;
    let ids = cluster.ids();
    for id in &ids {
        cluster.kill(*id)?;
        cluster.set_env(*id, armed("registration-applied", "sleep(400)"))?;
        cluster.restart(*id)?;
        cluster.wait_for_leader(&ids, DEADLINE).await?;
    }
    let client = Arc::new(cluster.client()?);

    log_phase("a silent canary is declared lost: the detector is past its grace");
    client
        .register_taskmanager(RegisterTaskManagerRequest {
            id: "canary".into(),
            addr: "127.0.0.1:1".into(),
            slots: 1,
            incarnation: 1,
            ..Default::default()
        })
        .await?;
    dispatcher::local_cluster::wait_for(DEADLINE, "the canary to be declared lost", || async {
        let tms = client.list_taskmanagers().await.ok()?;
        tms.iter()
            .any(|t| t.id == "canary" && t.state == "lost")
            .then_some(())
    })
    .await?;

    log_phase("many TaskManagers register, each heartbeating from then on");
    let registered: Arc<Mutex<Vec<(String, u64, u64)>>> = Arc::default();
    let beating = {
        let registered = registered.clone();
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                let round: Vec<_> = registered.lock().unwrap().clone();
                let beats = round.into_iter().map(|(id, epoch, incarnation)| {
                    let client = client.clone();
                    async move {
                        let request = HeartbeatRequest {
                            taskmanager_id: id,
                            registration_epoch: epoch,
                            incarnation,
                            ..Default::default()
                        };
                        let _ = client
                            .call(|ch| {
                                let r = request.clone();
                                async move { TaskManagersClient::new(ch).heartbeat(r).await }
                            })
                            .await;
                    }
                });
                futures::future::join_all(beats).await;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        })
    };
    const COUNT: u64 = 5;
    for i in 0..COUNT {
        let id = format!("fresh-{i}");
        let reply = client
            .register_taskmanager(RegisterTaskManagerRequest {
                id: id.clone(),
                addr: format!("127.0.0.1:{}", 2000 + i),
                slots: 1,
                incarnation: i + 1,
                ..Default::default()
            })
            .await?;
        registered
            .lock()
            .unwrap()
            .push((id, reply.registration_epoch, i + 1));
    }
    let tms = client.list_taskmanagers().await?;
    beating.abort();
    let lost: Vec<&str> = tms
        .iter()
        .filter(|t| t.id.starts_with("fresh-") && t.state != "alive")
        .map(|t| t.id.as_str())
        .collect();
    assert!(
        lost.is_empty(),
        "declared lost as they registered: {lost:?}"
    );
    assert_eq!(
        tms.iter().filter(|t| t.id.starts_with("fresh-")).count() as u64,
        COUNT
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_plan_cannot_take_a_tenant_past_a_quota_lowered_meanwhile() -> anyhow::Result<()> {
    // The leader plans four shards of "team" under a quota of 4 and proposes the plan only
    // 2 s later; meanwhile the quota drops to 2. Once, apply checked slots but not quotas,
    // and all four started.
    let mut cluster = start_cluster(3, test_config()).await?;
    let ids = cluster.ids();
    for id in &ids {
        cluster.kill(*id)?;
        cluster.set_env(*id, armed("placement-planned", "1*return"))?;
        cluster.restart(*id)?;
        cluster.wait_for_leader(&ids, DEADLINE).await?;
    }
    cluster.start_taskmanager("tm", 8, &[])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 1).await?;
    client.set_quota("team", Some(4), false, None).await?;
    let mut request = job_request(
        "team-job",
        4,
        1,
        1,
        ("/bin/sleep".to_string(), vec!["30".to_string()]),
    );
    request.tenant = "team".into();
    let job = client.submit(request).await?.job_id;
    log_phase("the plan is made; lower the quota before it reaches the log");
    let logs: Vec<std::path::PathBuf> = ids
        .iter()
        .map(|id| cluster.replica(*id).map(|r| r.log_file.clone()))
        .collect::<Result<_, _>>()?;
    dispatcher::local_cluster::wait_for(DEADLINE, "the plan to be held back", || async {
        logs.iter()
            .any(|log| {
                std::fs::read_to_string(log)
                    .is_ok_and(|text| text.contains("failpoint placement-planned fired"))
            })
            .then_some(())
    })
    .await?;
    client.set_quota("team", Some(2), false, None).await?;
    log_phase("the late plan is applied: no more than the new quota holds slots");
    let holding = |status: &dispatcher::pb::api::JobStatus| {
        status
            .shards
            .iter()
            .filter(|s| s.state == "assigned" || s.state == "running")
            .count()
    };
    let placed = dispatcher::local_cluster::wait_for(DEADLINE, "the plan to land", || async {
        let status = client.job_status(&job).await.ok()?;
        (holding(&status) > 0).then_some(status)
    })
    .await?;
    assert_eq!(holding(&placed), 2, "{placed:?}");
    let quotas = client.list_quotas().await?;
    let team = quotas.iter().find(|q| q.tenant == "team").expect("team");
    assert_eq!(team.running_slots, 2, "{team:?}");
    Ok(())
}
