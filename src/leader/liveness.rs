//! Last contact with each TaskManager, in memory only: heartbeats are not Raft writes. Only
//! the verdict "lost" goes through the log. Every replica records the heartbeats it serves;
//! only the leader serves them, so only the leader's record is fresh.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Default)]
pub struct Liveness {
    last_contact: Mutex<HashMap<String, Instant>>,
}

impl Liveness {
    pub fn record(&self, taskmanager: &str, at: Instant) {
        let mut map = self.last_contact.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(taskmanager) {
            Some(t) => *t = (*t).max(at),
            None => {
                map.insert(taskmanager.to_string(), at);
            }
        }
    }

    pub fn last_contact(&self, taskmanager: &str) -> Option<Instant> {
        let map = self.last_contact.lock().unwrap_or_else(|p| p.into_inner());
        map.get(taskmanager).copied()
    }
}
