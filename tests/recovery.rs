//! Real replicas, real TaskManager agents, shards that record their own executions:
//! a killed TaskManager, a killed leader and a paused TaskManager lose no work and never run
//! one shard twice at the same time.

mod common;

use common::records::*;
use common::*;
use std::collections::BTreeSet;
use std::time::Instant;

async fn cluster_with_taskmanagers(
    count: usize,
    slots: u32,
) -> anyhow::Result<(TestCluster, Recorder)> {
    let mut cluster = start_cluster(3, test_config()).await?;
    let recorder = Recorder::new(cluster.dir.path())?;
    for i in 0..count {
        cluster.start_taskmanager(&format!("tm-{i}"), slots, &[])?;
    }
    wait_taskmanagers_alive(&cluster.client()?, count).await?;
    Ok((cluster, recorder))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_taskmanager_shards_finish_elsewhere_exactly_once() -> anyhow::Result<()> {
    let (mut cluster, rec) = cluster_with_taskmanagers(3, 3).await?;
    let client = cluster.client()?;

    log_phase("six batch shards of 3 s and one long-running (streaming) shard");
    let job = client
        .submit(job_request("tm-kill", 6, 1, 3, rec.command(3_000, "")))
        .await?;
    let stream = client
        .submit(job_request("streaming", 1, 1, 3, rec.command(600_000, "")))
        .await?;
    let status = wait_all_running(&client, &job.job_id).await?;
    let stream_status = wait_all_running(&client, &stream.job_id).await?;
    // Kill the TaskManager that runs the streaming shard and two batch shards.
    let victim = stream_status.shards[0].taskmanager.clone().expect("placed");
    let stream_tm = victim.clone();
    let victim_shards: BTreeSet<u32> = status
        .shards
        .iter()
        .filter(|s| s.taskmanager.as_deref() == Some(victim.as_str()))
        .map(|s| s.index)
        .collect();

    log_phase("kill -9 one TaskManager");
    let killed_at = now_ms();
    let started = Instant::now();
    cluster.kill_taskmanager(&victim)?;
    let moved = dispatcher::local_cluster::wait_for(
        DEADLINE,
        "the lost shards to run elsewhere",
        || async {
            let s = client.job_status(&job.job_id).await.ok()?;
            s.shards
                .iter()
                .filter(|sh| victim_shards.contains(&sh.index))
                .all(|sh| {
                    sh.taskmanager.as_deref() != Some(victim.as_str())
                        && matches!(sh.state.as_str(), "running" | "finished")
                })
                .then_some(())
        },
    )
    .await;
    moved?;
    eprintln!(
        "kill -9 → all {} lost shards running elsewhere: {:?}",
        victim_shards.len(),
        started.elapsed()
    );

    let done = wait_job_state(&client, &job.job_id, &["finished", "failed"], DEADLINE).await?;
    assert_eq!(done.state, "finished");
    if stream_tm == victim {
        let s = client.job_status(&stream.job_id).await?;
        assert_eq!(s.state, "running");
        assert_eq!(s.shards[0].state, "running");
        assert_ne!(
            s.shards[0].taskmanager.as_deref(),
            Some(victim.as_str()),
            "the streaming shard moved"
        );
        assert_eq!(s.shards[0].attempt, 2);
    }
    client.cancel_job(&stream.job_id).await?;
    let tms = client.list_taskmanagers().await?;
    assert_eq!(
        tms.iter()
            .find(|t| t.id == victim)
            .map(|t| t.state.as_str()),
        Some("lost")
    );

    let runs = rec.executions();
    assert_each_finished_once(&runs, &job.job_id, 6);
    assert_no_overlap(&runs);
    // The killed agent's shard processes died with it: none of them ticked on afterwards.
    for e in runs.iter().filter(|e| e.taskmanager == victim && !e.ended) {
        assert!(
            e.last_ms < killed_at + 1_500,
            "an orphan kept running after its agent died: {e:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_neither_stops_nor_restarts_running_shards() -> anyhow::Result<()> {
    let (mut cluster, rec) = cluster_with_taskmanagers(3, 2).await?;
    let client = cluster.client()?;

    log_phase("six shards of 4 s running");
    let job = client
        .submit(job_request("leader-kill", 6, 1, 3, rec.command(4_000, "")))
        .await?;
    let before = wait_all_running(&client, &job.job_id).await?;

    log_phase("kill -9 the leader while they run");
    let ids = cluster.ids();
    let leader = cluster.wait_for_leader(&ids, DEADLINE).await?;
    cluster.kill(leader)?;
    let survivors: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
    cluster.wait_for_leader(&survivors, DEADLINE).await?;

    let done = wait_job_state(&client, &job.job_id, &["finished", "failed"], DEADLINE).await?;
    assert_eq!(done.state, "finished");
    for (b, d) in before.shards.iter().zip(&done.shards) {
        assert_eq!(
            (b.epoch, &b.taskmanager),
            (d.epoch, &d.taskmanager),
            "shard {} was moved",
            b.index
        );
    }
    let runs = rec.executions();
    let mine = of_job(&runs, &job.job_id);
    assert_eq!(mine.len(), 6, "each shard executed exactly once: {mine:#?}");
    assert!(mine.iter().all(|e| e.ended && e.attempt == 1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_taskmanager_falls_silent_the_leader_holds_evictions() -> anyhow::Result<()> {
    let (cluster, rec) = cluster_with_taskmanagers(3, 2).await?;
    let client = cluster.client()?;
    let job = client
        .submit(job_request("silence", 3, 1, 3, rec.command(500, "")))
        .await?;
    wait_job_state(&client, &job.job_id, &["finished"], DEADLINE).await?;

    log_phase("pause every agent well past the timeout");
    for tm in ["tm-0", "tm-1", "tm-2"] {
        cluster.pause_taskmanager(tm)?;
    }
    let timeout = test_config().taskmanagers.timeout_ms;
    tokio::time::sleep(std::time::Duration::from_millis(timeout + 2_000)).await;
    let tms = client.list_taskmanagers().await?;
    assert!(
        tms.iter().all(|t| t.state == "alive"),
        "a mass silence must not evict: {tms:?}"
    );

    log_phase("they come back and work goes on");
    for tm in ["tm-0", "tm-1", "tm-2"] {
        cluster.resume_taskmanager(tm)?;
    }
    let next = client
        .submit(job_request("after-silence", 3, 1, 3, rec.command(200, "")))
        .await?;
    wait_job_state(&client, &next.job_id, &["finished"], DEADLINE).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_taskmanager_is_fenced_and_its_copies_never_overlap() -> anyhow::Result<()> {
    let (cluster, rec) = cluster_with_taskmanagers(3, 2).await?;
    let client = cluster.client()?;

    log_phase("six shards of 6 s running");
    let job = client
        .submit(job_request("pause", 6, 1, 3, rec.command(6_000, "")))
        .await?;
    let status = wait_all_running(&client, &job.job_id).await?;
    let victim = status.shards[0].taskmanager.clone().expect("placed");

    log_phase("SIGSTOP one agent past the timeout");
    cluster.pause_taskmanager(&victim)?;
    dispatcher::local_cluster::wait_for(
        DEADLINE,
        "the paused TaskManager's shards to be re-placed",
        || async {
            let s = client.job_status(&job.job_id).await.ok()?;
            s.shards
                .iter()
                .all(|sh| sh.taskmanager.as_deref() != Some(victim.as_str()))
                .then_some(())
        },
    )
    .await?;

    log_phase("SIGCONT: it re-registers and runs nothing stale");
    cluster.resume_taskmanager(&victim)?;
    let done = wait_job_state(&client, &job.job_id, &["finished", "failed"], DEADLINE).await?;
    assert_eq!(done.state, "finished");
    dispatcher::local_cluster::wait_for(
        DEADLINE,
        "the resumed TaskManager to be alive again",
        || async {
            let tms = client.list_taskmanagers().await.ok()?;
            tms.iter()
                .any(|t| t.id == victim && t.state == "alive")
                .then_some(())
        },
    )
    .await?;

    let runs = rec.executions();
    assert_each_finished_once(&runs, &job.job_id, 6);
    assert_no_overlap(&runs);
    // Only the current assignment of each shard ran to its end: the stale copies on the
    // paused TaskManager were stopped before they could finish.
    for e in runs.iter().filter(|e| e.job == job.job_id && e.ended) {
        let shard = &done.shards[e.shard as usize];
        assert_eq!(e.epoch, shard.epoch, "a stale copy finished: {e:?}");
    }
    assert!(
        runs.iter().any(|e| e.taskmanager == victim && !e.ended),
        "the paused TaskManager had runs that were cut short"
    );
    Ok(())
}

/// The agent's shard host, found as the agent's child running `shard-host`.
fn shard_host_of(agent_pid: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid: u32 = stat
                .get(stat.rfind(')')? + 2..)?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let is_host = cmdline.split(|b| *b == 0).any(|arg| arg == b"shard-host");
            (ppid == agent_pid && is_host).then_some(pid)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_shard_host_takes_its_shards_with_it_and_they_run_again() -> anyhow::Result<()> {
    let (cluster, rec) = cluster_with_taskmanagers(1, 3).await?;
    let client = cluster.client()?;
    let job = client
        .submit(job_request("host-kill", 2, 1, 3, rec.command(3_000, "")))
        .await?;
    // A shard whose work runs in a child of its own (in its process group): it ticks into a
    // file per epoch until it is killed.
    let ticks = cluster.dir.path().join("ticks");
    std::fs::create_dir_all(&ticks)?;
    let ticker = client
        .submit(job_request(
            "grandchild",
            1,
            1,
            3,
            (
                "/bin/sh".into(),
                vec![
                    "-c".into(),
                    format!(
                        "f={}/$DISPATCHER_EPOCH; (while :; do date +%s%3N >> $f; sleep 0.1; done) & wait",
                        ticks.display()
                    ),
                ],
            ),
        ))
        .await?;
    wait_all_running(&client, &job.job_id).await?;
    let first_ticker = wait_all_running(&client, &ticker.job_id).await?;

    log_phase("kill -9 the agent's shard host (not the agent)");
    let agent = cluster.taskmanager("tm-0")?.pid().expect("the agent runs");
    let host = shard_host_of(agent).expect("the agent's shard host");
    let killed_at = now_ms();
    // SAFETY: kill(2) on a process this test's agent started; no memory is involved.
    assert_eq!(unsafe { libc::kill(host as i32, libc::SIGKILL) }, 0);

    log_phase("the runs are reported interrupted, run again under a new host, and finish");
    let done = wait_job_state(&client, &job.job_id, &["finished", "failed"], DEADLINE).await?;
    assert_eq!(done.state, "finished", "{done:?}");
    let new_host = shard_host_of(agent).expect("a new shard host");
    assert_ne!(new_host, host);
    let runs = rec.executions();
    assert_each_finished_once(&runs, &job.job_id, 2);
    assert_no_overlap(&runs);
    let cut_short: Vec<_> = runs.iter().filter(|e| !e.ended).collect();
    assert_eq!(
        cut_short.len(),
        2,
        "both first runs died with the host: {runs:?}"
    );
    for e in cut_short {
        assert!(
            e.last_ms < killed_at + 1_000,
            "a shard outlived its shard host: {e:?}"
        );
    }
    // The child the first ticker left in its process group was killed with the group.
    let first = ticks.join(first_ticker.shards[0].epoch.to_string());
    let last_tick: u64 = std::fs::read_to_string(&first)?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .max()
        .unwrap_or(0);
    assert!(
        last_tick < killed_at + 1_000,
        "a shard's child kept running {} ms after its shard host died",
        last_tick.saturating_sub(killed_at)
    );
    client.cancel_job(&ticker.job_id).await?;
    Ok(())
}
