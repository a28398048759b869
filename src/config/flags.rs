//! The per-process part of a config file: every flag of `serve` (section `[serve]`) and of
//! `taskmanager` (section `[taskmanager]`), so a host can be set up with one file.
//!
//! Precedence, highest first: a command-line flag, its `DISPATCHER_*` environment variable
//! (clap reads both), the config file, the built-in default. `insecure` is the exception
//! that cannot be switched off again: any source that sets it wins.

use super::{ConfigError, ServeConfig};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// How a replica or an agent writes its log lines on stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, message and fields), for log
    /// collectors.
    Json,
}

/// `[serve]`: one replica's own flags.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeFlags {
    pub id: Option<u64>,
    pub listen: Option<SocketAddr>,
    pub advertise: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// `["1=10.0.0.1:7001", ...]`, like `--peers`.
    pub peers: Option<Vec<String>>,
    pub tls_dir: Option<PathBuf>,
    pub tls_name: Option<String>,
    pub insecure: Option<bool>,
    pub bootstrap_token_file: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub http_listen: Option<SocketAddr>,
    pub otlp_endpoint: Option<String>,
}

/// `[taskmanager]`: one agent's flags.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFlags {
    pub id: Option<String>,
    pub slots: Option<u32>,
    pub labels: Option<BTreeMap<String, String>>,
    pub work_dir: Option<PathBuf>,
    pub source_ip: Option<IpAddr>,
    pub advertise: Option<String>,
    pub endpoints: Option<Vec<String>>,
    pub tls_dir: Option<PathBuf>,
    pub tls_name: Option<String>,
    pub insecure: Option<bool>,
    pub log_format: Option<LogFormat>,
    pub http_listen: Option<SocketAddr>,
    pub sandbox: Option<crate::cli::SandboxMode>,
    pub run_as_uids: Option<String>,
    pub run_as: Option<String>,
    pub cgroup_root: Option<PathBuf>,
    /// Cores (fractions allowed).
    pub cpus: Option<f64>,
    /// A size: "16GiB".
    pub memory: Option<String>,
    pub resources: Option<BTreeMap<String, u64>>,
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        path: shown,
        message: e.to_string(),
    })
}

fn section<T: for<'de> Deserialize<'de> + Default>(
    table: &mut toml::Table,
    name: &str,
    path: &Path,
) -> Result<T, ConfigError> {
    match table.remove(name) {
        None => Ok(T::default()),
        Some(value) => value
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: path.display().to_string(),
                message: format!("[{name}]: {e}"),
            }),
    }
}

/// A replica's config file: `[serve]` and the cluster settings (`[raft]`, `[limits]`, ...).
pub fn read_serve_file(path: &Path) -> Result<(ServeFlags, ServeConfig), ConfigError> {
    let mut table = read_table(path)?;
    let flags = section(&mut table, "serve", path)?;
    let config: ServeConfig =
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
    config.validate()?;
    Ok((flags, config))
}

/// An agent's config file: only `[taskmanager]`.
pub fn read_agent_file(path: &Path) -> Result<AgentFlags, ConfigError> {
    let mut table = read_table(path)?;
    let flags = section(&mut table, "taskmanager", path)?;
    if let Some(other) = table.keys().next() {
        return Err(ConfigError::Parse {
            path: path.display().to_string(),
            message: format!(
                "unknown section or key '{other}': a TaskManager's file holds only [taskmanager]"
            ),
        });
    }
    Ok(flags)
}

/// A setting no source gave: names the flag, its variable and the file key.
pub fn missing(flag: &str, variable: &str, section: &str) -> ConfigError {
    let key = flag.trim_start_matches("--").replace('-', "_");
    ConfigError::Invalid(format!(
        "{flag} is required: give it on the command line, as {variable}, or as `{key}` under \
         [{section}] in the config file"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn a_replica_file_holds_its_flags_and_the_cluster_settings() {
        let f = file(
            r#"
[serve]
id = 2
listen = "0.0.0.0:7002"
advertise = "10.0.0.2:7002"
data_dir = "/var/lib/dispatcher"
peers = ["1=10.0.0.1:7001", "2=10.0.0.2:7002"]
tls_dir = "/etc/dispatcher/tls"
bootstrap_token_file = "/etc/dispatcher/admin.token"

[raft]
heartbeat_ms = 50
election_timeout_min_ms = 150
election_timeout_max_ms = 300

[security]
require_isolation = true
"#,
        );
        let (flags, config) = read_serve_file(f.path()).unwrap();
        assert!(config.security.require_isolation);
        assert_eq!(flags.id, Some(2));
        assert_eq!(flags.peers.as_ref().map(Vec::len), Some(2));
        assert_eq!(flags.tls_name, None);
        assert_eq!(config.raft.heartbeat_ms, 50);
        let typo = file("[serve]\nidd = 1\n");
        assert!(read_serve_file(typo.path())
            .unwrap_err()
            .to_string()
            .contains("idd"));
    }

    #[test]
    fn an_agent_file_holds_only_its_section() {
        let f = file(
            r#"
[taskmanager]
id = "gpu-1"
slots = 8
labels = { zone = "a", gpu = "true" }
endpoints = ["10.0.0.1:7001", "10.0.0.2:7002"]
tls_dir = "/etc/dispatcher/tls"
cpus = 7.5
memory = "30GiB"
resources = { gpu = 2 }
"#,
        );
        let flags = read_agent_file(f.path()).unwrap();
        assert_eq!(flags.slots, Some(8));
        assert_eq!(flags.cpus, Some(7.5));
        assert_eq!(flags.resources.unwrap()["gpu"], 2);
        assert_eq!(flags.labels.unwrap()["zone"], "a");
        let stray = file("[taskmanager]\nid = \"a\"\n[raft]\nheartbeat_ms = 1\n");
        assert!(read_agent_file(stray.path()).is_err());
        assert!(missing("--data-dir", "DISPATCHER_DATA_DIR", "serve")
            .to_string()
            .contains("DISPATCHER_DATA_DIR"));
    }
}
