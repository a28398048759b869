//! Hard limits on what a client may ask for. They are checked at the API edge (so bad input
//! is refused with a clear message) and again in apply (so a command that slipped past an
//! older edge still cannot corrupt the state).

/// Limits on what a client may send, configurable (`[limits]` in the replica's config file)
/// up to `CEILING`. The API edge checks the configured values, with a message naming the
/// config key; apply checks the ceilings, which no config file changes, so that every
/// replica applies every command the same way whatever its own configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputLimits {
    /// Largest encoded job spec (command, args, env, labels).
    pub spec_bytes: usize,
    pub shards_per_job: u32,
    /// Most labels on a TaskManager, or in a job's selector.
    pub labels: usize,
    /// Longest id, name, label key or label value.
    pub name_bytes: usize,
}

impl InputLimits {
    pub const DEFAULT: InputLimits = InputLimits {
        spec_bytes: 1024 * 1024,
        shards_per_job: 100_000,
        labels: 64,
        name_bytes: 253,
    };
    /// Hard ceilings. The spec ceiling keeps a full AppendEntries batch
    /// (`RAFT_MAX_BATCH_ENTRIES` submissions) below the Raft transport's message limit.
    pub const CEILING: InputLimits = InputLimits {
        spec_bytes: 4 * 1024 * 1024,
        shards_per_job: 1_000_000,
        labels: 1_024,
        name_bytes: 1_024,
    };
}

/// Most entries in one AppendEntries message (openraft's `max_payload_entries`).
pub const RAFT_MAX_BATCH_ENTRIES: u64 = 50;
/// Most shards one job may have, whatever the configuration.
pub const MAX_SHARDS_PER_JOB: u32 = InputLimits::CEILING.shards_per_job;
/// Most slots a single shard may ask for.
pub const MAX_SLOTS_PER_SHARD: u32 = 1_024;
/// Most TaskManagers the state holds (lost ones included until retention forgets them),
/// whatever the configuration.
pub const MAX_TASKMANAGERS: usize = 1_000_000;
/// Most slots one TaskManager may offer.
pub const MAX_TASKMANAGER_SLOTS: u32 = 65_536;
/// Most attempts a job may allow per shard.
pub const MAX_ATTEMPTS: u32 = 100;
/// Longest failure message (last lines of stderr) kept in the state; reports are cut to it
/// at the API edge, before they reach the log.
pub const MAX_ERROR_LEN: usize = 4_096;

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn prefix_within(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `message` cut to its last `MAX_ERROR_LEN` bytes (the last lines of stderr say most), on
/// a character boundary.
pub fn cut_error(mut message: String) -> String {
    if message.len() > MAX_ERROR_LEN {
        let mut cut = message.len() - MAX_ERROR_LEN;
        while !message.is_char_boundary(cut) {
            cut += 1;
        }
        message.drain(..cut);
    }
    message
}

/// How much unfinished work the cluster accepts (admission control), stamped into each
/// submission by the leader from its configuration so that apply decides deterministically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Admission {
    /// Shards of jobs that have not ended, cluster-wide.
    pub max_pending_shards: u64,
    /// The same, per submitting client.
    pub max_pending_shards_per_client: u64,
    /// Bytes of job specs the state holds, ended jobs included until they are forgotten
    /// (`[jobs] retention_secs`): what a loop of submit-and-cancel would otherwise grow.
    pub max_spec_bytes: u64,
}

impl Admission {
    pub const DEFAULT: Admission = Admission {
        max_pending_shards: 1_000_000,
        max_pending_shards_per_client: 250_000,
        max_spec_bytes: 512 * 1024 * 1024,
    };
}

/// Failed runs remembered per TaskManager for the exclusion rule.
pub const RECENT_FAILURES_KEPT: usize = 8;
/// A TaskManager with this many failed runs within `EXCLUSION_WINDOW_MS` ...
pub const EXCLUSION_FAILURES: usize = 3;
pub const EXCLUSION_WINDOW_MS: u64 = 60_000;
/// ... is kept out of placement for this long.
pub const EXCLUSION_MS: u64 = 60_000;

/// How long a shard the agent was told to stop (cancelled, preempted, moved) has between
/// SIGTERM and SIGKILL. The leader waits this long too before placing such a shard again.
pub const STOP_GRACE_MS: u64 = 2_000;
