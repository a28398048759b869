//! Placement by resources with real agents: agents declare CPU, memory and GPUs; jobs ask
//! per shard; no agent is ever taken over any dimension, GPU shards are told their device
//! indices, what no agent has is refused at submit, and (as root) a shard over its memory
//! request is killed "out of memory".

mod common;

use common::*;
use dispatcher::local_cluster::wait_for;
use dispatcher::pb::api::{ResourceAmounts, SubmitRequest, TaskManagerInfo};
use std::collections::BTreeSet;

/// `dispatcher submit <flags> -- true` against the cluster.
fn cli_submit(cluster: &TestCluster, flags: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(std::process::Command::new(BINARY)
        .arg("submit")
        .args(flags)
        .arg("--endpoints")
        .arg(cluster.endpoints().join(","))
        .args(cluster.client_flags())
        .args(["--", "true"])
        .output()?)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn asking(
    name: &str,
    shards: u32,
    script: &str,
    cpu_millis: u64,
    memory_bytes: u64,
    named: &[(&str, u64)],
) -> SubmitRequest {
    let mut request = job_request(
        name,
        shards,
        1,
        1,
        (
            "/bin/sh".to_string(),
            vec!["-c".to_string(), script.to_string()],
        ),
    );
    request.resources = Some(ResourceAmounts {
        cpu_millis,
        memory_bytes,
        named: named.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
    });
    request
}

/// Every dimension of every agent within what it declared.
fn within_capacity(tms: &[TaskManagerInfo]) -> anyhow::Result<()> {
    for tm in tms {
        let (Some(capacity), Some(used)) = (&tm.capacity, &tm.used) else {
            continue;
        };
        anyhow::ensure!(tm.used_slots <= tm.slots, "{} slots: {tm:?}", tm.id);
        anyhow::ensure!(
            used.cpu_millis <= capacity.cpu_millis && used.memory_bytes <= capacity.memory_bytes,
            "{} over its CPU or memory: {tm:?}",
            tm.id
        );
        for (name, count) in &used.named {
            let have = capacity.named.get(name).copied().unwrap_or(0);
            anyhow::ensure!(*count <= have, "{} over its {name}: {tm:?}", tm.id);
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_requests_never_take_an_agent_over_any_dimension() -> anyhow::Result<()> {
    let mut cluster = start_cluster(3, test_config()).await?;
    cluster.start_taskmanager_with(
        "gpu",
        8,
        &[],
        None,
        &["--cpus", "4", "--memory", "4GiB", "--resources", "gpu=2"],
    )?;
    cluster.start_taskmanager_with("plain", 8, &[], None, &["--cpus", "2", "--memory", "2GiB"])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 2).await?;

    log_phase("tm list shows each agent's isolation, capacity and use");
    let out = cli(&cluster, &["tm", "list", "--output", "json"])?;
    anyhow::ensure!(out.status.success(), "{out:?}");
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let gpu = listed
        .as_array()
        .and_then(|a| a.iter().find(|t| t["id"] == "gpu"))
        .ok_or_else(|| anyhow::anyhow!("no gpu agent in {listed}"))?;
    assert_eq!(gpu["isolation"], "none", "{gpu}");
    assert_eq!(
        gpu["capacity"],
        serde_json::json!({"cpu": 4.0, "memory": 4u64 << 30, "slots": 8, "gpu": 2}),
        "{gpu}"
    );
    assert_eq!(gpu["used"], serde_json::json!({"slots": 0}), "{gpu}");

    log_phase("what no agent has is refused at submit, saying so");
    let out = cli_submit(
        &cluster,
        &["--name", "fpga", "--shards", "1", "--resources", "fpga=1"],
    )?;
    let said = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        !out.status.success() && said.contains("needs fpga=1 per shard; no TaskManager has fpga"),
        "{out:?}"
    );
    let out = cli_submit(
        &cluster,
        &["--name", "huge", "--shards", "1", "--cpu", "16"],
    )?;
    anyhow::ensure!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("no TaskManager is that large"),
        "{out:?}"
    );

    log_phase("GPU, memory and CPU jobs at once; sampled while they run");
    let gpu_job = client
        .submit(asking(
            "gpu",
            4,
            "echo gpu=$DISPATCHER_RESOURCE_GPU; sleep 1",
            1000,
            0,
            &[("gpu", 1)],
        ))
        .await?
        .job_id;
    let memory_job = client
        .submit(asking("memory", 6, "sleep 1", 0, 1 << 30, &[]))
        .await?
        .job_id;
    let cpu_job = client
        .submit(asking("cpu", 3, "sleep 1", 2000, 0, &[]))
        .await?
        .job_id;
    let most_gpu_shards_at_once = std::sync::atomic::AtomicU64::new(0);
    wait_for(DEADLINE * 2, "every job to finish", || async {
        let tms = client.list_taskmanagers().await.ok()?;
        if let Err(e) = within_capacity(&tms) {
            panic!("{e}");
        }
        let gpu_running = tms
            .iter()
            .filter_map(|t| t.used.as_ref())
            .map(|u| u.named.get("gpu").copied().unwrap_or(0))
            .sum::<u64>();
        most_gpu_shards_at_once.fetch_max(gpu_running, std::sync::atomic::Ordering::Relaxed);
        for job in [&gpu_job, &memory_job, &cpu_job] {
            if client.job_status(job).await.ok()?.state != "finished" {
                return None;
            }
        }
        Some(())
    })
    .await?;
    let most = most_gpu_shards_at_once.into_inner();
    assert!(most <= 2, "{most} GPU shards at once on 2 GPUs");

    log_phase("GPU shards ran on the GPU agent, each told which device it got");
    let status = client.job_status(&gpu_job).await?;
    let mut indices = BTreeSet::new();
    for shard in &status.shards {
        assert_eq!(shard.taskmanager.as_deref(), Some("gpu"), "{status:?}");
        let out = client.shard_output(&gpu_job, shard.index).await?;
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(line == "gpu=0" || line == "gpu=1", "{line}");
        indices.insert(line);
    }
    assert!(!indices.is_empty());
    let json = cli(&cluster, &["job", "status", &gpu_job, "--output", "json"])?;
    let json: serde_json::Value = serde_json::from_slice(&json.stdout)?;
    assert_eq!(
        json["resources"],
        serde_json::json!({"cpu": 1.0, "gpu": 1}),
        "{json}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_over_its_memory_request_fails_out_of_memory() -> anyhow::Result<()> {
    if !is_root() {
        eprintln!("skipped: the sandbox needs root (CI runs as root)");
        return Ok(());
    }
    let mut cluster = start_cluster(3, test_config()).await?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(cluster.dir.path(), std::fs::Permissions::from_mode(0o711))?;
    cluster.set_sandbox(true);
    cluster.start_taskmanager("box", 2, &[])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 1).await?;
    let tms = client.list_taskmanagers().await?;
    assert_eq!(tms[0].isolation, "full", "{tms:?}");
    // 128 MiB in a shell variable, under a request of 32 MiB; a neighbour within its own.
    let hog = client
        .submit(asking(
            "hog",
            1,
            "x=$(head -c 134217728 /dev/zero | tr '\\0' a); echo ${#x}",
            0,
            32 << 20,
            &[],
        ))
        .await?
        .job_id;
    let calm = client
        .submit(asking("calm", 1, "sleep 2; echo fine", 0, 64 << 20, &[]))
        .await?
        .job_id;
    let failed = wait_job_state(&client, &hog, &["failed"], DEADLINE).await?;
    let error = failed.shards[0].error.clone().unwrap_or_default();
    assert!(error.starts_with("out of memory (limit 32 MiB)"), "{error}");
    wait_job_state(&client, &calm, &["finished"], DEADLINE).await?;
    let tms = client.list_taskmanagers().await?;
    assert_eq!(tms[0].state, "alive", "the agent lives on: {tms:?}");
    Ok(())
}
