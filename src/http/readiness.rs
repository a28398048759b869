//! `/readyz`: ready only while this replica knows a leader and has applied everything that
//! leader had committed when asked, so a load balancer sends reads only to replicas whose
//! answers are current.
//!
//! The leader confirms its leadership with a quorum (ReadIndex) and uses its read index; a
//! follower asks the leader for its commit index over gRPC. Either then waits a moment for
//! its own apply to get there (a follower learns of commits one heartbeat late), and says
//! why not if it does not.

use crate::raft::{Raft, SharedState};
use crate::rpc::local_status_of;
use crate::security::Transport;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::ReadPolicy;
use std::time::Duration;

/// How long the leader's confirmation or answer may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// How long this replica's apply may take to reach the leader's commit index.
const CATCH_UP: Duration = Duration::from_secs(1);

/// Ready, with what was checked, or not, with why.
pub async fn check(
    raft: &Raft,
    shared: &SharedState,
    transport: &Transport,
) -> Result<String, String> {
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
        let status = local_status_of(transport, &addr, ASK_TIMEOUT)
            .await
            .ok_or_else(|| format!("leader {leader} at {addr} did not answer"))?;
        status.committed
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
