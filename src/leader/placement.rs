//! The placement loop: whenever the applied state changes and some job has pending shards,
//! ask the pure scheduler for a plan and propose it as one `PlaceShards` command.

use crate::clock::now_ms;
use crate::fsm::{Command, Response};
use crate::raft::{Raft, SharedState};
use crate::scheduler::{plan, PlanLimits, ScoreWeights};
use std::sync::Arc;
use std::time::Duration;

/// Re-plan at least this often, even without state changes (retry back-offs expire by time).
const IDLE_RECHECK: Duration = Duration::from_millis(250);
/// Pause after a failed proposal before trying again.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

pub async fn run(raft: Raft, shared: Arc<SharedState>) {
    let mut applied = shared.subscribe();
    loop {
        let placements = {
            let view = shared.read();
            if view.state.jobs_with_pending_shards.is_empty() {
                Vec::new()
            } else {
                plan(
                    &view.state,
                    now_ms(),
                    ScoreWeights::default(),
                    PlanLimits::default(),
                )
            }
        };
        let mut progressed = false;
        if !placements.is_empty() {
            let count = placements.len();
            let command = Command::PlaceShards {
                placements,
                now_ms: now_ms(),
            };
            match raft.client_write(command).await {
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
