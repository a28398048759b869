//! Hard limits on what a client may ask for. They are checked at the API edge (so bad input
//! is refused with a clear message) and again in apply (so a command that slipped past an
//! older edge still cannot corrupt the state).

/// Most shards one job may have.
pub const MAX_SHARDS_PER_JOB: u32 = 100_000;
/// Most slots a single shard may ask for.
pub const MAX_SLOTS_PER_SHARD: u32 = 1_024;
/// Most slots one TaskManager may offer.
pub const MAX_TASKMANAGER_SLOTS: u32 = 65_536;
/// Most attempts a job may allow per shard.
pub const MAX_ATTEMPTS: u32 = 100;
/// Largest encoded job spec (command, args, env, labels), so that a full AppendEntries batch
/// of submissions stays far below the Raft transport's message limit.
pub const MAX_SPEC_BYTES: usize = 256 * 1024;
/// Longest id, name, label key or label value.
pub const MAX_NAME_LEN: usize = 253;
/// Longest failure message (last lines of stderr) kept in the state.
pub const MAX_ERROR_LEN: usize = 2_048;

/// Failed runs remembered per TaskManager for the exclusion rule.
pub const RECENT_FAILURES_KEPT: usize = 8;
/// A TaskManager with this many failed runs within `EXCLUSION_WINDOW_MS` ...
pub const EXCLUSION_FAILURES: usize = 3;
pub const EXCLUSION_WINDOW_MS: u64 = 60_000;
/// ... is kept out of placement for this long.
pub const EXCLUSION_MS: u64 = 60_000;
