//! Run directories, made once and used again. Every run gets a directory of its own with a
//! `stdout` and a `stderr` file; making three inodes per run and removing them later is most
//! of what the shard host's kernel time went to (ext4 without a journal even scans past every
//! recently deleted inode on each allocation). So a finished run's directory, once the agent
//! says the run is over (`Request::Recycle`), is emptied of anything the shard left, its two
//! files truncated, and it is renamed into the pool (`<work-dir>/.free/<n>`); the next run
//! renames it into place. A rename and two truncating opens instead of three allocations and
//! three removals.
//!
//! The pool is the shard host's alone (one host per agent, one agent per work dir), kept in
//! memory and rebuilt from the directory when a host starts. It holds at most `MAX_FREE`
//! directories; beyond that a finished run's directory is removed.
//!
//! Blocking std code, like the rest of the host.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// The pool's directory under the work dir.
pub const POOL_DIR_NAME: &str = ".free";

/// Directories kept for reuse; more than an agent runs at once is of no use.
const MAX_FREE: usize = 512;

/// The two files every run directory holds.
const OUTPUT_FILES: [&str; 2] = ["stdout", "stderr"];

pub struct RunDirPool {
    /// `None`: no pool (every run directory is made anew and removed when over).
    dir: Option<PathBuf>,
    free: Vec<PathBuf>,
    next: u64,
    /// The run directories prepared and not yet recycled, by job directory: a job's
    /// directory is removed when its last run here is recycled, not tried (and refused) at
    /// every run's end. Runs a previous host started are not known; their job directories
    /// are tried.
    runs_in: HashMap<PathBuf, HashSet<OsString>>,
}

/// A run directory ready for a run: its output files, empty.
pub struct Prepared {
    pub stdout: File,
    pub stderr: File,
}

impl RunDirPool {
    /// The pool in `dir` (made if missing), with whatever a previous host left in it.
    pub fn open(dir: Option<PathBuf>) -> Self {
        let mut pool = RunDirPool {
            dir: None,
            free: Vec::new(),
            next: 0,
            runs_in: HashMap::new(),
        };
        let Some(dir) = dir else {
            return pool;
        };
        if crate::private_files::create_dir(&dir).is_err() {
            return pool;
        }
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                match name.parse::<u64>() {
                    Ok(n) if pool.free.len() < MAX_FREE => {
                        pool.next = pool.next.max(n + 1);
                        pool.free.push(entry.path());
                    }
                    _ => {
                        let _ = fs::remove_dir_all(entry.path());
                    }
                }
            }
        }
        pool.dir = Some(dir);
        pool
    }

    #[cfg(test)]
    fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Make `run_dir` hold a run: a pooled directory renamed into place, or a new one; its
    /// output files created or truncated.
    pub fn prepare(&mut self, run_dir: &Path) -> io::Result<Prepared> {
        if !self.reuse(run_dir) {
            crate::private_files::create_dir(run_dir)?;
        }
        let prepared = Prepared {
            stdout: crate::private_files::create_file(&run_dir.join(OUTPUT_FILES[0]))?,
            stderr: crate::private_files::create_file(&run_dir.join(OUTPUT_FILES[1]))?,
        };
        if let (Some(parent), Some(name)) = (run_dir.parent(), run_dir.file_name()) {
            self.runs_in
                .entry(parent.to_path_buf())
                .or_default()
                .insert(name.to_os_string());
        }
        Ok(prepared)
    }

    fn reuse(&mut self, run_dir: &Path) -> bool {
        let Some(parent) = run_dir.parent() else {
            return false;
        };
        while let Some(free) = self.free.pop() {
            match fs::rename(&free, run_dir) {
                Ok(()) => return true,
                Err(e) if e.kind() == io::ErrorKind::NotFound && !parent.exists() => {
                    // The job's directory is not there yet: make it, and try this one again.
                    if crate::private_files::create_dir(parent).is_err() {
                        self.free.push(free);
                        return false;
                    }
                    if fs::rename(&free, run_dir).is_ok() {
                        return true;
                    }
                    let _ = fs::remove_dir_all(&free);
                }
                // The target exists (a run started again in its old directory) or the entry
                // is gone: leave it to `create_dir_all`, which keeps what is there.
                Err(_) if run_dir.exists() => {
                    self.free.push(free);
                    return false;
                }
                Err(_) => {
                    let _ = fs::remove_dir_all(&free);
                }
            }
        }
        false
    }

    /// A run is over and nothing will read its directory again: pool it (emptied) or remove
    /// it; then remove its job's directory if that was the job's last run here.
    pub fn recycle(&mut self, run_dir: &Path) {
        // Pooled, or not there to pool.
        let done = match &self.dir {
            Some(pool) if self.free.len() < MAX_FREE => match empty_for_reuse(run_dir) {
                Ok(true) => {
                    let target = pool.join(self.next.to_string());
                    self.next += 1;
                    match fs::rename(run_dir, &target) {
                        Ok(()) => {
                            self.free.push(target);
                            true
                        }
                        Err(_) => false,
                    }
                }
                // Gone already: only the job's directory is left to see to.
                Ok(false) => true,
                Err(_) => false,
            },
            _ => false,
        };
        if !done {
            if let Err(e) = fs::remove_dir_all(run_dir) {
                if e.kind() != io::ErrorKind::NotFound {
                    eprintln!(
                        "shard host: cannot remove a finished run's directory {}: {e}",
                        run_dir.display()
                    );
                }
            }
        }
        let Some(parent) = run_dir.parent() else {
            return;
        };
        let last_here = match self.runs_in.get_mut(parent) {
            Some(runs) => {
                if let Some(name) = run_dir.file_name() {
                    runs.remove(name);
                }
                let last = runs.is_empty();
                if last {
                    self.runs_in.remove(parent);
                }
                last
            }
            None => true,
        };
        if last_here {
            // Still refused while runs a previous host started are there.
            let _ = fs::remove_dir(parent);
        }
    }
}

/// Remove whatever the shard left beside its output files, and truncate those, so the
/// directory holds nothing of the run that used it; `false` when the directory is not there.
fn empty_for_reuse(dir: &Path) -> io::Result<bool> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let is_output = OUTPUT_FILES.iter().any(|f| name == *f);
        let file_type = entry.file_type()?;
        if is_output && file_type.is_file() {
            // Most runs print nothing: one stat instead of open, truncate and close.
            if entry.metadata()?.len() > 0 {
                File::options().write(true).open(entry.path())?.set_len(0)?;
            }
        } else if file_type.is_dir() {
            fs::remove_dir_all(entry.path())?;
        } else {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_recycled_directory_comes_back_empty_for_the_next_run() {
        let root = tempfile::tempdir().unwrap();
        let mut pool = RunDirPool::open(Some(root.path().join(".free")));
        let first = root.path().join("j-1").join("shard-0.epoch-5");
        let mut prepared = pool.prepare(&first).unwrap();
        prepared.stdout.write_all(b"first run's output").unwrap();
        fs::write(first.join("scratch"), b"left behind").unwrap();
        fs::create_dir(first.join("tmp")).unwrap();
        fs::write(first.join("tmp").join("x"), b"x").unwrap();
        pool.recycle(&first);
        assert!(!first.exists());
        assert!(!root.path().join("j-1").exists(), "the empty job dir goes");
        assert_eq!(pool.free_count(), 1);

        let second = root.path().join("j-2").join("shard-3.epoch-9");
        pool.prepare(&second).unwrap();
        assert_eq!(pool.free_count(), 0, "the pooled directory was used");
        let mut names: Vec<_> = fs::read_dir(&second)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec!["stderr", "stdout"]);
        assert_eq!(fs::read(second.join("stdout")).unwrap(), b"");
    }

    #[test]
    fn a_job_directory_goes_with_its_last_run_and_pooled_output_is_emptied() {
        let root = tempfile::tempdir().unwrap();
        let mut pool = RunDirPool::open(Some(root.path().join(".free")));
        let job = root.path().join("j-1");
        let (first, second) = (job.join("shard-0.epoch-1"), job.join("shard-1.epoch-1"));
        let mut prepared = pool.prepare(&first).unwrap();
        pool.prepare(&second).unwrap();
        prepared
            .stderr
            .write_all(b"a secret of the first run")
            .unwrap();
        pool.recycle(&first);
        assert!(job.exists(), "the job's other run is still there");
        let pooled = root.path().join(".free").join("0");
        assert_eq!(fs::metadata(pooled.join("stderr")).unwrap().len(), 0);
        assert_eq!(fs::metadata(pooled.join("stdout")).unwrap().len(), 0);
        pool.recycle(&second);
        assert!(
            !job.exists(),
            "the last run's end takes the job's directory"
        );
        // Asked again for a run already recycled: nothing happens, nothing fails.
        pool.recycle(&second);
        assert_eq!(pool.free_count(), 2);
    }

    #[test]
    fn a_new_host_finds_the_pool_and_a_run_dir_in_use_is_kept() {
        let root = tempfile::tempdir().unwrap();
        let free = root.path().join(".free");
        {
            let mut pool = RunDirPool::open(Some(free.clone()));
            let dirs: Vec<_> = (0..3)
                .map(|i| root.path().join("j-1").join(format!("shard-{i}.epoch-1")))
                .collect();
            for dir in &dirs {
                pool.prepare(dir).unwrap();
            }
            for dir in &dirs {
                pool.recycle(dir);
            }
            fs::create_dir(free.join("not-a-number")).unwrap();
        }
        let mut pool = RunDirPool::open(Some(free.clone()));
        assert_eq!(pool.free_count(), 3);
        assert!(
            !free.join("not-a-number").exists(),
            "stray entries are removed"
        );
        // A run started again in a directory that is still there keeps it.
        let dir = root.path().join("j-1").join("shard-0.epoch-1");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("stdout"), b"old").unwrap();
        pool.prepare(&dir).unwrap();
        assert_eq!(pool.free_count(), 3);
        assert_eq!(fs::read(dir.join("stdout")).unwrap(), b"");
        // A recycled directory gets a number past the ones found.
        pool.recycle(&dir);
        assert_eq!(pool.free_count(), 4);
        assert!(free.join("3").exists());
    }

    #[test]
    fn without_a_pool_directories_are_made_and_removed() {
        let root = tempfile::tempdir().unwrap();
        let mut pool = RunDirPool::open(None);
        let dir = root.path().join("j-1").join("shard-0.epoch-1");
        pool.prepare(&dir).unwrap();
        assert!(dir.join("stdout").exists() && dir.join("stderr").exists());
        pool.recycle(&dir);
        assert!(!dir.exists());
        assert_eq!(pool.free_count(), 0);
    }
}
