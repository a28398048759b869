//! The cluster version: which command kinds and persisted formats every replica of the
//! cluster must read. It is raised through the log only when every member runs a release
//! that reads the next version, so a replica of the release before never meets an entry it
//! cannot decode; it is lowered only on purpose (`cluster downgrade`).
//!
//! Version 1 is what v0.1.0 reads: the 30 command kinds it knew and snapshot format 10.
//! Version 2 adds `SetClusterVersion`, `UndrainTaskManager` and snapshot format 11 (which
//! carries the cluster version; at version 1 snapshots stay in format 10). Version 3 adds
//! periodic jobs: the `Cron*` commands and snapshot format 12 (the schedules after the
//! cluster version). Version 4 adds pins of CPU, memory and named resources:
//! `PinTaskManagerWithResources` and snapshot format 13 (the resource pins after the
//! schedules); from it, an agent under TLS declares only the named resources pinned to it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A cluster version; the state of a cluster that never raised it holds version 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterVersion(pub u32);

impl ClusterVersion {
    /// Every cluster starts here, and every release reads it.
    pub const FIRST: ClusterVersion = ClusterVersion(1);
}

impl Default for ClusterVersion {
    fn default() -> Self {
        ClusterVersion::FIRST
    }
}

impl fmt::Display for ClusterVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
