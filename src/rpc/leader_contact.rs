//! Whether this replica is in touch with a leader: the leader itself while a quorum has
//! acknowledged it recently, a follower while the leader's AppendEntries (heartbeats
//! included) keep arriving. Streams served from this replica's applied state end when it
//! falls out of touch (`stream_right`), so a replica cut off from the cluster does not go on
//! serving a token that has been revoked meanwhile, or events that are no longer current.
//!
//! Memory only, with the monotonic clock.

use crate::raft::Raft;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::{Instant as _, ServerState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct LeaderContact {
    /// When the last AppendEntries of a current leader was accepted here.
    last: Mutex<Option<Instant>>,
}

impl LeaderContact {
    /// A leader's AppendEntries (or heartbeat) was accepted now.
    pub fn touch(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Whether this replica heard from the cluster within `bound`.
    pub fn in_touch(&self, raft: &Raft, bound: Duration) -> bool {
        let (leads, alone, acked) = {
            let metrics = raft.metrics();
            let m = metrics.borrow_watched();
            (
                m.state == ServerState::Leader,
                m.membership_config.membership().voter_ids().count() <= 1,
                m.last_quorum_acked
                    .as_ref()
                    .map(|acked| acked.into_inner().elapsed()),
            )
        };
        if leads {
            return alone || acked.is_some_and(|elapsed| elapsed < bound);
        }
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < bound)
    }
}
