//! Scheduling beyond the score, with the real binary: jobs of higher priority take scarce
//! slots first, and preempt lower ones (SIGTERM first). Dependencies, gangs and tenants are
//! in `scheduling_rules`.

mod common;

use common::*;
use std::process::Command;

fn submit(cluster: &TestCluster, name: &str, priority: Option<&str>) -> anyhow::Result<String> {
    let mut command = Command::new(BINARY);
    command
        .args([
            "submit", "--name", name, "--shards", "2", "--output", "json",
        ])
        .arg("--endpoints")
        .arg(cluster.endpoints().join(","))
        .args(cluster.client_flags());
    if let Some(priority) = priority {
        command.args(["--priority", priority]);
    }
    let out = command.args(["--", "/bin/sleep", "30"]).output()?;
    anyhow::ensure!(
        out.status.success(),
        "submit {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(reply["job_id"].as_str().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_is_placed_first_when_slots_are_scarce() -> anyhow::Result<()> {
    let mut cluster = start_cluster(3, test_config()).await?;
    let client = cluster.client()?;

    log_phase("three jobs wait for capacity: priority 100, the default, 900");
    let low = submit(&cluster, "low", Some("100"))?;
    let default = submit(&cluster, "default", None)?;
    let high = submit(&cluster, "high", Some("900"))?;
    let refused = Command::new(BINARY)
        .args([
            "submit",
            "--name",
            "x",
            "--shards",
            "1",
            "--priority",
            "1001",
        ])
        .args(cluster.client_flags())
        .args(["--", "/bin/true"])
        .output()?;
    assert!(!refused.status.success(), "priority 1001 is refused");
    assert_eq!(client.job_status(&high).await?.priority, 900);
    assert_eq!(client.job_status(&default).await?.priority, 500);

    log_phase("one TaskManager with two slots: the 900 job takes them");
    cluster.start_taskmanager("scarce", 2, &[])?;
    wait_all_running(&client, &high).await?;
    for waiting in [&low, &default] {
        let status = client.job_status(waiting).await?;
        assert!(
            status.shards.iter().all(|s| s.state == "pending"),
            "{waiting} got a slot before the higher priority job: {status:?}"
        );
    }

    log_phase("the high job ends: the default priority goes next, not the older low one");
    client.cancel_job(&high).await?;
    wait_all_running(&client, &default).await?;
    let low_status = client.job_status(&low).await?;
    assert!(low_status.shards.iter().all(|s| s.state == "pending"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_priority_job_preempts_and_the_preempted_job_still_finishes() -> anyhow::Result<()>
{
    let mut cluster = start_cluster(3, test_config()).await?;
    cluster.start_taskmanager("busy", 2, &[])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 1).await?;

    log_phase("a low-priority job fills both slots; its shards note the SIGTERM they get");
    let terms = cluster.dir.path().join("terms");
    let script = "trap 'echo term >> \"$0\"; exit 143' TERM; sleep 3 & wait";
    let mut low = job_request(
        "low",
        2,
        1,
        1,
        (
            "/bin/sh".to_string(),
            vec![
                "-c".to_string(),
                script.to_string(),
                terms.display().to_string(),
            ],
        ),
    );
    low.priority = Some(100);
    let low = client.submit(low).await?.job_id;
    wait_all_running(&client, &low).await?;

    log_phase("a high-priority job arrives: one low shard is stopped for it");
    let mut high = job_request(
        "high",
        1,
        1,
        1,
        ("/bin/sleep".to_string(), vec!["1".to_string()]),
    );
    high.priority = Some(900);
    let started = std::time::Instant::now();
    let high = client.submit(high).await?.job_id;
    wait_all_running(&client, &high).await?;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the high-priority job waited {:?}",
        started.elapsed()
    );
    let status = client.job_status(&low).await?;
    assert_eq!(
        status
            .shards
            .iter()
            .filter(|s| s.state == "running")
            .count(),
        1,
        "exactly one low shard was stopped: {status:?}"
    );

    log_phase("both finish; a preemption is not a failure");
    wait_job_state(&client, &high, &["finished"], DEADLINE).await?;
    let low_end = wait_job_state(&client, &low, &["finished"], DEADLINE).await?;
    assert!(
        low_end.shards.iter().all(|s| s.failures == 0),
        "{low_end:?}"
    );
    let noted = std::fs::read_to_string(&terms).unwrap_or_default();
    assert_eq!(
        noted.lines().count(),
        1,
        "the preempted shard was asked with SIGTERM first: {noted:?}"
    );
    let preemptions: Vec<u32> = low_end.shards.iter().map(|s| s.preemptions).collect();
    assert_eq!(
        preemptions.iter().sum::<u32>(),
        1,
        "one preemption counted: {preemptions:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_higher_priority_never_takes_a_tenant_below_its_share() -> anyhow::Result<()>
{
    let mut cluster = start_cluster(3, test_config()).await?;
    cluster.start_taskmanager("shared", 4, &[])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 1).await?;

    log_phase("tenant steady fills all four slots at priority 100");
    let mut steady = job_request(
        "steady",
        4,
        1,
        1,
        ("/bin/sleep".to_string(), vec!["60".to_string()]),
    );
    steady.priority = Some(100);
    steady.tenant = "steady".into();
    let steady = client.submit(steady).await?.job_id;
    wait_all_running(&client, &steady).await?;

    log_phase("tenant urgent asks for four slots at priority 1000: it gets two, steady keeps two");
    let mut urgent = job_request(
        "urgent",
        4,
        1,
        1,
        ("/bin/sleep".to_string(), vec!["1".to_string()]),
    );
    urgent.priority = Some(1000);
    urgent.tenant = "urgent".into();
    let urgent = client.submit(urgent).await?.job_id;
    // Two waves of two: the urgent job ends once it ran all four in the two slots above
    // steady's share.
    wait_job_state(&client, &urgent, &["finished"], DEADLINE).await?;
    let status = client.job_status(&steady).await?;
    let preemptions: u32 = status.shards.iter().map(|s| s.preemptions).sum();
    assert_eq!(
        preemptions, 2,
        "steady lost exactly the two slots above its share of two: {status:?}"
    );
    assert!(status.shards.iter().all(|s| s.failures == 0), "{status:?}");
    client.cancel_job(&steady).await?;
    Ok(())
}
