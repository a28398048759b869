//! What jobs that wait for a job cost it: the rate of a job's shards end to end when many
//! other jobs name it in `--after`, against the same job that nobody names. Waiting jobs
//! should cost the job nothing per shard: they are looked at when it ends, not at each of
//! its shards' reports or each planning turn.
//!
//! Each run gates the job behind a one-shard job that waits for a file, so that the
//! dependents are all submitted (through the library client, many at once) before its first
//! shard is placed; the clock starts when the file appears and stops when `job wait`
//! returns. The dependents also wait for a job that never ends, cancelled after the run, so
//! that they never run.

use super::dispatch::cli;
use super::stats::median;
use super::{job_request, BenchError};
use crate::client::Client;
use crate::local_cluster::LocalCluster;
use serde::Serialize;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

/// Clients submitting the dependents at once.
const SUBMITTERS: usize = 16;

#[derive(Debug, Clone, Serialize)]
pub struct DependentsResult {
    pub shards: u32,
    pub dependents: u32,
    /// Shards per second of the job alone, and with the dependents: each run's, and the
    /// medians.
    pub alone_per_second: Vec<f64>,
    pub named_per_second: Vec<f64>,
    pub alone_median: f64,
    pub named_median: f64,
    /// `named_median / alone_median`.
    pub ratio: f64,
}

/// `runs` pairs of runs (alone, then named by `dependents` jobs) of a job of `shards`
/// `/bin/true` shards.
pub async fn measure_dependents(
    cluster: &LocalCluster,
    binary: &Path,
    dir: &Path,
    shards: u32,
    dependents: u32,
    runs: usize,
) -> Result<DependentsResult, BenchError> {
    let mut alone = Vec::new();
    let mut named = Vec::new();
    for run in 0..runs.max(1) {
        alone.push(gated_run(cluster, binary, dir, shards, 0, run * 2).await?);
        named.push(gated_run(cluster, binary, dir, shards, dependents, run * 2 + 1).await?);
    }
    let alone_median = median(&alone);
    let named_median = median(&named);
    Ok(DependentsResult {
        shards,
        dependents,
        alone_per_second: alone,
        named_per_second: named,
        alone_median,
        named_median,
        ratio: named_median / alone_median,
    })
}

fn failed(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Failed(format!("{what}: {e}"))
}

/// One run: the job's shards per second from the gate's opening to `job wait` returning.
async fn gated_run(
    cluster: &LocalCluster,
    binary: &Path,
    dir: &Path,
    shards: u32,
    dependents: u32,
    run: usize,
) -> Result<f64, BenchError> {
    let client = cluster.client().map_err(|e| failed("client", e))?;
    let gate = dir.join(format!("dependents-gate-{run}"));
    let wait_for_gate = format!("while [ ! -e '{}' ]; do sleep 0.005; done", gate.display());
    let gate_job = client
        .submit(job_request("gate", 1, "/bin/sh", &["-c", &wait_for_gate]))
        .await?
        .job_id;
    let mut request = job_request("named", shards, "/bin/true", &[]);
    request.after = vec![gate_job];
    let job = client.submit(request).await?.job_id;
    let hold = client
        .submit(job_request("hold", 1, "/bin/sleep", &["600"]))
        .await?
        .job_id;
    submit_dependents(cluster, &job, &hold, dependents).await?;
    std::fs::write(&gate, b"")?;
    let started = Instant::now();
    let waited = cli(binary, cluster, &["job", "wait", &job, "--timeout", "600"])
        .stdout(Stdio::null())
        .status()?;
    let seconds = started.elapsed().as_secs_f64();
    if !waited.success() {
        return Err(BenchError::Failed(format!(
            "job wait {job} ended with {waited}"
        )));
    }
    // The dependents end `failed` with it, without running.
    client.cancel_job(&hold).await?;
    Ok(f64::from(shards) / seconds)
}

/// `count` one-shard jobs that wait for `job` and `hold`.
async fn submit_dependents(
    cluster: &LocalCluster,
    job: &str,
    hold: &str,
    count: u32,
) -> Result<(), BenchError> {
    let mut tasks = tokio::task::JoinSet::new();
    for submitter in 0..SUBMITTERS as u32 {
        let client: Client = cluster.client().map_err(|e| failed("client", e))?;
        let after = vec![job.to_string(), hold.to_string()];
        tasks.spawn(async move {
            let mut n = submitter;
            while n < count {
                let mut request = job_request("dependent", 1, "/bin/true", &[]);
                request.after = after.clone();
                client.submit(request).await?;
                n += SUBMITTERS as u32;
            }
            Ok::<(), BenchError>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| failed("a submitter", e))??;
    }
    Ok(())
}
