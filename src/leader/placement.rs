//! The placement loop: whenever the applied state changes and some job has pending shards,
//! ask the pure scheduler for a plan and propose it as one `PlaceShards` command.

use crate::clock::now_ms;
use crate::fsm::{Command, Response};
use crate::raft::{Raft, SharedState};
use crate::scheduler::{plan, PlanLimits, ScoreWeights};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Re-plan at least this often, even without state changes (retry back-offs expire by time).
const IDLE_RECHECK: Duration = Duration::from_millis(250);
/// Pause after a failed proposal before trying again.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Recovery throttle: at most this many shards that ran before (retries, shards of lost or
/// drained TaskManagers) are placed again per second, so a large loss is absorbed gradually.
const MAX_REPLACEMENTS_PER_SECOND: f64 = 1_000.0;

pub async fn run(raft: Raft, shared: Arc<SharedState>) {
    let mut applied = shared.subscribe();
    let mut tokens = MAX_REPLACEMENTS_PER_SECOND;
    let mut refilled = Instant::now();
    loop {
        tokens = (tokens + refilled.elapsed().as_secs_f64() * MAX_REPLACEMENTS_PER_SECOND)
            .min(MAX_REPLACEMENTS_PER_SECOND);
        refilled = Instant::now();
        let placements = {
            let view = shared.read();
            if view.state.jobs_with_pending_shards.is_empty() {
                Vec::new()
            } else {
                let limits = PlanLimits {
                    max_replacements: tokens as usize,
                    ..PlanLimits::default()
                };
                let placements = plan(&view.state, now_ms(), ScoreWeights::default(), limits);
                let replacements = placements
                    .iter()
                    .filter(|p| {
                        view.state
                            .job(p.job_id)
                            .and_then(|j| j.shards.get(p.shard as usize))
                            .is_some_and(|s| s.attempt > 0)
                    })
                    .count();
                tokens -= replacements as f64;
                placements
            }
        };
        let mut progressed = false;
        if !placements.is_empty() {
            let count = placements.len();
            let command = Command::PlaceShards {
                placements,
                now_ms: now_ms(),
            };
            match shared
                .metrics()
                .time_proposal(raft.client_write(command))
                .await
            {
                Ok(reply) => {
                    if let Response::ShardsPlaced(outcome) = reply.data {
                        tracing::debug!(
                            planned = count,
                            placed = outcome.placed,
                            stale = outcome.stale,
                            "placement plan applied"
                        );
                        progressed = outcome.placed > 0;
                    }
                }
                Err(e) => {
                    tracing::warn!("placement proposal failed: {e}");
                    tokio::time::sleep(RETRY_BACKOFF).await;
                    continue;
                }
            }
        }
        if progressed {
            continue;
        }
        // Nothing to do (or nothing fit): wait for the state to change.
        let _ = tokio::time::timeout(IDLE_RECHECK, applied.changed()).await;
    }
}
