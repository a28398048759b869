//! Submissions per second and their latency at a given number of concurrent clients.

use super::job_request;
use super::stats::Summary;
use super::BenchError;
use crate::client::Client;
use crate::security::Credentials;
use serde::Serialize;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize)]
pub struct ThroughputResult {
    pub clients: usize,
    pub submissions: usize,
    pub seconds: f64,
    pub per_second: f64,
    pub latency: Option<Summary>,
}

/// `clients` tasks, each with its own connection, submit back to back for `duration`.
pub async fn measure_submissions(
    endpoints: &[String],
    credentials: &Credentials,
    clients: usize,
    duration: Duration,
) -> Result<ThroughputResult, BenchError> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let client = std::sync::Arc::new(Client::new(endpoints.to_vec(), credentials.clone())?);
        tasks.push(back_to_back(deadline, move |seq| {
            let client = client.clone();
            async move {
                let job = job_request(&format!("bench-{c}-{seq}"), 1, "/bin/true", &[]);
                client.submit(job).await?;
                Ok(())
            }
        }));
    }
    gather(tasks, started).await
}

/// One client task: `op(0)`, `op(1)`, ... one after another until `deadline`, each timed.
pub(super) fn back_to_back<F, Fut>(
    deadline: Instant,
    mut op: F,
) -> tokio::task::JoinHandle<Result<Vec<Duration>, BenchError>>
where
    F: FnMut(u64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), BenchError>> + Send,
{
    tokio::spawn(async move {
        let mut latencies = Vec::new();
        let mut seq = 0;
        while Instant::now() < deadline {
            let t = Instant::now();
            op(seq).await?;
            latencies.push(t.elapsed());
            seq += 1;
        }
        Ok(latencies)
    })
}

/// The client tasks' latencies, pooled, as a rate since `started`.
pub(super) async fn gather(
    tasks: Vec<tokio::task::JoinHandle<Result<Vec<Duration>, BenchError>>>,
    started: Instant,
) -> Result<ThroughputResult, BenchError> {
    let clients = tasks.len();
    let mut latencies = Vec::new();
    for task in tasks {
        let mut l = task
            .await
            .map_err(|e| BenchError::Failed(format!("client task: {e}")))??;
        latencies.append(&mut l);
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(ThroughputResult {
        clients,
        submissions: latencies.len(),
        seconds,
        per_second: latencies.len() as f64 / seconds,
        latency: Summary::of(&latencies),
    })
}
