//! One record of the write-ahead log and its framing on disk.
//!
//! Frame: `len: u32 LE | crc32(payload): u32 LE | payload (bincode of Record)`. A frame
//! whose length runs past the end of the file, or whose checksum does not match, is where
//! a write was torn by a crash: nothing at or after it was ever acknowledged.

use crate::raft::types::{Entry, LogId, Vote};
use serde::{Deserialize, Serialize};
use std::io;

pub const HEADER_BYTES: usize = 8;
/// No single record may claim more than this (a torn length field could claim anything).
pub const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;

/// What the log remembers, in the order it happened. Replaying the records in order
/// rebuilds the log's state exactly.
// Records live only between encoding and writing (or reading and applying); boxing the
// entry would add an allocation per entry for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Record {
    Entry(Entry),
    Vote(Vote),
    /// Entries after this log id (all of them with `None`) are gone.
    TruncateAfter(Option<LogId>),
    /// Entries up to and including this log id are covered by a snapshot.
    Purge(LogId),
    Committed(Option<LogId>),
}

pub fn encode_frame(record: &Record, out: &mut Vec<u8>) -> io::Result<()> {
    let payload = bincode::serde::encode_to_vec(record, bincode::config::standard())
        .map_err(io::Error::other)?;
    if payload.len() > MAX_RECORD_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a log record of {} bytes is too large", payload.len()),
        ));
    }
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// The outcome of reading one frame at the start of `bytes`.
#[derive(Debug)]
pub enum Frame {
    /// A whole, intact record and the bytes its frame took.
    Record(Box<Record>, usize),
    /// No more records: the end of the written part (zeros or nothing).
    End,
    /// A frame cut short or failing its checksum: a torn write.
    Torn(String),
}

pub fn decode_frame(bytes: &[u8]) -> Frame {
    if bytes.len() < HEADER_BYTES {
        return if bytes.iter().all(|b| *b == 0) {
            Frame::End
        } else {
            Frame::Torn(format!("{} stray bytes after the last record", bytes.len()))
        };
    }
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if len == 0 && crc == 0 {
        return Frame::End;
    }
    if len > MAX_RECORD_BYTES || HEADER_BYTES + len > bytes.len() {
        return Frame::Torn(format!(
            "a record of {len} bytes runs past the end of the file"
        ));
    }
    let payload = &bytes[HEADER_BYTES..HEADER_BYTES + len];
    if crc32fast::hash(payload) != crc {
        return Frame::Torn("a record fails its checksum".to_string());
    }
    match crate::decode::decode_untrusted::<Record>(payload) {
        Ok(record) => Frame::Record(Box::new(record), HEADER_BYTES + len),
        Err(e) => Frame::Torn(format!("an intact record does not decode: {e}")),
    }
}

/// Decode a frame read back from a known position (an entry the index points at).
pub fn decode_entry(bytes: &[u8]) -> io::Result<Entry> {
    match decode_frame(bytes) {
        Frame::Record(record, _) => match *record {
            Record::Entry(entry) => Ok(entry),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the log index points at a {other:?} record, not an entry"),
            )),
        },
        Frame::End => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the log index points past the written log",
        )),
        Frame::Torn(why) => Err(io::Error::new(io::ErrorKind::InvalidData, why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::log_id;

    fn frame(record: &Record) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(record, &mut out).expect("encode");
        out
    }

    #[test]
    fn a_frame_round_trips() {
        let bytes = frame(&Record::Purge(log_id::<crate::raft::TypeConfig>(2, 1, 7)));
        match decode_frame(&bytes) {
            Frame::Record(record, used) => {
                assert_eq!(used, bytes.len());
                assert!(matches!(*record, Record::Purge(l) if l.index() == 7));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn torn_and_flipped_frames_are_recognized() {
        let bytes = frame(&Record::Committed(None));
        for cut in 1..bytes.len() {
            assert!(
                matches!(decode_frame(&bytes[..cut]), Frame::Torn(_)),
                "cut at {cut}"
            );
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(decode_frame(&flipped), Frame::Torn(_)));
        assert!(matches!(decode_frame(&[0u8; 16]), Frame::End));
        assert!(matches!(decode_frame(&[]), Frame::End));
    }
}
