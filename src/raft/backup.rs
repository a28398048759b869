//! Backups (`cluster snapshot save`) and restores (`cluster snapshot restore`).
//!
//! A backup file is `DBAK | format (u32, big-endian) | bincode(snapshot meta, snapshot
//! data) | BLAKE3 of everything before it`. It is written by the client from what a replica
//! streams, and checked (checksum, and the state decodes) before `save` reports success.
//!
//! A restore makes the data dir of one replica of a *new* cluster from a backup, offline:
//! the snapshot, with its membership replaced by the new cluster's members, and a log that
//! begins after it (purged up to the snapshot) with a vote in the snapshot's term. Started
//! like any replica, the restored ones elect a leader among themselves and go on from the
//! backed-up state.

use super::snapshot_store::{decode_state, SnapshotStore};
use super::types::{LogId, Node, NodeId, SnapshotMeta, StoredMembership, Vote};
use super::WalLogStore;
use crate::domain::ClusterState;
use openraft::storage::RaftLogStorage;
use openraft::Membership;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;

const MAGIC: &[u8; 4] = b"DBAK";
const FORMAT: u32 = 1;
const CHECKSUM_BYTES: usize = 32;

#[derive(Serialize, Deserialize)]
struct BackupBody {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// A backup read back and checked.
#[derive(Debug)]
pub struct Backup {
    pub meta: SnapshotMeta,
    /// The snapshot data as the replicas store it.
    pub data: Vec<u8>,
    pub state: ClusterState,
}

impl Backup {
    /// The log position the backup stands at.
    pub fn last_log_id(&self) -> Option<LogId> {
        self.meta.last_log_id
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// The bytes of a backup file for a snapshot.
pub fn encode_backup(meta: &SnapshotMeta, data: &[u8]) -> io::Result<Vec<u8>> {
    let body = BackupBody {
        meta: meta.clone(),
        data: data.to_vec(),
    };
    let body = bincode::serde::encode_to_vec(&body, bincode::config::standard())
        .map_err(|e| invalid(e.to_string()))?;
    let mut out = Vec::with_capacity(8 + body.len() + CHECKSUM_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_be_bytes());
    out.extend_from_slice(&body);
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    Ok(out)
}

/// Check and read a backup file's bytes.
pub fn decode_backup(bytes: &[u8]) -> io::Result<Backup> {
    if bytes.len() < 8 + CHECKSUM_BYTES || &bytes[..4] != MAGIC {
        return Err(invalid(
            "not a dispatcher backup (it does not start with DBAK); make one with `dispatcher \
             cluster snapshot save`",
        ));
    }
    let (content, sum) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
    if blake3::hash(content).as_bytes() != sum {
        return Err(invalid(
            "the backup's checksum does not match: the file is damaged or incomplete",
        ));
    }
    let mut format = [0u8; 4];
    format.copy_from_slice(&content[4..8]);
    let format = u32::from_be_bytes(format);
    if format != FORMAT {
        return Err(invalid(format!(
            "backup format {format} is not supported (this build reads {FORMAT})"
        )));
    }
    let body: BackupBody = crate::decode::decode_untrusted(&content[8..])
        .map_err(|e| invalid(format!("the backup does not decode: {e}")))?;
    let state = decode_state(&body.data)?;
    Ok(Backup {
        meta: body.meta,
        data: body.data,
        state,
    })
}

/// Make `data_dir` (absent or empty) the data dir of replica `id` of a new cluster of
/// `peers` (id → host:port), holding the backed-up state.
pub async fn restore(
    backup: &Backup,
    data_dir: &Path,
    id: NodeId,
    peers: &BTreeMap<NodeId, String>,
) -> io::Result<()> {
    if !peers.contains_key(&id) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--peers must name this replica ({id}) too"),
        ));
    }
    let occupied = std::fs::read_dir(data_dir)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    if occupied {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} is not empty; restore into an empty directory (a replica's data is never \
                 overwritten)",
                data_dir.display()
            ),
        ));
    }
    let Some(last) = backup.last_log_id() else {
        return Err(invalid(
            "the backup holds an empty state; there is nothing to restore",
        ));
    };
    crate::private_files::make_private(data_dir)?;

    // The new cluster's members, all voters.
    let voters: BTreeSet<NodeId> = peers.keys().copied().collect();
    let nodes: BTreeMap<NodeId, Node> = peers
        .iter()
        .map(|(id, addr)| (*id, Node { addr: addr.clone() }))
        .collect();
    let membership = Membership::new(vec![voters], nodes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: StoredMembership::new(Some(last), membership),
    };
    SnapshotStore::open(data_dir.join("snapshots"))?.save(&meta, &backup.data)?;

    // A log that begins after the snapshot, and a vote in its term: elections start above it.
    let mut log = WalLogStore::open(&data_dir.join("raft-log"))?;
    let term = last.committed_leader_id().term;
    log.save_vote(&Vote::new(term, id)).await?;
    log.purge(last).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::snapshot_store::encode_state;

    fn backup_bytes() -> Vec<u8> {
        let state = ClusterState {
            tokens_seeded: true,
            ..ClusterState::default()
        };
        let last: LogId = openraft::testing::log_id::<crate::raft::TypeConfig>(3, 1, 42);
        let meta = SnapshotMeta {
            last_log_id: Some(last),
            last_membership: StoredMembership::default(),
        };
        encode_backup(&meta, &encode_state(&state)).expect("encode")
    }

    #[test]
    fn a_backup_reads_back_and_damage_is_refused() {
        let bytes = backup_bytes();
        let backup = decode_backup(&bytes).expect("decodes");
        assert_eq!(backup.last_log_id().map(|l| l.index()), Some(42));
        assert!(backup.state.tokens_seeded);
        let mut damaged = bytes.clone();
        damaged[20] ^= 1;
        assert!(decode_backup(&damaged).is_err());
        assert!(decode_backup(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_backup(b"something else entirely, not a backup file").is_err());
    }

    #[tokio::test]
    async fn a_restore_writes_an_empty_dir_only_and_names_the_new_members() {
        let backup = decode_backup(&backup_bytes()).expect("decodes");
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let peers: BTreeMap<NodeId, String> = [
            (1, "10.0.0.1:7000".to_string()),
            (2, "10.0.0.2:7000".to_string()),
        ]
        .into_iter()
        .collect();
        restore(&backup, &data, 1, &peers).await.expect("restores");
        let snap = SnapshotStore::open(data.join("snapshots"))
            .expect("open")
            .load_latest()
            .expect("load")
            .expect("a snapshot");
        let members: Vec<NodeId> = snap.meta.last_membership.membership().voter_ids().collect();
        assert_eq!(members, vec![1, 2]);
        let mut log = WalLogStore::open(&data.join("raft-log")).expect("log");
        let state = log.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id.map(|l| l.index()), Some(42));
        assert_eq!(state.last_log_id.map(|l| l.index()), Some(42));
        assert!(
            restore(&backup, &data, 1, &peers).await.is_err(),
            "never over a replica's data"
        );
        assert!(restore(&backup, &dir.path().join("other"), 9, &peers)
            .await
            .is_err());
    }
}
