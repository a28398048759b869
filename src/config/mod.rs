//! Replica settings with defaults, read from an optional TOML file (`serve --config`) and
//! validated once at start-up. The same file may carry the replica's own flags under
//! `[serve]` (see `flags`); `[raft]`, `[taskmanagers]` and `[jobs]` should be the same on
//! every replica.
//!
//! ```toml
//! [serve]                   # any flag of `dispatcher serve`; flags and DISPATCHER_* win
//! id = 1
//! listen = "0.0.0.0:7001"
//! advertise = "10.0.0.1:7001"
//! data_dir = "/var/lib/dispatcher"
//! peers = ["1=10.0.0.1:7001", "2=10.0.0.2:7001", "3=10.0.0.3:7001"]
//! tls_dir = "/etc/dispatcher/tls"
//! bootstrap_token_file = "/etc/dispatcher/admin.token"
//!
//! [raft]
//! heartbeat_ms = 20
//! election_timeout_min_ms = 60
//! election_timeout_max_ms = 120
//! append_pipeline = 2          # AppendEntries batches in flight per follower
//!
//! [snapshot]
//! every_entries = 100000    # build a snapshot after this many entries since the last one
//! keep_entries = 1000       # entries kept behind a snapshot for slow followers
//!
//! [taskmanagers]
//! heartbeat_interval_ms = 250
//! lease_ms = 1000           # an agent cut off this long stops its shards
//! timeout_ms = 1900         # then the leader declares it lost (>= lease + 900)
//! grace_ms = 2000           # a new leader declares nobody lost before this
//! max_lost_per_second = 10
//! retry_base_ms = 1000      # failed shards retry after 1 s, 2 s, 4 s ... up to retry_max_ms
//! retry_max_ms = 60000
//!
//! [jobs]
//! retention_secs = 86400    # ended jobs are forgotten after this long
//!
//! [limits]                  # what clients may send (each at most its hard ceiling)
//! spec_bytes = 1048576      # encoded command, args, env and labels of one job (ceiling 4 MiB)
//! shards_per_job = 100000   # (ceiling 1,000,000)
//! labels = 64               # labels on a TaskManager or in a job's selector (ceiling 1,024)
//! name_bytes = 253          # ids, names, label keys and values (ceiling 1,024)
//! max_pending_shards = 1000000           # shards of jobs not yet ended, cluster-wide
//! max_pending_shards_per_client = 250000 # the same, per client
//! max_spec_bytes = 536870912             # specs held, ended jobs too until forgotten
//! max_taskmanagers = 100000              # lost ones too, until forgotten (ceiling 1,000,000)
//! ```

pub mod flags;

use crate::domain::{Admission, InputLimits, MAX_TASKMANAGERS, RAFT_MAX_BATCH_ENTRIES};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("invalid setting: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RaftTimings {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// AppendEntries batches sent to a follower and not yet answered (1 to 16). Left out
    /// when written at its default, so a file written today still reads on v0.1.0.
    #[serde(skip_serializing_if = "is_default_pipeline")]
    pub append_pipeline: usize,
}

/// AppendEntries batches in flight per follower unless `[raft] append_pipeline` says
/// otherwise. hashicorp/raft settled on a small pipeline after deeper ones did worse; on this
/// project's 2-core bench machine, submissions are bound by CPU and the depth does not show.
pub const DEFAULT_APPEND_PIPELINE: usize = 2;

fn is_default_pipeline(depth: &usize) -> bool {
    *depth == DEFAULT_APPEND_PIPELINE
}

impl Default for RaftTimings {
    fn default() -> Self {
        RaftTimings {
            heartbeat_ms: 20,
            election_timeout_min_ms: 60,
            election_timeout_max_ms: 120,
            append_pipeline: DEFAULT_APPEND_PIPELINE,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotSettings {
    pub every_entries: u64,
    pub keep_entries: u64,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        SnapshotSettings {
            every_entries: 100_000,
            keep_entries: 1_000,
        }
    }
}

/// How the leader watches TaskManagers and recovers their work.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TaskManagerSettings {
    /// How often agents heartbeat.
    pub heartbeat_interval_ms: u64,
    /// An agent that has not reached a leader for this long stops its shards by itself.
    pub lease_ms: u64,
    /// The leader declares a TaskManager lost after this long without a heartbeat. Must
    /// exceed the lease plus a margin, so a partitioned agent has stopped its shards before
    /// they are placed elsewhere.
    pub timeout_ms: u64,
    /// A new leader declares nobody lost for this long after taking over.
    pub grace_ms: u64,
    /// Most TaskManagers declared lost per second (re-placement throttle).
    pub max_lost_per_second: u32,
    /// First retry back-off of a failed shard; doubles per failure up to `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
}

impl Default for TaskManagerSettings {
    fn default() -> Self {
        TaskManagerSettings {
            heartbeat_interval_ms: 250,
            lease_ms: 1_000,
            timeout_ms: 1_900,
            grace_ms: 2_000,
            max_lost_per_second: 10,
            retry_base_ms: 1_000,
            retry_max_ms: 60_000,
        }
    }
}

/// What an agent needs beyond the lease before its runs are surely dead: the keep-alive
/// timeout of the shard host (500 ms), plus 400 ms of scheduling slack.
pub const LEASE_MARGIN_MS: u64 = 900;

/// When a run its agent was just told to stop, at `now_ms`, is surely gone: the agent hears
/// of it at once or its lease runs out (`lease_ms` + margin), and a run that ignores SIGTERM
/// is killed after the stop grace. Shards taken off a live agent are not placed again
/// before this.
pub fn stopped_by_ms(now_ms: u64, lease_ms: u64) -> u64 {
    now_ms + lease_ms + LEASE_MARGIN_MS + crate::domain::STOP_GRACE_MS
}

/// How long ended jobs are kept.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JobSettings {
    /// Jobs that ended (finished, failed, cancelled) this long ago are forgotten, with their
    /// idempotency keys, so the state and its snapshots stay bounded while jobs come and go.
    pub retention_secs: u64,
    /// Each run's wall-clock limit for jobs submitted without `--timeout` (none: no limit).
    /// The replica that takes a submission stamps it in.
    pub default_timeout_secs: Option<u64>,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            retention_secs: 24 * 3600,
            default_timeout_secs: None,
        }
    }
}

/// Default of `limits.output_tail_bytes`: 64 KiB of each stream.
pub const DEFAULT_OUTPUT_TAIL_BYTES: usize = 64 * 1024;
/// The most `limits.output_tail_bytes` may be: a batch of reports must stay well under the
/// API's message limit.
pub const MAX_OUTPUT_TAIL_BYTES: usize = 1024 * 1024;

/// What clients may send and how much unfinished work the cluster takes (`[limits]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    pub spec_bytes: usize,
    pub shards_per_job: u32,
    pub labels: usize,
    pub name_bytes: usize,
    pub max_pending_shards: u64,
    pub max_pending_shards_per_client: u64,
    pub max_spec_bytes: u64,
    /// TaskManagers the state holds, lost ones included until retention forgets them.
    pub max_taskmanagers: usize,
    /// Bytes of the end of a run's stdout, and of its stderr, kept with the shard when it
    /// ends (`job logs` after the TaskManager is gone).
    pub output_tail_bytes: usize,
    /// Bytes of shard output the state holds in all; the oldest is dropped beyond it.
    pub max_output_bytes: u64,
}

impl Default for LimitSettings {
    fn default() -> Self {
        let input = InputLimits::DEFAULT;
        let admission = Admission::DEFAULT;
        LimitSettings {
            spec_bytes: input.spec_bytes,
            shards_per_job: input.shards_per_job,
            labels: input.labels,
            name_bytes: input.name_bytes,
            max_pending_shards: admission.max_pending_shards,
            max_pending_shards_per_client: admission.max_pending_shards_per_client,
            max_spec_bytes: admission.max_spec_bytes,
            max_taskmanagers: 100_000,
            output_tail_bytes: DEFAULT_OUTPUT_TAIL_BYTES,
            max_output_bytes: 128 * 1024 * 1024,
        }
    }
}

impl LimitSettings {
    pub fn input(&self) -> InputLimits {
        InputLimits {
            spec_bytes: self.spec_bytes,
            shards_per_job: self.shards_per_job,
            labels: self.labels,
            name_bytes: self.name_bytes,
        }
    }

    pub fn admission(&self) -> Admission {
        Admission {
            max_pending_shards: self.max_pending_shards,
            max_pending_shards_per_client: self.max_pending_shards_per_client,
            max_spec_bytes: self.max_spec_bytes,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let ceiling = InputLimits::CEILING;
        let checks: [(&str, u64, u64); 4] = [
            (
                "spec_bytes",
                self.spec_bytes as u64,
                ceiling.spec_bytes as u64,
            ),
            (
                "shards_per_job",
                self.shards_per_job.into(),
                ceiling.shards_per_job.into(),
            ),
            ("labels", self.labels as u64, ceiling.labels as u64),
            (
                "name_bytes",
                self.name_bytes as u64,
                ceiling.name_bytes as u64,
            ),
        ];
        for (key, value, most) in checks {
            if value == 0 || value > most {
                return Err(ConfigError::Invalid(format!(
                    "limits.{key} is {value}; it must be between 1 and {most}"
                )));
            }
        }
        if self.output_tail_bytes > MAX_OUTPUT_TAIL_BYTES {
            return Err(ConfigError::Invalid(format!(
                "limits.output_tail_bytes must be at most {MAX_OUTPUT_TAIL_BYTES} (0 keeps no \
                 output)"
            )));
        }
        if self.max_taskmanagers == 0 || self.max_taskmanagers > MAX_TASKMANAGERS {
            return Err(ConfigError::Invalid(format!(
                "limits.max_taskmanagers must be between 1 and {MAX_TASKMANAGERS}"
            )));
        }
        if self.max_pending_shards == 0
            || self.max_pending_shards_per_client == 0
            || self.max_spec_bytes < self.spec_bytes as u64
        {
            return Err(ConfigError::Invalid(
                "limits.max_pending_shards and limits.max_pending_shards_per_client must be > 0, \
                 and limits.max_spec_bytes at least limits.spec_bytes"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    pub raft: RaftTimings,
    pub snapshot: SnapshotSettings,
    pub taskmanagers: TaskManagerSettings,
    pub jobs: JobSettings,
    pub limits: LimitSettings,
    pub security: SecuritySettings,
    /// Left out when written at its default, so a file written today still reads on v0.1.0.
    #[serde(skip_serializing_if = "DashboardSettings::is_default")]
    pub dashboard: DashboardSettings,
}

/// The dashboard's history charts (`[dashboard]`): how often a replica samples its headline
/// figures, and how long it keeps them (in memory).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardSettings {
    pub history_sample_secs: u64,
    pub history_hours: u64,
}

/// Most samples a replica keeps (a few MiB).
pub const MAX_HISTORY_SAMPLES: u64 = 100_000;

impl Default for DashboardSettings {
    fn default() -> Self {
        DashboardSettings {
            history_sample_secs: 10,
            history_hours: 6,
        }
    }
}

impl DashboardSettings {
    fn is_default(&self) -> bool {
        *self == DashboardSettings::default()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let (every, hours) = (self.history_sample_secs, self.history_hours);
        if every == 0 || hours == 0 || hours > 48 {
            return Err(ConfigError::Invalid(
                "dashboard.history_sample_secs must be above 0 and dashboard.history_hours \
                 between 1 and 48"
                    .into(),
            ));
        }
        if hours * 3_600 / every > MAX_HISTORY_SAMPLES {
            return Err(ConfigError::Invalid(format!(
                "dashboard.history_hours / dashboard.history_sample_secs keeps more than \
                 {MAX_HISTORY_SAMPLES} samples: sample less often or keep fewer hours"
            )));
        }
        Ok(())
    }
}

/// Cluster-wide rules on what shards may run where (`[security]`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SecuritySettings {
    /// Every job runs only on TaskManagers whose isolation is `full` (as if submitted with
    /// `--isolation full`). Set it on every replica: the replica that takes a submission
    /// decides.
    pub require_isolation: bool,
}

impl ServeConfig {
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let config = match path {
            None => ServeConfig::default(),
            Some(path) => {
                let shown = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: shown.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: shown,
                    message: e.to_string(),
                })?
            }
        };
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.dashboard.validate()?;
        let r = &self.raft;
        if r.heartbeat_ms == 0 || r.election_timeout_min_ms <= r.heartbeat_ms {
            return Err(ConfigError::Invalid(
                "raft.election_timeout_min_ms must be greater than raft.heartbeat_ms (> 0)".into(),
            ));
        }
        if !(1..=16).contains(&r.append_pipeline) {
            return Err(ConfigError::Invalid(
                "raft.append_pipeline must be between 1 and 16 (batches in flight per follower)"
                    .into(),
            ));
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            return Err(ConfigError::Invalid(
                "raft.election_timeout_max_ms must be greater than raft.election_timeout_min_ms"
                    .into(),
            ));
        }
        let tm = &self.taskmanagers;
        if tm.heartbeat_interval_ms == 0 || tm.lease_ms < 2 * tm.heartbeat_interval_ms {
            return Err(ConfigError::Invalid(
                "taskmanagers.lease_ms must be at least twice taskmanagers.heartbeat_interval_ms (> 0)".into(),
            ));
        }
        let failover_ms = 2 * r.election_timeout_max_ms + tm.heartbeat_interval_ms;
        if tm.lease_ms < failover_ms {
            return Err(ConfigError::Invalid(format!(
                "taskmanagers.lease_ms ({}) must outlast a leader failover (2 × raft.election_timeout_max_ms + taskmanagers.heartbeat_interval_ms = {failover_ms}), or agents stop their shards whenever the leader changes",
                tm.lease_ms
            )));
        }
        if tm.timeout_ms < tm.lease_ms + LEASE_MARGIN_MS {
            return Err(ConfigError::Invalid(format!(
                "taskmanagers.timeout_ms must be at least taskmanagers.lease_ms + {LEASE_MARGIN_MS}, so that an agent cut off from the leader has stopped its shards before they run elsewhere"
            )));
        }
        if tm.max_lost_per_second == 0
            || tm.retry_base_ms == 0
            || tm.retry_max_ms < tm.retry_base_ms
        {
            return Err(ConfigError::Invalid(
                "taskmanagers.max_lost_per_second and retry_base_ms must be > 0, retry_max_ms >= retry_base_ms".into(),
            ));
        }
        if self.snapshot.every_entries == 0 {
            return Err(ConfigError::Invalid(
                "snapshot.every_entries must be at least 1".into(),
            ));
        }
        self.limits.validate()
    }

    /// The openraft configuration these settings imply.
    pub fn openraft_config(&self) -> Result<openraft::Config, ConfigError> {
        let config = openraft::Config {
            cluster_name: "dispatcher".to_string(),
            heartbeat_interval: self.raft.heartbeat_ms,
            election_timeout_min: self.raft.election_timeout_min_ms,
            election_timeout_max: self.raft.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot.every_entries),
            max_in_snapshot_log_to_keep: self.snapshot.keep_entries,
            // Snapshots can be large; give them time to cross the wire.
            install_snapshot_timeout: 60_000,
            // A follower that lost its disk comes back with an empty log. Without this the
            // leader panics on seeing the reverted log; with it, the leader re-replicates.
            allow_log_reversion: Some(true),
            // Bounded so that a batch of the largest submissions stays below the transport's
            // message limit.
            max_payload_entries: RAFT_MAX_BATCH_ENTRIES,
            // A restarted leader stands for election again instead of resuming in its old
            // term: our committed index is persisted lazily and the state machine is rebuilt
            // from a snapshot and the log, so a resumed leader could serve linearizable reads
            // from a commit index behind what it had acknowledged (seen: 79 of 80 jobs after
            // every replica restarted, tests/snapshot_catchup.rs, about 1 run in 15).
            enable_leader_restore: Some(false),
            // A replica that lost touch (paused, cut off, restarted) first asks whether it
            // could win before it raises its term: without this a lone candidate raised its
            // term every timeout and, once back, deposed a healthy leader.
            enable_pre_vote: Some(true),
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }
}
