//! State-machine snapshots as files in `<data-dir>/snapshots`.
//!
//! A snapshot's data is `MAGIC | format version | bincode(ClusterState)`; the file adds the
//! Raft snapshot meta in front. Files are written to a temporary name, fsynced, renamed and
//! the directory fsynced, so a crash leaves either the old snapshot or the new one, never a
//! torn file. Only the newest snapshot is kept.

use super::types::SnapshotMeta;
use crate::domain::ClusterState;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const MAGIC: &[u8; 4] = b"DSNP";
/// The newest format this build writes; bump when the encoding of `ClusterState` changes
/// incompatibly. Which one a snapshot is written in follows the cluster version
/// (`ClusterState::format_version`): 10 at cluster version 1, 11 at 2, 12 at 3, 13 from 4.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 13;
/// Format 4 had no extra section, format 5 the shards' output alone in it, format 6 a
/// priority alone per job, format 7 no highest priority per tenant and no TaskManager pins,
/// format 8 no resources, format 9 no stopping holds, format 10 no cluster version, format 11 no periodic jobs, format 12 no resource pins; all are
/// still read.
const OLDEST_READABLE_FORMAT: u32 = 4;
const FILE_PREFIX: &str = "snapshot-";
const FILE_SUFFIX: &str = ".bin";

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Encode a state as snapshot data (what travels between replicas).
pub fn encode_state(state: &ClusterState) -> Vec<u8> {
    let body = state.encode();
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&state.format_version().to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decode snapshot data, refusing foreign or newer formats.
pub fn decode_state(data: &[u8]) -> io::Result<ClusterState> {
    if data.len() < 8 || &data[..4] != MAGIC {
        return Err(invalid(
            "snapshot data does not start with the dispatcher's magic bytes",
        ));
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&data[4..8]);
    let version = u32::from_be_bytes(version);
    let state = match version {
        11..=SNAPSHOT_FORMAT_VERSION => ClusterState::decode_format(&data[8..], version),
        10 => ClusterState::decode_v10(&data[8..]),
        9 => ClusterState::decode_v9(&data[8..]),
        8 => ClusterState::decode_v8(&data[8..]),
        7 => ClusterState::decode_v7(&data[8..]),
        6 => ClusterState::decode_v6(&data[8..]),
        5 => ClusterState::decode_with_outputs_only(&data[8..]),
        OLDEST_READABLE_FORMAT => ClusterState::decode_without_outputs(&data[8..]),
        _ => {
            return Err(invalid(format!(
                "snapshot format version {version} is not supported (this build reads \
                 {OLDEST_READABLE_FORMAT} to {SNAPSHOT_FORMAT_VERSION})"
            )))
        }
    };
    let state = state.map_err(|e| invalid(format!("snapshot state does not decode: {e}")))?;
    let max = crate::formats::MAX_CLUSTER_VERSION;
    if state.cluster_version.0 > max {
        return Err(invalid(format!(
            "the snapshot is of a cluster at version {}, and this release ({}) runs in \
             versions up to {max}: start this replica on the release the rest of the cluster \
             runs, or downgrade the cluster first (`dispatcher cluster downgrade {max}`)",
            state.cluster_version,
            crate::formats::release()
        )));
    }
    Ok(state)
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// `SnapshotFile` as written, borrowing the data (megabytes) instead of copying it: serde
/// lays out a slice as it does a `Vec`, so the bytes are the same.
#[derive(Serialize)]
struct SnapshotFileRef<'a> {
    meta: &'a SnapshotMeta,
    data: &'a [u8],
}

/// A snapshot as stored: its Raft meta and its data.
pub struct StoredSnapshot {
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
    /// Snapshots are built in a background task and installed by the state machine: the two
    /// can save at once. One save at a time.
    lock: Arc<Mutex<()>>,
}

impl SnapshotStore {
    pub fn open(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        crate::private_files::create_dir(&dir)?;
        // Temporary files of a save cut short by a crash.
        for entry in fs::read_dir(&dir)?.filter_map(|e| e.ok()) {
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(SnapshotStore {
            dir,
            lock: Arc::default(),
        })
    }

    fn file_name(meta: &SnapshotMeta) -> String {
        let index = meta.last_log_id.as_ref().map(|l| l.index()).unwrap_or(0);
        // Zero-padded so that names sort by index.
        let term = meta
            .last_log_id
            .as_ref()
            .map(|l| l.leader_id.term)
            .unwrap_or(0);
        format!("{FILE_PREFIX}{index:020}-{term}{FILE_SUFFIX}")
    }

    /// Write a snapshot durably and drop older ones.
    pub fn save(&self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let name = Self::file_name(meta);
        // Never let an older snapshot replace a newer one: the log behind the newer one may
        // already be purged.
        if self.list()?.last().is_some_and(|newest| *newest > name) {
            return Ok(());
        }
        let file = SnapshotFileRef { meta, data };
        let bytes = bincode::serde::encode_to_vec(&file, bincode::config::standard())
            .map_err(io::Error::other)?;
        crate::durable::replace_large_file(&self.dir.join(&name), &bytes)?;
        // Names sort by index: drop only the older ones.
        for old in self.list()? {
            if old < name {
                let _ = fs::remove_file(self.dir.join(old));
            }
        }
        Ok(())
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names: Vec<String> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(FILE_PREFIX) && n.ends_with(FILE_SUFFIX))
            .collect();
        names.sort();
        Ok(names)
    }

    /// The newest snapshot on disk, if any.
    pub fn load_latest(&self) -> io::Result<Option<StoredSnapshot>> {
        let Some(name) = self.list()?.pop() else {
            return Ok(None);
        };
        let bytes = fs::read(self.dir.join(&name))?;
        decode_snapshot_file(&bytes)
            .map(Some)
            .map_err(|e| invalid(format!("snapshot file {name}: {e}")))
    }
}

/// Decode a snapshot file's bytes (meta and data); the data itself is checked by
/// `decode_state` when it is loaded.
pub fn decode_snapshot_file(bytes: &[u8]) -> io::Result<StoredSnapshot> {
    let file: SnapshotFile = crate::decode::decode_untrusted(bytes)
        .map_err(|e| invalid(format!("does not decode: {e}")))?;
    Ok(StoredSnapshot {
        meta: file.meta,
        data: file.data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{JobId, ShardOutput};

    #[test]
    fn the_borrowed_file_is_written_as_the_owned_one_reads() {
        let last = openraft::testing::log_id::<crate::raft::TypeConfig>(3, 1, 42);
        let meta = SnapshotMeta {
            last_log_id: Some(last),
            last_membership: Default::default(),
        };
        let data = b"state bytes".to_vec();
        let config = bincode::config::standard();
        let borrowed = bincode::serde::encode_to_vec(
            SnapshotFileRef {
                meta: &meta,
                data: &data,
            },
            config,
        )
        .expect("encode");
        let owned = bincode::serde::encode_to_vec(
            SnapshotFile {
                meta: meta.clone(),
                data: data.clone(),
            },
            config,
        )
        .expect("encode");
        assert_eq!(borrowed, owned);
    }

    #[test]
    fn outputs_and_scheduling_travel_in_snapshots_and_formats_4_to_7_still_read() {
        let mut state = ClusterState {
            tokens_seeded: true,
            ..ClusterState::default()
        };
        let output = ShardOutput {
            epoch: 3,
            recorded_at: 4,
            printed: crate::domain::PrintedTail {
                stdout: b"hello\n".to_vec(),
                stdout_len: 6,
                ..Default::default()
            },
        };
        state.outputs.record(JobId(2), 0, output, 1024);
        state.scheduling.insert(
            JobId(2),
            crate::domain::JobScheduling {
                priority: 900,
                after: vec![JobId(1)],
                gang: true,
                tenant: "alice".into(),
            },
        );
        state
            .dependents
            .entry(JobId(1))
            .or_default()
            .insert(JobId(2));
        state.preemptions.insert((JobId(2), 0), 1);
        state.quotas.insert(
            "alice".into(),
            crate::domain::Quota {
                slots: Some(4),
                weight: 3,
            },
        );
        state.token_tenants.insert("ci".into(), "alice".into());
        state.dependency_failures.insert(JobId(5), JobId(4));
        state.max_priorities.insert("alice".into(), 800);
        state.pins.insert(
            "a".into(),
            crate::domain::TaskManagerPin {
                labels: [("pool".to_string(), "trusted".to_string())].into(),
                slots: Some(4),
            },
        );
        let back = decode_state(&encode_state(&state)).expect("current format");
        assert_eq!(back, state, "the dependents index is rebuilt on decode");
        assert_eq!(back.digest(), state.digest());
        assert_eq!(back.priority(JobId(2)), 900);
        assert_eq!(back.tenant(JobId(2)), "alice");
        assert_eq!(back.max_priority("alice"), 800);
        assert_eq!(back.max_priority("bob"), crate::domain::DEFAULT_PRIORITY);

        // Format 7: no highest priorities.
        #[derive(serde::Serialize)]
        struct Seven<'a> {
            outputs: &'a crate::domain::OutputStore,
            scheduling: &'a std::collections::BTreeMap<JobId, crate::domain::JobScheduling>,
            preemptions: &'a std::collections::BTreeMap<(JobId, u32), u32>,
            quotas: &'a std::collections::BTreeMap<String, crate::domain::Quota>,
            token_tenants: &'a std::collections::BTreeMap<String, String>,
            dependency_failures: &'a std::collections::BTreeMap<JobId, JobId>,
        }
        let seven_extensions = Seven {
            outputs: &state.outputs,
            scheduling: &state.scheduling,
            preemptions: &state.preemptions,
            quotas: &state.quotas,
            token_tenants: &state.token_tenants,
            dependency_failures: &state.dependency_failures,
        };
        let main = bincode::serde::encode_to_vec(&state, bincode::config::standard()).unwrap();
        let rest =
            bincode::serde::encode_to_vec(&seven_extensions, bincode::config::standard()).unwrap();
        let mut seven = MAGIC.to_vec();
        seven.extend_from_slice(&7u32.to_be_bytes());
        seven.extend_from_slice(&(main.len() as u64).to_be_bytes());
        seven.extend_from_slice(&main);
        seven.extend_from_slice(&rest);
        let read = decode_state(&seven).expect("format 7");
        assert_eq!(read.quotas, state.quotas);
        assert_eq!(read.tenant(JobId(2)), "alice");
        assert!(read.max_priorities.is_empty() && read.pins.is_empty());

        // Format 6: a priority alone per job.
        #[derive(serde::Serialize)]
        struct Six<'a> {
            outputs: &'a crate::domain::OutputStore,
            scheduling: std::collections::BTreeMap<JobId, crate::domain::PriorityOnly>,
            preemptions: &'a std::collections::BTreeMap<(JobId, u32), u32>,
        }
        let six_extensions = Six {
            outputs: &state.outputs,
            scheduling: [(JobId(2), crate::domain::PriorityOnly { priority: 700 })].into(),
            preemptions: &state.preemptions,
        };
        let main = bincode::serde::encode_to_vec(&state, bincode::config::standard()).unwrap();
        let rest =
            bincode::serde::encode_to_vec(&six_extensions, bincode::config::standard()).unwrap();
        let mut six = MAGIC.to_vec();
        six.extend_from_slice(&6u32.to_be_bytes());
        six.extend_from_slice(&(main.len() as u64).to_be_bytes());
        six.extend_from_slice(&main);
        six.extend_from_slice(&rest);
        let read = decode_state(&six).expect("format 6");
        assert_eq!(read.priority(JobId(2)), 700);
        assert_eq!(read.tenant(JobId(2)), crate::domain::DEFAULT_TENANT);
        assert_eq!(read.preemptions, state.preemptions);

        // Format 5: the shards' output alone after the main section.
        let main = bincode::serde::encode_to_vec(&state, bincode::config::standard()).unwrap();
        let outputs =
            bincode::serde::encode_to_vec(&state.outputs, bincode::config::standard()).unwrap();
        let mut five = MAGIC.to_vec();
        five.extend_from_slice(&5u32.to_be_bytes());
        five.extend_from_slice(&(main.len() as u64).to_be_bytes());
        five.extend_from_slice(&main);
        five.extend_from_slice(&outputs);
        let read = decode_state(&five).expect("format 5");
        assert_eq!(read.outputs, state.outputs);
        assert!(read.scheduling.is_empty() && read.preemptions.is_empty());

        // Format 4: the main section alone, as builds before shard output wrote it.
        let main = bincode::serde::encode_to_vec(&state, bincode::config::standard()).unwrap();
        let mut old = MAGIC.to_vec();
        old.extend_from_slice(&4u32.to_be_bytes());
        old.extend_from_slice(&main);
        let read = decode_state(&old).expect("format 4");
        assert!(read.tokens_seeded);
        assert!(read.outputs.is_empty());

        let mut newer = MAGIC.to_vec();
        newer.extend_from_slice(&99u32.to_be_bytes());
        assert!(decode_state(&newer).is_err());
    }
}
