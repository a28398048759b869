//! Why this replica cannot reach each peer it cannot reach: the last failure of a Raft call
//! to it (a refused handshake, a certificate of the wrong party, a refusal by the peer's
//! access rules, nothing listening, a timeout) and since when. Logged at `warn` when it
//! starts and again every few seconds while it lasts, at `info` when the peer answers again,
//! and shown by `cluster status --local`: a replica that never forms a cluster says why.
//!
//! Kept in memory only; it changes nothing about how Raft retries.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often a lasting failure is logged again.
const REPEAT_EVERY: Duration = Duration::from_secs(5);

/// One peer's current trouble.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTrouble {
    pub id: u64,
    pub addr: String,
    /// The failure, with its causes.
    pub error: String,
    /// When calls to it began to fail (ms since the Unix epoch).
    pub since_ms: u64,
}

#[derive(Debug)]
struct Entry {
    trouble: PeerTrouble,
    logged_at: Instant,
}

/// Every peer that fails now.
#[derive(Debug, Default)]
pub struct PeerTroubles {
    peers: Mutex<BTreeMap<u64, Entry>>,
}

impl PeerTroubles {
    /// A call to `id` at `addr` failed with `error`.
    pub fn failed(&self, id: u64, addr: &str, error: &str) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match peers.get_mut(&id) {
            Some(entry) if entry.trouble.error == error && entry.trouble.addr == addr => {
                if now.duration_since(entry.logged_at) >= REPEAT_EVERY {
                    entry.logged_at = now;
                    tracing::warn!(peer = id, %addr, "replica {id} is still unreachable: {error}");
                }
            }
            _ => {
                let since_ms = peers
                    .get(&id)
                    .map(|e| e.trouble.since_ms)
                    .unwrap_or_else(wall_ms);
                tracing::warn!(peer = id, %addr, "cannot reach replica {id}: {error}");
                peers.insert(
                    id,
                    Entry {
                        trouble: PeerTrouble {
                            id,
                            addr: addr.to_string(),
                            error: error.to_string(),
                            since_ms,
                        },
                        logged_at: now,
                    },
                );
            }
        }
    }

    /// A call to `id` succeeded.
    pub fn answered(&self, id: u64) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = peers.remove(&id) {
            tracing::info!(
                peer = id,
                addr = %entry.trouble.addr,
                "replica {id} answers again"
            );
        }
    }

    /// The peers that fail now, by id.
    pub fn current(&self) -> Vec<PeerTrouble> {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.values().map(|e| e.trouble.clone()).collect()
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_kept_until_the_peer_answers_and_keeps_its_start() {
        let troubles = PeerTroubles::default();
        troubles.failed(2, "h:1", "connection refused");
        let first = troubles.current();
        assert_eq!(first.len(), 1);
        troubles.failed(2, "h:1", "handshake refused: unknown issuer");
        let second = troubles.current();
        assert_eq!(second[0].error, "handshake refused: unknown issuer");
        assert_eq!(
            second[0].since_ms, first[0].since_ms,
            "failing since the first"
        );
        troubles.answered(2);
        assert!(troubles.current().is_empty());
    }
}
