//! The placement loop: whenever the applied state changes and some job has pending shards,
//! ask the pure scheduler for a plan and propose it as one `PlaceShards` command.

use super::behind_reports::placed;
use super::PlacementsBehind;
use crate::clock::now_ms;
use crate::config::stopped_by_ms;
use crate::domain::JobId;
use crate::fsm::{gang_is_split, Command, Response};
use crate::raft::{Raft, SharedState};
use crate::scheduler::preemption::plan_preemption;
use crate::scheduler::{plan, PlanLimits, ScoreWeights};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Re-plan at least this often, even without state changes (retry back-offs expire by time).
const IDLE_RECHECK: Duration = Duration::from_millis(250);
/// Longest wait for plans behind reports to settle before planning anyway.
const BEHIND_WAIT: Duration = Duration::from_millis(20);
/// Pause after a failed proposal before trying again.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Recovery throttle: at most this many shards that ran before (retries, shards of lost or
/// drained TaskManagers) are placed again per second, so a large loss is absorbed gradually.
const MAX_REPLACEMENTS_PER_SECOND: f64 = 1_000.0;

pub async fn run(
    raft: Raft,
    shared: Arc<SharedState>,
    behind: Arc<PlacementsBehind>,
    lease_ms: u64,
) {
    let mut applied = shared.subscribe();
    let mut tokens = MAX_REPLACEMENTS_PER_SECOND;
    let mut refilled = Instant::now();
    loop {
        tokens = (tokens + refilled.elapsed().as_secs_f64() * MAX_REPLACEMENTS_PER_SECOND)
            .min(MAX_REPLACEMENTS_PER_SECOND);
        refilled = Instant::now();
        if restart_split_gangs(&raft, &shared, lease_ms).await {
            continue;
        }
        if behind.busy() {
            // A report's room is being filled by the plan behind it: planning now could see
            // that room before the plan applies, and place twice into it (apply would skip
            // the second, an entry for nothing). Wait for it, briefly: plans behind reports
            // of several agents may follow one another without a gap, and the loop must
            // still plan what they do not (room that was free already, other tenants).
            let _ = tokio::time::timeout(BEHIND_WAIT, behind.settled()).await;
        }
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
                // A gang's restart may take more than a second's tokens at once (it goes
                // whole); the others wait until the bucket refills from zero.
                tokens = (tokens - replacements as f64).max(0.0);
                placements
            }
        };
        #[cfg(feature = "failpoints")]
        if !placements.is_empty() && fail::eval("placement-planned", |_| ()).is_some() {
            // A plan that reaches the log late, as a new leader's or one raced by `quota set`
            // may: apply must check it again (tests/failpoints.rs).
            eprintln!(
                "failpoint placement-planned fired: proposing {} placements in 2 s",
                placements.len()
            );
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
        let mut progressed = false;
        let placements_were_empty = placements.is_empty();
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
                    progressed = placed(count, &reply.data, "placement loop") > 0;
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
        if placements_were_empty && preempt(&raft, &shared, lease_ms).await {
            continue;
        }
        // Nothing to do (or nothing fit): wait for the state to change.
        let _ = tokio::time::timeout(IDLE_RECHECK, applied.changed()).await;
    }
}

/// A gang that lost a member (a failure, a lost TaskManager, a preemption) restarts whole:
/// its other shards go back to pending, and are not placed again before their agents have
/// surely stopped them. Whether a restart was applied.
async fn restart_split_gangs(raft: &Raft, shared: &SharedState, lease_ms: u64) -> bool {
    // A split gang has pending shards: only the gangs with pending shards are looked at (an
    // index), not every waiting job.
    let split: Vec<JobId> = {
        let view = shared.read();
        let state = &view.state;
        state
            .pending
            .gangs()
            .filter(|job| gang_is_split(state, *job))
            .collect()
    };
    let mut restarted = false;
    for job_id in split {
        let now = now_ms();
        let command = Command::RestartGang {
            job_id,
            not_before_ms: stopped_by_ms(now, lease_ms),
            now_ms: now,
        };
        match propose_requeue(raft, shared, command, "gang restart").await {
            Some(0) => {}
            Some(count) => {
                tracing::info!(job = %job_id, shards = count, "gang restarted");
                restarted = true;
            }
            None => tokio::time::sleep(RETRY_BACKOFF).await,
        }
    }
    restarted
}

/// Propose a command that puts shards back to pending; how many moved, or `None` if the
/// proposal failed (logged).
async fn propose_requeue(
    raft: &Raft,
    shared: &SharedState,
    command: Command,
    what: &str,
) -> Option<u32> {
    match shared
        .metrics()
        .time_proposal(raft.client_write(command))
        .await
    {
        Ok(reply) => match reply.data {
            Response::ShardsRequeued { count } => Some(count),
            _ => Some(0),
        },
        Err(e) => {
            tracing::warn!("{what} proposal failed: {e}");
            None
        }
    }
}

/// When nothing could be placed, make room for the highest-priority waiting shard by putting
/// strictly lower-priority shards back to pending and placing it in their room, in one entry
/// (`PreemptForShard`: not a failure, no attempt used). The victims are not placed again
/// before their agent has surely stopped them (its next heartbeat, or its lease running
/// out), and the agent starts the preemptor only once their processes are gone. Whether
/// something was preempted.
async fn preempt(raft: &Raft, shared: &SharedState, lease_ms: u64) -> bool {
    let now = now_ms();
    let Some((for_job, taskmanager, shards)) = plan_preemption(&shared.read().state, now) else {
        return false;
    };
    let count = shards.len();
    // The shard the room goes to, in the same entry: nobody else can take it in between.
    let Some(shard) = shared.read().state.job(for_job).and_then(|job| {
        job.pending_shards()
            .find(|s| s.not_before_ms <= now)
            .map(|s| s.index)
    }) else {
        return false;
    };
    let command = Command::PreemptForShard {
        taskmanager: taskmanager.clone(),
        victims: shards,
        for_job,
        shard,
        not_before_ms: stopped_by_ms(now, lease_ms),
        now_ms: now,
    };
    let moved = propose_requeue(raft, shared, command, "preemption")
        .await
        .is_some_and(|moved| moved > 0);
    if moved {
        tracing::info!(%taskmanager, shards = count, "preempted lower-priority shards");
    }
    moved
}
