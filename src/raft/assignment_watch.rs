//! Per TaskManager with an open assignment stream, what that stream pushes from: its list's
//! version and its registration. After each applied batch the state machine recomputes these
//! for the TaskManagers watched (a few shards each) and wakes a stream only when its own
//! TaskManager changed. Waking every stream on every entry cost the leader a task wake-up per
//! agent per entry, nearly all of them for nothing.
//!
//! Only the state machine writes here; it must not hold the state's lock while it does (the
//! caller passes the state it read).

use crate::domain::{AssignmentsVersion, ClusterState, TaskManagerState};
use std::collections::BTreeMap;
use std::sync::Mutex;
use tokio::sync::watch;

/// What an assignment stream needs to look at again when it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Watched {
    pub version: AssignmentsVersion,
    pub registration_epoch: u64,
    pub incarnation: u64,
    pub lost: bool,
}

impl Watched {
    fn of(state: &ClusterState, taskmanager: &str) -> Watched {
        let tm = state.taskmanager(taskmanager);
        Watched {
            version: state.assignments_version(taskmanager),
            registration_epoch: tm.map_or(0, |tm| tm.registration_epoch),
            incarnation: tm.map_or(0, |tm| tm.incarnation),
            lost: tm.is_none_or(|tm| tm.state == TaskManagerState::Lost),
        }
    }
}

#[derive(Debug, Default)]
pub struct AssignmentWatches {
    senders: Mutex<BTreeMap<String, watch::Sender<Watched>>>,
}

impl AssignmentWatches {
    /// A receiver that changes when `taskmanager`'s list or registration does.
    pub fn subscribe(&self, state: &ClusterState, taskmanager: &str) -> watch::Receiver<Watched> {
        let mut senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        match senders.get(taskmanager) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = watch::channel(Watched::of(state, taskmanager));
                senders.insert(taskmanager.to_string(), sender);
                receiver
            }
        }
    }

    /// Whether any TaskManager is watched (followers serve no assignment streams): apply
    /// skips reading the state for `applied` when none is.
    pub fn any(&self) -> bool {
        !self
            .senders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// After entries applied to `state`: wake the streams whose TaskManager changed, and
    /// forget the TaskManagers no stream watches any more.
    pub fn applied(&self, state: &ClusterState) {
        let mut senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        senders.retain(|taskmanager, sender| {
            if sender.receiver_count() == 0 {
                return false;
            }
            let now = Watched::of(state, taskmanager);
            sender.send_if_modified(|seen| {
                let changed = *seen != now;
                *seen = now;
                changed
            });
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_woken_only_when_its_own_taskmanager_changes() {
        let watches = AssignmentWatches::default();
        let mut state = ClusterState::default();
        let mut a = watches.subscribe(&state, "a");
        let mut b = watches.subscribe(&state, "b");
        a.mark_unchanged();
        b.mark_unchanged();
        watches.applied(&state);
        assert!(!a.has_changed().unwrap() && !b.has_changed().unwrap());
        state.taskmanagers.insert(
            "a".into(),
            crate::domain::TaskManager {
                id: "a".into(),
                addr: "a:1".into(),
                slots: 1,
                used_slots: 0,
                labels: Default::default(),
                state: TaskManagerState::Alive,
                registration_epoch: 1,
                incarnation: 7,
                registered_at_ms: 0,
                lost_at_ms: None,
                stats: Default::default(),
                recent_failures_ms: Vec::new(),
                excluded_until_ms: 0,
                drain_deadline_ms: None,
            },
        );
        watches.applied(&state);
        assert!(a.has_changed().unwrap(), "a registered");
        assert!(!b.has_changed().unwrap(), "b did not change");
        drop(b);
        watches.applied(&state);
        let held = watches.senders.lock().unwrap().len();
        assert_eq!(held, 1, "b is no longer watched");
    }
}
