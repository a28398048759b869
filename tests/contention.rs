//! Scheduling under contention with real agents (issue 24).

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_starting_a_burst_of_a_thousand_shards_keeps_them_all() -> anyhow::Result<()> {
    // Once, the shard host counted only keep-alives as signs of its agent's life; they queued
    // behind a thousand spawn requests, the host went 500 ms without one while it spawned,
    // and stopped every run "the agent went silent": the gang restarted again and again.
    let mut cluster = start_cluster(3, test_config()).await?;
    cluster.start_taskmanager("wide", 1000, &[])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 1).await?;
    let mut request = job_request(
        "burst",
        1000,
        1,
        1,
        ("/bin/sleep".to_string(), vec!["3".to_string()]),
    );
    request.gang = true;
    let job = client.submit(request).await?.job_id;
    let done = wait_job_state(&client, &job, &["finished", "failed"], DEADLINE * 4).await?;
    let restarted: Vec<(u32, u32)> = done
        .shards
        .iter()
        .filter(|s| s.attempt != 1)
        .map(|s| (s.index, s.attempt))
        .collect();
    anyhow::ensure!(
        done.state == "finished" && restarted.is_empty(),
        "the burst ran more than once: {} ({} shards with another attempt than 1, e.g. {:?}); {:?}",
        done.state,
        restarted.len(),
        restarted.first(),
        done.shards.iter().find_map(|s| s.error.clone())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_that_could_never_start_are_refused_at_submit() -> anyhow::Result<()> {
    let mut cluster = start_cluster(3, test_config()).await?;
    cluster.start_taskmanager("a", 4, &[])?;
    cluster.start_taskmanager("b", 4, &[])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 2).await?;
    client.set_quota("team", Some(6), false, None).await?;
    let refused = |mut request: dispatcher::pb::api::SubmitRequest, gang: bool| {
        request.gang = gang;
        request.tenant = "team".into();
        let client = &client;
        async move {
            let err = client.submit(request).await.expect_err("refused");
            assert_eq!(err.code(), Some(tonic::Code::FailedPrecondition), "{err}");
            err.to_string()
        }
    };
    let sleep = || ("/bin/sleep".to_string(), vec!["1".to_string()]);
    log_phase("a gang above its tenant's quota");
    let said = refused(job_request("big-gang", 7, 1, 1, sleep()), true).await;
    assert!(said.contains("quota of 6"), "{said}");
    log_phase("a shard wider than every agent");
    let said = refused(job_request("wide", 1, 5, 1, sleep()), false).await;
    assert!(
        said.contains("largest TaskManager that may run it has 4"),
        "{said}"
    );
    log_phase("a gang wider than all agents together (under an ample quota)");
    client.set_quota("team", Some(100), false, None).await?;
    let said = refused(job_request("huge-gang", 9, 1, 1, sleep()), true).await;
    assert!(said.contains("have 8 in all"), "{said}");
    log_phase("what fits is let in");
    let mut fits = job_request("fits", 8, 1, 1, sleep());
    fits.gang = true;
    fits.tenant = "team".into();
    let job = client.submit(fits).await?.job_id;
    wait_job_state(&client, &job, &["finished"], DEADLINE).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_its_time_limit_is_stopped_and_fails_timed_out() -> anyhow::Result<()> {
    let mut config = test_config();
    config.jobs.default_timeout_secs = Some(2);
    let mut cluster = start_cluster(3, config).await?;
    cluster.start_taskmanager("tm", 4, &[])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 1).await?;
    let started = std::time::Instant::now();
    let sleeper = || ("/bin/sleep".to_string(), vec!["60".to_string()]);
    log_phase("a job with --timeout 1s, and one with the cluster's default (2s)");
    let mut own = job_request("own", 1, 1, 2, sleeper());
    own.timeout_ms = Some(1_000);
    let own = client.submit(own).await?.job_id;
    let default = client
        .submit(job_request("default", 1, 1, 1, sleeper()))
        .await?
        .job_id;
    for (job, limit, attempts) in [(&own, "1s", 2), (&default, "2s", 1)] {
        let failed = wait_job_state(&client, job, &["failed"], DEADLINE).await?;
        let shard = &failed.shards[0];
        let error = shard.error.clone().unwrap_or_default();
        anyhow::ensure!(
            error.starts_with(&format!("timed out after {limit}")),
            "{job}: {error}"
        );
        anyhow::ensure!(shard.attempt == attempts, "{job}: {failed:?}");
    }
    anyhow::ensure!(
        started.elapsed() < std::time::Duration::from_secs(40),
        "the sleeps were cut short"
    );
    let status = client.job_status(&own).await?;
    assert_eq!(status.timeout_ms, Some(1_000));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preemptor_starts_only_once_its_victims_process_is_gone() -> anyhow::Result<()> {
    // The victim ignores SIGTERM, so it lives through its 2 s stop grace. Once, the room it
    // held was given away at once and the preemptor ran beside it on a one-slot agent.
    let mut cluster = start_cluster(3, test_config()).await?;
    cluster.start_taskmanager("one", 1, &[])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 1).await?;
    let pid_file = cluster.dir.path().join("victim.pid");
    let pid = pid_file.display();
    let sh = |name: &str, priority: u32, script: String| {
        let mut request = job_request(
            name,
            1,
            1,
            1,
            ("/bin/sh".to_string(), vec!["-c".to_string(), script]),
        );
        request.priority = Some(priority);
        request
    };
    let low = client
        .submit(sh(
            "victim",
            100,
            format!("trap '' TERM; echo $$ > {pid}.tmp; mv {pid}.tmp {pid}; sleep 30"),
        ))
        .await?
        .job_id;
    wait_all_running(&client, &low).await?;
    dispatcher::local_cluster::wait_for(DEADLINE, "the victim's pid", || async {
        pid_file.exists().then_some(())
    })
    .await?;
    log_phase("a higher priority preempts it; the preemptor looks for the victim's process");
    let high = client
        .submit(sh(
            "preemptor",
            900,
            format!("if kill -0 $(cat {pid}) 2>/dev/null; then echo beside; else echo alone; fi"),
        ))
        .await?
        .job_id;
    wait_job_state(&client, &high, &["finished"], DEADLINE).await?;
    let out = client.shard_output(&high, 0).await?;
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(said, "alone", "the preemptor ran beside its victim");
    let victim = client.job_status(&low).await?;
    assert_eq!(victim.shards[0].preemptions, 1, "{victim:?}");
    Ok(())
}

/// The shards of `job` that hold slots (assigned or running).
async fn holding(client: &dispatcher::client::Client, job: &str) -> anyhow::Result<usize> {
    let status = client.job_status(job).await?;
    Ok(status
        .shards
        .iter()
        .filter(|s| s.state == "assigned" || s.state == "running")
        .count())
}

fn sleeper(
    name: &str,
    shards: u32,
    tenant: &str,
    priority: u32,
) -> dispatcher::pb::api::SubmitRequest {
    let mut request = job_request(
        name,
        shards,
        1,
        1,
        ("/bin/sleep".to_string(), vec!["60".to_string()]),
    );
    request.tenant = tenant.into();
    request.priority = Some(priority);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preemption_across_tenants_takes_a_guaranteed_share_once_and_then_holds_still(
) -> anyhow::Result<()> {
    // Two tenants of equal weight on 4 slots. "high" at priority 900 may take back its
    // guaranteed share (2) from "low" at 100, and no more. Once, the slot a preemption freed
    // went by fair share to low's next shard, which was preempted in turn, and again: every
    // turn wrote a placement and a preemption while high's shard never started.
    let config = test_config();
    // The victims may be placed again once they are surely stopped: watch past that.
    let watch = std::time::Duration::from_millis(
        config.taskmanagers.lease_ms
            + dispatcher::config::LEASE_MARGIN_MS
            + dispatcher::domain::STOP_GRACE_MS
            + 1_000,
    );
    let mut cluster = start_cluster(3, config).await?;
    cluster.start_taskmanager("a", 2, &[])?;
    cluster.start_taskmanager("b", 2, &[])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 2).await?;
    let low = client.submit(sleeper("low", 10, "low", 100)).await?.job_id;
    dispatcher::local_cluster::wait_for(DEADLINE, "low on every slot", || async {
        (holding(&client, &low).await.ok()? == 4).then_some(())
    })
    .await?;
    log_phase("high asks for 4 at priority 900: it gets its share of 2");
    let high = client.submit(sleeper("high", 4, "high", 900)).await?.job_id;
    dispatcher::local_cluster::wait_for(DEADLINE, "high's share", || async {
        (holding(&client, &high).await.ok()? == 2).then_some(())
    })
    .await?;
    log_phase("past the victims' stop grace, nothing moves");
    let preempted = |status: &dispatcher::pb::api::JobStatus| -> u32 {
        status.shards.iter().map(|s| s.preemptions).sum()
    };
    let watched = std::time::Instant::now();
    while watched.elapsed() < watch {
        let (low_status, high_held) = (
            client.job_status(&low).await?,
            holding(&client, &high).await?,
        );
        anyhow::ensure!(
            preempted(&low_status) == 2 && high_held == 2,
            "preemptions went on: low preempted {} times, high holds {high_held}",
            preempted(&low_status)
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(holding(&client, &low).await?, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preemptor_that_can_get_room_nowhere_does_not_stop_the_next() -> anyhow::Result<()> {
    // The first waiting job by priority asks for labels no agent has: no preemption can help
    // it. Once, the search then gave up for every job behind it too.
    let mut cluster = start_cluster(3, test_config()).await?;
    cluster.start_taskmanager("a", 2, &[])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 1).await?;
    let low = client
        .submit(sleeper("low", 2, "default", 100))
        .await?
        .job_id;
    dispatcher::local_cluster::wait_for(DEADLINE, "low on both slots", || async {
        (holding(&client, &low).await.ok()? == 2).then_some(())
    })
    .await?;
    let mut nowhere = sleeper("nowhere", 1, "default", 1000);
    if let Some(spec) = nowhere.spec.as_mut() {
        spec.selector.insert("zone".into(), "nowhere".into());
    }
    let nowhere = client.submit(nowhere).await?.job_id;
    let next = client
        .submit(sleeper("next", 1, "default", 900))
        .await?
        .job_id;
    log_phase("the next job by priority preempts and runs");
    dispatcher::local_cluster::wait_for(DEADLINE, "the next job to run", || async {
        (holding(&client, &next).await.ok()? == 1).then_some(())
    })
    .await?;
    let waiting = client.job_status(&nowhere).await?;
    assert_eq!(waiting.state, "pending", "{waiting:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_gets_the_room_that_frees_before_younger_small_jobs() -> anyhow::Result<()> {
    // A gang of 4 waits on a full 4-slot agent with small jobs submitted after it. Once,
    // each slot that freed went to a small job (it fits, the gang does not), and the gang
    // waited until every small job was done.
    let mut cluster = start_cluster(3, test_config()).await?;
    cluster.start_taskmanager("tm", 4, &[])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 1).await?;
    let sleep = |secs: &str| ("/bin/sleep".to_string(), vec![secs.to_string()]);
    // Its shards end 0.5 s apart, so the slots free one at a time.
    let staggered = (
        "/bin/sh".to_string(),
        vec![
            "-c".to_string(),
            "sleep $(( DISPATCHER_SHARD_INDEX + 1 )).$(( DISPATCHER_SHARD_INDEX * 5 % 10 ))"
                .to_string(),
        ],
    );
    let first = client
        .submit(job_request("first", 4, 1, 1, staggered))
        .await?
        .job_id;
    wait_all_running(&client, &first).await?;
    let mut gang = job_request("gang", 4, 1, 1, sleep("2"));
    gang.gang = true;
    let gang = client.submit(gang).await?.job_id;
    let stream = client
        .submit(job_request("stream", 24, 1, 1, sleep("0.2")))
        .await?
        .job_id;
    log_phase("the gang runs before any younger small shard");
    let status = wait_job_state(&client, &gang, &["running", "finished"], DEADLINE).await?;
    let stream_status = client.job_status(&stream).await?;
    let ran: Vec<u32> = stream_status
        .shards
        .iter()
        .filter(|s| s.attempt > 0)
        .map(|s| s.index)
        .collect();
    anyhow::ensure!(
        ran.is_empty(),
        "small shards {ran:?} ran before the gang ({})",
        status.state
    );
    wait_job_state(&client, &stream, &["finished"], DEADLINE).await?;
    Ok(())
}
