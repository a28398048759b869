//! The recent events of this replica's applied log, for streams: bounded, in `(index, seq)`
//! order. After a restart it holds the events of the entries applied since the snapshot the
//! replica started from (openraft applies them again); a reader asking for older ones is
//! told the oldest index it can have.

use crate::fsm::events::Event;
use std::collections::VecDeque;

/// Events held at most (about 100 bytes each).
pub const EVENT_RING_CAPACITY: usize = 100_000;

#[derive(Debug)]
pub struct EventRing {
    events: VecDeque<Event>,
    capacity: usize,
    /// Every event of every applied entry with an index at least this is held.
    held_from: u64,
}

impl EventRing {
    pub fn new(capacity: usize, held_from: u64) -> Self {
        EventRing {
            events: VecDeque::new(),
            capacity,
            held_from,
        }
    }

    pub fn push(&mut self, events: Vec<Event>) {
        self.events.extend(events);
        while self.events.len() > self.capacity {
            if let Some(dropped) = self.events.pop_front() {
                // An entry's events go together: once one is dropped, its index is gone.
                self.held_from = self.held_from.max(dropped.index + 1);
            }
        }
        while self
            .events
            .front()
            .is_some_and(|e| e.index < self.held_from)
        {
            self.events.pop_front();
        }
    }

    /// Everything before `next_index` is gone (a snapshot replaced the state).
    pub fn restart_at(&mut self, next_index: u64) {
        self.events.clear();
        self.held_from = next_index;
    }

    /// Up to `max` events at or after `(index, seq)`, or the oldest index still held if
    /// `index` is older.
    pub fn read(&self, index: u64, seq: u32, max: usize) -> Result<Vec<Event>, u64> {
        if index < self.held_from {
            return Err(self.held_from);
        }
        let start = self
            .events
            .partition_point(|e| (e.index, e.seq) < (index, seq));
        Ok(self.events.range(start..).take(max).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(index: u64, seq: u32) -> Event {
        Event {
            index,
            seq,
            kind: "shard_started",
            job_id: None,
            shard: None,
            taskmanager: None,
            detail: String::new(),
            tenant: None,
        }
    }

    #[test]
    fn reads_from_a_position_and_refuses_what_is_gone() {
        let mut ring = EventRing::new(4, 1);
        ring.push(vec![event(1, 0), event(1, 1)]);
        ring.push(vec![event(3, 0)]);
        let from = |r: &EventRing, i, s| {
            r.read(i, s, 10)
                .map(|v| v.iter().map(|e| (e.index, e.seq)).collect::<Vec<_>>())
        };
        assert_eq!(from(&ring, 1, 1), Ok(vec![(1, 1), (3, 0)]));
        assert_eq!(from(&ring, 2, 0), Ok(vec![(3, 0)]));
        ring.push(vec![event(4, 0), event(4, 1)]);
        // Capacity 4: event (1, 0) dropped, and with it the rest of entry 1.
        assert_eq!(from(&ring, 1, 0), Err(2));
        assert_eq!(from(&ring, 2, 0), Ok(vec![(3, 0), (4, 0), (4, 1)]));
        ring.restart_at(10);
        assert_eq!(from(&ring, 5, 0), Err(10));
        assert_eq!(from(&ring, 10, 0), Ok(vec![]));
    }
}
