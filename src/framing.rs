//! Length-prefixed, checksummed frames of bincode values: the one format for records on disk
//! (the Raft log, the agent's run journal) and messages on pipes (the agent and its shard
//! host).
//!
//! Frame: `len: u32 LE | crc32(payload): u32 LE | payload (bincode, standard config)`. A frame
//! whose length runs past the end of the input, or whose checksum does not match, is where a
//! write was torn by a crash: nothing at or after it was ever acknowledged. Decoding is
//! bounded by `max` and by the input's size (`decode::decode_untrusted`).

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io;

pub const HEADER_BYTES: usize = 8;

/// Append `value` as one frame to `out`; refused when its payload exceeds `max` bytes.
pub fn encode_frame<T: Serialize>(value: &T, max: usize, out: &mut Vec<u8>) -> io::Result<()> {
    let payload = bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(io::Error::other)?;
    if payload.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a record of {} bytes is too large (at most {max})",
                payload.len()
            ),
        ));
    }
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// The outcome of reading one frame at the start of some bytes.
#[derive(Debug)]
pub enum Frame<T> {
    /// A whole, intact value and the bytes its frame took.
    Record(Box<T>, usize),
    /// No more frames: the end of the written part (zeros or nothing).
    End,
    /// A frame cut short or failing its checksum: a torn write.
    Torn(String),
    /// A whole frame whose checksum holds but whose value this build cannot decode: written
    /// by a newer release (a record kind added since), never a torn write. Readers refuse
    /// to go on rather than cut it off as if it were torn.
    Unreadable(String),
}

/// The payload length a frame header claims, if the header is all there.
pub fn claimed_len(header: &[u8]) -> Option<usize> {
    (header.len() >= HEADER_BYTES)
        .then(|| u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize)
}

pub fn decode_frame<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Frame<T> {
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
    if len > max || HEADER_BYTES + len > bytes.len() {
        return Frame::Torn(format!(
            "a record of {len} bytes runs past the end of the input"
        ));
    }
    let payload = &bytes[HEADER_BYTES..HEADER_BYTES + len];
    if crc32fast::hash(payload) != crc {
        return Frame::Torn("a record fails its checksum".to_string());
    }
    match crate::decode::decode_untrusted::<T>(payload) {
        Ok(value) => Frame::Record(Box::new(value), HEADER_BYTES + len),
        Err(e) => Frame::Unreadable(e.to_string()),
    }
}

/// The whole length (header and payload) of the frame at the start of `bytes`, once its
/// header is there; refused when it claims more than `max`, so a stream reader never makes
/// room for more.
pub fn frame_len(bytes: &[u8], max: usize) -> io::Result<Option<usize>> {
    let Some(len) = claimed_len(bytes) else {
        return Ok(None);
    };
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a message claims {len} bytes (at most {max})"),
        ));
    }
    Ok(Some(HEADER_BYTES + len))
}

/// One whole frame read from a stream: its value, `None` for the zero frame (the end of
/// what was written), an error for a damaged one.
pub fn decode_message<T: DeserializeOwned>(frame: &[u8], max: usize) -> io::Result<Option<T>> {
    match decode_frame(frame, max) {
        Frame::Record(value, _) => Ok(Some(*value)),
        Frame::End => Ok(None),
        Frame::Torn(why) | Frame::Unreadable(why) => {
            Err(io::Error::new(io::ErrorKind::InvalidData, why))
        }
    }
}

/// Read one frame from a stream: `Ok(None)` at a clean end (nothing more was written).
pub fn read_frame<T: DeserializeOwned>(
    reader: &mut impl io::Read,
    max: usize,
) -> io::Result<Option<T>> {
    let mut header = [0u8; HEADER_BYTES];
    let mut got = 0;
    while got < HEADER_BYTES {
        match reader.read(&mut header[got..])? {
            0 if got == 0 => return Ok(None),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    let len = frame_len(&header, max)?.unwrap_or(HEADER_BYTES);
    let mut frame = vec![0u8; len];
    frame[..HEADER_BYTES].copy_from_slice(&header);
    reader.read_exact(&mut frame[HEADER_BYTES..])?;
    decode_message(&frame, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_torn_ones_are_recognized() {
        let mut bytes = Vec::new();
        encode_frame(&("run", 7u64), 1024, &mut bytes).expect("encode");
        match decode_frame::<(String, u64)>(&bytes, 1024) {
            Frame::Record(v, used) => {
                assert_eq!(*v, ("run".to_string(), 7));
                assert_eq!(used, bytes.len());
            }
            other => panic!("{other:?}"),
        }
        for cut in 1..bytes.len() {
            assert!(matches!(
                decode_frame::<(String, u64)>(&bytes[..cut], 1024),
                Frame::Torn(_)
            ));
        }
        let mut flipped = bytes.clone();
        *flipped.last_mut().expect("bytes") ^= 1;
        assert!(matches!(
            decode_frame::<(String, u64)>(&flipped, 1024),
            Frame::Torn(_)
        ));
        assert!(matches!(decode_frame::<u8>(&[0u8; 16], 1024), Frame::End));
        assert!(matches!(decode_frame::<u8>(&bytes, 2), Frame::Torn(_)));
        assert!(encode_frame(&vec![0u8; 100], 10, &mut Vec::new()).is_err());
    }

    #[test]
    fn a_stream_of_frames_reads_back_and_ends_cleanly() {
        let mut bytes = Vec::new();
        for i in 0..3u32 {
            encode_frame(&i, 64, &mut bytes).expect("encode");
        }
        let mut reader = &bytes[..];
        for i in 0..3u32 {
            assert_eq!(read_frame::<u32>(&mut reader, 64).expect("read"), Some(i));
        }
        assert_eq!(read_frame::<u32>(&mut reader, 64).expect("end"), None);
        let mut cut = &bytes[..5];
        assert!(read_frame::<u32>(&mut cut, 64).is_err());
    }
}
