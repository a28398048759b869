//! Replacing a whole file durably: a temporary file beside it, synced, renamed over it, and
//! the directory synced, so that a crash leaves the old file or the new one, never a torn
//! one. The one way the snapshot store, the agent's identity record and backups write; a
//! snapshot goes to the disk a chunk at a time (`replace_large_file`).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Write `bytes` to `path` as described above.
pub fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_file_with(path, |file| file.write_all(bytes))
}

/// Like `replace_file`, for a large file written while the disk also serves the Raft log's
/// syncs: it is written a chunk at a time, and each chunk's write-back has ended before the
/// next is written (the device's cache is flushed by the final sync alone), so that sync has
/// little left to write. Written whole and synced once, a snapshot's megabytes went to the
/// disk in one burst that the log's syncs queued behind (BENCHMARKS.md, "Snapshots without a
/// stall"). RocksDB's `bytes_per_sync` and Pebble pace the same way, with one chunk in flight
/// where this waits for each.
pub fn replace_large_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_file_with(path, |file| {
        let mut offset = 0;
        let mut paced = true;
        for chunk in bytes.chunks(PACED_CHUNK) {
            file.write_all(chunk)?;
            if paced {
                match written_to_disk(file, offset, chunk.len()) {
                    Ok(()) => {}
                    // A file system without the call is written unpaced; the final sync
                    // makes it durable all the same.
                    Err(e) if unsupported(&e) => paced = false,
                    // A write-back error is reported once, here, and would not be again by
                    // the final sync: it fails the write.
                    Err(e) => return Err(e),
                }
            }
            offset += chunk.len();
        }
        Ok(())
    })
}

/// The errors of a file system (or a sandbox's system call filter) without `sync_file_range`.
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::ESPIPE | libc::EPERM)
    )
}

/// How much of a large file is written before it waits for the disk.
const PACED_CHUNK: usize = 1024 * 1024;

/// Start write-back of `len` bytes at `offset` and wait until they are written (data only:
/// the final `sync_all` makes the file and its size durable).
fn written_to_disk(file: &File, offset: usize, len: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    let overflow = || io::Error::from_raw_os_error(libc::EOVERFLOW);
    let offset = libc::off64_t::try_from(offset).map_err(|_| overflow())?;
    let len = libc::off64_t::try_from(len).map_err(|_| overflow())?;
    // SAFETY: sync_file_range(2) on a descriptor the caller owns; no memory is passed.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn replace_file_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp_name);
    {
        let mut file = crate::private_files::create_file(&tmp)?;
        write(&mut file)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_file_is_written_in_chunks_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("snapshot");
        let bytes: Vec<u8> = (0..(2 * PACED_CHUNK + 12_345))
            .map(|i| (i % 251) as u8)
            .collect();
        replace_large_file(&path, b"old").expect("first");
        replace_large_file(&path, &bytes).expect("second");
        assert_eq!(fs::read(&path).expect("read"), bytes);
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 1);
    }

    #[test]
    fn a_file_is_replaced_whole_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("record");
        replace_file(&path, b"one").expect("first");
        replace_file(&path, b"two").expect("second");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 1);
    }
}
