//! Tenants' shares for fair share, and their room within their quotas, as one planning round
//! uses them up.
//!
//! With slots alone (no job asks for resources and no tenant has a resource limit), a
//! tenant's share is the slots it holds, as before resources existed. Otherwise it is its
//! *dominant share* (weighted dominant-resource fairness, Ghodsi et al., NSDI 2011): the
//! largest fraction it holds of the cluster's slots, CPU, memory or any named resource, in
//! billionths. Fair share then evens out dominant shares by weight, so a tenant of
//! GPU-heavy shards and one of CPU-heavy shards each get their part of what they need most.

use crate::domain::{ClusterState, JobId, Resources, TaskManagerState};
use std::collections::{BTreeMap, BTreeSet};

/// Shares are in billionths of the cluster.
const SCALE: u128 = 1_000_000_000;

/// What the cluster has in all, in each dimension (TaskManagers that are not lost).
#[derive(Debug, Default)]
struct Totals {
    slots: u64,
    resources: Resources,
}

pub struct ShareMeter<'a> {
    state: &'a ClusterState,
    dominant: bool,
    totals: Totals,
    /// Per tenant: slots held and resources held, counting this round's grants.
    usage: BTreeMap<&'a str, (u64, Resources)>,
}

impl<'a> ShareMeter<'a> {
    /// `now_ms`: stopped shards count for their tenants while their holds run.
    pub fn new(
        state: &'a ClusterState,
        tenants: impl Iterator<Item = &'a str>,
        now_ms: u64,
    ) -> Self {
        let dominant = !state.requests.is_empty() || !state.resource_quotas.is_empty();
        let mut totals = Totals::default();
        for tm in state.taskmanagers.values() {
            if tm.state == TaskManagerState::Lost {
                continue;
            }
            totals.slots += u64::from(tm.slots);
            if let Some(declared) = state.tm_resources.get(&tm.id) {
                totals.resources.add_times(&declared.capacity, 1);
            }
        }
        let usage = tenants
            .map(|tenant| (tenant, state.tenant_held(tenant, now_ms)))
            .collect();
        ShareMeter {
            state,
            dominant,
            totals,
            usage,
        }
    }

    /// The share of (slots, resources) held: slots alone, or the dominant share.
    fn share_of(&self, slots: u64, resources: &Resources) -> u64 {
        if !self.dominant {
            return slots;
        }
        let fraction = |held: u64, total: u64| {
            if total == 0 {
                0
            } else {
                u128::from(held) * SCALE / u128::from(total)
            }
        };
        let totals = &self.totals.resources;
        let mut share = fraction(slots, self.totals.slots)
            .max(fraction(resources.cpu_millis, totals.cpu_millis))
            .max(fraction(resources.memory_bytes, totals.memory_bytes));
        for (name, held) in &resources.named {
            share = share.max(fraction(
                *held,
                totals.named.get(name).copied().unwrap_or(0),
            ));
        }
        u64::try_from(share).unwrap_or(u64::MAX)
    }

    /// A tenant's share now, counting this round's grants.
    pub fn share(&self, tenant: &str) -> u64 {
        self.usage
            .get(tenant)
            .map_or(0, |(slots, resources)| self.share_of(*slots, resources))
    }

    /// What one shard of `job` adds to a share, at least 1 (for run lengths).
    pub fn cost_of_one(&self, job: JobId) -> u64 {
        let slots = self
            .state
            .job(job)
            .map_or(1, |j| u64::from(j.spec.slots_per_shard));
        let empty = Resources::default();
        let asked = self.state.asked_resources(job).unwrap_or(&empty);
        self.share_of(slots, asked).max(1)
    }

    /// How many more shards of `job` its tenant's quota lets it hold (slots and every
    /// resource limit); `None` when the job is gone.
    pub fn room_within_quota(&self, tenant: &str, job: JobId) -> Option<u64> {
        let state = self.state;
        let slots_per_shard = u64::from(state.job(job)?.spec.slots_per_shard);
        let empty = (0, Resources::default());
        let (held_slots, held) = self.usage.get(tenant).unwrap_or(&empty);
        let mut room = u64::MAX;
        let mut limit_by = |limit: u64, held: u64, per_shard: u64| {
            if limit > 0 && per_shard > 0 {
                room = room.min(limit.saturating_sub(held) / per_shard);
            }
        };
        if let Some(limit) = state.quota(tenant).slots {
            if limit == 0 {
                return Some(0);
            }
            limit_by(limit, *held_slots, slots_per_shard);
        }
        if let (Some(limits), Some(asked)) = (
            state.resource_quotas.get(tenant),
            state.asked_resources(job),
        ) {
            limit_by(limits.cpu_millis, held.cpu_millis, asked.cpu_millis);
            limit_by(limits.memory_bytes, held.memory_bytes, asked.memory_bytes);
            for (name, limit) in &limits.named {
                let per_shard = asked.named.get(name).copied().unwrap_or(0);
                limit_by(
                    *limit,
                    held.named.get(name).copied().unwrap_or(0),
                    per_shard,
                );
            }
        }
        Some(room)
    }

    /// The dimensions (`slots`, `cpu`, `memory`, a resource name) in which `shards` more
    /// shards of `job` would take `tenant` past its limits.
    pub fn exhausted(&self, tenant: &str, job: JobId, shards: u64) -> BTreeSet<String> {
        let state = self.state;
        let mut full = BTreeSet::new();
        let Some(slots_per_shard) = state.job(job).map(|j| u64::from(j.spec.slots_per_shard))
        else {
            return full;
        };
        let empty = (0, Resources::default());
        let (held_slots, held) = self.usage.get(tenant).unwrap_or(&empty);
        let over = |limit: u64, held: u64, per_shard: u64| {
            limit > 0
                && per_shard > 0
                && held.saturating_add(per_shard.saturating_mul(shards)) > limit
        };
        if let Some(limit) = state.quota(tenant).slots {
            if limit == 0 || over(limit, *held_slots, slots_per_shard) {
                full.insert("slots".to_string());
            }
        }
        if let (Some(limits), Some(asked)) = (
            state.resource_quotas.get(tenant),
            state.asked_resources(job),
        ) {
            if over(limits.cpu_millis, held.cpu_millis, asked.cpu_millis) {
                full.insert("cpu".to_string());
            }
            if over(limits.memory_bytes, held.memory_bytes, asked.memory_bytes) {
                full.insert("memory".to_string());
            }
            for (name, limit) in &limits.named {
                let per_shard = asked.named.get(name).copied().unwrap_or(0);
                if over(
                    *limit,
                    held.named.get(name).copied().unwrap_or(0),
                    per_shard,
                ) {
                    full.insert(name.clone());
                }
            }
        }
        full
    }

    /// Whether `shards` shards of `job` fit within its tenant's slot quota at all, whatever
    /// the tenant holds now.
    pub fn could_ever_fit(&self, tenant: &str, job: JobId, shards: u64) -> bool {
        let Some(slots) = self
            .state
            .job(job)
            .map(|j| u64::from(j.spec.slots_per_shard))
        else {
            return false;
        };
        self.state
            .quota(tenant)
            .slots
            .is_none_or(|limit| slots.saturating_mul(shards) <= limit)
    }

    /// Whether a shard of `job` asks for any of `dimensions` (every shard takes slots).
    pub fn asks_any(&self, job: JobId, dimensions: &BTreeSet<String>) -> bool {
        if dimensions.contains("slots") {
            return true;
        }
        let Some(asked) = self.state.asked_resources(job) else {
            return false;
        };
        dimensions.iter().any(|dimension| match dimension.as_str() {
            "cpu" => asked.cpu_millis > 0,
            "memory" => asked.memory_bytes > 0,
            name => asked.named.get(name).is_some_and(|n| *n > 0),
        })
    }

    /// Leave out of `tenant`'s usage what its ending shards hold (`slots`, `resources`).
    pub fn release(&mut self, tenant: &str, slots: u64, resources: &Resources) {
        if let Some((held_slots, held)) = self.usage.get_mut(tenant) {
            *held_slots = held_slots.saturating_sub(slots);
            held.subtract(resources);
        }
    }

    /// Count `shards` more shards of `job` as held by `tenant`.
    pub fn grant(&mut self, tenant: &'a str, job: JobId, shards: u64) {
        if shards == 0 {
            return;
        }
        let state = self.state;
        let slots = state
            .job(job)
            .map_or(0, |j| u64::from(j.spec.slots_per_shard));
        let entry = self.usage.entry(tenant).or_default();
        entry.0 += slots * shards;
        if let Some(asked) = state.asked_resources(job) {
            entry.1.add_times(asked, shards);
        }
    }
}
