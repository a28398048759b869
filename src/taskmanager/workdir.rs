//! The agent's work directory: one directory per run, `<work-dir>/<job>/shard-<i>/epoch-<e>`,
//! holding the shard's `stdout` and `stderr`, a `started` marker written before the process
//! starts, and a `result` file written durably when it ends. After a restart, these tell the
//! agent whether a run it is still assigned finished (report it again), was cut short
//! (report it interrupted), or never started — so no run is executed twice.

use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// How a run ended, as kept on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunResult {
    pub exit_code: Option<i32>,
    pub run_ms: u64,
    pub error: String,
}

/// What the directory says about a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunRecord {
    NeverStarted,
    /// Started but no result: the agent died while it ran.
    Interrupted,
    Ended(RunResult),
}

#[derive(Debug, Clone)]
pub struct WorkDir {
    root: PathBuf,
}

fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl WorkDir {
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        Ok(WorkDir { root })
    }

    pub fn run_dir(&self, job_id: &str, index: u32, epoch: u64) -> PathBuf {
        self.root
            .join(job_id)
            .join(format!("shard-{index}"))
            .join(format!("epoch-{epoch}"))
    }

    pub fn record(&self, job_id: &str, index: u32, epoch: u64) -> RunRecord {
        let dir = self.run_dir(job_id, index, epoch);
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

    /// Create the run directory and its `started` marker, durably, before the process starts:
    /// every directory made on the way is fsynced into its parent, so a power loss cannot
    /// take the marker (and with it the knowledge that the run may have started) away.
    pub fn mark_started(&self, job_id: &str, index: u32, epoch: u64) -> io::Result<PathBuf> {
        let dir = self.run_dir(job_id, index, epoch);
        let mut path = self.root.clone();
        for part in [
            job_id.to_string(),
            format!("shard-{index}"),
            format!("epoch-{epoch}"),
        ] {
            let parent = path.clone();
            path.push(part);
            match fs::create_dir(&path) {
                Ok(()) => fs::File::open(&parent)?.sync_all()?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        // An empty marker: its directory entry is what counts.
        fs::File::create(dir.join("started"))?.sync_all()?;
        fs::File::open(&dir)?.sync_all()?;
        Ok(dir)
    }

    pub fn save_result(
        &self,
        job_id: &str,
        index: u32,
        epoch: u64,
        result: &RunResult,
    ) -> io::Result<()> {
        let bytes = serde_json::to_vec(result).map_err(io::Error::other)?;
        write_durably(&self.run_dir(job_id, index, epoch).join("result"), &bytes)
    }
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

    #[test]
    fn a_run_is_never_started_then_interrupted_then_ended() {
        let dir =
            std::env::temp_dir().join(format!("dispatcher-workdir-test-{}", std::process::id()));
        let wd = WorkDir::open(&dir).expect("open");
        assert_eq!(wd.record("j-1", 0, 7), RunRecord::NeverStarted);
        wd.mark_started("j-1", 0, 7).expect("mark");
        assert_eq!(wd.record("j-1", 0, 7), RunRecord::Interrupted);
        let result = RunResult {
            exit_code: Some(3),
            run_ms: 12,
            error: "boom".into(),
        };
        wd.save_result("j-1", 0, 7, &result).expect("save");
        assert_eq!(wd.record("j-1", 0, 7), RunRecord::Ended(result));
        assert_eq!(wd.record("j-1", 0, 8), RunRecord::NeverStarted);
        fs::write(dir.join("log"), "a\nb\nc\nlast line\n").expect("write");
        assert_eq!(tail(&dir.join("log"), 11), "last line");
        let _ = fs::remove_dir_all(&dir);
    }
}
