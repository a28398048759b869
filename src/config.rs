//! Replica settings with defaults, read from an optional TOML file (`serve --config`) and
//! validated once at start-up.
//!
//! ```toml
//! [raft]
//! heartbeat_ms = 50
//! election_timeout_min_ms = 150
//! election_timeout_max_ms = 300
//!
//! [snapshot]
//! every_entries = 10000     # build a snapshot after this many entries since the last one
//! keep_entries = 1000       # entries kept behind a snapshot for slow followers
//! ```

use serde::Deserialize;
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

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RaftTimings {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
}

impl Default for RaftTimings {
    fn default() -> Self {
        RaftTimings {
            heartbeat_ms: 50,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotSettings {
    pub every_entries: u64,
    pub keep_entries: u64,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        SnapshotSettings {
            every_entries: 10_000,
            keep_entries: 1_000,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    pub raft: RaftTimings,
    pub snapshot: SnapshotSettings,
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
        let r = &self.raft;
        if r.heartbeat_ms == 0 || r.election_timeout_min_ms <= r.heartbeat_ms {
            return Err(ConfigError::Invalid(
                "raft.election_timeout_min_ms must be greater than raft.heartbeat_ms (> 0)".into(),
            ));
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            return Err(ConfigError::Invalid(
                "raft.election_timeout_max_ms must be greater than raft.election_timeout_min_ms"
                    .into(),
            ));
        }
        if self.snapshot.every_entries == 0 {
            return Err(ConfigError::Invalid(
                "snapshot.every_entries must be at least 1".into(),
            ));
        }
        Ok(())
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
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }
}
