//! Leader failover as a client feels it: the clock starts when SIGKILL is sent to the leader
//! and stops at the first acknowledged submission that was sent after the kill.

use super::job_request;
use super::stats::Summary;
use super::BenchError;
use crate::local_cluster::LocalCluster;
use serde::Serialize;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize)]
pub struct FailoverResult {
    pub rounds: usize,
    pub samples_ms: Vec<f64>,
    pub summary: Option<Summary>,
}

const CONVERGE_DEADLINE: Duration = Duration::from_secs(60);

/// Kill the leader `rounds` times; after each round restart it and let it catch up.
pub async fn measure_failover(
    cluster: &mut LocalCluster,
    rounds: usize,
) -> Result<FailoverResult, BenchError> {
    let ids = cluster.ids();
    let client = cluster.client()?;
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let leader = cluster.wait_for_leader(&ids, CONVERGE_DEADLINE).await?;
        let probe = || job_request(&format!("failover-probe-{round}"), 1, "/bin/true", &[]);
        // Warm the client's route to the current leader, as a live client would have.
        client.submit(probe()).await?;
        let killed_at = Instant::now();
        cluster.kill(leader)?;
        client.submit(probe()).await?;
        let took = killed_at.elapsed();
        samples.push(took);
        tracing::info!(round, leader, ms = took.as_secs_f64() * 1000.0, "failover");
        cluster.restart(leader)?;
        cluster.wait_converged(&ids, CONVERGE_DEADLINE).await?;
    }
    Ok(FailoverResult {
        rounds,
        samples_ms: samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect(),
        summary: Summary::of(&samples),
    })
}
