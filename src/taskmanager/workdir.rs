//! The agent's work directory: one directory per run, `<work-dir>/<job>/shard-<i>.epoch-<e>`,
//! holding the shard's `stdout` and `stderr` (the shard host makes it), and the run journal
//! (`journal`) that says which runs started and how they ended. After a restart these tell the
//! agent whether a run it is still assigned finished (report it again), was cut short (report
//! it interrupted), or never started, so no run is executed twice.
//!
//! Once the leader stops listing a run, its directory goes back to the shard host's pool
//! (`run_dir_pool`): its output's tail is in the cluster by then.
//!
//! Work dirs written before the journal existed kept a `started` marker and a `result` file in
//! each run directory; a run the journal does not know is looked up there.

use super::journal::{Journal, JournalRecord};

/// The version of the work dir's layout: where run directories, the run journal
/// (`journal::FILE_NAME`, in `JOURNAL_FORMAT_VERSION`) and the incarnation record are, and
/// the marker files of agents from before the journal. Bump it with any change; the golden
/// `tests/golden/workdir-v<N>/` of each version must still open (`persisted_formats`).
pub const WORKDIR_LAYOUT_VERSION: u32 = 1;
use super::sweeper::run_dirs;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// How a run ended, as kept on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunResult {
    pub exit_code: Option<i32>,
    pub run_ms: u64,
    pub error: String,
    /// The command could not be started at all (not found, not executable, arguments too
    /// large): the job's mistake, not a failure of the shard or the TaskManager.
    #[serde(default)]
    pub cannot_start: bool,
    /// It passed a limit its job set (time, memory): the job's failure, not the agent's.
    /// Not in this struct's encoding (the journal's records keep the shape earlier agents
    /// wrote): the journal says it with a record kind of its own.
    #[serde(skip)]
    pub over_limit: bool,
}

/// What the directory says about a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunRecord {
    NeverStarted,
    /// Started but no result: the agent died while it ran.
    Interrupted,
    Ended(RunResult),
}

/// Where a run's directory is under a work dir.
pub fn run_dir(root: &Path, job_id: &str, index: u32, epoch: u64) -> PathBuf {
    root.join(job_id)
        .join(format!("shard-{index}.epoch-{epoch}"))
}

/// Where agents before the run journal kept a run's directory (and its marker files).
fn legacy_run_dir(root: &Path, job_id: &str, index: u32, epoch: u64) -> PathBuf {
    root.join(job_id)
        .join(format!("shard-{index}"))
        .join(format!("epoch-{epoch}"))
}

/// Whether `root` holds a run directory of the layout before the journal
/// (`<job>/shard-<i>/epoch-<e>`). Looked at once, when the work dir is opened: no agent makes
/// them any more.
fn holds_legacy_runs(root: &Path) -> bool {
    let dirs = |dir: &Path| {
        fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
    };
    dirs(root).any(|job| {
        dirs(&job.path()).any(|shard| {
            shard.file_name().to_str().is_some_and(|name| {
                name.strip_prefix("shard-")
                    .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
            })
        })
    })
}

#[derive(Clone)]
pub struct WorkDir {
    root: PathBuf,
    journal: Journal,
    /// Runs may be recorded in the layout before the journal: a run the journal does not
    /// know is looked up there (two file lookups per new run otherwise saved).
    legacy: bool,
}

impl WorkDir {
    /// Open the work dir and its journal. One agent process per work dir (the identity
    /// claim sees to that): the journal has one writer.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        crate::private_files::make_private(&root)?;
        let journal = Journal::open(&root)?;
        let legacy = holds_legacy_runs(&root);
        Ok(WorkDir {
            root,
            journal,
            legacy,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The run directories a previous agent left that no record needs: the journal does not
    /// know the run (it was forgotten before the agent stopped).
    pub fn leftovers(&self) -> Vec<PathBuf> {
        run_dirs(&self.root)
            .into_iter()
            .filter(|(key, _)| !self.journal.knows(key))
            .map(|(_, dir)| dir)
            .collect()
    }

    pub fn run_dir(&self, job_id: &str, index: u32, epoch: u64) -> PathBuf {
        run_dir(&self.root, job_id, index, epoch)
    }

    pub fn record(&self, job_id: &str, index: u32, epoch: u64) -> RunRecord {
        if let Some(record) = self.journal.get(&(job_id.to_string(), index, epoch)) {
            return record;
        }
        if !self.legacy {
            return RunRecord::NeverStarted;
        }
        let dir = legacy_run_dir(&self.root, job_id, index, epoch);
        if let Ok(bytes) = fs::read(dir.join("result")) {
            if let Ok(result) = serde_json::from_slice::<RunResult>(&bytes) {
                return RunRecord::Ended(result);
            }
        }
        if dir.join("started").exists() {
            RunRecord::Interrupted
        } else {
            RunRecord::NeverStarted
        }
    }

    /// Record durably that the run may start: after this returns, a restarted agent knows
    /// the run may have run.
    pub async fn mark_started(&self, job_id: &str, index: u32, epoch: u64) -> io::Result<()> {
        self.journal
            .append(JournalRecord::Started {
                job_id: job_id.to_string(),
                index,
                epoch,
            })
            .await
    }

    /// Record durably how the run ended, before it is reported.
    pub async fn save_result(
        &self,
        job_id: &str,
        index: u32,
        epoch: u64,
        result: &RunResult,
    ) -> io::Result<()> {
        self.journal
            .append(JournalRecord::ended(
                job_id.to_string(),
                index,
                epoch,
                result.clone(),
            ))
            .await
    }

    /// Forget the records of runs the leader no longer lists here; their directories, which
    /// nothing will read again.
    pub fn forget_except(
        &self,
        keep: &std::collections::HashSet<super::journal::RunKey>,
    ) -> Vec<PathBuf> {
        self.journal
            .forget_except(keep)
            .into_iter()
            .map(|(job_id, index, epoch)| self.run_dir(&job_id, index, epoch))
            .collect()
    }
}

/// The last `max_bytes` of a file as they are (output may be binary), and the file's
/// length.
pub fn tail_bytes(path: &Path, max_bytes: u64) -> (Vec<u8>, u64) {
    // Most short runs print nothing: one stat then, instead of open, stat, seek, read and
    // close (the agent reads two files per run).
    if fs::metadata(path).map_or(true, |m| m.len() == 0) {
        return (Vec::new(), 0);
    }
    let Ok(mut f) = fs::File::open(path) else {
        return (Vec::new(), 0);
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max_bytes);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return (Vec::new(), 0);
    }
    let mut buf = Vec::new();
    let _ = f.take(max_bytes).read_to_end(&mut buf);
    (buf, len)
}

/// The last `max_bytes` of a file, trimmed to whole lines where possible.
pub fn tail(path: &Path, max_bytes: u64) -> String {
    let Ok(mut f) = fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max_bytes);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        if let Some(pos) = text.find('\n') {
            return text[pos + 1..].trim_end().to_string();
        }
    }
    text.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_run_is_never_started_then_interrupted_then_ended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wd = WorkDir::open(dir.path()).expect("open");
        assert_eq!(wd.record("j-1", 0, 7), RunRecord::NeverStarted);
        wd.mark_started("j-1", 0, 7).await.expect("mark");
        assert_eq!(wd.record("j-1", 0, 7), RunRecord::Interrupted);
        let result = RunResult {
            exit_code: Some(3),
            run_ms: 12,
            error: "boom".into(),
            cannot_start: false,
            over_limit: false,
        };
        wd.save_result("j-1", 0, 7, &result).await.expect("save");
        assert_eq!(wd.record("j-1", 0, 7), RunRecord::Ended(result));
        assert_eq!(wd.record("j-1", 0, 8), RunRecord::NeverStarted);
        fs::write(dir.path().join("log"), "a\nb\nc\nlast line\n").expect("write");
        assert_eq!(tail(&dir.path().join("log"), 11), "last line");
        let log = dir.path().join("log");
        assert_eq!(tail_bytes(&log, 5), (b"line\n".to_vec(), 16));
        fs::write(&log, "").expect("empty");
        assert_eq!(tail_bytes(&log, 5), (Vec::new(), 0));
        assert_eq!(tail_bytes(&dir.path().join("missing"), 5), (Vec::new(), 0));
    }

    #[tokio::test]
    async fn runs_recorded_by_the_older_per_run_files_are_still_known() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fresh = WorkDir::open(dir.path()).expect("open");
        assert!(
            !fresh.legacy,
            "an empty work dir holds no runs of the old layout"
        );
        drop(fresh);
        let interrupted = legacy_run_dir(dir.path(), "j-2", 0, 9);
        fs::create_dir_all(&interrupted).expect("mkdir");
        fs::write(interrupted.join("started"), "").expect("marker");
        let ended = legacy_run_dir(dir.path(), "j-2", 1, 9);
        fs::create_dir_all(&ended).expect("mkdir");
        fs::write(
            ended.join("result"),
            r#"{"exit_code":0,"run_ms":5,"error":""}"#,
        )
        .expect("result");
        // Opened again over the old layout: it is looked up.
        let wd = WorkDir::open(dir.path()).expect("open");
        assert_eq!(wd.record("j-2", 0, 9), RunRecord::Interrupted);
        assert!(matches!(
            wd.record("j-2", 1, 9),
            RunRecord::Ended(RunResult {
                exit_code: Some(0),
                cannot_start: false,
                over_limit: false,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn forgotten_runs_give_their_directories_and_leftovers_are_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wd = WorkDir::open(dir.path()).expect("open");
        for shard in 0..2 {
            wd.mark_started("j-1", shard, 7).await.expect("mark");
            fs::create_dir_all(wd.run_dir("j-1", shard, 7)).expect("mkdir");
        }
        let keep: std::collections::HashSet<_> = [("j-1".to_string(), 1, 7)].into();
        assert_eq!(wd.forget_except(&keep), vec![wd.run_dir("j-1", 0, 7)]);
        assert_eq!(wd.record("j-1", 1, 7), RunRecord::Interrupted);
        // The forgotten run's directory is a leftover for the next agent; the kept one not.
        assert_eq!(wd.leftovers(), vec![wd.run_dir("j-1", 0, 7)]);
    }
}
