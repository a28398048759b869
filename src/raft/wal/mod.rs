//! The Raft log and vote in a write-ahead log of our own: append-only segment files, made
//! durable with `fdatasync` before anything is acknowledged (etcd's WAL and TiKV's
//! raft-engine are the models).
//!
//! Why not sled: sled 0.34's flush ends in `sync_file_range`, which survives kill -9 but not
//! a power loss (the drive's cache and the file's size are not made durable), and it writes
//! large values to blob files it never syncs at all.
//!
//! Durability rules:
//! - an append's callback fires only after an `fdatasync` that began after the append was
//!   written (group commit: one sync serves every append that arrived while the previous
//!   one ran; see `syncer`);
//! - a vote, a truncation and a purge point return only once durable;
//! - a new segment is created, written and fsynced (with its directory) before it is used,
//!   and starts with the vote, purge point and committed index, so older segments can be
//!   deleted once a snapshot covers all their entries;
//! - on open, a record cut short or failing its checksum at the end of the newest segment is
//!   a torn write (never acknowledged) and is cut off; anywhere else it is damage, and the
//!   replica refuses to start rather than serve a log it cannot trust.
//!
//! The index of entries (log id and position) is kept in memory; entries are read back from
//! the files with positioned reads. Reads never return entries at or below the purge point.

mod recent;
pub(crate) mod record;
mod segment;
mod syncer;

pub use syncer::SyncStats;

use super::types::{Entry, LogId, TypeConfig, Vote};
use crate::zeroed_tail;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use recent::RecentEntries;
use record::{decode_entry, decode_frame, encode_frame, Frame, Record};
use segment::{Segment, SEGMENT_BYTES};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::fs::File;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use syncer::{Syncer, Waiter};

/// Entries separated by at most this many bytes of other records are read together ...
const MAX_READ_GAP: u64 = 64 * 1024;
/// ... in reads of at most this many bytes.
const MAX_READ_SPAN: u64 = 16 * 1024 * 1024;

/// Where one entry lies.
#[derive(Debug, Clone)]
struct Loc {
    seg: u64,
    offset: u64,
    len: u32,
    log_id: LogId,
}

#[derive(Debug)]
struct State {
    segments: BTreeMap<u64, Segment>,
    current: u64,
    write_offset: u64,
    /// The current segment holds written bytes (records, then zeros) up to here: appends
    /// below it change no metadata (`zeroed_tail`).
    zeroed_until: u64,
    /// The index of `entries[0]`.
    first_index: u64,
    entries: VecDeque<Loc>,
    /// The newest entries, decoded: most reads are of them.
    recent: RecentEntries,
    vote: Option<Vote>,
    purged: Option<LogId>,
    committed: Option<LogId>,
    /// `committed` changed since it was last written: it rides along with the next write.
    committed_unwritten: bool,
}

fn damaged(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl State {
    fn last_log_id(&self) -> Option<LogId> {
        self.entries.back().map(|l| l.log_id).or(self.purged)
    }

    fn apply(&mut self, record: &Record, seg: u64, offset: u64, len: usize) -> io::Result<()> {
        match record {
            Record::Entry(entry) => self.push_entry(Loc {
                seg,
                offset,
                len: u32::try_from(len).map_err(io::Error::other)?,
                log_id: entry.log_id,
            })?,
            Record::Vote(vote) => self.vote = Some(*vote),
            Record::TruncateAfter(after) => self.truncate_after(after.map(|l| l.index())),
            Record::Purge(log_id) => self.purge(*log_id),
            Record::Committed(committed) => self.committed = *committed,
        }
        Ok(())
    }

    fn push_entry(&mut self, loc: Loc) -> io::Result<()> {
        let index = loc.log_id.index();
        let next = self.first_index + self.entries.len() as u64;
        if self.entries.is_empty() {
            self.first_index = index;
        } else if index < next {
            // Overwrites what follows (openraft truncates first; this keeps replay exact).
            self.truncate_after(index.checked_sub(1));
        } else if index > next {
            return Err(damaged(format!(
                "the log jumps from entry {} to {index}",
                next - 1
            )));
        }
        if self.entries.is_empty() {
            self.first_index = index;
        }
        if let Some(segment) = self.segments.get_mut(&loc.seg) {
            segment.last_index = Some(segment.last_index.map_or(index, |l| l.max(index)));
        }
        self.entries.push_back(loc);
        Ok(())
    }

    fn truncate_after(&mut self, after: Option<u64>) {
        self.recent.truncate_after(after);
        match after {
            Some(i) if i >= self.first_index => {
                let keep = usize::try_from(i - self.first_index + 1).unwrap_or(usize::MAX);
                self.entries.truncate(keep);
            }
            _ => self.entries.clear(),
        }
        for segment in self.segments.values_mut() {
            segment.last_index = match (segment.last_index, after) {
                (Some(last), Some(i)) => Some(last.min(i)),
                (_, None) => None,
                (None, _) => None,
            };
        }
    }

    fn purge(&mut self, log_id: LogId) {
        let upto = log_id.index();
        self.recent.purge(upto);
        while self
            .entries
            .front()
            .is_some_and(|l| l.log_id.index() <= upto)
        {
            self.entries.pop_front();
            self.first_index += 1;
        }
        if self.entries.is_empty() {
            self.first_index = upto + 1;
        }
        if self.purged.is_none_or(|p| p.index() < upto) {
            self.purged = Some(log_id);
        }
    }

    /// The records that restate everything but the entries, at the head of a new segment.
    fn checkpoint(&self) -> io::Result<Vec<u8>> {
        let mut header = Vec::new();
        if let Some(vote) = self.vote {
            encode_frame(&Record::Vote(vote), &mut header)?;
        }
        if let Some(purged) = self.purged {
            encode_frame(&Record::Purge(purged), &mut header)?;
        }
        encode_frame(&Record::Committed(self.committed), &mut header)?;
        Ok(header)
    }
}

struct Shared {
    dir: PathBuf,
    /// Start a new segment past this size.
    segment_bytes: u64,
    state: Mutex<State>,
    syncer: Syncer,
}

/// The log store. Cloning is cheap: clones share one log.
#[derive(Clone)]
pub struct WalLogStore {
    shared: Arc<Shared>,
}

impl WalLogStore {
    /// Open (or create) the log in `dir`, replaying every segment.
    pub fn open(dir: &Path) -> io::Result<Self> {
        Self::open_with_segment_size(dir, SEGMENT_BYTES)
    }

    /// `open` with another segment size (tests use small ones to see many segments).
    pub fn open_with_segment_size(dir: &Path, segment_bytes: u64) -> io::Result<Self> {
        crate::private_files::create_dir(dir)?;
        let mut state = State {
            segments: BTreeMap::new(),
            current: 0,
            write_offset: 0,
            zeroed_until: 0,
            first_index: 0,
            entries: VecDeque::new(),
            recent: RecentEntries::default(),
            vote: None,
            purged: None,
            committed: None,
            committed_unwritten: false,
        };
        let found = segment::list(dir)?;
        let newest = found.last().map(|(seq, _)| *seq);
        for (seq, path) in found {
            let seg = segment::open(path)?;
            let bytes = segment::read_all(&seg.file)?;
            let file = seg.file.clone();
            let shown = seg.path.display().to_string();
            state.segments.insert(seq, seg);
            let valid = replay(&mut state, seq, &bytes, Some(seq) == newest, &shown)?;
            let mut written = bytes.len();
            if valid < bytes.len() && !zeroed_tail::is_zeroed(&bytes[valid..]) {
                // A torn write at the end of the newest segment: never acknowledged.
                tracing::warn!(
                    segment = %shown,
                    "cutting {} bytes of a torn write off the log's end",
                    bytes.len() - valid
                );
                file.set_len(valid as u64)?;
                file.sync_all()?;
                written = valid;
            }
            state.current = seq;
            state.write_offset = valid as u64;
            state.zeroed_until = written as u64;
        }
        if state.segments.is_empty() {
            let header = state.checkpoint()?;
            let seg = segment::create(dir, 1, &header)?;
            state.current = 1;
            state.write_offset = header.len() as u64;
            state.zeroed_until = header.len() as u64;
            state.segments.insert(1, seg);
        }
        Ok(WalLogStore {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                segment_bytes,
                state: Mutex::new(state),
                syncer: Syncer::start()?,
            }),
        })
    }

    /// How many syncs the log made and how many appends they acknowledged.
    pub fn sync_stats(&self) -> Arc<SyncStats> {
        self.shared.syncer.stats.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Write `records` at the end of the log (not yet durable); returns the file to sync.
    fn write(&self, records: Vec<Record>) -> io::Result<Arc<File>> {
        let mut state = self.lock();
        let mut buf = Vec::new();
        let mut frames = Vec::with_capacity(records.len() + 1);
        let committed = state
            .committed_unwritten
            .then(|| Record::Committed(state.committed));
        for record in committed.iter().chain(&records) {
            let start = buf.len();
            encode_frame(record, &mut buf)?;
            frames.push((start, buf.len() - start));
        }
        if state.write_offset + buf.len() as u64 > self.shared.segment_bytes
            && state
                .segments
                .get(&state.current)
                .is_some_and(|s| s.last_index.is_some())
        {
            self.rotate(&mut state)?;
        }
        let current = state.current;
        let file = state
            .segments
            .get(&current)
            .map(|s| s.file.clone())
            .ok_or_else(|| io::Error::other("the log has no current segment"))?;
        let base = state.write_offset;
        state.zeroed_until = zeroed_tail::ensure(
            &file,
            state.zeroed_until,
            base + buf.len() as u64,
            zeroed_tail::AHEAD_BYTES.min(self.shared.segment_bytes),
        )?;
        file.write_all_at(&buf, base)?;
        let skip = usize::from(committed.is_some());
        for (record, (start, len)) in committed.iter().chain(&records).zip(&frames) {
            state.apply(record, current, base + *start as u64, *len)?;
        }
        for (record, (_, len)) in records.into_iter().zip(&frames[skip..]) {
            if let Record::Entry(entry) = record {
                state.recent.push(entry, *len);
            }
        }
        state.write_offset = base + buf.len() as u64;
        state.committed_unwritten = false;
        Ok(file)
    }

    fn rotate(&self, state: &mut State) -> io::Result<()> {
        if let Some(old) = state.segments.get(&state.current) {
            old.file.sync_data()?;
        }
        let seq = state.current + 1;
        let header = state.checkpoint()?;
        let seg = segment::create(&self.shared.dir, seq, &header)?;
        state.segments.insert(seq, seg);
        state.current = seq;
        state.write_offset = header.len() as u64;
        state.zeroed_until = header.len() as u64;
        Ok(())
    }

    /// Start a new segment (unless the current one holds no entry yet) and answer the index
    /// of the last entry before it: once the log is purged up to there, no segment holds a
    /// record written before this call (a downgrade leaves nothing an older release cannot
    /// read).
    pub fn start_new_segment(&self) -> io::Result<Option<u64>> {
        let mut state = self.lock();
        let current_has_entries = state
            .segments
            .get(&state.current)
            .is_some_and(|s| s.last_index.is_some());
        if current_has_entries {
            self.rotate(&mut state)?;
        }
        Ok(state.last_log_id().map(|l| l.index()))
    }

    /// How many segments precede the current one (still on disk).
    pub fn older_segments(&self) -> usize {
        let state = self.lock();
        state.segments.range(..state.current).count()
    }

    /// Write `records` and return once they are durable.
    async fn write_durable(&self, records: Vec<Record>) -> io::Result<()> {
        let file = self.write(records)?;
        self.shared.syncer.sync(file).await
    }

    /// Delete the oldest segments while every entry in them is purged.
    fn delete_purged_segments(&self) -> io::Result<()> {
        let doomed: Vec<Segment> = {
            let mut state = self.lock();
            let purged = state.purged.map(|p| p.index());
            let mut doomed = Vec::new();
            while let Some((&seq, seg)) = state.segments.iter().next() {
                let covered = match (seg.last_index, purged) {
                    (None, _) => true,
                    (Some(last), Some(p)) => last <= p,
                    (Some(_), None) => false,
                };
                if seq == state.current || !covered {
                    break;
                }
                if let Some(seg) = state.segments.remove(&seq) {
                    doomed.push(seg);
                }
            }
            doomed
        };
        for seg in doomed {
            // A deletion lost in a crash leaves a segment whose entries replay and are
            // purged again by the purge record that follows: harmless.
            std::fs::remove_file(&seg.path)?;
        }
        Ok(())
    }
}

/// Apply every record of one segment; returns how many bytes of it are valid.
fn replay(
    state: &mut State,
    seq: u64,
    bytes: &[u8],
    newest: bool,
    shown: &str,
) -> io::Result<usize> {
    let mut at = 0usize;
    loop {
        match decode_frame(&bytes[at..]) {
            Frame::Record(record, used) => {
                state.apply(&record, seq, at as u64, used)?;
                at += used;
            }
            Frame::End => return Ok(at),
            Frame::Torn(_) if newest => return Ok(at),
            Frame::Unreadable(_)
                if record::entry_command_kind(&bytes[at..])
                    .is_some_and(|kind| kind >= crate::fsm::COMMAND_KINDS) =>
            {
                let kind = record::entry_command_kind(&bytes[at..]).unwrap_or_default();
                return Err(damaged(format!(
                    "the Raft log segment {shown} holds at byte {at} an entry of command kind \
                     {kind}, which this release ({}) does not know: it knows kinds 0 to {} and \
                     runs in cluster versions up to {}, and the cluster has been raised past \
                     that. Start this replica on the release the rest of the cluster runs (see \
                     `dispatcher cluster status`); the entry is kept, not cut off as if torn",
                    crate::formats::release(),
                    crate::fsm::COMMAND_KINDS - 1,
                    crate::formats::MAX_CLUSTER_VERSION
                )));
            }
            Frame::Unreadable(why) => {
                return Err(damaged(format!(
                    "the Raft log segment {shown} holds at byte {at} an intact record that this \
                     build cannot read ({why}); a newer release wrote it. This build ({}) will \
                     not cut it off as if it were torn: start this replica with the release \
                     that wrote it, or a newer one",
                    crate::formats::long_version()
                )))
            }
            Frame::Torn(why) => {
                return Err(damaged(format!(
                    "the Raft log segment {shown} is damaged at byte {at}: {why}; this replica \
                     cannot trust its log: move its data dir away and restart it empty, and \
                     it rejoins from the other replicas"
                )))
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for WalLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let cached: Vec<Entry>;
        let wanted: Vec<(Arc<File>, u64, u32)> = {
            let state = self.lock();
            let first = state.first_index;
            let end_of_log = first + state.entries.len() as u64;
            let start = match range.start_bound() {
                Bound::Included(i) => *i,
                Bound::Excluded(i) => i.saturating_add(1),
                Bound::Unbounded => first,
            }
            .max(first);
            let end = match range.end_bound() {
                Bound::Included(i) => i.saturating_add(1),
                Bound::Excluded(i) => *i,
                Bound::Unbounded => end_of_log,
            }
            .min(end_of_log);
            // The newest entries come from memory, the rest from the files.
            let split = state
                .recent
                .first_kept()
                .map_or(end, |kept| kept.max(start).min(end));
            cached = (split..end).filter_map(|i| state.recent.get(i)).collect();
            let mut wanted = Vec::new();
            for index in start..split {
                let loc = &state.entries[(index - first) as usize];
                let file = state
                    .segments
                    .get(&loc.seg)
                    .map(|s| s.file.clone())
                    .ok_or_else(|| io::Error::other("an entry's segment is gone"))?;
                wanted.push((file, loc.offset, loc.len));
            }
            wanted
        };
        // Entries written one after another lie close together (only small records such as
        // the committed index between them): read each such run with one positioned read.
        let mut entries = Vec::with_capacity(wanted.len());
        let mut i = 0;
        while i < wanted.len() {
            let (file, start, _) = &wanted[i];
            let mut j = i;
            let mut end = start + u64::from(wanted[i].2);
            while j + 1 < wanted.len() {
                let (next_file, offset, len) = &wanted[j + 1];
                let close = Arc::ptr_eq(file, next_file)
                    && *offset >= end
                    && *offset - end <= MAX_READ_GAP
                    && *offset + u64::from(*len) - start <= MAX_READ_SPAN;
                if !close {
                    break;
                }
                end = *offset + u64::from(*len);
                j += 1;
            }
            let mut bytes = vec![0u8; usize::try_from(end - start).map_err(io::Error::other)?];
            file.read_exact_at(&mut bytes, *start)?;
            for (_, offset, len) in &wanted[i..=j] {
                let at = usize::try_from(offset - start).map_err(io::Error::other)?;
                entries.push(decode_entry(&bytes[at..at + *len as usize])?);
            }
            i = j + 1;
        }
        entries.extend(cached);
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.lock().vote)
    }
}

impl RaftLogStorage<TypeConfig> for WalLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let state = self.lock();
        Ok(LogState {
            last_purged_log_id: state.purged,
            last_log_id: state.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.write_durable(vec![Record::Vote(*vote)]).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not written on its own: a restart hint that rides along with the next write (and
        // its sync); an older committed index on disk is always still true.
        let mut state = self.lock();
        state.committed = committed;
        state.committed_unwritten = true;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.lock().committed)
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
        let records: Vec<Record> = entries.into_iter().map(Record::Entry).collect();
        if records.is_empty() {
            callback.io_completed(Ok(()));
            return Ok(());
        }
        // Readable as soon as written; acknowledged once the sync thread made it durable.
        let file = self.write(records)?;
        self.shared.syncer.request(file, Waiter::Append(callback));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        self.write_durable(vec![Record::TruncateAfter(last_log_id)])
            .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.write_durable(vec![Record::Purge(log_id)]).await?;
        self.delete_purged_segments()
    }
}

#[cfg(test)]
mod tests;
