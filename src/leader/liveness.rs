//! Last contact with each TaskManager, in memory only: heartbeats are not Raft writes. Only
//! the verdict "lost" goes through the log. Only the leader serves heartbeats, so only the
//! leader's record is fresh.
//!
//! Declaring a TaskManager lost and answering its heartbeat must not interleave: otherwise a
//! heartbeat arriving just as the detector gives up could be answered with assignments that
//! the loss is about to move elsewhere. So the detector *condemns* a TaskManager here, under
//! the same lock a heartbeat takes to record its contact; a condemned TaskManager's heartbeats
//! are refused until it registers again.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Contacts {
    last: HashMap<String, Instant>,
    condemned: HashSet<String>,
    /// The term in which this replica last became leader, and when.
    leader_since: Option<(u64, Instant)>,
}

#[derive(Debug, Default)]
pub struct Liveness {
    inner: Mutex<Contacts>,
}

impl Liveness {
    fn lock(&self) -> std::sync::MutexGuard<'_, Contacts> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a heartbeat; `false` if the TaskManager is condemned (refuse the heartbeat).
    pub fn heartbeat(&self, taskmanager: &str, at: Instant) -> bool {
        let mut c = self.lock();
        if c.condemned.contains(taskmanager) {
            return false;
        }
        let t = c.last.entry(taskmanager.to_string()).or_insert(at);
        *t = (*t).max(at);
        true
    }

    /// A (re-)registration: contact now, and no longer condemned.
    pub fn registered(&self, taskmanager: &str, at: Instant) {
        let mut c = self.lock();
        c.condemned.remove(taskmanager);
        c.last.insert(taskmanager.to_string(), at);
    }

    pub fn last_contact(&self, taskmanager: &str) -> Option<Instant> {
        self.lock().last.get(taskmanager).copied()
    }

    /// Condemn the TaskManager if it has still been silent for longer than `timeout`
    /// (counting from `floor` when it was never heard from, or heard from only before it).
    /// Returns whether it was condemned.
    pub fn condemn_if_silent(&self, taskmanager: &str, floor: Instant, timeout: Duration) -> bool {
        let mut c = self.lock();
        let last = c.last.get(taskmanager).map_or(floor, |t| (*t).max(floor));
        if last.elapsed() <= timeout {
            return false;
        }
        c.condemned.insert(taskmanager.to_string());
        true
    }

    /// This replica has just become leader in `term`: contacts from before do not count.
    ///
    /// Condemnations from an earlier term are dropped: the loss or takeover each stood for was
    /// either committed (and this leader answers no heartbeat before it has applied everything
    /// of earlier terms) or lost with that term.
    pub fn became_leader(&self, term: u64, at: Instant) {
        let mut c = self.lock();
        c.leader_since = Some((term, at));
        c.condemned.clear();
    }

    /// Whether another agent process may take over `taskmanager`'s id while this replica
    /// leads in `term`: only once its holder has been silent for `bound`, counted from when
    /// this replica became leader in `term` if it has not heard from it since (see
    /// `fencing`). If so the holder is condemned, so that none of its heartbeats is answered
    /// from now on; otherwise returns how long it has been silent.
    pub fn take_over(&self, taskmanager: &str, term: u64, bound: Duration) -> Result<(), Duration> {
        let mut c = self.lock();
        // Leading since an unknown moment (or since an older term): count from now.
        let floor = match c.leader_since {
            Some((t, at)) if t == term => at,
            _ => Instant::now(),
        };
        let last = c.last.get(taskmanager).map_or(floor, |t| (*t).max(floor));
        let silent = last.elapsed();
        if silent <= bound {
            return Err(silent);
        }
        c.condemned.insert(taskmanager.to_string());
        Ok(())
    }

    /// Lift a condemnation (the loss could not be committed).
    pub fn pardon(&self, taskmanager: &str) {
        self.lock().condemned.remove(taskmanager);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condemned_taskmanager_is_refused_until_it_registers() {
        let l = Liveness::default();
        let start = Instant::now() - Duration::from_secs(10);
        assert!(l.heartbeat("tm", start));
        assert!(!l.condemn_if_silent("tm", start, Duration::from_secs(60)));
        assert!(l.condemn_if_silent("tm", start, Duration::from_secs(1)));
        assert!(
            !l.heartbeat("tm", Instant::now()),
            "heartbeat of a condemned TaskManager"
        );
        l.registered("tm", Instant::now());
        assert!(l.heartbeat("tm", Instant::now()));
        assert!(
            !l.condemn_if_silent("tm", start, Duration::from_secs(1)),
            "fresh contact"
        );
    }
}
