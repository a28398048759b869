//! Leader-only loops, started when this replica becomes leader and stopped when it stops
//! being one. Every decision they make is a command through the Raft log; apply re-checks
//! it, so a deposed leader's late proposal cannot do harm.

pub mod behind_reports;
mod cron;
mod liveness;
mod placement;
mod retention;
mod seed_token;
mod taskmanager_watch;

pub mod fencing;
pub use behind_reports::PlacementsBehind;
pub use liveness::Liveness;

use crate::config::ServeConfig;
use crate::domain::TokenHash;
use crate::raft::{Raft, SharedState};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::ServerState;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// Watches this replica's role and runs the leader loops while it leads.
pub struct LeaderDuties {
    supervisor: JoinHandle<()>,
}

impl LeaderDuties {
    pub fn start(
        raft: Raft,
        shared: Arc<SharedState>,
        liveness: Arc<Liveness>,
        behind: Arc<PlacementsBehind>,
        settings: ServeConfig,
        bootstrap_token: Option<TokenHash>,
        otlp_endpoint: Option<String>,
    ) -> Self {
        let supervisor = tokio::spawn(supervise(
            raft,
            shared,
            liveness,
            behind,
            settings,
            bootstrap_token,
            otlp_endpoint,
        ));
        LeaderDuties { supervisor }
    }

    pub fn stop(self) {
        self.supervisor.abort();
    }
}

/// Aborts the loops it holds when dropped, including when the supervisor is aborted.
struct RunningLoops(Vec<JoinHandle<()>>);

impl Drop for RunningLoops {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}

async fn supervise(
    raft: Raft,
    shared: Arc<SharedState>,
    liveness: Arc<Liveness>,
    behind: Arc<PlacementsBehind>,
    settings: ServeConfig,
    bootstrap_token: Option<TokenHash>,
    otlp_endpoint: Option<String>,
) {
    // The server metrics change only with the role, vote or membership: not with every
    // log entry, as the full metrics do.
    let mut metrics = raft.server_metrics();
    // The loops and the term they were started in.
    let mut running: Option<(RunningLoops, u64)> = None;
    loop {
        let (is_leader, term) = {
            let m = metrics.borrow_and_update();
            (m.state == ServerState::Leader, m.vote.leader_id.term)
        };
        let running_term = running.as_ref().map(|(_, t)| *t);
        if running_term.is_some() && (!is_leader || running_term != Some(term)) {
            // Stopped leading, or led again in a newer term without us seeing the gap: a new
            // leadership starts over (grace period included).
            tracing::info!(term, "leadership changed; stopping leader loops");
            running = None;
        }
        if is_leader && running.is_none() {
            tracing::info!(term, "became leader; starting leader loops");
            liveness.became_leader(term, std::time::Instant::now());
            let mut loops = vec![
                tokio::spawn(placement::run(
                    raft.clone(),
                    shared.clone(),
                    behind.clone(),
                    settings.taskmanagers.lease_ms,
                )),
                tokio::spawn(taskmanager_watch::run(
                    raft.clone(),
                    shared.clone(),
                    liveness.clone(),
                    settings.taskmanagers.clone(),
                )),
                tokio::spawn(retention::run(
                    raft.clone(),
                    shared.clone(),
                    settings.jobs.clone(),
                )),
                tokio::spawn(cron::run(
                    raft.clone(),
                    shared.clone(),
                    settings.limits.admission(),
                )),
            ];
            if let Some(endpoint) = &otlp_endpoint {
                loops.push(tokio::spawn(crate::traces::run(
                    shared.clone(),
                    endpoint.clone(),
                )));
            }
            if let Some(hash) = bootstrap_token {
                loops.push(tokio::spawn(seed_token::run(
                    raft.clone(),
                    shared.clone(),
                    hash,
                )));
            }
            let loops = RunningLoops(loops);
            running = Some((loops, term));
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}
