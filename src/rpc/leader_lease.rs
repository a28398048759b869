//! Whether this replica may speak for the cluster to TaskManagers right now: the leader,
//! holding its lease, with its own term's entries applied. Heartbeat replies, pushed
//! assignments and report checks all go through this one rule.

use super::error::ApiError;
use super::raft_access::not_leader_here;
use super::ServiceContext;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::{Instant as _, ServerState};

/// Heartbeats (and pushes) must come from a leader that still holds its lease: a deposed leader
/// answering from stale state could hand out assignments that were moved elsewhere.
///
/// The lease is checked here, from the metrics openraft publishes, rather than with a
/// lease read through the Raft core: heartbeats are the hottest call (one per
/// TaskManager every 500 ms), and a round trip through the core for each one made them
/// queue behind it. A quorum acknowledged this leader at `last_quorum_acked` (the time
/// the acknowledged message was sent); no other leader can be elected within an
/// election timeout of that. Applied state may trail the commit by a moment; moves that
/// matter (drain, loss) keep a margin over the agent's lease for that.
///
/// A new leader also waits until it has applied an entry of its own term (its first,
/// blank entry): everything committed before it, such as a takeover or a loss a previous
/// leader proposed, is then in the state it answers from. Otherwise it could renew the
/// lease of an agent whose shards that entry is about to move elsewhere.
pub fn ensure_leader_lease(ctx: &ServiceContext) -> Result<(), ApiError> {
    let (valid, term) = {
        let metrics = ctx.raft.metrics();
        let m = metrics.borrow_watched();
        let alone = m.membership_config.membership().voter_ids().count() == 1;
        let valid = m.state == ServerState::Leader
            && (alone
                || m.last_quorum_acked
                    .as_ref()
                    .is_some_and(|acked| acked.into_inner().elapsed() < ctx.leader_lease));
        (valid, m.current_term)
    };
    if !valid {
        tracing::debug!("heartbeat refused: leader lease not held");
        return Err(not_leader_here(ctx));
    }
    let applied_term = ctx
        .shared
        .read()
        .last_applied
        .as_ref()
        .map(|l| l.committed_leader_id().term);
    if applied_term != Some(term) {
        return Err(ApiError::Unavailable(
            "this leader has not applied the log of its own term yet; retry shortly".into(),
        ));
    }
    Ok(())
}
