//! A replica's part of a downgrade: leave nothing on its data dir that the older release
//! cannot read. Once the entry that lowered the version is applied, the log starts a new
//! segment, a snapshot is written (in the lowered version's format: `ClusterState::
//! format_version`), and the log is purged up to the last entry before the new segment, so
//! every segment that held an entry of a newer kind is deleted.

use crate::pb::api::PrepareDowngradeRequest;
use crate::raft::wal::WalLogStore;
use crate::raft::{Raft, SharedState};
use std::time::Duration;

/// How long each step may take before the replica answers that it is not ready.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum CompactionError {
    #[error("{0}")]
    NotInTime(String),
    #[error("the log could not start a new segment: {0}")]
    Log(#[from] std::io::Error),
    #[error("raft stopped: {0}")]
    Stopped(String),
}

/// Wait until `req.after_index` is applied, then compact as the module doc says; answer the
/// index of the snapshot the data dir now starts from. Not ready if the cluster version was
/// raised past `req.version` meanwhile (the snapshot would be in the newer format).
pub async fn compact_after(
    raft: &Raft,
    shared: &SharedState,
    wal: &WalLogStore,
    req: PrepareDowngradeRequest,
) -> Result<u64, CompactionError> {
    let after_index = req.after_index;
    let late = |what: &str, e: &dyn std::fmt::Display| {
        CompactionError::NotInTime(format!("{what} within {} s: {e}", STEP_TIMEOUT.as_secs()))
    };
    raft.wait(Some(STEP_TIMEOUT))
        .applied_index_at_least(Some(after_index), "downgrade applied")
        .await
        .map_err(|e| late(&format!("log index {after_index} not applied"), &e))?;
    let Some(upto) = wal.start_new_segment()? else {
        return Ok(0);
    };
    raft.wait(Some(STEP_TIMEOUT))
        .applied_index_at_least(Some(upto), "log applied")
        .await
        .map_err(|e| late(&format!("log index {upto} not applied"), &e))?;
    raft.trigger()
        .snapshot()
        .await
        .map_err(|e| CompactionError::Stopped(e.to_string()))?;
    let snapshot = raft
        .wait(Some(STEP_TIMEOUT))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index() >= upto),
            "snapshot built",
        )
        .await
        .map_err(|e| late("no snapshot built", &e))?
        .snapshot
        .map_or(upto, |s| s.index());
    let now = shared.read().state.cluster_version.0;
    if now > req.version {
        return Err(CompactionError::NotInTime(format!(
            "the cluster version was raised to {now} meanwhile; run the downgrade again"
        )));
    }
    raft.trigger()
        .purge_log(snapshot)
        .await
        .map_err(|e| CompactionError::Stopped(e.to_string()))?;
    raft.wait(Some(STEP_TIMEOUT))
        .metrics(
            |m| m.purged.is_some_and(|p| p.index() >= upto),
            "log purged",
        )
        .await
        .map_err(|e| late("the log not purged", &e))?;
    match wal.older_segments() {
        0 => Ok(snapshot),
        n => Err(CompactionError::NotInTime(format!(
            "{n} older log segments are still on disk"
        ))),
    }
}
