//! A thin epoll set for the shard host's one loop: it waits on the agent's pipes and on every
//! running shard's pidfd at once, so a request, an exit and a reply are handled on the thread
//! that woke for them instead of being handed between threads (each hand-off is a wake-up
//! and two context switches, a fifth of the host's cost per shard when it had three threads).
//!
//! Linux only, level-triggered; it owns no descriptor but the epoll one.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

pub const READABLE: u32 = libc::EPOLLIN as u32;
pub const WRITABLE: u32 = libc::EPOLLOUT as u32;
/// The other end of a pipe closed, or the descriptor failed (reported whatever was asked).
pub const CLOSED: u32 = (libc::EPOLLHUP | libc::EPOLLERR) as u32;

/// One ready descriptor: the token it was added with and what it is ready for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub token: u64,
    pub events: u32,
}

pub struct Poller {
    epoll: OwnedFd,
    buffer: Vec<libc::epoll_event>,
}

impl Poller {
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 returns a new descriptor or -1.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Poller {
            // SAFETY: a fresh descriptor that nothing else owns.
            epoll: unsafe { OwnedFd::from_raw_fd(epoll) },
            buffer: vec![libc::epoll_event { events: 0, u64: 0 }; 64],
        })
    }

    /// Watch `fd` for `events` (0: only for being closed), reported under `token`. The
    /// caller keeps `fd` open while it is watched; closing it takes it out of the set.
    pub fn add(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    /// Change what `fd` is watched for.
    pub fn modify(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_MOD, fd, events, token)
    }

    fn control(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: both descriptors are open (the caller's promise for `fd`); the event is a
        // valid struct.
        if unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Wait up to `timeout` for something to be ready; an interrupted wait returns nothing.
    pub fn wait(&mut self, timeout: Duration, ready: &mut Vec<Ready>) -> io::Result<()> {
        ready.clear();
        let millis = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: the buffer holds `buffer.len()` entries.
        let count = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.buffer.as_mut_ptr(),
                self.buffer.len() as libc::c_int,
                millis,
            )
        };
        if count < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::Interrupted => Ok(()),
                _ => Err(error),
            };
        }
        ready.extend(self.buffer[..count as usize].iter().map(|e| Ready {
            token: e.u64,
            events: e.events,
        }));
        Ok(())
    }
}

/// Make `fd` non-blocking (the host's pipe ends, which only it uses).
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller holds open; no memory is involved.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn reports_what_is_ready_under_its_token_and_times_out_otherwise() {
        let mut poller = Poller::new().unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        poller.add(b.as_raw_fd(), READABLE, 7).unwrap();
        let mut ready = Vec::new();
        poller.wait(Duration::from_millis(10), &mut ready).unwrap();
        assert!(ready.is_empty(), "nothing written yet: {ready:?}");
        a.write_all(b"x").unwrap();
        poller.wait(Duration::from_secs(5), &mut ready).unwrap();
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].token, 7);
        assert_ne!(ready[0].events & READABLE, 0);
        drop(a);
        poller.modify(b.as_raw_fd(), 0, 8).unwrap();
        poller.wait(Duration::from_secs(5), &mut ready).unwrap();
        assert_eq!(ready[0].token, 8);
        assert_ne!(
            ready[0].events & CLOSED,
            0,
            "a closed peer is reported as closed"
        );
    }
}
