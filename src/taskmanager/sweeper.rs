//! Finding the run directories a work dir holds, and removing one when no shard host is
//! there to take it back into its pool (`run_dir_pool`). A run's directory holds its `stdout`
//! and `stderr`; once the leader no longer lists the run here, its end is committed with the
//! last `limits.output_tail_bytes` of each stream (what `job logs` shows), so nothing reads
//! the directory again. Without this an agent's work dir would grow by a directory per run
//! forever.
//!
//! This module never decides what is over: the agent does, from the leader's list.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Remove a run's directory, then its job's if that left it empty.
pub fn remove_run_dir(root: &Path, dir: &Path) {
    if !dir.starts_with(root) || dir == root {
        return;
    }
    if let Err(e) = fs::remove_dir_all(dir) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), "cannot remove a finished run's directory: {e}");
            return;
        }
    }
    if let Some(parent) = dir.parent().filter(|p| *p != root && p.starts_with(root)) {
        let _ = fs::remove_dir(parent);
    }
}

/// Every run directory under `root` (`<job>/shard-<i>.epoch-<e>`), with the run it holds.
pub fn run_dirs(root: &Path) -> Vec<(super::journal::RunKey, PathBuf)> {
    let mut found = Vec::new();
    let Ok(jobs) = fs::read_dir(root) else {
        return found;
    };
    for job in jobs.flatten() {
        let job_name = job.file_name().to_string_lossy().into_owned();
        if job_name.starts_with('.') {
            continue;
        }
        let Ok(runs) = fs::read_dir(job.path()) else {
            continue;
        };
        for run in runs.flatten() {
            let name = run.file_name().to_string_lossy().into_owned();
            if let Some((index, epoch)) = parse_run_name(&name) {
                found.push(((job_name.clone(), index, epoch), run.path()));
            }
        }
    }
    found
}

/// `shard-<i>.epoch-<e>` → (i, e).
fn parse_run_name(name: &str) -> Option<(u32, u64)> {
    let (shard, epoch) = name.split_once('.')?;
    Some((
        shard.strip_prefix("shard-")?.parse().ok()?,
        epoch.strip_prefix("epoch-")?.parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_run(root: &Path, job: &str, shard: u32, epoch: u64) -> PathBuf {
        let dir = super::super::workdir::run_dir(root, job, shard, epoch);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("stdout"), b"out").unwrap();
        dir
    }

    #[test]
    fn removes_a_run_and_the_job_dir_it_leaves_empty_but_not_its_siblings() {
        let root = tempfile::tempdir().unwrap();
        let a = make_run(root.path(), "j-1", 0, 5);
        let b = make_run(root.path(), "j-1", 1, 6);
        remove_run_dir(root.path(), &a);
        assert!(!a.exists());
        assert!(b.exists(), "a sibling run stays");
        remove_run_dir(root.path(), &b);
        assert!(
            !root.path().join("j-1").exists(),
            "the empty job dir goes too"
        );
        assert!(root.path().exists(), "the work dir itself stays");
        // Nothing outside the work dir, nor the work dir itself.
        remove_run_dir(root.path(), root.path());
        remove_run_dir(&root.path().join("j-2"), &root.path().join("elsewhere"));
        assert!(root.path().exists());
    }

    #[test]
    fn lists_run_dirs_with_their_keys() {
        let root = tempfile::tempdir().unwrap();
        make_run(root.path(), "j-1", 0, 5);
        make_run(root.path(), "j-2", 3, 9);
        fs::create_dir_all(root.path().join(".free").join("0")).unwrap();
        fs::create_dir_all(root.path().join("j-2").join("shard-1")).unwrap();
        fs::write(root.path().join("runs.journal"), b"").unwrap();
        let mut keys: Vec<_> = run_dirs(root.path()).into_iter().map(|(k, _)| k).collect();
        keys.sort();
        assert_eq!(
            keys,
            vec![("j-1".to_string(), 0, 5), ("j-2".to_string(), 3, 9)]
        );
    }
}
