//! When this replica last campaigned, won, and first committed in its term, on the wall
//! clock (unix microseconds), so that `dispatcher bench` can say where a failover's time goes:
//! detection (kill → first pre-vote), election (→ leader), the first commit, the client.
//!
//! Recorded from two places: the outbound network marks the start of a campaign (the first
//! pre-vote or vote sent since a leader was last known), and a watcher of openraft's metrics
//! marks winning and the first entry of the new term applied. It only observes; nothing in
//! Raft reads it. Wall-clock times because the reader is another process on the same host.

use super::types::Raft;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::vote::RaftLeaderId;
use openraft::ServerState;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The last election this replica took part in as a candidate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Election {
    /// The term it won (0 while it has not won one).
    pub term: u64,
    /// Its first pre-vote (or vote) request of the campaign.
    pub campaign_started_us: Option<u64>,
    /// It became leader.
    pub won_us: Option<u64>,
    /// The first entry of its term was applied here (the blank entry a new leader commits).
    pub first_commit_us: Option<u64>,
}

#[derive(Debug, Default)]
pub struct ElectionTimeline {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// When the campaign under way (if any) sent its first request.
    campaign_since_us: Option<u64>,
    last_won: Election,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl ElectionTimeline {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A pre-vote or vote request is being sent: the first of a campaign starts it.
    pub fn campaigning(&self) {
        let now = now_us();
        self.with(|i| {
            i.campaign_since_us.get_or_insert(now);
        });
    }

    /// The last election this replica won (all `None` if it never did).
    pub fn last_won(&self) -> Election {
        self.with(|i| i.last_won)
    }

    fn observe(&self, state: ServerState, leader_known: bool, term: u64, applied_term: u64) {
        let now = now_us();
        self.with(|i| {
            if state == ServerState::Leader {
                if i.last_won.term != term {
                    i.last_won = Election {
                        term,
                        campaign_started_us: Some(i.campaign_since_us.take().unwrap_or(now)),
                        won_us: Some(now),
                        first_commit_us: None,
                    };
                }
                if i.last_won.first_commit_us.is_none() && applied_term == term {
                    i.last_won.first_commit_us = Some(now);
                }
            } else if leader_known {
                // Another replica leads: a campaign that did not win is over.
                i.campaign_since_us = None;
            }
        });
    }

    /// Follow `raft` until it shuts down. Only role changes wake it (openraft's server
    /// metrics); applied entries are followed just from winning to the term's first commit,
    /// not on every write.
    pub async fn watch(self: std::sync::Arc<Self>, raft: Raft) {
        let mut server = raft.server_metrics();
        loop {
            let (state, leader_known, term) = {
                let m = server.borrow_watched();
                (
                    m.state,
                    m.current_leader.is_some(),
                    m.vote.leader_id().term(),
                )
            };
            self.observe(state, leader_known, term, 0);
            let mut role_changed = false;
            if state == ServerState::Leader && self.last_won().first_commit_us.is_none() {
                let mut data = raft.data_metrics();
                loop {
                    let applied_term = data
                        .borrow_watched()
                        .last_applied
                        .as_ref()
                        .map_or(0, |l| l.leader_id.term);
                    self.observe(state, leader_known, term, applied_term);
                    if applied_term == term {
                        break;
                    }
                    tokio::select! {
                        changed = data.changed() => if changed.is_err() { return },
                        // Deposed before its first commit: look at the new role at once.
                        changed = server.changed() => {
                            if changed.is_err() { return }
                            role_changed = true;
                            break;
                        }
                    }
                }
            }
            if !role_changed && server.changed().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_won_campaign_keeps_its_start_and_first_commit() {
        let t = ElectionTimeline::default();
        t.campaigning();
        let started = t.with(|i| i.campaign_since_us);
        t.campaigning(); // a second request of the same campaign changes nothing
        assert_eq!(t.with(|i| i.campaign_since_us), started);
        t.observe(ServerState::Candidate, false, 5, 4);
        t.observe(ServerState::Leader, true, 5, 4);
        let won = t.last_won();
        assert_eq!((won.term, won.campaign_started_us), (5, started));
        assert!(won.won_us.is_some() && won.first_commit_us.is_none());
        t.observe(ServerState::Leader, true, 5, 5);
        let committed = t.last_won().first_commit_us;
        assert!(committed.is_some());
        t.observe(ServerState::Leader, true, 5, 5);
        assert_eq!(t.last_won().first_commit_us, committed, "set once");
    }

    #[test]
    fn a_lost_campaign_is_forgotten_and_the_last_win_kept() {
        let t = ElectionTimeline::default();
        t.campaigning();
        t.observe(ServerState::Leader, true, 2, 2);
        let first = t.last_won();
        t.campaigning();
        t.observe(ServerState::Follower, true, 3, 2);
        assert_eq!(t.with(|i| i.campaign_since_us), None);
        assert_eq!(t.last_won(), first);
    }
}
