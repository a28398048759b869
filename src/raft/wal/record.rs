//! One record of the write-ahead log, framed on disk as `crate::framing` describes: a frame
//! whose length runs past the end of the file, or whose checksum does not match, is where
//! a write was torn by a crash, and nothing at or after it was ever acknowledged.

use crate::raft::types::{Entry, LogId, Vote};
use serde::{Deserialize, Serialize};
use std::io;

/// The version of what the log's records hold: `Record`, openraft's `Entry` and every
/// `Command` kind (an appended kind included), as bincode lays them out. Bump it with any
/// change; the golden files under tests/golden keep each version's records, and today's
/// build must read them all (`persisted_formats`).
/// Version 2 added the kinds of cluster version 2 (`SetClusterVersion`,
/// `UndrainTaskManager`); version 3 those of cluster version 3 (the `Cron*` kinds); version
/// 4 that of cluster version 4 (`PinTaskManagerWithResources`). Each older version's
/// records are written exactly as before.
pub const LOG_FORMAT_VERSION: u32 = 4;

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
    crate::framing::encode_frame(record, MAX_RECORD_BYTES, out)
}

/// The outcome of reading one frame at the start of `bytes`.
pub type Frame = crate::framing::Frame<Record>;

pub fn decode_frame(bytes: &[u8]) -> Frame {
    crate::framing::decode_frame(bytes, MAX_RECORD_BYTES)
}

/// The command kind of the entry in the frame at the start of `bytes`, read without
/// decoding the command itself: for an entry this build cannot decode, which kind a newer
/// release wrote. `None` when the frame is not an entry holding a command.
pub fn entry_command_kind(bytes: &[u8]) -> Option<u32> {
    let payload = bytes.get(crate::framing::HEADER_BYTES..)?;
    // bincode lays out `Record::Entry` (tag 0), the entry's log id, `EntryPayload::Normal`
    // (tag 1), then the command, whose first field is its tag: the kind id.
    let (record, _log_id, payload_kind, kind): (u32, LogId, u32, u32) =
        crate::decode::decode_untrusted(payload).ok()?;
    (record == 0 && payload_kind == 1).then_some(kind)
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
        Frame::Torn(why) | Frame::Unreadable(why) => {
            Err(io::Error::new(io::ErrorKind::InvalidData, why))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entrys_command_kind_reads_without_its_command() {
        let entry = |command: crate::fsm::Command| {
            let mut bytes = Vec::new();
            encode_frame(
                &Record::Entry(Entry {
                    log_id: log_id::<crate::raft::types::TypeConfig>(3, 1, 9),
                    payload: openraft::entry::EntryPayload::Normal(command),
                }),
                &mut bytes,
            )
            .expect("encodes");
            bytes
        };
        let undrain = crate::fsm::Command::UndrainTaskManager {
            id: "tm-a".into(),
            now_ms: 1,
        };
        let cancel = crate::fsm::Command::CancelJob {
            job_id: crate::domain::JobId(4),
            now_ms: 1,
        };
        assert_eq!(entry_command_kind(&entry(undrain)), Some(31));
        assert_eq!(entry_command_kind(&entry(cancel)), Some(3));
        let mut vote = Vec::new();
        encode_frame(&Record::Vote(Vote::new(3, 1)), &mut vote).expect("encodes");
        assert_eq!(entry_command_kind(&vote), None);
    }
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
