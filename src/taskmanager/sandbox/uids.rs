//! Which user a run executes as: a uid of its own from a pool, or one fixed user.
//!
//! A pool uid is leased host-wide, not just per agent: the lease is an exclusive `flock` on
//! `<lock dir>/<uid>`, held by the shard host for as long as the run lives, so two agents on
//! one host (or a host that restarted while an old run was being torn down) never hand one
//! uid to two live runs. The kernel drops the lock when the holder dies. Uids are taken
//! round-robin, so a freed uid is the last to be used again.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// The default pool: above the ranges systemd gives regular, dynamic and container users
/// (see systemd's "Users, Groups, UIDs and GIDs"), below the signed-overflow range.
pub const DEFAULT_POOL: (u32, u32) = (1_900_000_000, 1_900_065_535);
/// Where the leases' lock files live.
pub const LOCK_DIR: &str = "/run/dispatcher/uids";

/// Who runs the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RunAs {
    /// A uid of its own per live run, from `from..=to` (gid = uid).
    Pool { from: u32, to: u32 },
    /// Every run as this user (`--run-as`): runs of this agent share it.
    Fixed { uid: u32, gid: u32 },
}

impl RunAs {
    /// `<from>-<to>`, both above 0 (root is never a shard's user).
    pub fn parse_range(text: &str) -> Result<RunAs, String> {
        let (from, to) = text.split_once('-').ok_or_else(|| {
            format!("'{text}' is not a range: give <from>-<to>, e.g. 1900000000-1900065535")
        })?;
        let parse = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("'{s}' is not a uid"))
        };
        let (from, to) = (parse(from)?, parse(to)?);
        if from == 0 || to < from || to == u32::MAX {
            return Err(format!(
                "uid range {from}-{to}: give from ≤ to, neither 0 (root) nor {}",
                u32::MAX
            ));
        }
        Ok(RunAs::Pool { from, to })
    }

    /// A user name or a numeric uid, looked up in the user database; never root.
    pub fn user(name: &str) -> Result<RunAs, String> {
        let (uid, gid) = match name.parse::<u32>() {
            Ok(uid) => (uid, lookup_by_uid(uid).map_or(uid, |(_, gid)| gid)),
            Err(_) => lookup_by_name(name)
                .ok_or_else(|| format!("no user '{name}' on this host (see /etc/passwd)"))?,
        };
        if uid == 0 || gid == 0 {
            return Err(format!(
                "'{name}' is root or in root's group: shards never run as root"
            ));
        }
        Ok(RunAs::Fixed { uid, gid })
    }
}

fn lookup_by_name(name: &str) -> Option<(u32, u32)> {
    passwd_entries()
        .find(|(n, _, _)| n == name)
        .map(|(_, u, g)| (u, g))
}

fn lookup_by_uid(uid: u32) -> Option<(String, u32)> {
    passwd_entries()
        .find(|(_, u, _)| *u == uid)
        .map(|(n, _, g)| (n, g))
}

/// `/etc/passwd` entries: name, uid, gid.
fn passwd_entries() -> impl Iterator<Item = (String, u32, u32)> {
    fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?.to_string();
            let _password = fields.next()?;
            let uid = fields.next()?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            Some((name, uid, gid))
        })
        .collect::<Vec<_>>()
        .into_iter()
}

/// The leases one shard host holds.
pub struct UidLeases {
    run_as: RunAs,
    dir: PathBuf,
    held: BTreeMap<u32, File>,
    next: u32,
}

/// A run's user and group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

impl UidLeases {
    pub fn new(run_as: RunAs) -> Self {
        let next = match run_as {
            RunAs::Pool { from, .. } => from,
            RunAs::Fixed { uid, .. } => uid,
        };
        UidLeases {
            run_as,
            dir: PathBuf::from(LOCK_DIR),
            held: BTreeMap::new(),
            next,
        }
    }

    /// A user for a new run: a uid no live run on this host has, or the fixed user.
    pub fn lease(&mut self) -> io::Result<Identity> {
        let (from, to) = match self.run_as {
            RunAs::Fixed { uid, gid } => return Ok(Identity { uid, gid }),
            RunAs::Pool { from, to } => (from, to),
        };
        let span = u64::from(to - from) + 1;
        for _ in 0..span.min(1 << 20) {
            let uid = self.next;
            self.next = if uid >= to { from } else { uid + 1 };
            if self.held.contains_key(&uid) {
                continue;
            }
            let file = self.lock_file(uid)?;
            // SAFETY: flock(2) on a descriptor we own.
            let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if locked == 0 {
                self.held.insert(uid, file);
                return Ok(Identity { uid, gid: uid });
            }
        }
        Err(io::Error::other(format!(
            "every uid of {from}-{to} belongs to a live run on this host: widen --run-as-uids"
        )))
    }

    /// `uid`'s lock file, made (with its directory, on first use) if missing.
    fn lock_file(&self, uid: u32) -> io::Result<File> {
        let open = || {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(self.dir.join(uid.to_string()))
        };
        match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                crate::private_files::create_dir(&self.dir)?;
                open()
            }
            opened => opened,
        }
    }

    /// The run that had `uid` is over (every process of it gone).
    pub fn release(&mut self, uid: u32) {
        self.held.remove(&uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_users_are_checked() {
        assert_eq!(
            RunAs::parse_range("100-200"),
            Ok(RunAs::Pool { from: 100, to: 200 })
        );
        for bad in ["0-10", "10-5", "x-5", "100", "1-4294967295"] {
            assert!(RunAs::parse_range(bad).is_err(), "{bad}");
        }
        assert!(RunAs::user("root").is_err());
        assert!(RunAs::user("0").is_err());
        assert!(RunAs::user("no-such-user-here").is_err());
    }

    #[test]
    fn two_lease_holders_never_hand_out_one_uid_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let pool = RunAs::Pool { from: 500, to: 502 };
        let mut a = UidLeases::new(pool);
        let mut b = UidLeases::new(pool);
        a.dir = dir.path().to_path_buf();
        b.dir = dir.path().to_path_buf();
        let first = a.lease().unwrap().uid;
        let second = b.lease().unwrap().uid;
        let third = a.lease().unwrap().uid;
        let mut all = vec![first, second, third];
        all.sort_unstable();
        assert_eq!(all, vec![500, 501, 502]);
        assert!(b.lease().is_err(), "the pool is used up");
        a.release(first);
        assert_eq!(b.lease().unwrap().uid, first);
    }
}
