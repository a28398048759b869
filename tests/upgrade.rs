//! A real mixed-version cluster. Three replicas and two agents of the previous release
//! (v0.1.0, built from its tag by scripts/build-release.sh) are replaced one at a time by
//! this build while a steady workload submits jobs that use every scheduling feature
//! (priorities, tenants, `--after`, gangs, resources, time limits); then the cluster is
//! downgraded and runs on the old binaries again.
//!
//! Checked: nothing acknowledged is lost, no shard runs to its end twice, no replica stops
//! over what another wrote; a kind of cluster version 2 (`tm undrain`) is refused with
//! FAILED_PRECONDITION naming the replicas still on the old release until the last one runs
//! this build, and accepted after; the downgrade leaves every data dir readable by v0.1.0.

mod common;

use common::*;
use dispatcher::client::Client;
use dispatcher::pb::api::{ResourceAmounts, SubmitRequest};
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Each shard leaves a mark named after its job and index once it has run to its end; one
/// that finds its mark already there ran to its end before, and says so.
fn marking_command(marks: &Path) -> (String, Vec<String>) {
    let script = r#"m="$0/$DISPATCHER_JOB_ID.$DISPATCHER_SHARD_INDEX"; [ -e "$m" ] && echo "$DISPATCHER_JOB_ID.$DISPATCHER_SHARD_INDEX attempt $DISPATCHER_ATTEMPT" >> "$0/DUPLICATES"; : > "$m""#;
    (
        "/bin/sh".to_string(),
        vec![
            "-c".to_string(),
            script.to_string(),
            marks.display().to_string(),
        ],
    )
}

/// No shard found its mark already there.
fn assert_no_shard_ran_twice(marks: &Path) {
    let duplicates = std::fs::read_to_string(marks.join("DUPLICATES")).unwrap_or_default();
    assert!(
        duplicates.is_empty(),
        "shards ran to their end twice:\n{duplicates}"
    );
}

/// The n-th job of the workload: the scheduling features in turn.
fn workload_job(n: u64, marks: &Path, previous: Option<&str>) -> SubmitRequest {
    let kind = n % 6;
    let shards = if kind == 3 { 2 } else { 1 + (n % 2) as u32 };
    let mut request = job_request(&format!("w{n}"), shards, 1, 3, marking_command(marks));
    request.idempotency_key = format!("upgrade-workload-{n}");
    match kind {
        1 => request.priority = Some(800),
        2 => request.after = previous.map(|p| vec![p.to_string()]).unwrap_or_default(),
        3 => request.gang = true,
        4 => request.tenant = "team-a".to_string(),
        5 => {
            request.resources = Some(ResourceAmounts {
                cpu_millis: 100,
                memory_bytes: 16 << 20,
                named: Default::default(),
            });
            request.timeout_ms = Some(60_000);
        }
        _ => {}
    }
    request
}

/// Submits the workload until stopped; answers the ids of the acknowledged jobs.
async fn run_workload(
    client: Client,
    marks: PathBuf,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<String>>>,
) {
    let mut n = 0u64;
    let mut previous: Option<String> = None;
    while !stop.load(Ordering::SeqCst) {
        let request = workload_job(n, &marks, previous.as_deref());
        // A submit that fails (an election under way) is not acknowledged: it is tried
        // again with the same idempotency key, so it is created at most once.
        if let Ok(reply) = client.submit(request).await {
            acknowledged
                .lock()
                .expect("acknowledged")
                .push(reply.job_id.clone());
            previous = Some(reply.job_id);
            n += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until the workload has had `more` jobs acknowledged since now.
async fn more_acknowledged(acknowledged: &Mutex<Vec<String>>, more: usize) -> anyhow::Result<()> {
    let target = acknowledged.lock().expect("acknowledged").len() + more;
    dispatcher::local_cluster::wait_for(DEADLINE, "more jobs acknowledged", || async {
        (acknowledged.lock().expect("acknowledged").len() >= target).then_some(())
    })
    .await?;
    Ok(())
}

/// The cluster version a replica's applied state holds.
async fn cluster_version(cluster: &TestCluster, id: u64) -> Option<u32> {
    let status = cluster.local_status(id).await?;
    Some(status.cluster_version.unwrap_or(1))
}

/// Replace replica `id`'s binary: kill -9, restart on `binary`, wait until a leader leads a
/// quorum again and this replica has caught up with it.
async fn replace_replica(cluster: &mut TestCluster, id: u64, binary: &Path) -> anyhow::Result<()> {
    cluster.kill(id)?;
    cluster.set_binary(binary);
    cluster.restart(id)?;
    let leader = cluster.wait_for_leader(&cluster.ids(), DEADLINE).await?;
    let target = cluster
        .local_status(leader)
        .await
        .map_or(0, |s| s.last_applied);
    let cluster_ref = &*cluster;
    dispatcher::local_cluster::wait_for(DEADLINE, "the replica caught up", || async move {
        let status = cluster_ref.local_status(id).await?;
        (status.last_applied >= target).then_some(())
    })
    .await?;
    for other in cluster.ids() {
        anyhow::ensure!(
            cluster.is_running(other),
            "replica {other} stopped after replica {id} restarted on {}",
            binary.display()
        );
    }
    Ok(())
}

/// `tm undrain` sent to replica `via`: refused while `old` run the previous release, naming
/// each of them.
async fn undrain_refused_naming(
    cluster: &TestCluster,
    via: u64,
    old: &[u64],
) -> anyhow::Result<()> {
    let refusal = cluster
        .client_via(via)?
        .undrain_taskmanager("tm-a")
        .await
        .expect_err("tm undrain is refused while replicas run v0.1.0");
    assert_eq!(
        refusal.code(),
        Some(tonic::Code::FailedPrecondition),
        "{refusal}"
    );
    let text = refusal.to_string();
    assert!(text.contains("needs cluster version 2"), "{text}");
    for id in old {
        let addr = cluster.addr(*id)?;
        assert!(
            text.contains(&format!("{id} at {addr} (0.1.0")),
            "replica {id} not named: {text}"
        );
    }
    Ok(())
}

/// Drain an agent until it runs nothing, restart it on `binary`, and let it take shards
/// again (the drain outlives the restart; undrain is a kind of cluster version 2).
async fn replace_agent(
    cluster: &mut TestCluster,
    client: &Client,
    id: &str,
    binary: &Path,
) -> anyhow::Result<()> {
    client.drain_taskmanager(id, Some(120)).await?;
    dispatcher::local_cluster::wait_for(DEADLINE, "the agent runs nothing", || async {
        let tms = client.list_taskmanagers().await.ok()?;
        tms.iter()
            .find(|t| t.id == id)
            .filter(|t| t.used_slots == 0)
            .map(|_| ())
    })
    .await?;
    cluster.kill_taskmanager(id)?;
    cluster.set_binary(binary);
    cluster.restart_taskmanager(id)?;
    dispatcher::local_cluster::wait_for(DEADLINE, "the agent registered again", || async {
        let tms = client.list_taskmanagers().await.ok()?;
        tms.iter()
            .find(|t| t.id == id && t.state == "draining")
            .map(|_| ())
    })
    .await?;
    client.undrain_taskmanager(id).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_upgrade_from_the_previous_release_and_back() -> anyhow::Result<()> {
    let old = old_release_binary()?;
    let new = PathBuf::from(BINARY);

    log_phase("a cluster of v0.1.0: three replicas, two agents");
    let mut cluster = start_cluster_on(&old, 3, test_config()).await?;
    cluster.start_taskmanager("tm-a", 4, &[])?;
    cluster.start_taskmanager("tm-b", 4, &[])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 2).await?;
    let marks = cluster.dir.path().join("marks");
    std::fs::create_dir_all(&marks)?;

    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let workload = tokio::spawn(run_workload(
        cluster.client()?,
        marks.clone(),
        stop.clone(),
        acknowledged.clone(),
    ));
    dispatcher::local_cluster::wait_for(DEADLINE, "the workload under way", || async {
        (acknowledged.lock().expect("acknowledged").len() >= 10).then_some(())
    })
    .await?;

    log_phase("replicas replaced one at a time; tm undrain refused until the last");
    let mut still_old: Vec<u64> = cluster.ids();
    for id in cluster.ids() {
        replace_replica(&mut cluster, id, &new).await?;
        more_acknowledged(&acknowledged, 5).await?;
        still_old.retain(|o| *o != id);
        if !still_old.is_empty() {
            assert_eq!(cluster_version(&cluster, id).await, Some(1));
            undrain_refused_naming(&cluster, id, &still_old).await?;
        }
    }
    let ids = cluster.ids();
    let newest = dispatcher::formats::MAX_CLUSTER_VERSION;
    dispatcher::local_cluster::wait_for(
        DEADLINE,
        "the newest cluster version everywhere",
        || async {
            for id in &ids {
                if cluster_version(&cluster, *id).await != Some(newest) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await?;

    log_phase("agents replaced: drained, restarted on this build, undrained");
    replace_agent(&mut cluster, &client, "tm-a", &new).await?;
    more_acknowledged(&acknowledged, 5).await?;
    replace_agent(&mut cluster, &client, "tm-b", &new).await?;
    more_acknowledged(&acknowledged, 5).await?;

    log_phase("the workload stops; every acknowledged job finishes, none ran twice");
    stop.store(true, Ordering::SeqCst);
    workload.await?;
    let jobs = acknowledged.lock().expect("acknowledged").clone();
    for job in &jobs {
        wait_job_state(&client, job, &["finished"], DEADLINE).await?;
    }
    assert_no_shard_ran_twice(&marks);

    let ids = cluster.ids();
    cluster.wait_converged(&ids, DEADLINE).await?;

    log_phase("a schedule holds the downgrade back until it is deleted");
    client
        .add_schedule(dispatcher::pb::api::AddScheduleRequest {
            name: "nightly".into(),
            schedule: "0 3 * * *".into(),
            job: Some(submit_request("nightly", 1, "")),
            ..Default::default()
        })
        .await?;
    let held = cli(&cluster, &["cluster", "downgrade", "1"])?;
    let said = String::from_utf8_lossy(&held.stderr);
    assert!(
        !held.status.success() && said.contains("cron delete"),
        "{said}"
    );
    let deleted = cli(&cluster, &["cron", "delete", "nightly"])?;
    assert!(deleted.status.success(), "{deleted:?}");

    log_phase("downgrade to version 1, then every replica back on v0.1.0");
    let output = cli(&cluster, &["cluster", "downgrade", "1", "--output", "json"])?;
    assert!(
        output.status.success(),
        "downgrade failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(reply["cluster_version"], 1, "{reply}");
    for replica in reply["replicas"].as_array().expect("replicas") {
        assert_eq!(replica["ready"], true, "{reply}");
    }
    for id in cluster.ids() {
        replace_replica(&mut cluster, id, &old).await?;
    }
    for job in &jobs {
        wait_job_state(&client, job, &["finished"], DEADLINE).await?;
    }
    let mut after = job_request("after-downgrade", 2, 1, 3, marking_command(&marks));
    after.after = vec![jobs.last().expect("a job").clone()];
    let job = client.submit(after).await?.job_id;
    wait_job_state(&client, &job, &["finished"], DEADLINE).await?;
    assert_no_shard_ran_twice(&marks);
    let ids = cluster.ids();
    cluster.wait_converged(&ids, DEADLINE).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_of_an_older_release_is_not_added_to_a_cluster_it_cannot_read(
) -> anyhow::Result<()> {
    let old = old_release_binary()?;
    // Every replica runs this build: the cluster is at the newest version.
    let mut cluster = start_cluster(3, test_config()).await?;
    cluster.set_binary(&old);
    let addr = cluster.start_extra_replica(4)?;
    let cluster_ref = &cluster;
    dispatcher::local_cluster::wait_for(DEADLINE, "replica 4 answers", || async move {
        cluster_ref.local_status(4).await.map(|_| ())
    })
    .await?;
    let output = cli(&cluster, &["cluster", "add", "4", &addr])?;
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "replica 4 was added");
    assert!(
        said.contains("runs release 0.1.0")
            && said.contains(&format!(
                "the cluster runs at {}",
                dispatcher::formats::MAX_CLUSTER_VERSION
            )),
        "{said}"
    );
    let status = cluster.client()?.cluster_status().await?;
    assert_eq!(status.members.len(), 3, "{status:?}");
    Ok(())
}

/// A leader of this release replicates to a follower still on the previous one, which has no
/// append stream: it is sent unary appends instead, and keeps up. With TLS too, where v0.1.0
/// refuses the unknown method before gRPC sees it (PERMISSION_DENIED, not UNIMPLEMENTED).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_of_this_release_keeps_a_follower_of_the_previous_one_up_to_date(
) -> anyhow::Result<()> {
    for secure in [false, true] {
        log_phase(if secure { "with TLS" } else { "insecure" });
        follower_of_the_previous_release_kept_up(secure).await?;
    }
    Ok(())
}

async fn follower_of_the_previous_release_kept_up(secure: bool) -> anyhow::Result<()> {
    let old = old_release_binary()?;
    let new = PathBuf::from(BINARY);
    let mut cluster = start_cluster_of(&old, 3, test_config(), secure).await?;
    replace_replica(&mut cluster, 1, &new).await?;
    replace_replica(&mut cluster, 2, &new).await?;
    let client = cluster.client()?;
    let leader = cluster.wait_for_leader(&cluster.ids(), DEADLINE).await?;
    if leader == 3 {
        client.transfer_leader(1).await?;
    }
    let leader = cluster.wait_for_leader(&[1, 2], DEADLINE).await?;
    for n in 0..10 {
        client
            .submit(job_request(
                &format!("mixed-{n}"),
                1,
                1,
                1,
                ("/bin/true".into(), vec![]),
            ))
            .await?;
    }
    let target = cluster
        .local_status(leader)
        .await
        .map_or(u64::MAX, |s| s.last_applied);
    let cluster_ref = &cluster;
    dispatcher::local_cluster::wait_for(DEADLINE, "replica 3 (v0.1.0) caught up", || async move {
        let status = cluster_ref.local_status(3).await?;
        (status.last_applied >= target).then_some(())
    })
    .await?;
    Ok(())
}

/// A downgrade's hold outlives a restart of the same binary (a crash or a reboot before the
/// binaries were replaced): every replica restarted still reports the lower version, so the
/// leader does not raise the cluster back and a kind above it stays refused, naming the
/// hold; `downgrade --cancel` lifts it and the leader raises the version again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downgrade_hold_outlives_a_restart_of_the_same_binary() -> anyhow::Result<()> {
    let mut cluster = start_cluster(3, test_config()).await?;
    let output = cli(&cluster, &["cluster", "downgrade", "2", "--output", "json"])?;
    assert!(output.status.success(), "downgrade failed: {output:?}");
    let reply: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(reply["cluster_version"], 2, "{reply}");

    log_phase("every replica killed and started again on this same build");
    for id in cluster.ids() {
        cluster.kill(id)?;
    }
    for id in cluster.ids() {
        cluster.restart(id)?;
    }
    let ids = cluster.ids();
    cluster.wait_for_leader(&ids, DEADLINE).await?;
    let cluster_ref = &cluster;
    dispatcher::local_cluster::wait_for(DEADLINE, "every replica held at 2", || async {
        for id in cluster_ref.ids() {
            let status = cluster_ref.local_status(id).await?;
            (status.held_at_version == Some(2)).then_some(())?;
        }
        Some(())
    })
    .await?;

    let schedule = || dispatcher::pb::api::AddScheduleRequest {
        name: "nightly".into(),
        schedule: "0 3 * * *".into(),
        job: Some(submit_request("nightly", 1, "")),
        ..Default::default()
    };
    let client = cluster.client()?;
    let refused = client
        .add_schedule(schedule())
        .await
        .expect_err("a schedule is a kind of version 3");
    assert_eq!(
        refused.code(),
        Some(tonic::Code::FailedPrecondition),
        "{refused}"
    );
    assert!(
        refused
            .to_string()
            .contains("held at version 2 by a downgrade"),
        "{refused}"
    );
    for id in cluster.ids() {
        assert_eq!(cluster_version(&cluster, id).await, Some(2));
    }

    log_phase("the hold lifted: the leader raises the version, the schedule is taken");
    let lifted = cli(&cluster, &["cluster", "downgrade", "--cancel"])?;
    assert!(lifted.status.success(), "cancel failed: {lifted:?}");
    let newest = dispatcher::formats::MAX_CLUSTER_VERSION;
    dispatcher::local_cluster::wait_for(DEADLINE, "the newest version again", || async {
        for id in cluster_ref.ids() {
            (cluster_version(cluster_ref, id).await? == newest).then_some(())?;
        }
        Some(())
    })
    .await?;
    client.add_schedule(schedule()).await?;
    Ok(())
}
