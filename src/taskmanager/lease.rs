//! The agent's lease on the leader: valid for `lease` after the *send* time of the last
//! heartbeat the leader answered. The leader measures its timeout from when it *received*
//! that heartbeat, which is later, so the agent's lease always ends first (the whole rule is
//! in `leader::fencing`). Measured on CLOCK_BOOTTIME (`clock::boottime`), which keeps counting
//! while the machine is suspended.

use crate::clock::boottime;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug)]
pub struct Lease {
    /// Boot-time of the send of the last answered heartbeat, and the lease length.
    inner: Mutex<(Option<Duration>, Duration)>,
}

impl Lease {
    pub fn new(initial: Duration) -> Self {
        Lease {
            inner: Mutex::new((None, initial)),
        }
    }

    /// `sent_at`: `clock::boottime()` when the answered heartbeat was sent.
    pub fn renew(&self, sent_at: Duration, length: Duration) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.0 = Some(inner.0.map_or(sent_at, |t| t.max(sent_at)));
        inner.1 = length;
    }

    pub fn is_valid(&self) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .0
            .is_some_and(|t| boottime().saturating_sub(t) < inner.1)
    }
}
