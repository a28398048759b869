//! Shard lifecycle with real agents: retries with growing back-off, exclusion of a flaky
//! TaskManager, cancel, drain, agent restart, and refused reports.

mod common;

use common::records::*;
use common::*;
use dispatcher::client::ClientError;
use dispatcher::local_cluster::wait_for;
use dispatcher::pb::api::task_managers_client::TaskManagersClient;
use dispatcher::pb::api::{RegisterTaskManagerRequest, ReportKind, ShardReport, ShardReportBatch};
use std::process::Command;
use tonic::Code;

/// Once the leader no longer lists a job's runs, each agent's shard host takes their
/// directories back into its pool: the job leaves no directory behind in any work dir.
async fn wait_run_dirs_recycled(
    cluster: &TestCluster,
    job_id: &str,
    agents: &[&str],
) -> anyhow::Result<()> {
    let dirs = agents
        .iter()
        .map(|id| Ok(cluster.taskmanager(id)?.work_dir.clone()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    wait_for(
        DEADLINE,
        "the job's run directories to be recycled",
        || async {
            dirs.iter()
                .all(|dir| !dir.join(job_id).exists())
                .then_some(())
        },
    )
    .await?;
    let pooled: usize = dirs
        .iter()
        .map(|dir| std::fs::read_dir(dir.join(".free")).map_or(0, |d| d.count()))
        .sum();
    assert!(pooled > 0, "finished run directories wait in the pool");
    Ok(())
}

async fn setup(tms: &[(&str, u32)]) -> anyhow::Result<(TestCluster, Recorder)> {
    let mut cluster = start_cluster(3, test_config()).await?;
    let recorder = Recorder::new(cluster.dir.path())?;
    for (id, slots) in tms {
        cluster.start_taskmanager(id, *slots, &[])?;
    }
    wait_taskmanagers_alive(&cluster.client()?, tms.len()).await?;
    Ok((cluster, recorder))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_shard_is_retried_with_growing_gaps_then_the_job_fails() -> anyhow::Result<()> {
    let (cluster, rec) = setup(&[("tm-0", 2), ("tm-1", 2)]).await?;
    let client = cluster.client()?;
    let job = client
        .submit(job_request(
            "always-fails",
            1,
            1,
            3,
            rec.command(0, "always-fail"),
        ))
        .await?;
    let done = wait_job_state(&client, &job.job_id, &["failed", "finished"], DEADLINE).await?;
    assert_eq!(done.state, "failed");
    let shard = &done.shards[0];
    assert_eq!(shard.state, "failed");
    assert_eq!(shard.failures, 3);
    assert_eq!(shard.exit_code, Some(7));
    assert!(
        shard
            .error
            .as_deref()
            .unwrap_or("")
            .contains("failing on purpose"),
        "{shard:?}"
    );

    let mut runs = of_job(&rec.executions(), &job.job_id)
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    runs.sort_by_key(|e| e.start_ms);
    assert_eq!(runs.len(), 3, "tried max-attempts times: {runs:#?}");
    let gap1 = runs[1].start_ms - runs[0].last_ms;
    let gap2 = runs[2].start_ms - runs[1].last_ms;
    eprintln!("retry gaps: {gap1} ms, {gap2} ms");
    // Back-off 1 s then 2 s, each ±25 %: the second gap is always the longer.
    assert!(gap1 >= 700, "first retry came too soon: {gap1} ms");
    assert!(gap2 > gap1, "gaps must grow: {gap1} ms then {gap2} ms");

    log_phase("job wait reports the failure with exit code 1");
    let out = Command::new(BINARY)
        .args(["job", "wait", &job.job_id, "--timeout", "5", "--endpoints"])
        .arg(cluster.endpoints().join(","))
        .args(cluster.client_flags())
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    wait_run_dirs_recycled(&cluster, &job.job_id, &["tm-0", "tm-1"]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_taskmanager_is_excluded_and_the_shards_finish_elsewhere() -> anyhow::Result<()> {
    let (cluster, rec) = setup(&[("tm-0", 3), ("tm-1", 3), ("tm-2", 3)]).await?;
    let client = cluster.client()?;
    // Nine shards spread three per TaskManager; every run on tm-0 fails.
    let job = client
        .submit(job_request(
            "flaky",
            9,
            1,
            3,
            rec.command(200, "fail-on:tm-0"),
        ))
        .await?;
    let done = wait_job_state(&client, &job.job_id, &["finished", "failed"], DEADLINE).await?;
    assert_eq!(done.state, "finished", "{done:#?}");
    let tms = client.list_taskmanagers().await?;
    let flaky = tms.iter().find(|t| t.id == "tm-0").expect("tm-0");
    assert!(flaky.shard_failures >= 3);
    assert!(
        flaky.excluded_until_ms.is_some(),
        "tm-0 should be excluded: {flaky:?}"
    );

    let runs = rec.executions();
    assert_each_finished_once(&runs, &job.job_id, 9);
    assert!(runs
        .iter()
        .filter(|e| e.ended)
        .all(|e| e.taskmanager != "tm-0"));

    log_phase("an excluded TaskManager takes no new shards");
    let next = client
        .submit(job_request("after", 3, 1, 3, rec.command(100, "")))
        .await?;
    let next = wait_job_state(&client, &next.job_id, &["finished"], DEADLINE).await?;
    assert!(next
        .shards
        .iter()
        .all(|s| s.taskmanager.as_deref() != Some("tm-0")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_processes() -> anyhow::Result<()> {
    let (cluster, rec) = setup(&[("tm-0", 2), ("tm-1", 2)]).await?;
    let client = cluster.client()?;
    let job = client
        .submit(job_request("long", 3, 1, 3, rec.command(60_000, "")))
        .await?;
    wait_all_running(&client, &job.job_id).await?;
    let cancelled_at = now_ms();
    let reply = client.cancel_job(&job.job_id).await?;
    assert_eq!(reply.shards_cancelled, 3);
    let status = client.job_status(&job.job_id).await?;
    assert_eq!(status.state, "cancelled");
    // Every process stops within a heartbeat or two.
    wait_for(DEADLINE, "the cancelled shards to stop ticking", || async {
        let runs = rec.executions();
        let mine = of_job(&runs, &job.job_id);
        (now_ms() > cancelled_at + 1_500 && mine.iter().all(|e| e.last_ms < now_ms() - 1_000))
            .then_some(())
    })
    .await?;
    let runs = rec.executions();
    for e in of_job(&runs, &job.job_id) {
        assert!(!e.ended);
        assert!(
            e.last_ms < cancelled_at + 2_000,
            "still running after cancel: {e:?}"
        );
    }
    let tms = client.list_taskmanagers().await?;
    assert!(tms.iter().all(|t| t.used_slots == 0), "{tms:?}");
    wait_run_dirs_recycled(&cluster, &job.job_id, &["tm-0", "tm-1"]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lets_running_shards_finish_then_holds_nothing() -> anyhow::Result<()> {
    let (mut cluster, rec) = setup(&[("tm-0", 2), ("tm-1", 2)]).await?;
    let client = cluster.client()?;

    log_phase("drain while shards run: they finish, nothing new lands there");
    let job = client
        .submit(job_request("drain-a", 4, 1, 3, rec.command(2_000, "")))
        .await?;
    wait_all_running(&client, &job.job_id).await?;
    client.drain_taskmanager("tm-0", Some(120)).await?;
    let more = client
        .submit(job_request("drain-b", 2, 1, 3, rec.command(100, "")))
        .await?;
    let done = wait_job_state(&client, &job.job_id, &["finished"], DEADLINE).await?;
    assert!(done
        .shards
        .iter()
        .any(|s| s.taskmanager.as_deref() == Some("tm-0")));
    let more = wait_job_state(&client, &more.job_id, &["finished"], DEADLINE).await?;
    assert!(more
        .shards
        .iter()
        .all(|s| s.taskmanager.as_deref() == Some("tm-1")));
    let tm0 = client
        .list_taskmanagers()
        .await?
        .into_iter()
        .find(|t| t.id == "tm-0")
        .expect("tm-0");
    assert_eq!((tm0.state.as_str(), tm0.used_slots), ("draining", 0));

    log_phase("drain with a short deadline: long shards are stopped and re-placed");
    let long = client
        .submit(job_request("drain-c", 2, 1, 3, rec.command(4_000, "")))
        .await?;
    let running = wait_all_running(&client, &long.job_id).await?;
    assert!(running
        .shards
        .iter()
        .all(|s| s.taskmanager.as_deref() == Some("tm-1")));
    cluster.start_taskmanager("tm-2", 2, &[])?;
    wait_taskmanagers_alive(&client, 2).await?;
    client.drain_taskmanager("tm-1", Some(1)).await?;
    let done = wait_job_state(&client, &long.job_id, &["finished"], DEADLINE).await?;
    assert!(
        done.shards
            .iter()
            .all(|s| s.taskmanager.as_deref() == Some("tm-2")),
        "{done:#?}"
    );
    let runs = rec.executions();
    assert_each_finished_once(&runs, &long.job_id, 2);
    assert_no_overlap(&runs);
    assert!(of_job(&runs, &long.job_id)
        .iter()
        .any(|e| e.taskmanager == "tm-1" && !e.ended));
    let tm1 = client
        .list_taskmanagers()
        .await?
        .into_iter()
        .find(|t| t.id == "tm-1")
        .expect("tm-1");
    assert_eq!((tm1.state.as_str(), tm1.used_slots), ("draining", 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_agent_runs_nothing_twice() -> anyhow::Result<()> {
    let (mut cluster, rec) = setup(&[("tm-0", 4)]).await?;
    let client = cluster.client()?;

    log_phase("a finished job stays finished across an agent restart");
    let quick = client
        .submit(job_request("quick", 4, 1, 3, rec.command(100, "")))
        .await?;
    wait_job_state(&client, &quick.job_id, &["finished"], DEADLINE).await?;

    log_phase("kill -9 the agent mid-run and restart it on the same work dir at once");
    let job = client
        .submit(job_request("restart", 4, 1, 3, rec.command(1_500, "")))
        .await?;
    wait_all_running(&client, &job.job_id).await?;
    cluster.kill_taskmanager("tm-0")?;
    cluster.restart_taskmanager("tm-0")?;
    let done = wait_job_state(&client, &job.job_id, &["finished", "failed"], DEADLINE).await?;
    assert_eq!(done.state, "finished");
    // The cut-short runs counted as interrupted, not as failures.
    assert!(
        done.shards
            .iter()
            .all(|s| s.failures == 0 && s.attempt == 2),
        "{done:#?}"
    );

    let runs = rec.executions();
    assert_each_finished_once(&runs, &quick.job_id, 4);
    assert_eq!(
        of_job(&runs, &quick.job_id).len(),
        4,
        "the finished job ran again"
    );
    assert_each_finished_once(&runs, &job.job_id, 4);
    assert_no_overlap(&runs);
    Ok(())
}

fn expect_refused<T: std::fmt::Debug>(result: Result<T, ClientError>, code: Code, words: &str) {
    match result {
        Err(e) => {
            assert_eq!(e.code(), Some(code), "{e}");
            assert!(
                e.to_string().contains(words),
                "'{e}' should mention '{words}'"
            );
        }
        Ok(v) => panic!("expected {code:?}, got {v:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reports_are_refused_and_change_nothing() -> anyhow::Result<()> {
    let (cluster, rec) = setup(&[("tm-0", 2)]).await?;
    let client = cluster.client()?;
    let job = client
        .submit(job_request("reports", 1, 1, 3, rec.command(60_000, "")))
        .await?;
    let running = wait_all_running(&client, &job.job_id).await?;
    let epoch = running.shards[0].epoch;
    let ids = cluster.ids();
    let before = cluster.wait_converged(&ids, DEADLINE).await?.1;

    // Reports as the agent itself would send them (its incarnation), but wrong in one field.
    let incarnation = client
        .list_taskmanagers()
        .await?
        .iter()
        .find(|t| t.id == "tm-0")
        .map_or(0, |t| t.incarnation);
    let report = |tm: &str, job_id: &str, index: u32, epoch: u64| ShardReport {
        incarnation,
        taskmanager_id: tm.to_string(),
        job_id: job_id.to_string(),
        index,
        epoch,
        kind: ReportKind::Finished as i32,
        exit_code: Some(0),
        error: String::new(),
        run_ms: 1,
        ..ShardReport::default()
    };
    let send = |r: ShardReport| {
        let client = &client;
        async move {
            client
                .call(|ch| {
                    let r = r.clone();
                    async move { TaskManagersClient::new(ch).report_shard(r).await }
                })
                .await
        }
    };
    expect_refused(
        send(report("tm-0", &job.job_id, 7, epoch)).await,
        Code::NotFound,
        "no shard 7",
    );
    expect_refused(
        send(report("tm-0", &job.job_id, 0, epoch - 1)).await,
        Code::FailedPrecondition,
        "stale",
    );
    expect_refused(
        send(report("tm-0", "j-999999", 0, epoch)).await,
        Code::NotFound,
        "not found",
    );
    expect_refused(
        send(report("tm-nope", &job.job_id, 0, epoch)).await,
        Code::NotFound,
        "tm-nope",
    );
    expect_refused(
        send(report("tm-0", "banana", 0, epoch)).await,
        Code::InvalidArgument,
        "j-42",
    );
    let zero = RegisterTaskManagerRequest {
        id: "tm-zero".into(),
        addr: "127.0.0.1:0".into(),
        slots: 0,
        labels: Default::default(),
        ..Default::default()
    };
    expect_refused(
        client.register_taskmanager(zero).await,
        Code::InvalidArgument,
        "slots",
    );

    // A follower refuses a batch as a whole, naming the leader: were it to answer OK with
    // each report refused inside, the agent would keep sending to it and never learn where
    // the leader is.
    let leader = client.cluster_status().await?.leader_id.expect("a leader");
    let follower = *ids.iter().find(|id| **id != leader).expect("a follower");
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.addr(follower)?))?
            .connect()
            .await?;
    let refused = TaskManagersClient::new(channel)
        .report_shards(ShardReportBatch {
            reports: vec![report("tm-0", &job.job_id, 0, epoch)],
        })
        .await
        .expect_err("a follower must not accept a batch");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(
        refused
            .metadata()
            .get(dispatcher::rpc::LEADER_ADDR_HEADER)
            .and_then(|v| v.to_str().ok()),
        Some(cluster.addr(leader)?.as_str()),
        "the refusal names the leader"
    );

    assert_eq!(
        cluster.wait_converged(&ids, DEADLINE).await?.1,
        before,
        "a refused report changed the state"
    );
    let still = client.job_status(&job.job_id).await?;
    assert_eq!(still.shards[0].state, "running");
    Ok(())
}
