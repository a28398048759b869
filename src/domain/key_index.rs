//! The idempotency keys: client key (in its tenant's slot) → the job it created.
//!
//! Looked up on every submission, twice (the leader's early answer and apply), among every key
//! still held. A `BTreeMap<String, _>` walked a deep tree of string comparisons per lookup, and
//! keys with a long shared prefix (`client-17-…`) made each comparison a `memcmp` call: about
//! 5 % of the leader's CPU at 10,000 submissions/s. A hash map finds a key in one probe.
//!
//! The keys are spread over [`BUCKETS`] maps, each behind an `Arc`, because a snapshot copies
//! the state on the apply task (applying waits for the copy): one map of 100,000 keys cost a
//! copy of every key, milliseconds in which no write was applied. Now the copy takes a
//! pointer per bucket, and the first write into a bucket after a copy copies that bucket
//! alone (a 256th of the keys).
//!
//! Order never reaches the state through it: nothing iterates it but the encoding, which
//! writes the entries sorted by key, exactly as the `BTreeMap` it replaced did. So the state's
//! digest and the snapshot format are unchanged, and replicas with different hash seeds hold
//! byte-identical encodings.

use super::ids::JobId;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

/// How many maps the keys are spread over: what one write after a snapshot's copy may copy
/// is a `BUCKETS`th of the keys, and what the copy itself costs is `BUCKETS` pointers.
const BUCKETS: usize = 256;

#[derive(Debug, Clone, Default)]
pub struct KeyIndex {
    /// Picks a key's bucket; seeded per process, so that no client can choose keys that all
    /// land in one bucket (which would bring back the whole copy).
    spread: RandomState,
    /// Empty until the first key, then `BUCKETS` maps.
    buckets: Vec<Arc<HashMap<String, JobId>>>,
    len: usize,
}

impl KeyIndex {
    fn bucket_of(&self, slot: &str) -> usize {
        (self.spread.hash_one(slot) % BUCKETS as u64) as usize
    }

    fn bucket(&self, slot: &str) -> Option<&HashMap<String, JobId>> {
        self.buckets.get(self.bucket_of(slot)).map(|b| b.as_ref())
    }

    pub fn get(&self, slot: &str) -> Option<&JobId> {
        self.bucket(slot)?.get(slot)
    }

    pub fn contains_key(&self, slot: &str) -> bool {
        self.get(slot).is_some()
    }

    pub fn insert(&mut self, slot: String, job: JobId) -> Option<JobId> {
        if self.buckets.is_empty() {
            self.buckets = (0..BUCKETS).map(|_| Arc::default()).collect();
        }
        let at = self.bucket_of(&slot);
        let before = Arc::make_mut(&mut self.buckets[at]).insert(slot, job);
        if before.is_none() {
            self.len += 1;
        }
        before
    }

    pub fn remove(&mut self, slot: &str) -> Option<JobId> {
        let at = self.bucket_of(slot);
        // Only a bucket that holds the key is written (and so copied, if a copy shares it).
        if !self.buckets.get(at)?.contains_key(slot) {
            return None;
        }
        let removed = Arc::make_mut(&mut self.buckets[at]).remove(slot);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn iter(&self) -> impl Iterator<Item = (&String, &JobId)> {
        self.buckets.iter().flat_map(|bucket| bucket.iter())
    }

    /// Every entry, sorted by key: the one order the encoding may use.
    pub fn sorted(&self) -> Vec<(&String, &JobId)> {
        let mut entries: Vec<_> = self.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        entries
    }
}

/// The same keys for the same jobs, however they are spread.
impl PartialEq for KeyIndex {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().all(|(key, job)| other.get(key) == Some(job))
    }
}

impl Eq for KeyIndex {}

impl Serialize for KeyIndex {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let entries = self.sorted();
        let mut map = serializer.serialize_map(Some(entries.len()))?;
        for (key, job) in entries {
            map.serialize_entry(key, job)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for KeyIndex {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let read = HashMap::<String, JobId>::deserialize(deserializer)?;
        let mut index = KeyIndex::default();
        for (key, job) in read {
            index.insert(key, job);
        }
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(value, bincode::config::standard()).expect("encodes")
    }

    #[test]
    fn encodes_exactly_as_the_sorted_map_it_replaces() {
        let mut index = KeyIndex::default();
        let mut map = BTreeMap::new();
        for (i, key) in ["zeta", "a", "client-17-9", "client-17-10", "", "é"]
            .iter()
            .enumerate()
        {
            index.insert(key.to_string(), JobId(i as u64));
            map.insert(key.to_string(), JobId(i as u64));
        }
        assert_eq!(encode(&index), encode(&map));
        let (decoded, _): (KeyIndex, usize) =
            bincode::serde::decode_from_slice(&encode(&map), bincode::config::standard())
                .expect("decodes");
        assert_eq!(decoded, index);
    }

    #[test]
    fn finds_inserts_and_forgets() {
        let mut index = KeyIndex::default();
        assert!(index.is_empty());
        assert_eq!(index.insert("k".into(), JobId(1)), None);
        assert_eq!(index.get("k"), Some(&JobId(1)));
        assert!(index.contains_key("k"));
        assert_eq!(index.len(), 1);
        assert_eq!(index.remove("k"), Some(JobId(1)));
        assert!(!index.contains_key("k"));
    }

    #[test]
    fn a_copy_keeps_what_it_saw_while_the_original_changes() {
        let mut index = KeyIndex::default();
        for i in 0..2_000u64 {
            index.insert(format!("client-{i}"), JobId(i));
        }
        let copy = index.clone();
        index.insert("new".into(), JobId(9_999));
        assert_eq!(index.remove("client-7"), Some(JobId(7)));
        assert_eq!(index.remove("never-held"), None);
        assert_eq!((copy.len(), index.len()), (2_000, 2_000));
        assert_eq!(copy.get("client-7"), Some(&JobId(7)));
        assert!(!copy.contains_key("new") && index.contains_key("new"));
        assert_ne!(copy, index);
        // Equal whatever the seeds that spread them: the same keys for the same jobs.
        let mut again = KeyIndex::default();
        for (key, job) in index.sorted() {
            again.insert(key.clone(), *job);
        }
        assert_eq!(again, index);
        assert_eq!(encode(&again), encode(&index));
    }
}
