//! The newest entries, kept decoded beside the files they were written to.
//!
//! Nearly every read of the log is of entries just appended: the leader replicates them to
//! each follower and applies them once committed, a follower applies what it just received.
//! Read from the files, each of those costs a positioned read, a checksum and a decode per
//! entry (about 6 % of a replica's CPU at 10,000 submissions/s); from here, a clone.
//!
//! The entries kept are always the log's newest ones, contiguous: whatever changes the log's
//! end (an append, a truncation, a purge) changes this in the same step, under the log's lock.
//! Bounded in count and in encoded bytes; what falls out is read from the files as before.

use crate::raft::types::Entry;
use std::collections::VecDeque;

/// At most this many entries ...
const MAX_ENTRIES: usize = 4096;
/// ... and this many bytes of them, encoded.
const MAX_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct RecentEntries {
    /// The index of `entries[0]`.
    first: u64,
    /// Each entry with its encoded size.
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl RecentEntries {
    /// One past the newest entry kept (meaningless while empty).
    fn end(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    /// The entry just written at the log's end, `encoded` bytes long in the file.
    pub fn push(&mut self, entry: Entry, encoded: usize) {
        let index = entry.log_id.index();
        if self.entries.is_empty() || index != self.end() {
            // The log's end moved without us (nothing kept yet, or opened from the files):
            // start over from this entry.
            self.clear();
            self.first = index;
        }
        self.bytes += encoded;
        self.entries.push_back((entry, encoded));
        while self.entries.len() > MAX_ENTRIES || (self.bytes > MAX_BYTES && self.entries.len() > 1)
        {
            self.pop_front();
        }
    }

    /// The log now ends at `after` (`None`: it is empty).
    pub fn truncate_after(&mut self, after: Option<u64>) {
        match after {
            Some(last) if last >= self.first => {
                while !self.entries.is_empty() && self.end() > last + 1 {
                    if let Some((_, size)) = self.entries.pop_back() {
                        self.bytes -= size;
                    }
                }
            }
            _ => self.clear(),
        }
    }

    /// Entries up to and including `upto` are gone.
    pub fn purge(&mut self, upto: u64) {
        while !self.entries.is_empty() && self.first <= upto {
            self.pop_front();
        }
    }

    /// The first index kept, if any: every entry from it to the log's end is here.
    pub fn first_kept(&self) -> Option<u64> {
        (!self.entries.is_empty()).then_some(self.first)
    }

    /// A copy of the entry at `index`, when kept.
    pub fn get(&self, index: u64) -> Option<Entry> {
        let at = usize::try_from(index.checked_sub(self.first)?).ok()?;
        self.entries.get(at).map(|(entry, _)| entry.clone())
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
            self.first += 1;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::Command;
    use openraft::entry::EntryPayload;
    use openraft::testing::log_id;

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: log_id::<crate::raft::types::TypeConfig>(1, 1, index),
            payload: EntryPayload::Normal(Command::UndrainTaskManager {
                id: format!("tm-{index}"),
                now_ms: index,
            }),
        }
    }

    fn kept(recent: &RecentEntries) -> Vec<u64> {
        recent
            .entries
            .iter()
            .map(|(e, _)| e.log_id.index())
            .collect()
    }

    #[test]
    fn keeps_the_newest_contiguous_entries() {
        let mut recent = RecentEntries::default();
        for i in 5..10 {
            recent.push(entry(i), 100);
        }
        assert_eq!(recent.first_kept(), Some(5));
        assert_eq!(recent.get(7).map(|e| e.log_id.index()), Some(7));
        assert!(recent.get(4).is_none() && recent.get(10).is_none());

        recent.truncate_after(Some(7));
        assert_eq!(kept(&recent), vec![5, 6, 7]);
        recent.push(entry(8), 100);
        assert_eq!(kept(&recent), vec![5, 6, 7, 8]);

        recent.purge(6);
        assert_eq!(kept(&recent), vec![7, 8]);
        assert_eq!(recent.bytes, 200);

        // An entry that does not follow (the log was opened from its files) starts over.
        recent.push(entry(20), 100);
        assert_eq!(kept(&recent), vec![20]);
        recent.truncate_after(Some(3));
        assert_eq!(recent.first_kept(), None);
        assert_eq!(recent.bytes, 0);
    }

    #[test]
    fn stays_within_its_bounds() {
        let mut recent = RecentEntries::default();
        for i in 0..(MAX_ENTRIES as u64 + 10) {
            recent.push(entry(i), 10);
        }
        assert_eq!(recent.entries.len(), MAX_ENTRIES);
        assert_eq!(recent.first_kept(), Some(10));
        recent.push(entry(MAX_ENTRIES as u64 + 10), MAX_BYTES);
        assert_eq!(kept(&recent), vec![MAX_ENTRIES as u64 + 10], "bytes bound");
    }
}
