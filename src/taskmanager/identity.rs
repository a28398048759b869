//! Who this agent process is: a random incarnation, fresh at every start, and the lock on its
//! work dir.
//!
//! The lock (`flock` on `<work-dir>/agent.lock`, released by the kernel when the process dies
//! however it dies) makes a second agent on the same work dir refuse to start. Holding it also
//! proves that the process which last ran here is gone, so the last incarnation the cluster
//! admitted from this work dir (`<work-dir>/incarnation`, written once a registration
//! succeeded) is reported as the one this process succeeds: the cluster lets a restarted agent
//! take its id back at once (it recovers its runs from the work dir), while a different agent
//! claiming the same id must wait until the holder's lease has run out (see
//! `leader::fencing`).

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::Path;

pub struct AgentIdentity {
    pub incarnation: u64,
    /// The incarnation admitted from this work dir before (its process is gone).
    pub successor_of: Option<u64>,
    /// Held for the life of the process.
    _lock: File,
    record: std::path::PathBuf,
}

impl AgentIdentity {
    /// The cluster admitted this incarnation: record it (atomically and durably) as the one
    /// the next process on this work dir succeeds.
    pub fn record_admitted(&self) -> io::Result<()> {
        crate::durable::replace_file(&self.record, format!("{}\n", self.incarnation).as_bytes())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("work dir {0} is in use by another agent process; give each agent its own --work-dir")]
    WorkDirInUse(String),
    #[error("work dir {path}: {source}")]
    Io { path: String, source: io::Error },
}

fn fresh_incarnation(salt: &str) -> u64 {
    let bytes = crate::entropy::fresh_bytes(salt.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[..8]);
    // 0 means "unknown" to the cluster.
    u64::from_le_bytes(first).max(1)
}

/// Lock `work_dir`, read the incarnation left there, and record a fresh one.
pub fn claim(work_dir: &Path, salt: &str) -> Result<AgentIdentity, IdentityError> {
    let io_err = |source| IdentityError::Io {
        path: work_dir.display().to_string(),
        source,
    };
    let lock = crate::private_files::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(work_dir.join("agent.lock"))
        .map_err(io_err)?;
    // SAFETY: flock(2) on a descriptor this function owns; no memory is involved.
    let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        return Err(if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            IdentityError::WorkDirInUse(work_dir.display().to_string())
        } else {
            io_err(err)
        });
    }
    let record = work_dir.join("incarnation");
    let successor_of = std::fs::read_to_string(&record)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    Ok(AgentIdentity {
        incarnation: fresh_incarnation(salt),
        successor_of,
        _lock: lock,
        record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_work_dir_takes_one_agent_and_names_its_predecessor() {
        let dir = tempfile::tempdir().expect("dir");
        let first = claim(dir.path(), "a").expect("first claim");
        assert_eq!(first.successor_of, None);
        assert!(matches!(
            claim(dir.path(), "b"),
            Err(IdentityError::WorkDirInUse(_))
        ));
        let previous = first.incarnation;
        first.record_admitted().expect("record");
        drop(first);
        let second = claim(dir.path(), "c").expect("after the first is gone");
        assert_eq!(second.successor_of, Some(previous));
        assert_ne!(second.incarnation, previous);
        // Not admitted: the next one still succeeds the last admitted incarnation.
        drop(second);
        let third = claim(dir.path(), "d").expect("third");
        assert_eq!(third.successor_of, Some(previous));
    }
}
