//! Admission control in apply: how many shards of unfinished jobs the cluster (and each
//! client) may hold. The limits come stamped in the command by the leader; the counts live
//! in the state, kept here as jobs are submitted and end.

use crate::domain::{Admission, ClusterState};
use crate::fsm::command::Rejection;

/// Whether `owner` may add `shards` more (the API edge asks first, so that a refusal does
/// not even reach the log).
pub fn check_admission(
    state: &ClusterState,
    owner: &str,
    shards: u64,
    spec_bytes: u64,
    limits: &Admission,
) -> Result<(), Rejection> {
    let held = state.spec_bytes;
    if held + spec_bytes > limits.max_spec_bytes {
        return Err(Rejection::Overloaded(format!(
            "the cluster holds {held} bytes of job specs (ended jobs too, until they are \
             forgotten after jobs.retention_secs); {spec_bytes} more would pass the limit of {} \
             (limits.max_spec_bytes in the replicas' config file): wait, or submit smaller specs",
            limits.max_spec_bytes
        )));
    }
    let total = state.pending_shards;
    if total + shards > limits.max_pending_shards {
        return Err(Rejection::Overloaded(format!(
            "the cluster holds {total} shards of jobs that have not ended; {shards} more would \
             pass the limit of {} (limits.max_pending_shards in the replicas' config file): wait \
             for work to finish or cancel some",
            limits.max_pending_shards
        )));
    }
    let mine = state
        .pending_shards_by_owner
        .get(owner)
        .copied()
        .unwrap_or(0);
    if mine + shards > limits.max_pending_shards_per_client {
        return Err(Rejection::Overloaded(format!(
            "client '{owner}' holds {mine} shards of jobs that have not ended; {shards} more \
             would pass the per-client limit of {} (limits.max_pending_shards_per_client in the \
             replicas' config file): wait for its work to finish or cancel some",
            limits.max_pending_shards_per_client
        )));
    }
    Ok(())
}

/// Take `shards` more for `owner`, or refuse with what to do about it.
pub(super) fn admit(
    state: &mut ClusterState,
    owner: &str,
    shards: u64,
    spec_bytes: u64,
    limits: &Admission,
) -> Result<(), Rejection> {
    check_admission(state, owner, shards, spec_bytes, limits)?;
    state.spec_bytes += spec_bytes;
    state.pending_shards += shards;
    *state
        .pending_shards_by_owner
        .entry(owner.to_string())
        .or_default() += shards;
    Ok(())
}

/// Give back a forgotten job's spec bytes.
pub(super) fn forget(state: &mut ClusterState, spec_bytes: u64) {
    state.spec_bytes = state.spec_bytes.saturating_sub(spec_bytes);
}

/// Give back what a job took, when it ends.
pub(super) fn release(state: &mut ClusterState, owner: &str, shards: u64) {
    state.pending_shards = state.pending_shards.saturating_sub(shards);
    if let Some(mine) = state.pending_shards_by_owner.get_mut(owner) {
        *mine = mine.saturating_sub(shards);
        if *mine == 0 {
            state.pending_shards_by_owner.remove(owner);
        }
    }
}
