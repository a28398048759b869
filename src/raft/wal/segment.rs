//! Segment files of the write-ahead log: `wal-<seq>.log` in the log directory, written only
//! at their end, never rewritten; a new one starts when the current one is full, and whole
//! segments are deleted once a snapshot covers every entry in them.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Start a new segment past this size.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug)]
pub struct Segment {
    pub path: PathBuf,
    pub file: Arc<File>,
    /// The greatest entry index written to this segment.
    pub last_index: Option<u64>,
}

pub fn name(seq: u64) -> String {
    format!("wal-{seq:016x}.log")
}

fn parse(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    u64::from_str_radix(hex, 16).ok()
}

/// The segment files in `dir`, oldest first.
pub fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse) {
            found.push((seq, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

pub fn open(path: PathBuf) -> io::Result<Segment> {
    let file = OpenOptions::new().read(true).write(true).open(&path)?;
    Ok(Segment {
        path,
        file: Arc::new(file),
        last_index: None,
    })
}

/// Create segment `seq` with `header` as its first bytes, durable (file and directory)
/// before it is used.
pub fn create(dir: &Path, seq: u64, header: &[u8]) -> io::Result<Segment> {
    let path = dir.join(name(seq));
    let file = crate::private_files::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    file.write_all_at(header, 0)?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok(Segment {
        path,
        file: Arc::new(file),
        last_index: None,
    })
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub fn read_all(file: &File) -> io::Result<Vec<u8>> {
    let len = file.metadata()?.len();
    let len = usize::try_from(len).map_err(io::Error::other)?;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_sequence_and_parse_back() {
        assert_eq!(parse(&name(42)), Some(42));
        assert!(name(9) < name(10));
        assert_eq!(parse("wal-xyz.log"), None);
        assert_eq!(parse("snapshot-1"), None);
    }
}
