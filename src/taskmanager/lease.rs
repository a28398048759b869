//! The agent's lease on the leader: valid for `lease` after the *send* time of the last
//! heartbeat the leader answered. The leader measures its timeout from when it *received*
//! that heartbeat, which is later, so the agent's lease always ends first.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Lease {
    inner: Mutex<(Option<Instant>, Duration)>,
}

impl Lease {
    pub fn new(initial: Duration) -> Self {
        Lease {
            inner: Mutex::new((None, initial)),
        }
    }

    pub fn renew(&self, sent_at: Instant, length: Duration) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.0 = Some(inner.0.map_or(sent_at, |t| t.max(sent_at)));
        inner.1 = length;
    }

    pub fn is_valid(&self) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.0.is_some_and(|t| t.elapsed() < inner.1)
    }
}
