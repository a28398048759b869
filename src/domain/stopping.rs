//! Room that stopped shards still hold in their tenant's count. A shard put back to pending
//! while its process may still run (preempted, its gang restarted, its TaskManager drained)
//! is not surely stopped before its agent's lease and stop grace have passed; until then its
//! slots and resources stay counted against its tenant's quota, so that the tenant's other
//! shards cannot take it past the quota meanwhile. (On the TaskManager the room goes to the
//! next shard at once: its agent starts that one only once the stopped processes are gone.)
//!
//! Holds are kept by tenant and by the moment they run out, so a tenant's count costs one
//! entry per stop decision, not one per shard. Whether a hold still counts depends on the
//! time the caller is at (apply's stamped time, or the planner's): an expired hold that
//! apply has not pruned yet counts for nobody.

use super::resources::Resources;
use super::state::ClusterState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What one tenant's stopped shards hold until one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub slots: u64,
    pub resources: Resources,
}

/// Tenant → until when (ms) → what is held until then.
pub type StoppingHolds = BTreeMap<String, BTreeMap<u64, Held>>;

impl ClusterState {
    /// Keep `slots` and `resources` counted for `tenant` until `until_ms`.
    pub fn hold_until(
        &mut self,
        tenant: &str,
        until_ms: u64,
        slots: u64,
        resources: Option<&Resources>,
    ) {
        let held = self
            .stopping
            .entry(tenant.to_string())
            .or_default()
            .entry(until_ms)
            .or_default();
        held.slots = held.slots.saturating_add(slots);
        if let Some(resources) = resources {
            held.resources.add_times(resources, 1);
        }
    }

    /// Forget the holds that ran out by `now_ms`.
    pub fn expire_holds(&mut self, now_ms: u64) {
        self.stopping.retain(|_, holds| {
            *holds = holds.split_off(&now_ms.saturating_add(1));
            !holds.is_empty()
        });
    }

    /// What `tenant` holds at `now_ms`: its placed shards' slots and resources, and those of
    /// its stopped shards whose hold still runs.
    pub fn tenant_held(&self, tenant: &str, now_ms: u64) -> (u64, Resources) {
        let mut slots = self.tenant_slots.get(tenant).copied().unwrap_or(0);
        let mut resources = self
            .tenant_resources
            .get(tenant)
            .cloned()
            .unwrap_or_default();
        for (_, held) in self
            .stopping
            .get(tenant)
            .into_iter()
            .flat_map(|holds| holds.range(now_ms.saturating_add(1)..))
        {
            slots = slots.saturating_add(held.slots);
            resources.add_times(&held.resources, 1);
        }
        (slots, resources)
    }

    /// Slots held at `now_ms` by each tenant holding any (placed or stopping).
    pub fn held_slots_by_tenant(&self, now_ms: u64) -> BTreeMap<String, u64> {
        let mut held = self.tenant_slots.clone();
        for tenant in self.stopping.keys() {
            let (slots, _) = self.tenant_held(tenant, now_ms);
            if slots > 0 {
                held.insert(tenant.clone(), slots);
            }
        }
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_counts_until_its_moment_and_is_pruned_after() {
        let mut state = ClusterState::default();
        state.tenant_slots.insert("a".into(), 3);
        state.hold_until("a", 100, 2, None);
        state.hold_until("a", 200, 1, None);
        state.hold_until("b", 100, 4, None);
        assert_eq!(state.tenant_held("a", 50).0, 6);
        assert_eq!(
            state.tenant_held("a", 100).0,
            4,
            "a hold ends at its moment"
        );
        assert_eq!(state.tenant_held("b", 99).0, 4);
        assert_eq!(state.held_slots_by_tenant(150).get("b"), None);
        state.expire_holds(100);
        assert_eq!(state.stopping.get("a").map(BTreeMap::len), Some(1));
        assert!(!state.stopping.contains_key("b"));
        state.expire_holds(200);
        assert!(state.stopping.is_empty());
    }
}
