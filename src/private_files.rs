//! Files that hold secrets stay private to the user that runs the process: a replica's data
//! dir (log, snapshots, backups: jobs' environments, token hashes) and an agent's work dir
//! (journal, incarnation, shards' output) are 0700 and every file in them 0600, whatever the
//! umask the process was started with.
//!
//! Three layers, because each alone leaves a gap: files and directories this code makes are
//! created with those modes; `serve` and `taskmanager` set their umask to 077, so files that
//! libraries make (sled) and that shards make get no group or other bits; and a data or work
//! dir left by an older version is tightened once at start.
//!
//! Shards inherit the umask: their own files are private unless they set another.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every directory made here.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file made here.
pub const FILE_MODE: u32 = 0o600;

/// From now on this process (and what it starts) creates nothing others may read.
pub fn restrict_umask() {
    // SAFETY: umask(2) only swaps the process's file-mode mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// `path` and its missing parents, each made 0700.
pub fn create_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Options that create a file 0600 (add read, write, truncate as needed).
pub fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Create or truncate `path` for writing, 0600 if new.
pub fn create_file(path: &Path) -> io::Result<File> {
    options().write(true).create(true).truncate(true).open(path)
}

/// Make `root` (created if missing) 0700 and take the group and other bits off everything
/// under it: a directory an older version left readable becomes private. Symbolic links are
/// not followed.
pub fn make_private(root: &Path) -> io::Result<()> {
    create_dir(root)?;
    tighten(root)?;
    let mut work = vec![root.to_path_buf()];
    while let Some(dir) = work.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                tighten(&entry.path())?;
                work.push(entry.path());
            } else if kind.is_file() {
                tighten(&entry.path())?;
            }
        }
    }
    Ok(())
}

/// Take the group and other bits off `path` (keeping its owner's), if it has any.
fn tighten(path: &Path) -> io::Result<()> {
    let mode = fs::symlink_metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o700))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("stat").permissions().mode() & 0o777
    }

    #[test]
    fn what_is_made_here_and_what_was_left_readable_ends_private() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("data");
        create_dir(&dir.join("a/b")).expect("mkdir");
        assert_eq!(mode(&dir), DIR_MODE);
        assert_eq!(mode(&dir.join("a/b")), DIR_MODE);
        create_file(&dir.join("a/f")).expect("create");
        assert_eq!(mode(&dir.join("a/f")), FILE_MODE);

        // As an older version left it: readable by all.
        let old = dir.join("old");
        fs::create_dir(&old).expect("mkdir");
        fs::set_permissions(&old, fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::write(old.join("wal"), b"secret").expect("write");
        fs::set_permissions(old.join("wal"), fs::Permissions::from_mode(0o644)).expect("chmod");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        make_private(&dir).expect("private");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&old), 0o700);
        assert_eq!(mode(&old.join("wal")), 0o600);
    }
}
