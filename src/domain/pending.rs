//! The scheduler's work list as indexes that apply keeps: jobs with pending shards filed by
//! tenant in the order the scheduler takes them (highest priority, then oldest), gangs with
//! pending shards, and the slots each tenant's pending shards ask. A planning turn then walks
//! only as far into the queues as it places, instead of sorting every waiting job, and the
//! preemption search and the gang restarts find their few candidates without a scan.
//!
//! Derived, never encoded: `ClusterState::rebuild_derived` makes it from the pending work
//! list, and `ClusterState::reindex_pending` keeps it in step each time a job's pending
//! shards, or whether it waits for another job, may have changed.

use super::ids::JobId;
use super::job::ShardState;
use super::state::ClusterState;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A job's place in a queue: highest priority first, then oldest (smallest id).
pub type QueueKey = (Reverse<u32>, JobId);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingIndex {
    /// Jobs with pending shards that wait for no unfinished job, per tenant (tenants with
    /// none left out).
    ready: BTreeMap<String, BTreeSet<QueueKey>>,
    /// Gangs with pending shards, ready or not.
    gangs: BTreeSet<QueueKey>,
    /// Slots that the pending shards (ready or not) of each tenant's jobs ask.
    slots: BTreeMap<String, u64>,
    /// Where each indexed job is filed.
    entries: BTreeMap<JobId, Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Shared, so that a copy of the index (a snapshot's) copies no name.
    tenant: Arc<str>,
    priority: u32,
    ready: bool,
    gang: bool,
    slots: u64,
}

impl PendingIndex {
    fn remove(&mut self, job: JobId) -> Option<Entry> {
        let entry = self.entries.remove(&job)?;
        let key = (Reverse(entry.priority), job);
        if entry.ready {
            if let Some(queue) = self.ready.get_mut(&*entry.tenant) {
                queue.remove(&key);
                if queue.is_empty() {
                    self.ready.remove(&*entry.tenant);
                }
            }
        }
        if entry.gang {
            self.gangs.remove(&key);
        }
        if let Some(slots) = self.slots.get_mut(&*entry.tenant) {
            *slots = slots.saturating_sub(entry.slots);
            if *slots == 0 {
                self.slots.remove(&*entry.tenant);
            }
        }
        Some(entry)
    }

    fn insert(&mut self, job: JobId, entry: Entry) {
        let key = (Reverse(entry.priority), job);
        if entry.ready {
            self.ready
                .entry(entry.tenant.to_string())
                .or_default()
                .insert(key);
        }
        if entry.gang {
            self.gangs.insert(key);
        }
        if entry.slots > 0 {
            *self.slots.entry(entry.tenant.to_string()).or_default() += entry.slots;
        }
        self.entries.insert(job, entry);
    }

    /// The tenants that have ready jobs, by name.
    pub fn ready_tenants(&self) -> impl Iterator<Item = &str> + '_ {
        self.ready.keys().map(String::as_str)
    }

    /// A tenant's ready jobs, highest priority first, then oldest.
    pub fn ready_of<'a>(&'a self, tenant: &str) -> impl Iterator<Item = JobId> + 'a {
        self.ready
            .get(tenant)
            .into_iter()
            .flat_map(|queue| queue.iter().map(|(_, job)| *job))
    }

    /// Every ready job, highest priority first, then oldest: the tenants' queues merged.
    pub fn ready_in_priority_order(&self) -> impl Iterator<Item = JobId> + '_ {
        let mut heads: Vec<_> = self
            .ready
            .values()
            .map(|queue| queue.iter().peekable())
            .collect();
        std::iter::from_fn(move || {
            let next = heads
                .iter_mut()
                .enumerate()
                .filter_map(|(i, queue)| queue.peek().map(|key| (**key, i)))
                .min()?;
            heads[next.1].next();
            Some(next.0 .1)
        })
    }

    /// Whether any job is ready.
    pub fn any_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Gangs with pending shards (ready or not), highest priority first, then oldest.
    pub fn gangs(&self) -> impl Iterator<Item = JobId> + '_ {
        self.gangs.iter().map(|(_, job)| *job)
    }

    /// Slots asked by each tenant's pending shards, tenants asking none left out.
    pub fn slots_by_tenant(&self) -> &BTreeMap<String, u64> {
        &self.slots
    }
}

impl ClusterState {
    /// File `job` in the pending index as it stands now: where it belongs if it has pending
    /// shards, nowhere if not. Cheap when nothing but its count of pending shards changed.
    pub fn reindex_pending(&mut self, job: JobId) {
        let found = self
            .jobs_with_pending_shards
            .contains(&job)
            .then(|| self.job(job))
            .flatten()
            .map(|j| {
                u64::from(j.counts.get(ShardState::Pending))
                    .saturating_mul(u64::from(j.spec.slots_per_shard))
            });
        let Some(slots) = found else {
            self.pending.remove(job);
            return;
        };
        // The field, not `tenant()`: only `scheduling` stays borrowed below.
        let tenant = self
            .scheduling
            .get(&job)
            .map_or(super::DEFAULT_TENANT, |s| s.tenant.as_str());
        let priority = self.priority(job);
        let ready = self.unfinished_dependency(job).is_none();
        let gang = self.is_gang(job);
        if let Some(entry) = self.pending.entries.get_mut(&job) {
            if *entry.tenant == *tenant
                && entry.priority == priority
                && entry.ready == ready
                && entry.gang == gang
            {
                if entry.slots != slots {
                    let total = self.pending.slots.entry(tenant.to_string()).or_default();
                    *total = total.saturating_sub(entry.slots).saturating_add(slots);
                    if *total == 0 {
                        self.pending.slots.remove(tenant);
                    }
                    entry.slots = slots;
                }
                return;
            }
        }
        let entry = Entry {
            tenant: Arc::from(tenant),
            priority,
            ready,
            gang,
            slots,
        };
        self.pending.remove(job);
        self.pending.insert(job, entry);
    }

    /// Put `job` on the pending work list or take it off, and index it.
    pub fn set_pending(&mut self, job: JobId, waiting: bool) {
        if waiting {
            self.jobs_with_pending_shards.insert(job);
        } else {
            self.jobs_with_pending_shards.remove(&job);
        }
        self.reindex_pending(job);
    }

    /// The index made afresh from the pending work list.
    pub(super) fn rebuild_pending_index(&mut self) {
        self.pending = PendingIndex::default();
        let jobs: Vec<JobId> = self.jobs_with_pending_shards.iter().copied().collect();
        for job in jobs {
            self.reindex_pending(job);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tenant: &str, priority: u32, ready: bool, gang: bool, slots: u64) -> Entry {
        Entry {
            tenant: Arc::from(tenant),
            priority,
            ready,
            gang,
            slots,
        }
    }

    #[test]
    fn queues_merge_by_priority_then_age_across_tenants() {
        let mut index = PendingIndex::default();
        index.insert(JobId(1), entry("a", 10, true, false, 1));
        index.insert(JobId(2), entry("b", 50, true, false, 2));
        index.insert(JobId(3), entry("a", 50, true, true, 4));
        index.insert(JobId(4), entry("b", 10, false, true, 8));
        index.insert(JobId(5), entry("c", 10, true, false, 0));
        let order: Vec<u64> = index.ready_in_priority_order().map(|j| j.0).collect();
        assert_eq!(order, vec![2, 3, 1, 5]);
        let of_a: Vec<u64> = index.ready_of("a").map(|j| j.0).collect();
        assert_eq!(of_a, vec![3, 1]);
        let gangs: Vec<u64> = index.gangs().map(|j| j.0).collect();
        assert_eq!(gangs, vec![3, 4]);
        assert_eq!(index.slots_by_tenant().get("b"), Some(&10));
        assert_eq!(index.slots_by_tenant().get("c"), None);
        index.remove(JobId(2));
        index.remove(JobId(4));
        assert_eq!(index.slots_by_tenant().get("b"), None);
        assert_eq!(index.ready_tenants().collect::<Vec<_>>(), vec!["a", "c"]);
    }
}
