//! The versions of what this build persists and reads back: the snapshot, the write-ahead
//! log's records (with every command kind) and the agent's run journal. `dispatcher
//! --version` prints them; the golden files under tests/golden hold each version
//! (`persisted_formats`).

use crate::fsm::COMMAND_KINDS;
use crate::raft::snapshot_store::SNAPSHOT_FORMAT_VERSION;
use crate::raft::wal::record::LOG_FORMAT_VERSION;
use crate::taskmanager::journal::JOURNAL_FORMAT_VERSION;
use crate::taskmanager::workdir::WORKDIR_LAYOUT_VERSION;

/// The newest cluster version this build can run in: the set of command kinds and formats
/// every replica of a cluster must read (`domain::ClusterVersion`). v0.1.0 runs in 1.
pub const MAX_CLUSTER_VERSION: u32 = 4;

/// This build's release, as `dispatcher --version` and `cluster status` show it.
pub fn release() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// `dispatcher --version`: the release and the format versions it writes.
pub fn long_version() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            "{} (snapshot format {SNAPSHOT_FORMAT_VERSION}, log format {LOG_FORMAT_VERSION} \
             with {COMMAND_KINDS} command kinds, journal format {JOURNAL_FORMAT_VERSION}, \
             work dir layout {WORKDIR_LAYOUT_VERSION}; cluster versions 1 to \
             {MAX_CLUSTER_VERSION})",
            env!("CARGO_PKG_VERSION")
        )
    })
}
