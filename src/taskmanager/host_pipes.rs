//! The shard host's ends of its pipes to the agent, read and written without blocking from the
//! host's one loop: requests are framed out of whatever has arrived, events are framed into a
//! buffer and written as far as the pipe takes them. A paused agent that stops reading only
//! makes the buffer wait; it never stops the loop (which must notice the missing keep-alives).

use crate::framing::{decode_message, encode_frame, frame_len};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io;
use std::os::fd::RawFd;

const READ_CHUNK: usize = 64 * 1024;
/// Most bytes read ahead of the requests taken (more when one request is larger).
const BATCH_BYTES: usize = 1024 * 1024;

/// Requests arriving on a non-blocking descriptor.
pub struct Inbox {
    fd: RawFd,
    buffer: Vec<u8>,
    /// Where the first frame not yet taken starts.
    start: usize,
    max_message: usize,
}

/// What a read found at the end of what had arrived.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrived {
    /// The pipe is still open.
    More,
    /// The writer closed it.
    Closed,
}

impl Inbox {
    pub fn new(fd: RawFd, max_message: usize) -> Self {
        Inbox {
            fd,
            buffer: Vec::new(),
            start: 0,
            max_message,
        }
    }

    /// Read what has arrived, up to a bounded amount (the poller is level-triggered: what is
    /// left is reported again).
    pub fn fill(&mut self) -> io::Result<Arrived> {
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        loop {
            // Enough for the first frame, and at least a batch of small ones: then stop, so a
            // flood cannot grow the buffer without bound.
            let first = frame_len(&self.buffer, self.max_message)?.unwrap_or(0);
            if self.buffer.len() >= first.max(BATCH_BYTES) {
                return Ok(Arrived::More);
            }
            let len = self.buffer.len();
            self.buffer.resize(len + READ_CHUNK, 0);
            // SAFETY: reading into the `READ_CHUNK` bytes just made room for.
            let got =
                unsafe { libc::read(self.fd, self.buffer[len..].as_mut_ptr().cast(), READ_CHUNK) };
            if got < 0 {
                self.buffer.truncate(len);
                let error = io::Error::last_os_error();
                return match error.kind() {
                    io::ErrorKind::WouldBlock => Ok(Arrived::More),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(error),
                };
            }
            self.buffer.truncate(len + got as usize);
            if got == 0 {
                return Ok(Arrived::Closed);
            }
        }
    }

    /// The next whole message, if one has arrived; an error for bytes that are not ours.
    pub fn next<T: DeserializeOwned>(&mut self) -> io::Result<Option<T>> {
        let rest = &self.buffer[self.start..];
        let Some(len) = frame_len(rest, self.max_message)? else {
            return Ok(None);
        };
        if rest.len() < len {
            return Ok(None);
        }
        // A zero frame is no message: on a pipe it can only be bytes that are not ours.
        let message = decode_message(&rest[..len], self.max_message)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "an empty message"))?;
        self.start += len;
        Ok(Some(message))
    }
}

/// Events waiting to go out on a non-blocking descriptor.
pub struct Outbox {
    fd: RawFd,
    unsent: Vec<u8>,
    /// How much of `unsent` is already written.
    sent: usize,
    max_message: usize,
}

impl Outbox {
    pub fn new(fd: RawFd, max_message: usize) -> Self {
        Outbox {
            fd,
            unsent: Vec::new(),
            sent: 0,
            max_message,
        }
    }

    /// Queue one message; one too large to frame is dropped (it cannot happen for the host's
    /// events, which are small).
    pub fn push<T: Serialize>(&mut self, message: &T) {
        let _ = encode_frame(message, self.max_message, &mut self.unsent);
    }

    /// Bytes queued and not yet written.
    pub fn waiting(&self) -> usize {
        self.unsent.len() - self.sent
    }

    /// Write as much as the pipe takes now; `Ok(true)` when nothing is left.
    pub fn flush(&mut self) -> io::Result<bool> {
        while self.sent < self.unsent.len() {
            let rest = &self.unsent[self.sent..];
            // SAFETY: writing from a live slice of `rest.len()` bytes.
            let wrote = unsafe { libc::write(self.fd, rest.as_ptr().cast(), rest.len()) };
            if wrote < 0 {
                let error = io::Error::last_os_error();
                match error.kind() {
                    io::ErrorKind::WouldBlock => return Ok(false),
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(error),
                }
            }
            self.sent += wrote as usize;
        }
        self.unsent.clear();
        self.sent = 0;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::taskmanager::poller::set_nonblocking;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn frames_arrive_whole_across_reads_and_a_close_is_seen() {
        let (mut agent, host) = UnixStream::pair().unwrap();
        set_nonblocking(host.as_raw_fd()).unwrap();
        let mut inbox = Inbox::new(host.as_raw_fd(), 1024);
        let mut bytes = Vec::new();
        encode_frame(&"first".to_string(), 1024, &mut bytes).unwrap();
        encode_frame(&"second".to_string(), 1024, &mut bytes).unwrap();
        // Half of the second frame first: it must wait for the rest.
        let cut = bytes.len() - 3;
        agent.write_all(&bytes[..cut]).unwrap();
        assert_eq!(inbox.fill().unwrap(), Arrived::More);
        assert_eq!(inbox.next::<String>().unwrap().as_deref(), Some("first"));
        assert_eq!(inbox.next::<String>().unwrap(), None);
        agent.write_all(&bytes[cut..]).unwrap();
        drop(agent);
        assert_eq!(inbox.fill().unwrap(), Arrived::Closed);
        assert_eq!(inbox.next::<String>().unwrap().as_deref(), Some("second"));
        assert_eq!(inbox.next::<String>().unwrap(), None);
    }

    #[test]
    fn an_oversized_or_corrupt_message_is_refused() {
        let (mut agent, host) = UnixStream::pair().unwrap();
        set_nonblocking(host.as_raw_fd()).unwrap();
        let mut inbox = Inbox::new(host.as_raw_fd(), 16);
        agent.write_all(&1_000_000u32.to_le_bytes()).unwrap();
        agent.write_all(&[0; 4]).unwrap();
        assert!(inbox.fill().is_err() || inbox.next::<String>().is_err());

        let (mut agent, host) = UnixStream::pair().unwrap();
        set_nonblocking(host.as_raw_fd()).unwrap();
        let mut inbox = Inbox::new(host.as_raw_fd(), 1024);
        let mut bytes = Vec::new();
        encode_frame(&"hello".to_string(), 1024, &mut bytes).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        agent.write_all(&bytes).unwrap();
        inbox.fill().unwrap();
        assert!(
            inbox.next::<String>().is_err(),
            "a failing checksum is refused"
        );
    }

    #[test]
    fn a_reader_that_stops_makes_events_wait_without_blocking() {
        let (mut agent, host) = UnixStream::pair().unwrap();
        set_nonblocking(host.as_raw_fd()).unwrap();
        let mut outbox = Outbox::new(host.as_raw_fd(), 1 << 20);
        let big = "x".repeat(100_000);
        for _ in 0..40 {
            outbox.push(&big);
        }
        // The socket buffer is far smaller than 4 MB: some must wait, and flush returns.
        assert!(!outbox.flush().unwrap());
        assert!(outbox.waiting() > 0);
        let mut received = Vec::new();
        let mut chunk = vec![0u8; 1 << 16];
        let mut done = false;
        while !done {
            let n = agent.read(&mut chunk).unwrap();
            received.extend_from_slice(&chunk[..n]);
            done = outbox.flush().unwrap() && outbox.waiting() == 0;
        }
        agent.set_nonblocking(true).unwrap();
        while let Ok(n) = agent.read(&mut chunk) {
            if n == 0 {
                break;
            }
            received.extend_from_slice(&chunk[..n]);
        }
        let mut inbox_bytes = &received[..];
        for _ in 0..40 {
            let value: String = crate::framing::read_frame(&mut inbox_bytes, 1 << 20)
                .unwrap()
                .unwrap();
            assert_eq!(value.len(), 100_000);
        }
    }
}
