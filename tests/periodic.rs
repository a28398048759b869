//! Periodic jobs from outside, with the real binary: one job per scheduled time while the
//! leader is killed at fire moments, the catch-up each policy promises after every replica
//! was down, `forbid` skipping while a long job runs, and tenants kept apart.

mod common;

use common::*;
use dispatcher::client::Client;
use dispatcher::domain::Role;
use dispatcher::local_cluster::wait_for;
use dispatcher::pb::api::ScheduleInfo;
use dispatcher::security::Secret;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;
use tonic::Code;

/// `dispatcher cron add <name> --schedule <expr> <flags> --shards 1 -- <command>`, as a
/// user types it; the schedule as `--output json` prints it.
fn add(
    cluster: &TestCluster,
    name: &str,
    schedule: &str,
    flags: &[&str],
    command: &[&str],
) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(BINARY)
        .args([
            "cron",
            "add",
            name,
            "--schedule",
            schedule,
            "--output",
            "json",
        ])
        .args(["--shards", "1", "--max-attempts", "1"])
        .args(flags)
        .arg("--endpoints")
        .arg(cluster.endpoints().join(","))
        .args(cluster.client_flags())
        .arg("--")
        .args(command)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "cron add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Every job the schedule `name` made: scheduled time → job ids (more than one is a bug).
async fn jobs_of(client: &Client, name: &str) -> anyhow::Result<BTreeMap<u64, Vec<String>>> {
    let mut by_time: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for job in client.list_jobs().await? {
        let status = client.job_status(&job.job_id).await?;
        if status.schedule.as_deref() == Some(name) {
            let time = status.scheduled_ms.unwrap_or_default();
            by_time.entry(time).or_default().push(status.job_id);
        }
    }
    Ok(by_time)
}

fn assert_once_each(name: &str, jobs: &BTreeMap<u64, Vec<String>>) {
    let doubled: Vec<_> = jobs.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        doubled.is_empty(),
        "{name}: two jobs for one time: {doubled:?}"
    );
}

/// Suspend `name`: no turn after this, so what it made can be counted.
async fn suspend(client: &Client, name: &str) -> anyhow::Result<ScheduleInfo> {
    Ok(client.suspend_schedule(name, "", true).await?)
}

/// The times of a schedule firing every `period_ms` in `(after, until]`.
fn times_between(period_ms: u64, after: u64, until: u64) -> Vec<u64> {
    let first = (after / period_ms + 1) * period_ms;
    (first..=until).step_by(period_ms as usize).collect()
}

/// Sleep until the wall clock reads `at_ms` (a moment the test acts at, not a wait for a
/// condition).
async fn sleep_until_ms(at_ms: u64) {
    tokio::time::sleep(Duration::from_millis(at_ms.saturating_sub(now_ms()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_per_scheduled_time_while_the_leader_is_killed_at_fire_moments(
) -> anyhow::Result<()> {
    let mut cluster = start_cluster(3, test_config()).await?;
    let client = cluster.client()?;
    // No TaskManager: the jobs stay pending, and each one is counted.
    let added = add(&cluster, "every-2s", "*/2 * * * * *", &[], &["true"])?;
    assert_eq!(added["created"], true, "{added}");
    assert_eq!(added["timezone"], "UTC");

    log_phase("for 30 s, kill -9 the leader just as a time comes, then bring it back");
    let until = now_ms() + 30_000;
    let mut kills = 0;
    while now_ms() < until {
        let ids = cluster.ids();
        let leader = cluster.wait_for_leader(&ids, DEADLINE).await?;
        let fire = (now_ms() / 2_000 + 1) * 2_000;
        // Just after the time: the leader's loop is deciding or proposing its turn.
        sleep_until_ms(fire + 3 + kills % 20).await;
        cluster.kill(leader)?;
        kills += 1;
        let others: Vec<u64> = ids.iter().copied().filter(|id| *id != leader).collect();
        cluster.wait_for_leader(&others, DEADLINE).await?;
        cluster.restart(leader)?;
        cluster.wait_converged(&ids, DEADLINE).await?;
    }
    assert!(kills >= 5, "only {kills} kills in 30 s");

    let schedule = suspend(&client, "every-2s").await?;
    let jobs = jobs_of(&client, "every-2s").await?;
    assert_once_each("every-2s", &jobs);
    let expected = times_between(2_000, schedule.created_at_ms, schedule.settled_until_ms);
    let fired: Vec<u64> = jobs.keys().copied().collect();
    assert_eq!(
        fired, expected,
        "after {kills} leader kills, each time from its creation to its mark fired exactly once"
    );
    assert_eq!(schedule.skipped_total, 0, "{:?}", schedule.last_skip);
    assert!(expected.len() >= 14, "{} times in 30 s", expected.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_every_replica_was_down_each_catch_up_policy_does_what_it_says() -> anyhow::Result<()>
{
    const PERIOD: u64 = 3_000;
    let mut cluster = start_cluster(3, test_config()).await?;
    let client = cluster.client()?;
    for policy in ["none", "last", "all"] {
        add(
            &cluster,
            &format!("catch-up-{policy}"),
            "*/3 * * * * *",
            &["--catch-up", policy],
            &["true"],
        )?;
    }

    log_phase("every replica down for four periods");
    // Stop just after a time fired, so the outage holds four whole periods' times.
    let fired = (now_ms() / PERIOD + 1) * PERIOD;
    sleep_until_ms(fired + 500).await;
    let down_at = now_ms();
    for id in cluster.ids() {
        cluster.kill(id)?;
    }
    sleep_until_ms(down_at + 4 * PERIOD).await;
    let restarted_at = now_ms();
    for id in cluster.ids() {
        cluster.restart(id)?;
    }
    cluster.wait_for_leader(&cluster.ids(), DEADLINE).await?;
    // The first leader's turn settles every schedule past the outage.
    wait_for(
        DEADLINE,
        "every schedule settled past the outage",
        || async {
            let schedules = client.list_schedules().await.ok()?;
            schedules
                .iter()
                .all(|s| s.settled_until_ms >= restarted_at)
                .then_some(())
        },
    )
    .await?;

    let outage = times_between(PERIOD, down_at, restarted_at);
    // Older than the 5 s on-time window whenever the new leader looked: surely missed.
    let missed: Vec<u64> = outage
        .iter()
        .copied()
        .filter(|t| *t + 5_000 < restarted_at)
        .collect();
    assert!(
        outage.len() >= 4 && missed.len() >= 2,
        "{outage:?} {missed:?}"
    );
    let mut shown = Vec::new();
    for policy in ["none", "last", "all"] {
        let name = format!("catch-up-{policy}");
        let schedule = suspend(&client, &name).await?;
        let jobs = jobs_of(&client, &name).await?;
        assert_once_each(&name, &jobs);
        let in_outage = outage.iter().filter(|t| jobs.contains_key(t)).count();
        let missed_fired = missed.iter().filter(|t| jobs.contains_key(t)).count();
        shown.push(format!(
            "{policy}: {in_outage} of {} outage times fired, {missed_fired} of {} missed; \
             {} skipped",
            outage.len(),
            missed.len(),
            schedule.skipped_total
        ));
        match policy {
            "all" => {
                assert_eq!(in_outage, outage.len(), "all: every time fires: {shown:?}");
                assert_eq!(schedule.skipped_total, 0, "{shown:?}");
            }
            "last" => {
                assert!(
                    in_outage <= 1,
                    "last: one job for the newest time: {shown:?}"
                );
                assert!(
                    schedule.skipped_total >= missed.len() as u64 - 1,
                    "{shown:?}"
                );
            }
            _ => {
                assert_eq!(missed_fired, 0, "none: no missed time fires: {shown:?}");
                assert!(schedule.skipped_total >= missed.len() as u64, "{shown:?}");
            }
        }
        if policy != "all" {
            let skip = schedule.last_skip.as_ref().expect("the skip is noted");
            assert!(skip.reason.starts_with("missed"), "{skip:?}");
        }
        // Before the outage every time fired on time, whatever the policy.
        let before = times_between(PERIOD, schedule.created_at_ms, down_at);
        assert!(
            before.iter().all(|t| jobs.contains_key(t)),
            "{name}: {before:?} all fired before the outage: {:?}",
            jobs.keys()
        );
    }
    eprintln!("{}", shown.join("\n"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbid_skips_a_time_while_the_previous_job_still_runs() -> anyhow::Result<()> {
    let mut cluster = start_cluster(3, test_config()).await?;
    cluster.start_taskmanager("tm-0", 4, &[])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 1).await?;
    add(
        &cluster,
        "long",
        "*/2 * * * * *",
        &["--concurrency", "forbid"],
        &[
            "sh",
            "-c",
            "echo \"at $DISPATCHER_SCHEDULED_TIME\"; sleep 5",
        ],
    )?;
    let schedule = wait_for(DEADLINE, "two jobs and skipped times between", || async {
        let s = client.get_schedule("long", "").await.ok()?;
        (s.recent.len() >= 2 && s.skipped_total >= 2).then_some(s)
    })
    .await?;
    let schedule = suspend(&client, "long")
        .await
        .map(|s| s.recent)
        .unwrap_or(schedule.recent);
    let skip = client
        .get_schedule("long", "")
        .await?
        .last_skip
        .expect("a skip is noted");
    assert!(skip.reason.contains("still runs"), "{skip:?}");
    // A job runs 5 s and the schedule fires every 2 s: under forbid the next job comes only
    // after the last ended, at least three periods later.
    for pair in schedule.windows(2) {
        assert!(
            pair[1].scheduled_ms - pair[0].scheduled_ms >= 6_000,
            "jobs overlapped: {schedule:?}"
        );
    }
    let first = &schedule[0];
    wait_job_state(&client, &first.job_id, &["finished"], DEADLINE).await?;
    let output = client.shard_output(&first.job_id, 0).await?;
    let printed = String::from_utf8_lossy(&output.stdout).to_string();
    let expected = dispatcher::domain::rfc3339(first.scheduled_ms);
    assert_eq!(printed.trim(), format!("at {expected}"));
    let status = client.job_status(&first.job_id).await?;
    assert_eq!(status.schedule.as_deref(), Some("long"));
    assert_eq!(status.scheduled_ms, Some(first.scheduled_ms));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sees_and_changes_only_its_own_schedules() -> anyhow::Result<()> {
    let cluster = start_secure_cluster(3, test_config()).await?;
    let admin = cluster.client()?;
    let (_, alice) = admin
        .create_token("alice", Role::Submit, Some("team-a"))
        .await?;
    let (_, mallory) = admin
        .create_token("mallory", Role::Submit, Some("team-b"))
        .await?;
    let (_, reader) = admin
        .create_token("b-reader", Role::Read, Some("team-b"))
        .await?;
    let as_token = |secret: &Secret| client_with_token(&cluster, secret);
    let (alice, mallory, reader) = (as_token(&alice)?, as_token(&mallory)?, as_token(&reader)?);

    let request = |name: &str| dispatcher::pb::api::AddScheduleRequest {
        name: name.into(),
        schedule: "0 3 * * *".into(),
        timezone: "Europe/Berlin".into(),
        job: Some(submit_request(name, 1, "")),
        ..Default::default()
    };
    let added = alice.add_schedule(request("nightly")).await?;
    assert_eq!(added.tenant, "team-a");
    assert_eq!(added.next_fires_ms.len(), 5);

    log_phase("another tenant neither sees nor touches it");
    assert!(mallory.list_schedules().await?.is_empty());
    assert!(reader.list_schedules().await?.is_empty());
    assert_eq!(
        code(mallory.get_schedule("nightly", "").await),
        Some(Code::NotFound)
    );
    assert_eq!(
        code(mallory.get_schedule("nightly", "team-a").await),
        Some(Code::PermissionDenied)
    );
    assert_eq!(
        code(mallory.delete_schedule("nightly", "team-a").await),
        Some(Code::PermissionDenied)
    );
    assert_eq!(
        code(mallory.run_schedule("nightly", "team-a").await),
        Some(Code::PermissionDenied)
    );
    assert_eq!(
        code(reader.add_schedule(request("mine")).await),
        Some(Code::PermissionDenied),
        "a read token adds no schedule"
    );

    log_phase("bad schedules are refused before the log, with what to write");
    let mut never = request("never");
    never.schedule = "0 0 30 2 *".into();
    let mut zone = request("zone");
    zone.timezone = "Mars/Olympus".into();
    let mut fields = request("fields");
    fields.schedule = "* * *".into();
    for bad in [never, zone, fields] {
        let refused = alice.add_schedule(bad).await;
        assert_eq!(code(refused), Some(Code::InvalidArgument));
    }

    log_phase("its owner runs it now; an admin sees every tenant's");
    let run = alice.run_schedule("nightly", "").await?;
    let status = alice.job_status(&run.job_id).await?;
    assert_eq!(status.tenant, "team-a");
    assert_eq!(status.schedule.as_deref(), Some("nightly"));
    assert_eq!(
        code(mallory.job_status(&run.job_id).await),
        Some(Code::NotFound)
    );
    let every = admin.list_schedules().await?;
    assert_eq!(every.len(), 1);
    alice.delete_schedule("nightly", "").await?;
    assert!(admin.list_schedules().await?.is_empty());
    Ok(())
}
