//! The leader's failure detector and drain enforcer.
//!
//! Every tick it looks for TaskManagers whose last heartbeat is older than the timeout.
//! Nobody is declared lost during the grace period after this replica became leader (the
//! TaskManagers need a moment to find it). If most TaskManagers fall silent at once, the
//! fault is more likely ours (a network cut around the leader) than theirs: evictions are
//! held and the reason logged. Each candidate's last contact is checked again right before
//! proposing, and declarations are throttled. Drains past their deadline have their
//! remaining shards requeued.

use super::liveness::Liveness;
use crate::clock::now_ms;
use crate::config::{stopped_by_ms, TaskManagerSettings};
use crate::domain::{JobId, TaskManagerState};
use crate::fsm::{Command, Response};
use crate::raft::{Raft, SharedState};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(100);
/// A mass silence holds evictions for this many timeouts before it is believed.
const MASS_SILENCE_HOLD_TIMEOUTS: u32 = 3;

pub async fn run(
    raft: Raft,
    shared: Arc<SharedState>,
    liveness: Arc<Liveness>,
    settings: TaskManagerSettings,
) {
    let leader_since = Instant::now();
    let timeout = Duration::from_millis(settings.timeout_ms);
    let grace = Duration::from_millis(settings.grace_ms);
    let mut budget = Budget::new(settings.max_lost_per_second);
    let mut last_hold_log: Option<Instant> = None;
    let mut hold_since: Option<Instant> = None;
    tracing::info!(
        grace_ms = settings.grace_ms,
        "failure detector warming up: nobody is declared lost during the grace period"
    );
    loop {
        tokio::time::sleep(TICK).await;
        let now = Instant::now();
        if now.duration_since(leader_since) < grace {
            continue;
        }
        // A TaskManager not heard from since this replica took over counts from then.
        let silent_for = |id: &str| {
            let last = liveness
                .last_contact(id)
                .map_or(leader_since, |t| t.max(leader_since));
            now.saturating_duration_since(last)
        };
        let (candidates, watched, suspects, overdue_drains) = {
            let view = shared.read();
            let mut candidates = Vec::new();
            let mut watched = 0usize;
            // Silent for over half the timeout: counted for the mass-silence check, so that
            // TaskManagers falling silent together are seen together, not lost one by one as
            // each crosses the timeout a tick after the other.
            let mut suspects = 0usize;
            let mut drains = Vec::new();
            let wall = now_ms();
            for tm in view.state.taskmanagers.values() {
                if tm.state == TaskManagerState::Lost {
                    continue;
                }
                watched += 1;
                if silent_for(&tm.id) > timeout / 2 {
                    suspects += 1;
                }
                if silent_for(&tm.id) > timeout {
                    candidates.push((tm.id.clone(), tm.registration_epoch));
                } else if tm.state == TaskManagerState::Draining
                    && tm.drain_deadline_ms.is_some_and(|d| d <= wall)
                {
                    let held: Vec<(JobId, u32, u64)> = view
                        .state
                        .assignments(&tm.id)
                        .map(|(job, shard)| (job.id, shard.index, shard.epoch))
                        .collect();
                    if !held.is_empty() {
                        drains.push((tm.id.clone(), held));
                    }
                }
            }
            (candidates, watched, suspects, drains)
        };
        for (tm, shards) in overdue_drains {
            let count = shards.len();
            let now = now_ms();
            let command = Command::RequeueShards {
                taskmanager: tm.clone(),
                shards,
                // The agent stops its copies at its next heartbeat, or its lease runs out.
                not_before_ms: stopped_by_ms(now, settings.lease_ms),
                now_ms: now,
            };
            match shared
                .metrics()
                .time_proposal(raft.client_write(command))
                .await
            {
                Ok(_) => {
                    tracing::info!(taskmanager = %tm, shards = count, "drain deadline passed: shards requeued")
                }
                Err(e) => {
                    tracing::warn!(taskmanager = %tm, "requeue after drain deadline failed: {e}")
                }
            }
        }
        if candidates.is_empty() {
            hold_since = None;
            continue;
        }
        if watched >= 3 && suspects * 2 > watched {
            // Most TaskManagers silent at once: more likely our side. Hold, but not forever:
            // this leader still commits (it runs this loop), so after a long hold the silence
            // is believed and work is moved (throttled).
            let since = *hold_since.get_or_insert_with(Instant::now);
            if since.elapsed() < timeout * MASS_SILENCE_HOLD_TIMEOUTS {
                if last_hold_log.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    tracing::warn!(
                        silent = suspects,
                        watched,
                        "most TaskManagers are silent at once; suspecting this leader or its network, holding evictions"
                    );
                    last_hold_log = Some(Instant::now());
                }
                continue;
            }
            if last_hold_log.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                tracing::warn!(
                    silent = candidates.len(),
                    watched,
                    "mass silence outlasted the hold; declaring TaskManagers lost"
                );
                last_hold_log = Some(Instant::now());
            }
        } else {
            hold_since = None;
        }
        for (id, registration_epoch) in candidates {
            if !budget.take() {
                break;
            }
            // Re-check and condemn in one step: a heartbeat that arrives from now on is
            // refused, so none can be answered with assignments this loss moves away.
            if !liveness.condemn_if_silent(&id, leader_since, timeout) {
                continue;
            }
            let command = Command::MarkTaskManagerLost {
                id: id.clone(),
                registration_epoch,
                now_ms: now_ms(),
            };
            match shared
                .metrics()
                .time_proposal(raft.client_write(command))
                .await
            {
                Ok(reply) => {
                    if let Response::Rejected(why) = &reply.data {
                        // It registered again meanwhile: nothing was moved.
                        tracing::info!(taskmanager = %id, "not declared lost: {why}");
                        liveness.pardon(&id);
                    }
                    if let Response::TaskManagerLost {
                        shards_requeued, ..
                    } = reply.data
                    {
                        tracing::warn!(taskmanager = %id, shards_requeued, silent_ms = silent_for(&id).as_millis() as u64, "TaskManager lost");
                    }
                }
                Err(e) => {
                    tracing::warn!(taskmanager = %id, "declaring TaskManager lost failed: {e}");
                    liveness.pardon(&id);
                }
            }
        }
    }
}

/// Token bucket: at most `per_second` declarations per second, in bursts of that size.
struct Budget {
    per_second: f64,
    tokens: f64,
    refilled: Instant,
}

impl Budget {
    fn new(per_second: u32) -> Self {
        Budget {
            per_second: per_second as f64,
            tokens: per_second as f64,
            refilled: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let elapsed = self.refilled.elapsed().as_secs_f64();
        self.refilled = Instant::now();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
