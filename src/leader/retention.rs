//! Retention: the leader forgets jobs that ended, and TaskManagers that were lost, more than
//! `retention_secs` ago, in batches, through the log. Without it the state, and every
//! snapshot, would grow with every job ever submitted and every agent id ever seen.

use crate::clock::now_ms;
use crate::config::JobSettings;
use crate::domain::{JobId, TaskManagerState};
use crate::fsm::Command;
use crate::raft::{Raft, SharedState};
use std::sync::Arc;
use std::time::Duration;

const EVERY: Duration = Duration::from_secs(5);
const BATCH: usize = 5_000;

async fn forget_lost_taskmanagers(raft: &Raft, shared: &SharedState, cutoff: u64) {
    let expired: Vec<String> = {
        let view = shared.read();
        view.state
            .taskmanagers
            .values()
            .filter(|tm| tm.state == TaskManagerState::Lost)
            .filter(|tm| tm.lost_at_ms.is_some_and(|t| t < cutoff))
            .map(|tm| tm.id.clone())
            .take(BATCH)
            .collect()
    };
    if expired.is_empty() {
        return;
    }
    let count = expired.len();
    let command = Command::ForgetTaskManagers {
        ids: expired,
        now_ms: now_ms(),
    };
    match raft.client_write(command).await {
        Ok(_) => tracing::info!(taskmanagers = count, "forgot TaskManagers lost long ago"),
        Err(e) => tracing::warn!("forgetting lost TaskManagers failed: {e}"),
    }
}

pub async fn run(raft: Raft, shared: Arc<SharedState>, settings: JobSettings) {
    loop {
        tokio::time::sleep(EVERY).await;
        let cutoff = now_ms().saturating_sub(settings.retention_secs.saturating_mul(1000));
        let expired: Vec<JobId> = {
            let view = shared.read();
            view.state
                .jobs
                .values()
                .filter(|j| j.ended_at_ms.is_some_and(|t| t < cutoff))
                .map(|j| j.id)
                .take(BATCH)
                .collect()
        };
        forget_lost_taskmanagers(&raft, &shared, cutoff).await;
        if expired.is_empty() {
            continue;
        }
        let count = expired.len();
        let command = Command::ForgetJobs {
            job_ids: expired,
            now_ms: now_ms(),
        };
        match raft.client_write(command).await {
            Ok(_) => tracing::info!(jobs = count, "forgot jobs past their retention"),
            Err(e) => tracing::warn!("forgetting expired jobs failed: {e}"),
        }
    }
}
