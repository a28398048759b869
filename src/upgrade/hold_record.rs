//! A downgrade's hold, kept on the data dir so that it outlives a restart of the same binary.
//!
//! The hold stops a replica from reporting versions newer than the one the cluster was
//! lowered to, so the leader does not raise the cluster straight back up before the binaries
//! are replaced. Kept only in memory, it was lost whenever a replica restarted mid-downgrade
//! on the newer binary (a crash, a host reboot): once every member had, the leader raised
//! the version again and wrote formats the older release cannot read.
//!
//! The record names the release that took the hold. A replica that starts as another release
//! drops it: its binary was replaced, which is what the hold waited for (an older release
//! reports its own lower version; a newer one is an upgrade again). One case this cannot
//! tell: the older release ran in between and the very release that took the hold is back.
//! The hold then stays, and `cluster status` names it with `downgrade --cancel` to lift it.
//!
//! Nothing is acknowledged before the record is on disk (`durable::replace_file`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The record's file in the data dir.
pub const FILE_NAME: &str = "downgrade-hold";

/// A record longer than this is not one this module wrote.
const MAX_BYTES: u64 = 256;

/// Where a replica keeps its hold.
#[derive(Debug, Clone)]
pub struct HoldRecord {
    path: PathBuf,
}

/// What a replica starting on a data dir finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    None,
    /// This release took the hold: keep holding at this version.
    Hold(u32),
    /// Another release took it: dropped, its binary was replaced.
    Dropped {
        version: u32,
        release: String,
    },
}

impl HoldRecord {
    pub fn in_dir(data_dir: &Path) -> Self {
        HoldRecord {
            path: data_dir.join(FILE_NAME),
        }
    }

    /// Read the record as release `release` starting; one of another release is removed.
    pub fn load(&self, release: &str) -> io::Result<Found> {
        let text = match fs::metadata(&self.path) {
            Ok(meta) if meta.len() > MAX_BYTES => return Err(self.unreadable()),
            Ok(_) => fs::read_to_string(&self.path).map_err(|_| self.unreadable())?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::None),
            Err(e) => return Err(e),
        };
        let (version, recorded) = parse(&text).ok_or_else(|| self.unreadable())?;
        if recorded == release {
            return Ok(Found::Hold(version));
        }
        self.remove()?;
        Ok(Found::Dropped {
            version,
            release: recorded,
        })
    }

    /// Record a hold at `version` taken by `release`; 0 removes the record.
    pub fn store(&self, version: u32, release: &str) -> io::Result<()> {
        if version == 0 {
            return self.remove();
        }
        crate::durable::replace_file(&self.path, render(version, release).as_bytes())
    }

    fn remove(&self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::File::open(dir)?.sync_all()
    }

    fn unreadable(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is not a downgrade hold this release wrote; remove it if no downgrade is \
                 under way (`dispatcher cluster downgrade --cancel` lifts a hold)",
                self.path.display()
            ),
        )
    }
}

fn render(version: u32, release: &str) -> String {
    format!("version {version}\nrelease {release}\n")
}

fn parse(text: &str) -> Option<(u32, String)> {
    let mut lines = text.lines();
    let version = lines.next()?.strip_prefix("version ")?.parse().ok()?;
    let release = lines.next()?.strip_prefix("release ")?;
    let well_formed = version != 0
        && !release.is_empty()
        && release.len() <= 64
        && lines.next().is_none()
        && release
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-+_".contains(c));
    well_formed.then(|| (version, release.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_release_keeps_its_hold_across_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let record = HoldRecord::in_dir(dir.path());
        assert_eq!(record.load("0.2.0").expect("empty"), Found::None);
        record.store(3, "0.2.0").expect("store");
        assert_eq!(record.load("0.2.0").expect("load"), Found::Hold(3));
        assert_eq!(record.load("0.2.0").expect("again"), Found::Hold(3));
    }

    #[test]
    fn another_release_drops_the_hold_and_its_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let record = HoldRecord::in_dir(dir.path());
        record.store(3, "0.2.0").expect("store");
        assert_eq!(
            record.load("0.3.0").expect("load"),
            Found::Dropped {
                version: 3,
                release: "0.2.0".into()
            }
        );
        assert!(!dir.path().join(FILE_NAME).exists());
        assert_eq!(record.load("0.2.0").expect("gone"), Found::None);
    }

    #[test]
    fn a_cancel_removes_the_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let record = HoldRecord::in_dir(dir.path());
        record.store(2, "0.2.0").expect("store");
        record.store(0, "0.2.0").expect("cancel");
        record.store(0, "0.2.0").expect("cancel twice");
        assert_eq!(record.load("0.2.0").expect("load"), Found::None);
    }

    #[test]
    fn a_record_this_module_did_not_write_is_refused_not_guessed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let record = HoldRecord::in_dir(dir.path());
        for text in [
            "",
            "version 0\nrelease 0.2.0\n",
            "version x\nrelease 0.2.0\n",
            "version 3\n",
            "version 3\nrelease \n",
            "version 3\nrelease 0.2.0 extra\n",
            "version 3\nrelease 0.2.0\nmore\n",
        ] {
            fs::write(dir.path().join(FILE_NAME), text).expect("write");
            let error = record.load("0.2.0").expect_err(text);
            assert!(error.to_string().contains("--cancel"), "{error}");
        }
        fs::write(dir.path().join(FILE_NAME), "x".repeat(1000)).expect("write");
        assert!(record.load("0.2.0").is_err());
    }
}
