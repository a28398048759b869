//! Guaranteed shares: how many slots each tenant keeps however high the priority of another
//! tenant's waiting work. Pure: capacity and tenants' claims in, shares out.
//!
//! # Rule
//! The live capacity (slots of the TaskManagers that take placements) is divided among the
//! tenants that have work (running or waiting) in proportion to their weights, weighted
//! max-min ("water-filling"): a tenant never gets more than its cap (its quota, and what its
//! work can use), and what it cannot use goes to the others by weight. Preemption across
//! tenants (`preemption`) stops another tenant's shard only while that tenant keeps at least
//! its guaranteed share; shards of the waiting shard's own tenant are not protected (it
//! trades its own low priority for its own high one).
//!
//! Shares are rounded down, so a tenant may be guaranteed up to one slot less than its exact
//! share; what the rounding leaves is nobody's guarantee.

/// One tenant's claim on the capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// At least 1.
    pub weight: u32,
    /// The most it could use: its quota, and the slots of its running and waiting work.
    pub cap: u64,
}

/// Each claim's guaranteed slots, by the rule above, in the claims' order.
pub fn guaranteed_shares(capacity: u64, claims: &[Claim]) -> Vec<u64> {
    let mut share = vec![0u64; claims.len()];
    let mut open: Vec<usize> = (0..claims.len()).filter(|&i| claims[i].cap > 0).collect();
    let mut left = capacity;
    while !open.is_empty() && left > 0 {
        let total: u128 = open
            .iter()
            .map(|&i| u128::from(claims[i].weight.max(1)))
            .sum();
        let fair = |i: usize| -> u64 {
            let exact = u128::from(left) * u128::from(claims[i].weight.max(1)) / total;
            u64::try_from(exact).unwrap_or(u64::MAX)
        };
        // Tenants whose cap is below their fair part take their cap; the rest is shared again.
        let (full, rest): (Vec<usize>, Vec<usize>) = open
            .iter()
            .partition(|&&i| claims[i].cap - share[i] <= fair(i));
        if full.is_empty() {
            for &i in &rest {
                share[i] += fair(i);
            }
            break;
        }
        for &i in &full {
            left -= claims[i].cap - share[i];
            share[i] = claims[i].cap;
        }
        open = rest;
    }
    share
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn claim(weight: u32, cap: u64) -> Claim {
        Claim { weight, cap }
    }

    #[test]
    fn weights_divide_the_capacity() {
        let shares = guaranteed_shares(24, &[claim(1, 100), claim(2, 100), claim(1, 100)]);
        assert_eq!(shares, vec![6, 12, 6]);
    }

    #[test]
    fn what_a_capped_tenant_cannot_use_goes_to_the_others() {
        // a's quota is 2: b and c share the other 22.
        let shares = guaranteed_shares(24, &[claim(1, 2), claim(1, 100), claim(1, 100)]);
        assert_eq!(shares, vec![2, 11, 11]);
    }

    #[test]
    fn a_tenant_without_work_is_guaranteed_nothing() {
        let shares = guaranteed_shares(10, &[claim(5, 0), claim(1, 100)]);
        assert_eq!(shares, vec![0, 10]);
    }

    proptest! {
        #[test]
        fn shares_fit_the_capacity_and_the_caps_and_leave_little(
            capacity in 0u64..200,
            claims in proptest::collection::vec((1u32..10, 0u64..80), 0..8),
        ) {
            let claims: Vec<Claim> = claims.into_iter().map(|(w, c)| claim(w, c)).collect();
            let shares = guaranteed_shares(capacity, &claims);
            prop_assert!(shares.iter().sum::<u64>() <= capacity);
            for (s, c) in shares.iter().zip(&claims) {
                prop_assert!(*s <= c.cap);
            }
            // Only rounding is left over when the tenants could use more.
            let wanted: u64 = claims.iter().map(|c| c.cap).sum();
            let given: u64 = shares.iter().sum();
            if wanted >= capacity {
                prop_assert!(capacity - given < claims.len() as u64 + 1, "{shares:?} of {capacity}");
            } else {
                prop_assert_eq!(given, wanted);
            }
        }

        #[test]
        fn a_heavier_tenant_is_never_guaranteed_less_when_both_could_use_more(
            capacity in 0u64..200, w in 1u32..10,
        ) {
            let shares = guaranteed_shares(capacity, &[claim(w, 1_000), claim(w + 1, 1_000)]);
            prop_assert!(shares[0] <= shares[1]);
        }
    }
}
