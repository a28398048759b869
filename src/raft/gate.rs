//! What this replica's Raft service lets through, and whether its Raft core may campaign.
//!
//! A replica that lost its data must not vote or count toward a quorum until a legitimate
//! leader has caught it up (Raft's "amnesia" failure: its forgotten votes and entries could
//! elect a leader that lacks acknowledged writes). The gate is set by `node::bootstrap` and
//! read by the inbound Raft service on every RPC; it never decides anything by itself.
//!
//! - `Closed`: every Raft RPC is refused (a replica on an empty data dir before it knows
//!   whether the cluster exists, or before the leader demoted it to learner).
//! - `LearnerOnly`: replication and snapshots are accepted, votes are refused (demoted, being
//!   caught up).
//! - `Open`: everything.

use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateState {
    Closed = 0,
    LearnerOnly = 1,
    Open = 2,
}

impl GateState {
    pub fn name(self) -> &'static str {
        match self {
            GateState::Closed => "closed",
            GateState::LearnerOnly => "learner-only",
            GateState::Open => "open",
        }
    }
}

/// Shared between the bootstrap task (writer) and the Raft service (reader).
#[derive(Debug)]
pub struct RaftGate {
    state: AtomicU8,
}

impl RaftGate {
    pub fn new(state: GateState) -> Self {
        RaftGate {
            state: AtomicU8::new(state as u8),
        }
    }

    pub fn get(&self) -> GateState {
        match self.state.load(Ordering::SeqCst) {
            0 => GateState::Closed,
            1 => GateState::LearnerOnly,
            _ => GateState::Open,
        }
    }

    pub fn set(&self, state: GateState) {
        self.state.store(state as u8, Ordering::SeqCst);
    }

    /// AppendEntries and InstallSnapshot.
    pub fn allows_replication(&self) -> bool {
        self.get() != GateState::Closed
    }

    /// Vote, PreVote and TransferLeader.
    pub fn allows_voting(&self) -> bool {
        self.get() == GateState::Open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_lets_through_what_it_says() {
        let gate = RaftGate::new(GateState::Closed);
        assert!(!gate.allows_replication() && !gate.allows_voting());
        gate.set(GateState::LearnerOnly);
        assert!(gate.allows_replication() && !gate.allows_voting());
        gate.set(GateState::Open);
        assert!(gate.allows_replication() && gate.allows_voting());
        assert_eq!(gate.get().name(), "open");
    }
}
