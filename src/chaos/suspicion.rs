//! Suspicions the cluster raised during a run: TaskManagers declared lost and shards
//! interrupted (their agent went silent or was cut off), read from the cluster's event stream
//! as they happen. With faults that silence agents these are expected; in a soak (no faults,
//! perhaps a loaded machine) every one of them is a false positive of failure detection.

use super::checker::{capped, Verdict};
use crate::client::Client;
use std::sync::{Arc, Mutex};

/// What the watcher saw, in order, one line per event.
#[derive(Debug, Clone, Default)]
pub struct Suspicions {
    seen: Arc<Mutex<Vec<String>>>,
}

impl Suspicions {
    /// Follow the cluster's events from the start until the task is aborted.
    pub fn watch(&self, client: Client) -> tokio::task::JoinHandle<()> {
        let seen = self.seen.clone();
        tokio::spawn(async move {
            loop {
                let result = client
                    .follow_events(1, 0, None, |event| {
                        if matches!(
                            event.kind.as_str(),
                            "taskmanager_lost" | "shard_interrupted"
                        ) {
                            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                            seen.push(format!(
                                "{} {} (job '{}' shard {:?}: {}) at log index {}",
                                event.kind,
                                event.taskmanager,
                                event.job_id,
                                event.shard,
                                event.detail,
                                event.index
                            ));
                        }
                        true
                    })
                    .await;
                if let Err(e) = result {
                    tracing::warn!("following the cluster's events: {e}; again");
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        })
    }

    /// The verdict: after faults, a count; without any, each one is a violation.
    pub fn verdict(&self, faults_silence_agents: bool) -> Verdict {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let checked = format!(
            "{} TaskManagers declared lost or shards interrupted{}",
            seen.len(),
            if faults_silence_agents {
                " (expected with these faults)"
            } else {
                "; with no fault injected, each would be a false suspicion"
            }
        );
        Verdict {
            name: "no-false-suspicion".into(),
            checked,
            violations: if faults_silence_agents {
                Vec::new()
            } else {
                capped(seen)
            },
        }
    }
}
