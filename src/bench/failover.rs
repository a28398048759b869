//! Leader failover as a client feels it: the clock starts when SIGKILL (or SIGSTOP) is sent to
//! the leader and stops at the first acknowledged submission that was sent after it.
//!
//! After a kill, the new leader's election timeline (`cluster status --local`, wall clock)
//! splits the time: detection (the fault → its first pre-vote), election (→ leader), the
//! first commit of its term, and the client (→ the acknowledgement).

use super::job_request;
use super::stats::Summary;
use super::BenchError;
use crate::local_cluster::LocalCluster;
use serde::Serialize;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How a leader is taken away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// SIGKILL: its connections close at once.
    Kill,
    /// SIGSTOP: it holds its connections and answers nothing (a hung or cut-off host).
    Pause,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailoverResult {
    pub fault: Fault,
    pub rounds: usize,
    pub samples_ms: Vec<f64>,
    pub summary: Option<Summary>,
    /// Per round, where the time went (kills only; absent when the timeline was not read).
    pub breakdown: Vec<Breakdown>,
    /// Medians of the breakdown's parts.
    pub breakdown_median: Option<Breakdown>,
    /// Terms beyond the one election each fault needs: split votes, and elections nobody
    /// provoked (while the cluster settled between rounds). A sign of timeouts too tight for
    /// the machine.
    pub extra_terms: u64,
}

/// One failover's parts, in milliseconds; they add up to the total.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Breakdown {
    /// The fault → the new leader's first pre-vote (or vote) request.
    pub detection_ms: f64,
    /// → it became leader.
    pub election_ms: f64,
    /// → the first entry of its term applied on it.
    pub first_commit_ms: f64,
    /// → the client's acknowledgement.
    pub client_ms: f64,
}

const CONVERGE_DEADLINE: Duration = Duration::from_secs(60);

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Take the leader away `rounds` times; after each round bring it back and let it catch up.
pub async fn measure_failover(
    cluster: &mut LocalCluster,
    rounds: usize,
    fault: Fault,
) -> Result<FailoverResult, BenchError> {
    let ids = cluster.ids();
    let client = cluster.client()?;
    let mut samples = Vec::with_capacity(rounds);
    let mut breakdown = Vec::new();
    let first_leader = cluster.wait_for_leader(&ids, CONVERGE_DEADLINE).await?;
    let first_term = term_of(cluster, first_leader).await;
    for round in 0..rounds {
        let leader = cluster.wait_for_leader(&ids, CONVERGE_DEADLINE).await?;
        let probe = || job_request(&format!("failover-probe-{round}"), 1, "/bin/true", &[]);
        // Warm the client's route to the current leader, as a live client would have.
        client.submit(probe()).await?;
        let faulted_us = unix_us();
        let faulted_at = Instant::now();
        match fault {
            Fault::Kill => cluster.kill(leader)?,
            Fault::Pause => cluster.pause(leader)?,
        }
        client.submit(probe()).await?;
        let took = faulted_at.elapsed();
        let acked_us = unix_us();
        samples.push(took);
        tracing::info!(
            round,
            leader,
            ?fault,
            ms = took.as_secs_f64() * 1000.0,
            "failover"
        );
        let survivors: Vec<u64> = ids.iter().copied().filter(|id| *id != leader).collect();
        let new_leader = cluster
            .wait_for_leader(&survivors, CONVERGE_DEADLINE)
            .await?;
        if let Some(parts) = parts_of(cluster, new_leader, faulted_us, acked_us).await {
            breakdown.push(parts);
        }
        match fault {
            Fault::Kill => cluster.restart(leader)?,
            Fault::Pause => cluster.resume(leader)?,
        }
        cluster.wait_converged(&ids, CONVERGE_DEADLINE).await?;
    }
    let last_leader = cluster.wait_for_leader(&ids, CONVERGE_DEADLINE).await?;
    let last_term = term_of(cluster, last_leader).await;
    let terms = last_term
        .zip(first_term)
        .map_or(0, |(l, f)| l.saturating_sub(f));
    let breakdown_median = median_breakdown(&breakdown);
    Ok(FailoverResult {
        fault,
        rounds,
        samples_ms: samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect(),
        summary: Summary::of(&samples),
        breakdown,
        breakdown_median,
        extra_terms: terms.saturating_sub(rounds as u64),
    })
}

async fn term_of(cluster: &LocalCluster, id: u64) -> Option<u64> {
    cluster.local_status(id).await.map(|s| s.term)
}

/// The new leader's timeline against the fault and the acknowledgement.
async fn parts_of(
    cluster: &LocalCluster,
    new_leader: u64,
    faulted_us: u64,
    acked_us: u64,
) -> Option<Breakdown> {
    let election = cluster.local_status(new_leader).await?.last_election?;
    let first_commit = election.first_commit_us?;
    let ms = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1000.0;
    if election.campaign_started_us < faulted_us {
        // Its campaign began before the fault: not this round's election.
        return None;
    }
    Some(Breakdown {
        detection_ms: ms(faulted_us, election.campaign_started_us),
        election_ms: ms(election.campaign_started_us, election.won_us),
        first_commit_ms: ms(election.won_us, first_commit),
        client_ms: ms(first_commit, acked_us),
    })
}

fn median_breakdown(parts: &[Breakdown]) -> Option<Breakdown> {
    let median = |pick: fn(&Breakdown) -> f64| {
        let mut values: Vec<f64> = parts.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len().saturating_sub(1) / 2).copied()
    };
    Some(Breakdown {
        detection_ms: median(|b| b.detection_ms)?,
        election_ms: median(|b| b.election_ms)?,
        first_commit_ms: median(|b| b.first_commit_ms)?,
        client_ms: median(|b| b.client_ms)?,
    })
}

/// Elections on an idle cluster: there must be none.
#[derive(Debug, Clone, Serialize)]
pub struct IdleElections {
    pub seconds: u64,
    pub term_before: u64,
    pub term_after: u64,
    pub elections: u64,
}

/// Watch an idle cluster for `seconds`: the leader's term before and after.
pub async fn measure_idle_elections(
    cluster: &LocalCluster,
    seconds: u64,
) -> Result<IdleElections, BenchError> {
    let ids = cluster.ids();
    let leader = cluster.wait_for_leader(&ids, CONVERGE_DEADLINE).await?;
    let term_before = term_of(cluster, leader).await.unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let leader = cluster.wait_for_leader(&ids, CONVERGE_DEADLINE).await?;
    let term_after = term_of(cluster, leader).await.unwrap_or(0);
    Ok(IdleElections {
        seconds,
        term_before,
        term_after,
        elections: term_after.saturating_sub(term_before),
    })
}
