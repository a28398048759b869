//! Dependencies, gangs, quotas and fair share with the real binary and real agents. Shards
//! record their own start and end times (`Recorder`), so the checks count what ran, not
//! what the dispatcher believes.

mod common;

use common::records::{assert_no_overlap, Execution, Recorder};
use common::*;
use dispatcher::local_cluster::wait_for;
use std::process::Command;

/// Submit through the CLI with extra flags; the job id, or the CLI's failure.
fn submit_cli(
    cluster: &TestCluster,
    name: &str,
    shards: u32,
    flags: &[&str],
    command: &(String, Vec<String>),
) -> anyhow::Result<Result<String, String>> {
    let out = Command::new(BINARY)
        .args(["submit", "--name", name, "--output", "json"])
        .args(["--shards", &shards.to_string()])
        .args(flags)
        .arg("--endpoints")
        .arg(cluster.endpoints().join(","))
        .args(cluster.client_flags())
        .arg("--")
        .arg(&command.0)
        .args(&command.1)
        .output()?;
    if !out.status.success() {
        return Ok(Err(String::from_utf8_lossy(&out.stderr).to_string()));
    }
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(Ok(reply["job_id"].as_str().unwrap_or_default().to_string()))
}

fn cli(cluster: &TestCluster, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(BINARY)
        .args(args)
        .args(["--output", "json", "--endpoints"])
        .arg(cluster.endpoints().join(","))
        .args(cluster.client_flags())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn runs_of<'a>(all: &'a [Execution], job: &str) -> Vec<&'a Execution> {
    all.iter().filter(|e| e.job == job).collect()
}

/// The most executions of `jobs` that ran at once.
fn max_concurrent(all: &[Execution], jobs: &[&str]) -> usize {
    dispatcher::chaos::executions::max_concurrent(
        all.iter().filter(|e| jobs.contains(&e.job.as_str())),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_wait_for_their_jobs_and_fail_with_them_across_a_failover(
) -> anyhow::Result<()> {
    let mut cluster = start_cluster(3, test_config()).await?;
    let rec = Recorder::new(cluster.dir.path())?;
    cluster.start_taskmanager("tm", 4, &[])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 1).await?;

    log_phase("a dependency on an unknown job is refused");
    let refused = submit_cli(
        &cluster,
        "orphan",
        1,
        &["--after", "j-999999"],
        &rec.command(10, ""),
    )?;
    let message = refused.expect_err("an unknown --after job is refused");
    assert!(
        message.contains("j-999999") && message.contains("does not exist"),
        "{message}"
    );

    log_phase("second waits for first; fourth waits for third, which fails");
    let first = submit_cli(&cluster, "first", 1, &[], &rec.command(1500, ""))?.expect("first");
    let second = submit_cli(
        &cluster,
        "second",
        2,
        &["--after", &first],
        &rec.command(200, ""),
    )?
    .expect("second");
    let third = submit_cli(
        &cluster,
        "third",
        1,
        &["--max-attempts", "1"],
        &rec.command(100, "always-fail"),
    )?
    .expect("third");
    let fourth = submit_cli(
        &cluster,
        "fourth",
        1,
        &["--after", &format!("{first},{third}")],
        &rec.command(100, ""),
    )?
    .expect("fourth");
    let status = client.job_status(&second).await?;
    assert_eq!(status.after, vec![first.clone()]);
    assert!(
        status.reason.contains(&first),
        "a waiting job says what it waits for: {status:?}"
    );

    log_phase("the leader is killed while they wait: the new one keeps the dependencies");
    let ids = cluster.ids();
    let leader = cluster.wait_for_leader(&ids, DEADLINE).await?;
    cluster.kill(leader)?;
    let others: Vec<u64> = ids.into_iter().filter(|id| *id != leader).collect();
    cluster.wait_for_leader(&others, DEADLINE).await?;

    wait_job_state(&client, &second, &["finished"], DEADLINE).await?;
    let ended = wait_job_state(&client, &fourth, &["failed"], DEADLINE).await?;
    assert!(ended.reason.contains(&third), "{ended:?}");
    let status = cli(&cluster, &["job", "status", &fourth])?;
    assert_eq!(status["after"], serde_json::json!([first, third]));
    assert_eq!(status["state"], "failed");

    let all = rec.executions();
    let first_end = runs_of(&all, &first)
        .iter()
        .map(|e| e.last_ms)
        .max()
        .expect("first ran");
    for run in runs_of(&all, &second) {
        assert!(
            run.start_ms >= first_end,
            "second started at {} before first ended at {first_end}",
            run.start_ms
        );
    }
    assert!(
        runs_of(&all, &fourth).is_empty(),
        "fourth never ran: {all:#?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_starts_whole_and_restarts_whole() -> anyhow::Result<()> {
    let mut cluster = start_cluster(3, test_config()).await?;
    let rec = Recorder::new(cluster.dir.path())?;
    cluster.start_taskmanager("a", 2, &[])?;
    cluster.start_taskmanager("b", 2, &[])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 2).await?;

    log_phase("a blocker holds one of four slots: a gang of four waits, holding nothing");
    let blocker =
        submit_cli(&cluster, "blocker", 1, &[], &rec.command(2500, ""))?.expect("blocker");
    wait_all_running(&client, &blocker).await?;
    let gang = submit_cli(
        &cluster,
        "gang",
        4,
        &["--gang", "--max-attempts", "3"],
        &rec.command(1500, "fail-once:2"),
    )?
    .expect("gang");
    let waiting = client.job_status(&gang).await?;
    assert!(waiting.gang);
    assert!(
        waiting.shards.iter().all(|s| s.state == "pending"),
        "{waiting:?}"
    );

    log_phase("the blocker ends: all four start; shard 2 fails, and all four start again");
    let done = wait_job_state(&client, &gang, &["finished"], DEADLINE * 2).await?;
    assert!(done.shards.iter().all(|s| s.state == "finished"));
    let all = rec.executions();
    let runs = runs_of(&all, &gang);
    let blocker_end = runs_of(&all, &blocker)[0].last_ms;
    let mut rounds: Vec<Vec<&Execution>> = vec![Vec::new(), Vec::new()];
    for run in &runs {
        assert!(
            run.start_ms >= blocker_end,
            "a gang shard ran beside the blocker"
        );
        let round = usize::from(run.attempt > 1);
        rounds[round].push(run);
    }
    for (i, round) in rounds.iter().enumerate() {
        assert_eq!(round.len(), 4, "round {i} started all four: {runs:#?}");
        let first = round.iter().map(|r| r.start_ms).min().unwrap_or(0);
        let last = round.iter().map(|r| r.start_ms).max().unwrap_or(0);
        assert!(
            last - first <= 1_000,
            "round {i} started over {} ms",
            last - first
        );
    }
    let first_round_end = rounds[0].iter().map(|r| r.last_ms).max().unwrap_or(0);
    let second_round_start = rounds[1].iter().map(|r| r.start_ms).min().unwrap_or(0);
    assert!(
        second_round_start >= first_round_end,
        "the restart began before the first round was stopped"
    );
    assert_no_overlap(&all);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_hold_and_equal_tenants_share_the_slots() -> anyhow::Result<()> {
    let mut cluster = start_cluster(3, test_config()).await?;
    let rec = Recorder::new(cluster.dir.path())?;
    cluster.start_taskmanager("tm", 4, &[])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 1).await?;

    log_phase("alice may hold 2 slots: her 5 shards run 2 at a time on 4 slots");
    let quota = cli(&cluster, &["quota", "set", "alice", "--slots", "2"])?;
    assert_eq!(quota[0]["slots"], 2);
    let alice = submit_cli(
        &cluster,
        "alice",
        5,
        &["--tenant", "alice"],
        &rec.command(600, ""),
    )?
    .expect("alice");
    wait_for(DEADLINE, "alice to run at her quota", || async {
        let status = client.job_status(&alice).await.ok()?;
        let quotas = cli(&cluster, &["quota", "list"]).ok()?;
        let listed = quotas
            .as_array()?
            .iter()
            .any(|q| q["tenant"] == "alice" && q["running_slots"] == 2);
        (listed && status.reason.contains("quota")).then_some(())
    })
    .await?;
    wait_job_state(&client, &alice, &["finished"], DEADLINE).await?;
    let all = rec.executions();
    assert_eq!(max_concurrent(&all, &[alice.as_str()]), 2, "{all:#?}");

    log_phase("bob floods 40 shards, then carol submits 4: they split the slots");
    let bob = submit_cli(
        &cluster,
        "bob",
        40,
        &["--tenant", "bob"],
        &rec.command(800, ""),
    )?
    .expect("bob");
    wait_for(DEADLINE, "bob to take every slot", || async {
        let status = client.job_status(&bob).await.ok()?;
        (status
            .shards
            .iter()
            .filter(|s| s.state == "running")
            .count()
            == 4)
            .then_some(())
    })
    .await?;
    let carol = submit_cli(
        &cluster,
        "carol",
        4,
        &["--tenant", "carol"],
        &rec.command(800, ""),
    )?
    .expect("carol");
    wait_job_state(&client, &carol, &["finished"], DEADLINE).await?;
    let bob_now = client.job_status(&bob).await?;
    let bob_left = bob_now
        .shards
        .iter()
        .filter(|s| s.state == "pending")
        .count();
    assert!(
        bob_left >= 20,
        "carol waited for bob's flood: only {bob_left} of his 40 shards were left"
    );
    let all = rec.executions();
    assert_eq!(
        max_concurrent(&all, &[carol.as_str()]),
        2,
        "carol gets half of the 4 slots while both wait"
    );
    assert_eq!(client.job_status(&carol).await?.tenant, "carol");
    client.cancel_job(&bob).await?;
    Ok(())
}
