//! Forming the cluster without an init step, never forming a second one, and never letting a
//! replica that lost its data vote.
//!
//! A replica whose data dir holds a vote or log entries remembers what it did: its Raft gate
//! opens at once. A replica with nothing (a new data dir) starts with the gate closed and asks
//! every other peer (`Cluster.Status`, local view) whether it already belongs to a cluster:
//! - if any does, this replica may be a member that lost its disk (or a new replica about to
//!   be added): it goes through `rejoin` and votes only once the leader has taken it back;
//! - only when every named peer answers and none has taken part in a cluster (no membership,
//!   no vote, no entries) is this a first formation: the gate opens (nobody can have forgotten
//!   anything), and once every replica has opened (or a majority has, for a bounded grace), the
//!   replica with the smallest id initializes the membership — the same membership on
//!   whichever replica does it, which openraft allows;
//! - when nothing can be learned (too few peers answer), it waits: it never guesses.

use super::rejoin::{enter, open, rejoin, RejoinMarker, RejoinPhase};
use crate::client::ClientOptions;
use crate::raft::{GateState, Node, Raft, RaftGate};
use crate::security::{Credentials, Transport};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
const RETRY_EVERY: Duration = Duration::from_millis(300);
/// How long the founder waits for the last pristine replicas to open once a majority has.
const STRAGGLER_GRACE: Duration = Duration::from_secs(5);

/// When the founder may initialize the membership: once every replica has opened for the
/// formation, or a majority has for `STRAGGLER_GRACE`. A majority would be enough to elect a
/// leader, but a replica that answered as pristine and has not opened yet (it started before
/// the others, and was asleep between probes that found nobody) would find the cluster formed
/// without it and take the path of one that lost its disk: demoted, caught up and restored
/// before it votes. The wait is bounded so that a replica that answers but cannot open (it
/// cannot reach every peer itself) does not stall the formation.
#[derive(Debug, Default)]
struct FounderWait {
    majority_ready_since: Option<Instant>,
}

impl FounderWait {
    fn may_found(&mut self, ready: usize, members: usize, now: Instant) -> bool {
        if ready < members / 2 + 1 {
            self.majority_ready_since = None;
            return false;
        }
        let since = *self.majority_ready_since.get_or_insert(now);
        ready == members || now.duration_since(since) >= STRAGGLER_GRACE
    }
}

/// What a peer said about itself.
struct Probe {
    /// It belongs to a cluster, or has voted or holds entries (it took part in forming one).
    initialized: bool,
    /// It has committed to a first formation (or is an ordinary member): it may vote.
    votes: bool,
}

/// `None` if the peer did not answer.
async fn probe(transport: &Transport, addr: &str) -> Option<Probe> {
    let reply = crate::rpc::local_status_of(transport, addr, PROBE_TIMEOUT).await?;
    Some(Probe {
        initialized: reply.initialized || reply.has_history,
        votes: reply.raft_gate == GateState::Open.name(),
    })
}

/// What `form_or_join` needs to know about this replica.
pub struct Bootstrap {
    pub raft: Raft,
    pub gate: Arc<RaftGate>,
    pub marker: RejoinMarker,
    pub id: u64,
    pub peers: BTreeMap<u64, String>,
    pub source_ip: Option<IpAddr>,
    /// How to dial the other replicas.
    pub transport: Transport,
    /// The data dir held a vote or log entries: this replica remembers what it did.
    pub has_history: bool,
    /// A rejoin interrupted by a restart.
    pub rejoin_phase: Option<RejoinPhase>,
}

impl Bootstrap {
    /// How `rejoin` dials the others: as this replica (its certificate), with long deadlines.
    fn rejoin_options(&self) -> ClientOptions {
        ClientOptions {
            rpc_timeout: Duration::from_secs(15),
            call_timeout: Duration::from_secs(20),
            source_ip: self.source_ip,
            credentials: Credentials {
                transport: self.transport.clone(),
                token: None,
            },
        }
    }
}

/// The gate a replica starts with, before `form_or_join` runs.
pub fn initial_gate(has_history: bool, rejoin_phase: Option<RejoinPhase>) -> GateState {
    match rejoin_phase {
        Some(phase) => phase.gate(),
        None if has_history => GateState::Open,
        None => GateState::Closed,
    }
}

pub async fn form_or_join(b: Bootstrap) {
    let others: Vec<String> = b
        .peers
        .iter()
        .filter(|(p, _)| **p != b.id)
        .map(|(_, a)| a.clone())
        .collect();
    match (b.rejoin_phase, b.has_history) {
        (
            Some(phase @ (RejoinPhase::AwaitingDemotion | RejoinPhase::AwaitingRestore { .. })),
            _,
        ) => {
            let options = b.rejoin_options();
            return rejoin(b.raft, b.gate, b.marker, b.id, others, options, phase).await;
        }
        (_, true) => {
            open(&b.gate, &b.raft);
            return;
        }
        (Some(RejoinPhase::Founding), false) => open(&b.gate, &b.raft),
        (None, false) => {}
    }
    let mut founder_wait = FounderWait::default();
    loop {
        match b.raft.is_initialized().await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                tracing::error!("raft stopped before the cluster formed: {e}");
                return;
            }
        }
        let founding = b.gate.get() == GateState::Open;
        // Uninitialized peers, and those of them that already opened for the formation.
        let mut pristine = BTreeSet::from([b.id]);
        let mut ready = BTreeSet::new();
        if founding {
            ready.insert(b.id);
        }
        let mut someone_initialized = false;
        for (peer, addr) in b.peers.iter().filter(|(p, _)| **p != b.id) {
            match probe(&b.transport, addr).await {
                Some(p) if p.initialized => someone_initialized = true,
                Some(p) => {
                    pristine.insert(*peer);
                    if p.votes {
                        ready.insert(*peer);
                    }
                }
                None => {}
            }
        }
        if someone_initialized && !founding {
            // The cluster exists and this replica has no memory of it: it may be a member
            // that lost its disk. It votes again only once the leader has taken it back.
            let phase = RejoinPhase::AwaitingDemotion;
            enter(&b.marker, &b.gate, &b.raft, Some(phase)).await;
            let options = b.rejoin_options();
            return rejoin(b.raft, b.gate, b.marker, b.id, others, options, phase).await;
        }
        if someone_initialized {
            tracing::info!("the cluster formed; waiting for its leader to replicate to us");
        } else if b.peers.contains_key(&b.id) && pristine.len() == b.peers.len() {
            // First formation: every named replica answered and none has ever taken part in
            // a cluster. A majority would not do: a replica that lost its disk and one that
            // was never started would be a majority of three, beside a live third.
            if !founding {
                tracing::info!(members = ?b.peers, "first formation: this replica may vote");
                enter(&b.marker, &b.gate, &b.raft, Some(RejoinPhase::Founding)).await;
                ready.insert(b.id);
            }
            let may_found = founder_wait.may_found(ready.len(), b.peers.len(), Instant::now());
            if pristine.first() == Some(&b.id) && may_found {
                let members: BTreeMap<u64, Node> = b
                    .peers
                    .iter()
                    .map(|(id, addr)| (*id, Node { addr: addr.clone() }))
                    .collect();
                match b.raft.initialize(members).await {
                    Ok(()) => {
                        tracing::info!(members = ?b.peers, "initialized the cluster");
                        return;
                    }
                    Err(e) => tracing::info!("initialize: {e}"),
                }
            }
        } else {
            // Not every replica answered as pristine: the grace starts again once they do.
            founder_wait = FounderWait::default();
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_founder_goes_at_once_when_everyone_is_ready() {
        let mut wait = FounderWait::default();
        assert!(wait.may_found(3, 3, Instant::now()));
    }

    #[test]
    fn a_majority_alone_waits_out_the_grace_and_a_lost_majority_starts_it_again() {
        let start = Instant::now();
        let mut wait = FounderWait::default();
        assert!(!wait.may_found(1, 3, start), "no majority");
        assert!(!wait.may_found(2, 3, start), "a majority, just now");
        let almost = start + STRAGGLER_GRACE - Duration::from_millis(1);
        assert!(!wait.may_found(2, 3, almost));
        assert!(!wait.may_found(1, 3, almost), "the majority went");
        let later = start + STRAGGLER_GRACE;
        assert!(
            !wait.may_found(2, 3, later),
            "the grace counts from the majority's return"
        );
        assert!(wait.may_found(2, 3, later + STRAGGLER_GRACE));
    }
}
