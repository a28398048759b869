//! The Raft log, vote and committed index in one sled `Db`.
//!
//! Durability rule: nothing is reported to openraft as done before `flush_async` returned —
//! the vote is flushed before `save_vote` returns, appended entries are flushed before the
//! append callback fires, and truncation and purge are flushed before they return. Log keys
//! are big-endian indexes so that sled's byte order is log order.

use super::types::{Entry, LogId, TypeConfig, Vote};
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

const LOG_TREE: &str = "raft_log";
const META_TREE: &str = "raft_meta";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

fn io_err(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::other(e)
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> io::Result<Vec<u8>> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(io_err)
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    crate::decode::decode_untrusted(bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The log store. Cloning is cheap: sled trees are shared handles.
#[derive(Clone)]
pub struct SledLogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
}

impl SledLogStore {
    pub fn open(db: sled::Db) -> io::Result<Self> {
        let log = db.open_tree(LOG_TREE).map_err(io_err)?;
        let meta = db.open_tree(META_TREE).map_err(io_err)?;
        Ok(SledLogStore { db, log, meta })
    }

    async fn flush(&self) -> io::Result<()> {
        self.db.flush_async().await.map_err(io_err)?;
        Ok(())
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self.meta.get(key).map_err(io_err)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> io::Result<()> {
        self.meta.insert(key, encode(value)?).map_err(io_err)?;
        Ok(())
    }

    /// Remove every log entry whose index is in `range`.
    fn remove_range(&self, range: impl RangeBounds<[u8; 8]>) -> io::Result<()> {
        let mut batch = sled::Batch::default();
        for item in self.log.range(range) {
            let (key, _) = item.map_err(io_err)?;
            batch.remove(key);
        }
        self.log.apply_batch(batch).map_err(io_err)
    }
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn bound_key(b: Bound<&u64>) -> Bound<[u8; 8]> {
    match b {
        Bound::Included(i) => Bound::Included(key(*i)),
        Bound::Excluded(i) => Bound::Excluded(key(*i)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl RaftLogReader<TypeConfig> for SledLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let range = (bound_key(range.start_bound()), bound_key(range.end_bound()));
        let mut entries = Vec::new();
        for item in self.log.range(range) {
            let (_, bytes) = item.map_err(io_err)?;
            entries.push(decode::<Entry>(&bytes)?);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for SledLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.get_meta(KEY_LAST_PURGED)?;
        let last_log_id = match self.log.last().map_err(io_err)? {
            Some((_, bytes)) => Some(decode::<Entry>(&bytes)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.put_meta(KEY_VOTE, vote)?;
        self.flush().await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not flushed on its own: it is a restart hint that rides along with the next flush,
        // and an older committed index on disk is always still true.
        self.put_meta(KEY_COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(&key(entry.log_id.index()), encode(&entry)?);
        }
        self.log.apply_batch(batch).map_err(io_err)?;
        let flushed = self.flush().await;
        let result = flushed
            .as_ref()
            .map(|_| ())
            .map_err(|e| io::Error::new(e.kind(), e.to_string()));
        callback.io_completed(result);
        // Durable and acknowledged to Raft, not yet applied anywhere.
        crate::crash_point!("log-after-flush");
        flushed
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        match last_log_id {
            Some(id) => self.remove_range((Bound::Excluded(key(id.index())), Bound::Unbounded))?,
            None => self.remove_range(..)?,
        }
        self.flush().await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Record the purge point first: a crash between the two steps leaves extra entries
        // behind the purge point, never a hole in front of it.
        self.put_meta(KEY_LAST_PURGED, &log_id)?;
        self.flush().await?;
        self.remove_range(..=key(log_id.index()))?;
        self.flush().await
    }
}
