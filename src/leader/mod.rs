//! Leader-only loops, started when this replica becomes leader and stopped when it stops
//! being one. Every decision they make is a command through the Raft log; apply re-checks
//! it, so a deposed leader's late proposal cannot do harm.

mod liveness;
mod placement;
mod retention;
mod taskmanager_watch;

pub use liveness::Liveness;

use crate::config::ServeConfig;
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
        settings: ServeConfig,
    ) -> Self {
        let supervisor = tokio::spawn(supervise(raft, shared, liveness, settings));
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
    settings: ServeConfig,
) {
    let mut metrics = raft.metrics();
    let mut running: Option<RunningLoops> = None;
    loop {
        let (is_leader, term) = {
            let m = metrics.borrow_and_update();
            (m.state == ServerState::Leader, m.current_term)
        };
        match (is_leader, running.is_some()) {
            (true, false) => {
                tracing::info!(term, "became leader; starting leader loops");
                running = Some(RunningLoops(vec![
                    tokio::spawn(placement::run(raft.clone(), shared.clone())),
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
                ]));
            }
            (false, true) => {
                tracing::info!(term, "no longer leader; stopping leader loops");
                running = None;
            }
            _ => {}
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}
