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
