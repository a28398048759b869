//! Samples every replica's own status (straight to the replica, past the proxies) a few times
//! a second, for the leader-per-term and commit-index checkers.

use super::history::{Event, History};
use crate::client::{Client, ClientOptions};
use crate::security::Credentials;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many times each replica process has been started by the runner.
pub type Incarnations = Arc<Mutex<BTreeMap<u64, u64>>>;

const EVERY: Duration = Duration::from_millis(100);

pub async fn run(
    replicas: Vec<(u64, String)>,
    incarnations: Incarnations,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
    credentials: Credentials,
) {
    let clients: Vec<(u64, String, Option<Client>)> = replicas
        .into_iter()
        .map(|(id, addr)| {
            let client = Client::with_options(
                vec![addr.clone()],
                ClientOptions {
                    rpc_timeout: Duration::from_millis(300),
                    call_timeout: Duration::from_millis(300),
                    source_ip: None,
                    credentials: credentials.clone(),
                },
            )
            .ok();
            (id, addr, client)
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        for (id, addr, client) in &clients {
            let Some(client) = client else { continue };
            let current = || {
                incarnations
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(id)
                    .copied()
                    .unwrap_or(0)
            };
            let incarnation = current();
            let at_ns = history.now_ns();
            let reply = client.local_status(Some(addr)).await;
            // A restart while the call was out could pin the new process's view on the old
            // incarnation: drop such a sample.
            if current() != incarnation {
                continue;
            }
            if let Ok(s) = reply {
                history.record(&Event::Sample {
                    at_ns,
                    replica: *id,
                    incarnation,
                    term: s.term,
                    leader_id: s.leader_id,
                    state: s.server_state,
                    committed: s.committed,
                    last_applied: s.last_applied,
                });
            }
        }
        tokio::time::sleep(EVERY).await;
    }
}
