//! `/readyz`: ready only while this replica knows a leader and has applied everything that
//! leader had committed when asked, so a load balancer sends reads only to replicas whose
//! answers are current.
//!
//! The leader confirms its leadership with a quorum (ReadIndex) and uses its read index; a
//! follower asks the leader for its commit index over gRPC, on one channel kept open to the
//! leader (not a new TLS connection per probe). Either then waits a moment for its own apply
//! to get there (a follower learns of commits one heartbeat late), and says why not if it
//! does not. A verdict is reused for a moment, so a flood of probes costs one check each
//! moment.

use super::recent::Recent;
use crate::pb::api::cluster_client::ClusterClient;
use crate::pb::api::ClusterStatusRequest;
use crate::raft::{Raft, SharedState};
use crate::security::Transport;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::ReadPolicy;
use std::time::Duration;
use tonic::transport::Channel;

/// How long the leader's confirmation or answer may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// How long this replica's apply may take to reach the leader's commit index.
const CATCH_UP: Duration = Duration::from_secs(1);
/// How long a verdict is reused.
const FRESH_FOR: Duration = Duration::from_millis(250);

/// What readiness keeps between probes: the channel to the leader and the last verdict.
pub struct Readiness {
    transport: Transport,
    leader: std::sync::Mutex<Option<(String, Channel)>>,
    verdict: Recent<Result<String, String>>,
}

impl Readiness {
    pub fn new(transport: Transport) -> Self {
        Readiness {
            transport,
            leader: std::sync::Mutex::new(None),
            verdict: Recent::new(FRESH_FOR),
        }
    }

    /// Ready, with what was checked, or not, with why.
    pub async fn check(&self, raft: &Raft, shared: &SharedState) -> Result<String, String> {
        self.verdict.get_or(|| check(self, raft, shared)).await
    }

    /// The leader's commit index, asked on the kept channel (a new one when the leader
    /// moved).
    async fn leader_commit(&self, addr: &str) -> Option<u64> {
        let channel = {
            let mut kept = self.leader.lock().unwrap_or_else(|p| p.into_inner());
            match kept.as_ref() {
                Some((at, channel)) if at == addr => channel.clone(),
                _ => {
                    let channel = self
                        .transport
                        .channel(
                            addr,
                            |e| e.connect_timeout(ASK_TIMEOUT).timeout(ASK_TIMEOUT),
                            None,
                        )
                        .ok()?;
                    *kept = Some((addr.to_string(), channel.clone()));
                    channel
                }
            }
        };
        let reply = ClusterClient::new(channel)
            .status(ClusterStatusRequest { local: true })
            .await
            .ok()?;
        Some(reply.into_inner().committed)
    }
}

async fn check(readiness: &Readiness, raft: &Raft, shared: &SharedState) -> Result<String, String> {
    let (me, leader) = {
        let metrics = raft.metrics();
        let m = metrics.borrow_watched();
        (m.id, m.current_leader)
    };
    let Some(leader) = leader else {
        return Err("no leader known (an election is under way, or no quorum)".into());
    };
    let target = if leader == me {
        let read =
            tokio::time::timeout(ASK_TIMEOUT, raft.ensure_linearizable(ReadPolicy::ReadIndex))
                .await
                .map_err(|_| {
                    "this replica leads but a quorum did not confirm it in time".to_string()
                })?
                .map_err(|e| format!("this replica cannot confirm its leadership: {e}"))?;
        read.log_id().index()
    } else {
        let addr = {
            let metrics = raft.metrics();
            let m = metrics.borrow_watched();
            m.membership_config
                .membership()
                .get_node(&leader)
                .map(|n| n.addr.clone())
        }
        .ok_or_else(|| format!("leader {leader} is not in the membership this replica knows"))?;
        readiness
            .leader_commit(&addr)
            .await
            .ok_or_else(|| format!("leader {leader} at {addr} did not answer"))?
    };
    let mut applied = shared.subscribe();
    let reached = tokio::time::timeout(CATCH_UP, applied.wait_for(|index| *index >= target))
        .await
        .is_ok_and(|r| r.is_ok());
    let now = *applied.borrow();
    match reached {
        true => Ok(format!(
            "ready: leader {leader}, applied index {now} ≥ leader's commit index {target}"
        )),
        false => Err(format!(
            "behind: applied index {now} < leader {leader}'s commit index {target}"
        )),
    }
}
