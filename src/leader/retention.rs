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

pub async fn run(raft: Raft, shared: Arc<SharedState>, settings: JobSettings) {
    loop {
        tokio::time::sleep(EVERY).await;
        let cutoff = now_ms().saturating_sub(settings.retention_secs.saturating_mul(1000));
        let (jobs, taskmanagers): (Vec<JobId>, Vec<String>) = {
            let view = shared.read();
            let jobs = view
                .state
                .jobs
                .values()
                .filter(|j| j.ended_at_ms.is_some_and(|t| t < cutoff))
                .map(|j| j.id)
                .take(BATCH)
                .collect();
            let taskmanagers = view
                .state
                .taskmanagers
                .values()
                .filter(|tm| tm.state == TaskManagerState::Lost)
                .filter(|tm| tm.lost_at_ms.is_some_and(|t| t < cutoff))
                .map(|tm| tm.id.clone())
                .take(BATCH)
                .collect();
            (jobs, taskmanagers)
        };
        if !jobs.is_empty() {
            let count = jobs.len();
            let command = Command::ForgetJobs {
                job_ids: jobs,
                now_ms: now_ms(),
            };
            propose(&raft, &shared, command, count, "jobs past their retention").await;
        }
        if !taskmanagers.is_empty() {
            let count = taskmanagers.len();
            let command = Command::ForgetTaskManagers {
                ids: taskmanagers,
                now_ms: now_ms(),
            };
            propose(&raft, &shared, command, count, "TaskManagers lost long ago").await;
        }
    }
}

async fn propose(raft: &Raft, shared: &SharedState, command: Command, count: usize, what: &str) {
    match shared
        .metrics()
        .time_proposal(raft.client_write(command))
        .await
    {
        Ok(_) => tracing::info!(count, "forgot {what}"),
        Err(e) => tracing::warn!("forgetting {what} failed: {e}"),
    }
}
