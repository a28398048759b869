//! Resubmitting with the same idempotency key returns the same job, also across a leader
//! kill and when the first attempt's outcome was unknown.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmission_across_a_leader_kill_returns_the_same_job() -> anyhow::Result<()> {
    let mut cluster = start_cluster(3, test_config()).await?;
    let client = cluster.client()?;

    log_phase("submit with a key, then again: same job, created=false");
    let first = client.submit(submit_request("idem", 2, "key-a")).await?;
    assert!(first.created);
    let again = client.submit(submit_request("idem", 2, "key-a")).await?;
    assert_eq!(again.job_id, first.job_id);
    assert!(!again.created);

    log_phase("kill the leader while a submission with a new key is in flight");
    let ids = cluster.ids();
    let leader = cluster.wait_for_leader(&ids, DEADLINE).await?;
    let in_flight = {
        // Knows only the leader about to die, and gives up soon: its outcome stays unknown.
        let client = dispatcher::client::Client::with_options(
            vec![cluster.addr(leader)?],
            dispatcher::client::ClientOptions {
                rpc_timeout: std::time::Duration::from_secs(1),
                call_timeout: std::time::Duration::from_secs(2),
                source_ip: None,
                credentials: cluster.credentials()?,
            },
        )?;
        tokio::spawn(async move {
            client
                .submit(submit_request("unknown-outcome", 1, "key-b"))
                .await
        })
    };
    cluster.kill(leader)?;
    // Its outcome is unknown to us: it may have committed or not. Ignore it.
    let _ = in_flight.await;
    let survivors: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
    cluster.wait_for_leader(&survivors, DEADLINE).await?;

    log_phase("resubmit both keys through the new leader");
    let a = client.submit(submit_request("idem", 2, "key-a")).await?;
    assert_eq!(a.job_id, first.job_id);
    assert!(!a.created);
    let b1 = client
        .submit(submit_request("unknown-outcome", 1, "key-b"))
        .await?;
    let b2 = client
        .submit(submit_request("unknown-outcome", 1, "key-b"))
        .await?;
    assert_eq!(b1.job_id, b2.job_id);
    assert!(!b2.created);

    let jobs = client.list_jobs().await?;
    assert_eq!(jobs.iter().filter(|j| j.name == "idem").count(), 1);
    assert_eq!(
        jobs.iter().filter(|j| j.name == "unknown-outcome").count(),
        1,
        "{jobs:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_jobs_are_forgotten_after_their_retention() -> anyhow::Result<()> {
    let mut config = test_config();
    config.jobs.retention_secs = 1;
    let cluster = start_cluster(3, config).await?;
    let client = cluster.client()?;
    let ended = client
        .submit(submit_request("short-lived", 1, "key-r"))
        .await?;
    client.cancel_job(&ended.job_id).await?;
    let kept = client
        .submit(submit_request("still-pending", 1, "key-k"))
        .await?;

    log_phase("the ended job disappears; the pending one stays");
    dispatcher::local_cluster::wait_for(DEADLINE, "the ended job to be forgotten", || async {
        let jobs = client.list_jobs().await.ok()?;
        jobs.iter().all(|j| j.job_id != ended.job_id).then_some(())
    })
    .await?;
    let err = client
        .job_status(&ended.job_id)
        .await
        .expect_err("forgotten");
    assert_eq!(err.code(), Some(tonic::Code::NotFound));
    assert_eq!(client.job_status(&kept.job_id).await?.state, "pending");

    log_phase("its idempotency key is free again");
    let again = client
        .submit(submit_request("short-lived", 1, "key-r"))
        .await?;
    assert!(again.created);
    assert_ne!(again.job_id, ended.job_id);
    let ids = cluster.ids();
    cluster.wait_converged(&ids, DEADLINE).await?;
    Ok(())
}
