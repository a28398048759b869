//! Fair share between tenants: which tenant's pending shards get the free slots, and in what
//! order. Pure: tenants' demands in, an order of grants out.
//!
//! # Rule
//! Free slots go, one shard at a time, to the tenant with the smallest weighted share
//!
//! ```text
//! share(t) = held(t) / weight(t)          held(t) = slots t runs now + slots granted so far
//! ```
//!
//! among the tenants whose next pending shard fits both the free slots and the tenant's quota
//! (`held(t) + slots ≤ quota(t)`); ties go to the smaller tenant name. This is weighted max-min
//! fairness on the one resource the cluster schedules (slots), which is what dominant-resource
//! fairness reduces to with one resource. So a tenant that submits 10,000 shards takes the
//! slots only while nobody else waits; one that submits 10 gets its fair part at once.
//! Inside a tenant, shards go in the order given (priority, then the placement score).
//! A tenant whose next shard does not fit its quota waits whole: its later, smaller shards do
//! not overtake it (that would starve large shards).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// One tenant's standing and what it waits to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantDemand {
    pub tenant: String,
    /// At least 1.
    pub weight: u32,
    /// The most slots it may hold; `None`: no quota.
    pub quota: Option<u64>,
    /// Slots its shards hold now.
    pub running: u64,
    /// Slots of each pending shard, in the order they should go.
    pub pending: Vec<u32>,
}

/// A grant: the tenant (index into the input) and its pending shard (index into `pending`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub tenant: usize,
    pub shard: usize,
}

/// A tenant's turn in the queue: smallest `held / weight` first, then smallest name.
pub struct Turn<'a> {
    /// Slots it holds, counting what was granted so far.
    pub held: u64,
    /// At least 1.
    pub weight: u64,
    pub name: &'a str,
    /// The caller's index for this tenant.
    pub index: usize,
}

impl Turn<'_> {
    /// `self.held / self.weight` against `other`'s, exactly (cross-multiplied).
    fn share_cmp(&self, other: &Self) -> Ordering {
        (u128::from(self.held) * u128::from(other.weight))
            .cmp(&(u128::from(other.held) * u128::from(self.weight)))
    }
}

impl PartialEq for Turn<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Turn<'_> {}
impl PartialOrd for Turn<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Turn<'_> {
    /// Reversed, so the max-heap pops the smallest share.
    fn cmp(&self, other: &Self) -> Ordering {
        self.share_cmp(other)
            .then_with(|| self.name.cmp(other.name))
            .then_with(|| self.index.cmp(&other.index))
            .reverse()
    }
}

/// The order in which pending shards get `free_slots`, shard by shard, by the rule above.
pub fn fair_order(tenants: &[TenantDemand], free_slots: u64) -> Vec<Grant> {
    let mut free = free_slots;
    let mut next = vec![0usize; tenants.len()];
    let mut heap = FairQueue::default();
    for (index, t) in tenants.iter().enumerate() {
        if !t.pending.is_empty() {
            heap.push(Turn {
                held: t.running,
                weight: u64::from(t.weight.max(1)),
                name: &t.tenant,
                index,
            });
        }
    }
    let mut grants = Vec::new();
    while let Some(mut turn) = heap.pop() {
        let tenant = &tenants[turn.index];
        let Some(&slots) = tenant.pending.get(next[turn.index]) else {
            continue;
        };
        let slots = u64::from(slots);
        let within_quota = tenant.quota.is_none_or(|q| turn.held + slots <= q);
        if !within_quota || slots > free {
            // This tenant waits whole this round (see the module doc).
            continue;
        }
        grants.push(Grant {
            tenant: turn.index,
            shard: next[turn.index],
        });
        free -= slots;
        next[turn.index] += 1;
        turn.held += slots;
        if next[turn.index] < tenant.pending.len() {
            heap.push(turn);
        }
        if free == 0 {
            break;
        }
    }
    grants
}

/// Tenants in turn order: the one with the smallest weighted share first.
#[derive(Default)]
pub struct FairQueue<'a> {
    heap: BinaryHeap<Turn<'a>>,
}

impl<'a> FairQueue<'a> {
    pub fn push(&mut self, turn: Turn<'a>) {
        self.heap.push(turn);
    }

    pub fn pop(&mut self) -> Option<Turn<'a>> {
        self.heap.pop()
    }

    /// How many shards of `slots` slots `turn` (just popped) may take in a row before its
    /// share passes the next tenant's: at least 1, unbounded when it is alone. Granting
    /// runs instead of single shards gives the same shares as one at a time (within one
    /// shard: a run may end level with the next tenant), with fewer turns.
    pub fn run_length(&self, turn: &Turn<'_>, slots: u64) -> u64 {
        let Some(next) = self.heap.peek() else {
            return u64::MAX;
        };
        // Largest held' with held' / turn.weight <= next.held / next.weight.
        let level = u128::from(next.held) * u128::from(turn.weight) / u128::from(next.weight);
        let room = level.saturating_sub(u128::from(turn.held)) / u128::from(slots.max(1));
        u64::try_from(room).unwrap_or(u64::MAX).saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tenant(
        name: &str,
        weight: u32,
        quota: Option<u64>,
        running: u64,
        pending: usize,
    ) -> TenantDemand {
        TenantDemand {
            tenant: name.into(),
            weight,
            quota,
            running,
            pending: vec![1; pending],
        }
    }

    /// Slots granted to each tenant.
    fn granted(tenants: &[TenantDemand], grants: &[Grant]) -> Vec<u64> {
        let mut out = vec![0u64; tenants.len()];
        for g in grants {
            out[g.tenant] += u64::from(tenants[g.tenant].pending[g.shard]);
        }
        out
    }

    #[test]
    fn a_flood_does_not_starve_a_small_tenant() {
        let tenants = [
            tenant("big", 1, None, 0, 10_000),
            tenant("small", 1, None, 0, 10),
        ];
        let got = granted(&tenants, &fair_order(&tenants, 20));
        assert_eq!(got, vec![10, 10]);
    }

    #[test]
    fn weights_share_in_proportion_and_running_work_counts() {
        let tenants = [tenant("a", 2, None, 0, 100), tenant("b", 1, None, 0, 100)];
        assert_eq!(granted(&tenants, &fair_order(&tenants, 30)), vec![20, 10]);
        // b already holds 10: the 10 free slots go to a first.
        let tenants = [tenant("a", 1, None, 0, 100), tenant("b", 1, None, 10, 100)];
        assert_eq!(granted(&tenants, &fair_order(&tenants, 10)), vec![10, 0]);
    }

    #[test]
    fn a_quota_is_never_passed_and_the_rest_goes_to_others() {
        let tenants = [
            tenant("capped", 1, Some(3), 1, 100),
            tenant("free", 1, None, 0, 100),
        ];
        assert_eq!(granted(&tenants, &fair_order(&tenants, 10)), vec![2, 8]);
    }

    #[test]
    fn a_shard_too_large_for_the_quota_holds_its_tenant_back() {
        let tenants = [TenantDemand {
            tenant: "t".into(),
            weight: 1,
            quota: Some(4),
            running: 0,
            pending: vec![8, 1, 1],
        }];
        assert!(fair_order(&tenants, 16).is_empty());
    }

    #[test]
    fn ties_go_to_the_smaller_name_in_any_input_order() {
        let a = [tenant("x", 1, None, 0, 5), tenant("y", 1, None, 0, 5)];
        let b = [tenant("y", 1, None, 0, 5), tenant("x", 1, None, 0, 5)];
        let first = |ts: &[TenantDemand]| ts[fair_order(ts, 1)[0].tenant].tenant.clone();
        assert_eq!(first(&a), "x");
        assert_eq!(first(&b), "x");
    }

    fn demands() -> impl Strategy<Value = Vec<TenantDemand>> {
        proptest::collection::vec(
            (
                1u32..5,
                proptest::option::of(0u64..40),
                0u64..20,
                proptest::collection::vec(1u32..4, 0..30),
            ),
            1..6,
        )
        .prop_map(|ts| {
            ts.into_iter()
                .enumerate()
                .map(|(i, (weight, quota, running, pending))| TenantDemand {
                    tenant: format!("t{i}"),
                    weight,
                    quota: quota.map(|q| q.max(running)),
                    running,
                    pending,
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn grants_respect_free_slots_quotas_and_tenant_order(tenants in demands(), free in 0u64..80) {
            let grants = fair_order(&tenants, free);
            let got = granted(&tenants, &grants);
            prop_assert!(got.iter().sum::<u64>() <= free);
            for (i, t) in tenants.iter().enumerate() {
                if let Some(q) = t.quota {
                    prop_assert!(t.running + got[i] <= q, "{} over its quota", t.tenant);
                }
                // Each tenant's shards go in its order, without skipping.
                let mine: Vec<usize> = grants.iter().filter(|g| g.tenant == i).map(|g| g.shard).collect();
                prop_assert_eq!(mine, (0..got_count(&grants, i)).collect::<Vec<_>>());
            }
        }

        #[test]
        fn nothing_that_fits_is_left_waiting(tenants in demands(), free in 0u64..80) {
            let grants = fair_order(&tenants, free);
            let got = granted(&tenants, &grants);
            let left = free - got.iter().sum::<u64>();
            for (i, t) in tenants.iter().enumerate() {
                let taken = got_count(&grants, i);
                if let Some(&slots) = t.pending.get(taken) {
                    let fits_quota = t.quota.is_none_or(|q| t.running + got[i] + u64::from(slots) <= q);
                    prop_assert!(!(fits_quota && u64::from(slots) <= left),
                        "{}'s next shard fits but waits", t.tenant);
                }
            }
        }

        #[test]
        fn equal_tenants_with_unit_shards_end_within_one_slot(n in 2usize..5, free in 0u64..60) {
            let tenants: Vec<TenantDemand> =
                (0..n).map(|i| tenant(&format!("t{i}"), 1, None, 0, 100)).collect();
            let got = granted(&tenants, &fair_order(&tenants, free));
            let (lo, hi) = (got.iter().min().copied().unwrap_or(0), got.iter().max().copied().unwrap_or(0));
            prop_assert!(hi - lo <= 1, "{got:?}");
        }
    }

    fn got_count(grants: &[Grant], tenant: usize) -> usize {
        grants.iter().filter(|g| g.tenant == tenant).count()
    }
}
