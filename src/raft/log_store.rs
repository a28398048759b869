//! The Raft log, vote and committed index in one sled `Db`.
//!
//! Durability rule: nothing is reported to openraft as done before `flush_async` returned —
//! the vote is flushed before `save_vote` returns, appended entries are flushed before the
//! append callback fires, and truncation and the purge point are flushed before they return.
//! Log keys are big-endian indexes so that sled's byte order is log order.
//!
//! Purged entries are deleted by a background thread, not in `purge`: deleting the hundred
//! thousand entries behind a snapshot took most of a second, and the log (so every write)
//! waited for it. Reads never return entries at or below the durable purge point, so
//! entries waiting to be deleted, even across a crash, are invisible.

use super::types::{Entry, LogId, TypeConfig, Vote};
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

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
    /// The first index reads may return: one past the durable purge point.
    first_readable: Arc<AtomicU64>,
    /// Purge points for the deleting thread.
    purger: Arc<Mutex<mpsc::Sender<u64>>>,
}

/// Entries deleted per batch by the purging thread.
const PURGE_CHUNK: usize = 4096;

/// Delete log entries up to each index received, in chunks, until every sender is gone.
fn run_purger(log: sled::Tree, purges: mpsc::Receiver<u64>) {
    while let Ok(mut upto) = purges.recv() {
        // Only the newest purge point matters.
        while let Ok(later) = purges.try_recv() {
            upto = upto.max(later);
        }
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for item in log.range(..=key(upto)).take(PURGE_CHUNK) {
                match item {
                    Ok((k, _)) => batch.remove(k),
                    Err(e) => {
                        tracing::warn!("purging the log: {e}");
                        break;
                    }
                }
                n += 1;
            }
            if n == 0 {
                break;
            }
            if let Err(e) = log.apply_batch(batch) {
                tracing::warn!("purging the log: {e}");
                break;
            }
        }
    }
}

impl SledLogStore {
    pub fn open(db: sled::Db) -> io::Result<Self> {
        let log = db.open_tree(LOG_TREE).map_err(io_err)?;
        let meta = db.open_tree(META_TREE).map_err(io_err)?;
        let (purger, purges) = mpsc::channel();
        let tree = log.clone();
        std::thread::Builder::new()
            .name("log-purger".into())
            .spawn(move || run_purger(tree, purges))?;
        let store = SledLogStore {
            db,
            log,
            meta,
            first_readable: Arc::new(AtomicU64::new(0)),
            purger: Arc::new(Mutex::new(purger)),
        };
        if let Some(purged) = store.get_meta::<LogId>(KEY_LAST_PURGED)? {
            store.purged_through(purged.index());
        }
        Ok(store)
    }

    /// Hide entries through `index` from reads and have the purging thread delete them.
    fn purged_through(&self, index: u64) {
        self.first_readable
            .fetch_max(index.saturating_add(1), Ordering::SeqCst);
        let purger = self.purger.lock().unwrap_or_else(|p| p.into_inner());
        // The thread only ends with the last store handle; a failed send leaves entries
        // that reads already skip.
        let _ = purger.send(index);
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
        let first = self.first_readable.load(Ordering::SeqCst);
        let start = match range.start_bound() {
            Bound::Included(i) if *i >= first => Bound::Included(key(*i)),
            Bound::Excluded(i) if *i >= first => Bound::Excluded(key(*i)),
            _ => Bound::Included(key(first)),
        };
        let end = bound_key(range.end_bound());
        let empty = match (&start, &end) {
            (Bound::Included(s), Bound::Included(e)) => s > e,
            (Bound::Included(s), Bound::Excluded(e)) | (Bound::Excluded(s), Bound::Included(e)) => {
                s >= e
            }
            (Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
            _ => false,
        };
        if empty {
            return Ok(Vec::new());
        }
        let range = (start, end);
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
        let last_entry = match self.log.last().map_err(io_err)? {
            Some((_, bytes)) => Some(decode::<Entry>(&bytes)?.log_id),
            None => None,
        };
        // Entries at or below the purge point may still wait for the purging thread (even
        // across a restart); they do not count.
        let last_log_id = match (last_entry, &last_purged_log_id) {
            (Some(entry), Some(purged)) if entry.index() <= purged.index() => last_purged_log_id,
            (Some(entry), _) => Some(entry),
            (None, _) => last_purged_log_id,
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
        // The purge point is durable before anything is deleted: a crash leaves extra
        // entries behind it (hidden from reads, deleted after the restart), never a hole.
        self.put_meta(KEY_LAST_PURGED, &log_id)?;
        self.flush().await?;
        self.purged_through(log_id.index());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::{blank_ent, log_id};

    /// A crash after the purge point was made durable but before the purging thread deleted
    /// the entries behind it (here: a snapshot installed far past a short log).
    #[tokio::test]
    async fn entries_left_behind_the_purge_point_are_invisible_after_a_restart() {
        let db = sled::Config::new().temporary(true).open().expect("sled");
        {
            let log = db.open_tree(LOG_TREE).expect("log tree");
            let meta = db.open_tree(META_TREE).expect("meta tree");
            for i in 1..=3 {
                let entry = blank_ent::<TypeConfig>(1, 1, i);
                log.insert(key(i), encode(&entry).expect("encode"))
                    .expect("insert");
            }
            let purged: LogId = log_id::<TypeConfig>(1, 1, 99);
            meta.insert(KEY_LAST_PURGED, encode(&purged).expect("encode"))
                .expect("insert");
        }
        let mut store = SledLogStore::open(db).expect("open");
        let state = store.get_log_state().await.expect("log state");
        assert_eq!(state.last_purged_log_id.map(|l| l.index()), Some(99));
        assert_eq!(state.last_log_id.map(|l| l.index()), Some(99));
        let entries = store.try_get_log_entries(0..200).await.expect("read");
        assert!(entries.is_empty(), "{entries:?}");
    }
}
