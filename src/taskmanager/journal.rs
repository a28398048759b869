//! The agent's run journal: one append-only file, `<work-dir>/runs.journal`, of `started` and
//! `ended` records, each framed and checksummed (`crate::framing`). A run's `started` record is
//! durable before its process starts, and its `ended` record before its outcome is reported,
//! so an agent restarted on the same work dir never runs a shard twice: it reports a finished
//! run again and a run it was cut off from as interrupted.
//!
//! The file is extended with zeros a few MiB ahead of its records (`zeroed_tail`), so a
//! sync writes the records alone; replay stops at the zeros.
//!
//! One writer thread owns the file. Whatever was queued while it synced goes out in the next
//! write with one `fdatasync` (group commit), so a burst of short shards costs a few syncs,
//! not several per shard. Runs the leader no longer lists are forgotten; once the forgotten
//! outnumber the live, the writer rewrites the file with the live records only.
//!
//! Must not: acknowledge a record before it is on disk, or block the async threads on a sync.

use super::workdir::{RunRecord, RunResult};
use crate::framing::{decode_frame, encode_frame, Frame};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use tokio::sync::oneshot;

pub const FILE_NAME: &str = "runs.journal";
/// The version of the journal's records (`JournalRecord` as bincode lays it out). Bump it
/// with any change; tests/golden keeps each version's records (`persisted_formats`).
pub const JOURNAL_FORMAT_VERSION: u32 = 1;
/// A record holds ids and a bounded error text; anything larger is corruption.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// Forgotten records tolerated before a rewrite, at the least.
const COMPACT_AFTER: usize = 4096;

/// (job id, shard index, epoch).
pub type RunKey = (String, u32, u64);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JournalRecord {
    Started {
        job_id: String,
        index: u32,
        epoch: u64,
    },
    Ended {
        job_id: String,
        index: u32,
        epoch: u64,
        result: RunResult,
    },
    /// `Ended` for a run that passed a limit its job set (appended: journals written before
    /// it existed read the same).
    EndedOverLimit {
        job_id: String,
        index: u32,
        epoch: u64,
        result: RunResult,
    },
}

impl JournalRecord {
    /// The record of a run's end, of the kind its result needs.
    pub fn ended(job_id: String, index: u32, epoch: u64, result: RunResult) -> Self {
        if result.over_limit {
            JournalRecord::EndedOverLimit {
                job_id,
                index,
                epoch,
                result,
            }
        } else {
            JournalRecord::Ended {
                job_id,
                index,
                epoch,
                result,
            }
        }
    }

    fn key(&self) -> RunKey {
        match self {
            JournalRecord::Started {
                job_id,
                index,
                epoch,
            }
            | JournalRecord::Ended {
                job_id,
                index,
                epoch,
                ..
            }
            | JournalRecord::EndedOverLimit {
                job_id,
                index,
                epoch,
                ..
            } => (job_id.clone(), *index, *epoch),
        }
    }

    fn apply(self, index: &mut BTreeMap<RunKey, RunRecord>) {
        let key = self.key();
        match self {
            JournalRecord::Started { .. } => {
                // A start never undoes an end already recorded.
                index.entry(key).or_insert(RunRecord::Interrupted);
            }
            JournalRecord::Ended { result, .. } => {
                index.insert(key, RunRecord::Ended(result));
            }
            JournalRecord::EndedOverLimit { mut result, .. } => {
                result.over_limit = true;
                index.insert(key, RunRecord::Ended(result));
            }
        }
    }
}

/// What a journal's bytes say, and how many of them hold whole records (a torn tail after
/// a crash is cut off: it was never acknowledged). An intact record this build cannot read
/// (a newer agent wrote it) is refused: cutting it off would forget runs, and a forgotten
/// run that ended could run again.
pub fn replay(bytes: &[u8]) -> io::Result<(BTreeMap<RunKey, RunRecord>, usize)> {
    let mut index = BTreeMap::new();
    let mut at = 0;
    while at < bytes.len() {
        match decode_frame::<JournalRecord>(&bytes[at..], MAX_RECORD_BYTES) {
            Frame::Record(record, used) => {
                record.apply(&mut index);
                at += used;
            }
            Frame::End | Frame::Torn(_) => break,
            Frame::Unreadable(why) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the run journal holds at byte {at} an intact record that this build \
                         cannot read ({why}); a newer release of the agent wrote it. This \
                         build ({}) will not forget the runs it records: run the release that \
                         wrote it, or a newer one, on this work dir",
                        crate::formats::long_version()
                    ),
                ))
            }
        }
    }
    Ok((index, at))
}

fn record_of(key: &RunKey, run: &RunRecord) -> Option<JournalRecord> {
    let (job_id, index, epoch) = key.clone();
    match run {
        RunRecord::NeverStarted => None,
        RunRecord::Interrupted => Some(JournalRecord::Started {
            job_id,
            index,
            epoch,
        }),
        RunRecord::Ended(result) => {
            Some(JournalRecord::ended(job_id, index, epoch, result.clone()))
        }
    }
}

enum Job {
    Append(JournalRecord, oneshot::Sender<io::Result<()>>),
    Compact,
}

#[derive(Clone)]
pub struct Journal {
    index: Arc<Mutex<BTreeMap<RunKey, RunRecord>>>,
    jobs: mpsc::Sender<Job>,
    forgotten: Arc<AtomicUsize>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

impl Journal {
    /// Open (or create) the journal in `dir`, cut a torn tail, and start its writer.
    pub fn open(dir: &Path) -> io::Result<Journal> {
        let path = dir.join(FILE_NAME);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let (index, whole) = replay(&bytes)?;
        let file = crate::private_files::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        let mut written = bytes.len();
        if whole < bytes.len() && !crate::zeroed_tail::is_zeroed(&bytes[whole..]) {
            written = whole;
            tracing::warn!(
                path = %path.display(),
                cut = bytes.len() - whole,
                "the run journal ends in a torn record (a crash mid-write); cutting it off"
            );
            file.set_len(whole as u64)?;
            file.sync_all()?;
        }
        let created = bytes.is_empty();
        let mut file = file;
        file.seek(io::SeekFrom::Start(whole as u64))?;
        if created {
            sync_dir(&path)?;
        }
        let index = Arc::new(Mutex::new(index));
        let (jobs, queue) = mpsc::channel();
        let writer = Writer {
            path,
            file,
            len: whole as u64,
            zeroed_until: written as u64,
            failed: None,
            index: index.clone(),
        };
        std::thread::Builder::new()
            .name("run-journal".into())
            .spawn(move || writer.run(queue))?;
        Ok(Journal {
            index,
            jobs,
            forgotten: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// What the journal says of a run (`None`: nothing).
    pub fn get(&self, key: &RunKey) -> Option<RunRecord> {
        lock(&self.index).get(key).cloned()
    }

    /// Append a record and wait until it is on disk.
    pub async fn append(&self, record: JournalRecord) -> io::Result<()> {
        let (done, wait) = oneshot::channel();
        self.jobs
            .send(Job::Append(record, done))
            .map_err(|_| io::Error::other("the run journal's writer has stopped"))?;
        wait.await
            .unwrap_or_else(|_| Err(io::Error::other("the run journal's writer has stopped")))
    }

    /// Forget every run not in `keep`, the leader's current list: a run it no longer lists
    /// can never be assigned here again (epochs are never reused), so its record has done
    /// its work.
    /// Returns the runs it forgot.
    pub fn forget_except(&self, keep: &HashSet<RunKey>) -> Vec<RunKey> {
        let (forgot, live) = {
            let mut index = lock(&self.index);
            let mut forgot = Vec::new();
            index.retain(|key, _| {
                let kept = keep.contains(key);
                if !kept {
                    forgot.push(key.clone());
                }
                kept
            });
            (forgot, index.len())
        };
        let dropped = forgot.len();
        if dropped == 0 {
            return forgot;
        }
        let forgotten = self.forgotten.fetch_add(dropped, Ordering::Relaxed) + dropped;
        if forgotten > COMPACT_AFTER.max(live) {
            self.forgotten.store(0, Ordering::Relaxed);
            let _ = self.jobs.send(Job::Compact);
        }
        forgot
    }

    /// Whether the journal holds a record of this run.
    pub fn knows(&self, key: &RunKey) -> bool {
        lock(&self.index).contains_key(key)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.index).len()
    }
}

struct Writer {
    path: PathBuf,
    file: File,
    /// Bytes of whole records in the file: where the next append goes.
    len: u64,
    /// The file holds written bytes (records, then zeros) up to here, so an append below it
    /// is synced without touching metadata (`zeroed_tail`).
    zeroed_until: u64,
    /// Set when the file can no longer be trusted to keep what is appended.
    failed: Option<String>,
    index: Arc<Mutex<BTreeMap<RunKey, RunRecord>>>,
}

impl Writer {
    fn run(mut self, queue: mpsc::Receiver<Job>) {
        while let Ok(first) = queue.recv() {
            let mut batch = vec![first];
            batch.extend(queue.try_iter());
            let mut records = Vec::new();
            let mut compact = false;
            for job in batch {
                match job {
                    Job::Append(record, done) => records.push((record, done)),
                    Job::Compact => compact = true,
                }
            }
            // The rewrite first: records queued with it then go to the new file.
            if compact {
                if let Err(e) = self.compact() {
                    tracing::warn!(path = %self.path.display(), "cannot rewrite the run journal: {e}");
                }
            }
            self.append(records);
        }
    }

    fn append(&mut self, records: Vec<(JournalRecord, oneshot::Sender<io::Result<()>>)>) {
        if records.is_empty() {
            return;
        }
        let mut bytes = Vec::new();
        let mut framed = Vec::new();
        for (record, done) in records {
            match encode_frame(&record, MAX_RECORD_BYTES, &mut bytes) {
                Ok(()) => framed.push((record, done)),
                Err(e) => {
                    let _ = done.send(Err(e));
                }
            }
        }
        let written = match &self.failed {
            Some(why) => Err(io::Error::other(why.clone())),
            None => crate::zeroed_tail::ensure(
                &self.file,
                self.zeroed_until,
                self.len + bytes.len() as u64,
                crate::zeroed_tail::AHEAD_BYTES,
            )
            .and_then(|zeroed| {
                self.zeroed_until = zeroed;
                self.file.write_all(&bytes)
            })
            .and_then(|()| self.file.sync_data()),
        };
        match &written {
            Ok(()) => self.len += bytes.len() as u64,
            Err(e) if self.failed.is_none() => {
                // Half a write would sit before every later record and hide them on replay:
                // cut it off, or stop writing.
                self.zeroed_until = self.len;
                let cut = self
                    .file
                    .set_len(self.len)
                    .and_then(|()| self.file.seek(io::SeekFrom::Start(self.len)).map(|_| ()));
                if let Err(cut) = cut {
                    self.failed = Some(format!(
                        "a write to the run journal failed ({e}) and could not be undone ({cut})"
                    ));
                }
            }
            Err(_) => {}
        }
        if written.is_ok() {
            let mut index = lock(&self.index);
            for (record, _) in &framed {
                record.clone().apply(&mut index);
            }
        }
        for (_, done) in framed {
            let _ = done.send(match &written {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
    }

    /// Rewrite the file with the live records only: a new file, synced, renamed over the old.
    /// Appends then go to the new file through a handle opened before the rename, so a failed
    /// rename leaves everything as it was. Once renamed, a directory that cannot be synced
    /// could bring the old file back after a power loss without the appends made since:
    /// from then on every append fails rather than be acknowledged on such a promise.
    fn compact(&mut self) -> io::Result<()> {
        let mut bytes = Vec::new();
        for (key, run) in lock(&self.index).iter() {
            if let Some(record) = record_of(key, run) {
                encode_frame(&record, MAX_RECORD_BYTES, &mut bytes)?;
            }
        }
        let tmp = self.path.with_extension("journal.tmp");
        let mut file = crate::private_files::create_file(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        self.file = file;
        self.len = bytes.len() as u64;
        self.zeroed_until = self.len;
        if let Err(e) = sync_dir(&self.path) {
            self.failed = Some(format!("the rewritten run journal may not be durable: {e}"));
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(index: u32) -> JournalRecord {
        JournalRecord::Started {
            job_id: "j-1".into(),
            index,
            epoch: 7,
        }
    }

    fn ended(index: u32, code: i32) -> JournalRecord {
        JournalRecord::Ended {
            job_id: "j-1".into(),
            index,
            epoch: 7,
            result: RunResult {
                exit_code: Some(code),
                run_ms: 3,
                error: String::new(),
                cannot_start: false,
                over_limit: false,
            },
        }
    }

    /// A whole frame of `payload`, as `encode_frame` lays one out.
    fn raw_frame(payload: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        out.extend_from_slice(payload);
    }

    #[test]
    fn a_record_of_a_kind_from_a_newer_agent_is_refused_not_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        let mut bytes = Vec::new();
        encode_frame(&started(0), MAX_RECORD_BYTES, &mut bytes).expect("encode");
        // Kind 9: none this build knows, its checksum whole.
        raw_frame(&[9, 3, b'j', b'-', b'1', 0, 7], &mut bytes);
        encode_frame(&ended(0, 0), MAX_RECORD_BYTES, &mut bytes).expect("encode");
        fs::write(&path, &bytes).expect("write");
        let refused = replay(&bytes).expect_err("refused");
        assert!(refused.to_string().contains("newer release"), "{refused}");
        let opened = Journal::open(dir.path())
            .err()
            .expect("the agent does not start");
        assert!(opened.to_string().contains("at byte"), "{opened}");
        assert_eq!(fs::read(&path).expect("read"), bytes, "nothing was cut off");
    }

    #[test]
    fn a_run_over_its_limit_reads_back_as_such_and_old_records_read_the_same() {
        let mut over = RunResult {
            exit_code: None,
            run_ms: 9,
            error: "timed out after 1s".into(),
            cannot_start: false,
            over_limit: true,
        };
        let mut bytes = Vec::new();
        let record = JournalRecord::ended("j-1".into(), 0, 7, over.clone());
        encode_frame(&record, MAX_RECORD_BYTES, &mut bytes).expect("encode");
        encode_frame(&ended(1, 2), MAX_RECORD_BYTES, &mut bytes).expect("encode");
        let (index, used) = replay(&bytes).expect("reads");
        assert_eq!(used, bytes.len());
        assert_eq!(
            index.get(&("j-1".into(), 0, 7)),
            Some(&RunRecord::Ended(over.clone()))
        );
        // The plain record's encoding did not change: no flag in it, and it reads back
        // without one.
        over.over_limit = false;
        let plain =
            bincode::serde::encode_to_vec(&over, bincode::config::standard()).expect("encode");
        let back: RunResult = crate::decode::decode_untrusted(&plain).expect("decode");
        assert!(!back.over_limit);
        assert!(matches!(
            index.get(&("j-1".into(), 1, 7)),
            Some(RunRecord::Ended(r)) if !r.over_limit && r.exit_code == Some(2)
        ));
    }

    #[tokio::test]
    async fn records_survive_a_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let journal = Journal::open(dir.path()).expect("open");
            journal.append(started(0)).await.expect("append");
            journal.append(started(1)).await.expect("append");
            journal.append(ended(0, 0)).await.expect("append");
            assert!(matches!(
                journal.get(&("j-1".into(), 0, 7)),
                Some(RunRecord::Ended(_))
            ));
        }
        // A crash mid-write leaves half a record behind.
        let path = dir.path().join(FILE_NAME);
        let mut half = Vec::new();
        encode_frame(&ended(1, 3), MAX_RECORD_BYTES, &mut half).expect("encode");
        // Where the records end, the zeros written ahead of them begin: the torn half lands
        // there.
        let (_, end) = replay(&fs::read(&path).expect("read")).expect("reads");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        std::os::unix::fs::FileExt::write_all_at(&file, &half[..half.len() / 2], end as u64)
            .expect("write");
        drop(file);

        let journal = Journal::open(dir.path()).expect("reopen");
        assert!(matches!(
            journal.get(&("j-1".into(), 0, 7)),
            Some(RunRecord::Ended(r)) if r.exit_code == Some(0)
        ));
        assert_eq!(
            journal.get(&("j-1".into(), 1, 7)),
            Some(RunRecord::Interrupted)
        );
        assert_eq!(journal.get(&("j-1".into(), 2, 7)), None);
        // Appends go after the cut, not after the torn bytes.
        journal.append(ended(1, 3)).await.expect("append");
        let bytes = fs::read(&path).expect("read");
        let (index, whole) = replay(&bytes).expect("reads");
        assert!(
            crate::zeroed_tail::is_zeroed(&bytes[whole..]),
            "only zeros after the records"
        );
        assert!(matches!(
            index.get(&("j-1".into(), 1, 7)),
            Some(RunRecord::Ended(r)) if r.exit_code == Some(3)
        ));
    }

    #[tokio::test]
    async fn forgotten_runs_are_compacted_away_and_live_ones_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::open(dir.path()).expect("open");
        let runs = (COMPACT_AFTER + 10) as u32;
        for i in 0..runs {
            journal.append(started(i)).await.expect("append");
            journal.append(ended(i, 0)).await.expect("append");
        }
        let keep: HashSet<RunKey> = [("j-1".to_string(), 5, 7)].into_iter().collect();
        journal.forget_except(&keep);
        assert_eq!(journal.len(), 1);
        // The rewrite happens on the writer thread, ordered before this append.
        journal.append(started(runs)).await.expect("append");
        let path = dir.path().join(FILE_NAME);
        let (index, records_bytes) = replay(&fs::read(&path).expect("read")).expect("reads");
        assert_eq!(index.len(), 2, "only the kept run and the new one remain");
        assert!(records_bytes < 1024);
        drop(journal);
        let reopened = Journal::open(dir.path()).expect("reopen");
        assert!(matches!(
            reopened.get(&("j-1".into(), 5, 7)),
            Some(RunRecord::Ended(_))
        ));
    }
}
