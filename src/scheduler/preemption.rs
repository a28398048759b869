//! Preemption: which running shards to stop so that a higher-priority shard that fits nowhere
//! can run. Pure: TaskManagers with their running shards in, a choice out.
//!
//! # Rule
//! Only shards of strictly lower priority may be stopped. On each TaskManager, candidates are
//! taken lowest priority first, then most recently started (it loses the least work), until
//! enough slots would be free; then any taken shard that is not needed after all is given
//! back, highest priority first. Of the TaskManagers where this frees enough, the one that
//! stops the fewest shards wins, then the one whose stopped shards have the lowest priorities
//! in sum, then the smaller id.
//!
//! **Guaranteed shares.** A shard of another tenant than the waiting shard's is a candidate
//! only while its tenant keeps at least its guaranteed share (`guarantee`) with every shard
//! of it taken so far stopped: a high priority buys a tenant the others' slots above their
//! shares, never the shares themselves.
//!
//! **No thrashing.** A stopped shard goes back to pending with its priority unchanged. Since
//! `A` can stop `B` only if `priority(A) > priority(B)`, `B` can never stop `A`, and no two
//! jobs stop each other in a loop; shards of equal priority never stop each other at all.
//!
//! **Which shard asks.** The waiting shards of the highest priority go first, then older
//! jobs; one that no TaskManager can make room for (a selector no agent matches, tenants at
//! their shares) lets the next try, up to `MAX_ASKERS` per call.

use super::guarantee::{guaranteed_shares, Claim};
use crate::domain::{ClusterState, JobId, TaskManager};
use std::collections::BTreeMap;

/// How many waiting jobs one call tries before it gives up until the next.
const MAX_ASKERS: usize = 16;

/// A running shard that might be stopped; `K` identifies it to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningShard<'a, K> {
    pub key: K,
    pub priority: u32,
    pub slots: u32,
    pub started_at_ms: u64,
    pub tenant: &'a str,
}

/// What the waiting shard needs, and what the other tenants may lose to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want<'a> {
    pub slots: u32,
    pub priority: u32,
    /// The waiting shard's tenant: its own shards are not protected.
    pub tenant: &'a str,
    /// Slots each other tenant holds above its guaranteed share; a tenant not named here
    /// may lose nothing.
    pub spare: &'a BTreeMap<String, u64>,
}

impl Want<'static> {
    /// A want that no guarantee limits (every running shard is the waiting shard's tenant's).
    #[cfg(test)]
    fn any(slots: u32, priority: u32) -> Self {
        static NONE_SPARE: BTreeMap<String, u64> = BTreeMap::new();
        Want {
            slots,
            priority,
            tenant: "",
            spare: &NONE_SPARE,
        }
    }
}

/// One TaskManager: its free slots and what runs on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'a, K> {
    pub taskmanager: String,
    pub free: u32,
    pub running: Vec<RunningShard<'a, K>>,
}

/// Stop `victims` on `taskmanager`, then the shard fits there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preemption<K> {
    pub taskmanager: String,
    pub victims: Vec<K>,
}

/// The shards to stop on one TaskManager for `want`, if it can be done there.
fn victims_on<'a, K: Clone + Ord>(
    host: &Candidate<'a, K>,
    want: &Want,
) -> Option<Vec<RunningShard<'a, K>>> {
    let (slots, priority) = (want.slots, want.priority);
    if host.free >= slots {
        return Some(Vec::new());
    }
    let mut candidates: Vec<&RunningShard<'a, K>> = host
        .running
        .iter()
        .filter(|r| r.priority < priority)
        .collect();
    candidates.sort_by(|a, b| {
        a.priority
            .cmp(&b.priority)
            .then(b.started_at_ms.cmp(&a.started_at_ms))
            .then(a.key.cmp(&b.key))
    });
    let mut free = u64::from(host.free);
    let mut taken: Vec<RunningShard<'a, K>> = Vec::new();
    // What each other tenant has lost to the shards taken so far.
    let mut lost: BTreeMap<&str, u64> = BTreeMap::new();
    for candidate in candidates {
        if free >= u64::from(slots) {
            break;
        }
        if candidate.tenant != want.tenant {
            // Another tenant's shard: only out of what it holds above its share.
            let spare = want.spare.get(candidate.tenant).copied().unwrap_or(0);
            let so_far = lost.entry(candidate.tenant).or_default();
            if *so_far + u64::from(candidate.slots) > spare {
                continue;
            }
            *so_far += u64::from(candidate.slots);
        }
        free += u64::from(candidate.slots);
        taken.push(candidate.clone());
    }
    if free < u64::from(slots) {
        return None;
    }
    // Give back what is not needed, highest priority (taken last) first.
    let mut i = taken.len();
    while i > 0 {
        i -= 1;
        if free - u64::from(taken[i].slots) >= u64::from(slots) {
            free -= u64::from(taken[i].slots);
            taken.remove(i);
        }
    }
    Some(taken)
}

/// How a set of victims ranks: fewer first, then the lowest priorities in sum.
fn rank<K>(victims: &[RunningShard<K>]) -> (usize, u64) {
    let sum = victims.iter().map(|r| u64::from(r.priority)).sum();
    (victims.len(), sum)
}

/// Where and what to stop so that the shard `want` describes runs, by the rule above;
/// `None` if no TaskManager can make room, or one already has it (place normally then).
pub fn choose_preemption<'h, 'a: 'h, K: Clone + Ord + 'h, I>(
    hosts: I,
    want: &Want,
) -> Option<Preemption<K>>
where
    I: IntoIterator<Item = &'h Candidate<'a, K>>,
    I::IntoIter: Clone,
{
    let hosts = hosts.into_iter();
    if hosts.clone().any(|h| h.free >= want.slots) {
        return None;
    }
    hosts
        .filter_map(|h| victims_on(h, want).map(|v| (h, v)))
        .min_by(|(ha, va), (hb, vb)| {
            rank(va)
                .cmp(&rank(vb))
                .then(ha.taskmanager.cmp(&hb.taskmanager))
        })
        .map(|(h, victims)| Preemption {
            taskmanager: h.taskmanager.clone(),
            victims: victims.into_iter().map(|r| r.key).collect(),
        })
}

/// A shard as it is held: its job, its index, and the epoch it runs in.
pub type HeldShard = (JobId, u32, u64);
/// Shards to stop so that a waiting shard can run: its job, the TaskManager, and the shards
/// with the epochs they run in. `None` when no waiting shard needs it or none can get room
/// by stopping lower-priority shards (within the other tenants' guaranteed shares).
///
/// One preemption per call, each through the log: the first waiting job (highest priority,
/// then oldest) that can get room, of at most `MAX_ASKERS` tried.
pub fn plan_preemption(
    state: &ClusterState,
    now_ms: u64,
) -> Option<(JobId, String, Vec<HeldShard>)> {
    // Only a shard of strictly lower priority than the highest waiting one may be stopped:
    // none runs, and there is nothing to search (both from indexes, no scan).
    let lowest_running = state.held_by_priority.keys().next()?;
    let highest_waiting = state
        .pending
        .ready_in_priority_order()
        .next()
        .map(|job| state.priority(job))?;
    if highest_waiting <= *lowest_running {
        return None;
    }
    let held = state.held_slots_by_tenant(now_ms);
    let askers = state.pending.ready_in_priority_order().filter(|&id| {
        let Some(job) = state.job(id) else {
            return false;
        };
        let ready =
            !job.state.is_terminal() && job.pending_shards().any(|s| s.not_before_ms <= now_ms);
        // Gangs and tenants at their quota do not preempt: the room made would not let them
        // run. (Jobs that wait for others are not in the ready queues.)
        let tenant = state.tenant(id);
        let within_quota = state.quota(tenant).slots.is_none_or(|limit| {
            held.get(tenant).copied().unwrap_or(0) + u64::from(job.spec.slots_per_shard) <= limit
        });
        // Jobs that ask for resources beyond slots do not preempt either (yet): stopping
        // shards frees slots, and the search does not weigh CPU, memory or devices.
        let eligible = !state.is_gang(id) && !state.requests.contains_key(&id);
        ready && eligible && within_quota
    });
    let mut spare: Option<BTreeMap<String, u64>> = None;
    // TaskManagers with what runs there, each made when first looked at and kept for the
    // other askers.
    let mut hosts: BTreeMap<&str, Candidate<HeldShard>> = BTreeMap::new();
    for id in askers.take(MAX_ASKERS) {
        let job = state.job(id)?;
        let spare = &*spare.get_or_insert_with(|| spare_above_shares(state, now_ms));
        let want = Want {
            slots: job.spec.slots_per_shard,
            priority: state.priority(id),
            tenant: state.tenant(id),
            spare,
        };
        let eligible: Vec<&TaskManager> = state
            .taskmanagers
            .values()
            .filter(|tm| {
                tm.accepts_placements(now_ms)
                    && tm.matches(&job.spec.selector)
                    && tm.slots >= want.slots
            })
            .collect();
        if eligible.iter().any(|tm| tm.free_slots() >= want.slots) {
            // Room exists for this one: placement, not preemption, runs it.
            return None;
        }
        // `choose_preemption`'s rule, walking the TaskManagers in id order and stopping at
        // the first that needs one victim of the lowest priority running anywhere: nothing
        // ranks better, and ties go to the smaller id. So a turn rarely looks at every
        // running shard.
        let mut best: Option<Choice> = None;
        for tm in eligible {
            let host = hosts
                .entry(tm.id.as_str())
                .or_insert_with(|| host_of(state, tm));
            let Some(victims) = victims_on(host, &want) else {
                continue;
            };
            let ranked = rank(&victims);
            if best.as_ref().is_none_or(|(b, _, _)| ranked < *b) {
                best = Some((ranked, tm.id.as_str(), victims));
            }
            if ranked == (1, u64::from(*lowest_running)) {
                break;
            }
        }
        if let Some((_, taskmanager, victims)) = best {
            let victims = victims.into_iter().map(|r| r.key).collect();
            return Some((job.id, taskmanager.to_string(), victims));
        }
    }
    None
}

/// The best preemption found so far: its rank, the TaskManager and the victims.
type Choice<'a> = ((usize, u64), &'a str, Vec<RunningShard<'a, HeldShard>>);

/// A TaskManager with its free slots and what runs there.
fn host_of<'a>(state: &'a ClusterState, tm: &TaskManager) -> Candidate<'a, HeldShard> {
    Candidate {
        taskmanager: tm.id.clone(),
        free: tm.free_slots(),
        running: state
            .assignments(&tm.id)
            .map(|(held_job, shard)| RunningShard {
                key: (held_job.id, shard.index, shard.epoch),
                priority: state.priority(held_job.id),
                slots: held_job.spec.slots_per_shard,
                started_at_ms: shard.started_at_ms.unwrap_or(u64::MAX),
                tenant: state.tenant(held_job.id),
            })
            .collect(),
    }
}

/// Slots each tenant holds above its guaranteed share: the live capacity shared by weight
/// among the tenants with work, each capped by its quota and by what its work can use.
pub fn spare_above_shares(state: &ClusterState, now_ms: u64) -> BTreeMap<String, u64> {
    let capacity: u64 = state
        .taskmanagers
        .values()
        .filter(|tm| tm.accepts_placements(now_ms))
        .map(|tm| u64::from(tm.slots))
        .sum();
    // Placed shards only: a shard already stopped (its tenant's count keeps it while its
    // process may run, for the quota) is not there to be taken again.
    let held = state.slots_held_by_tenant();
    let mut demand: BTreeMap<&str, u64> =
        held.iter().map(|(t, held)| (t.as_str(), *held)).collect();
    for (tenant, waiting) in state.pending.slots_by_tenant() {
        *demand.entry(tenant.as_str()).or_default() += waiting;
    }
    let tenants: Vec<&str> = demand.keys().copied().collect();
    let claims: Vec<Claim> = tenants
        .iter()
        .map(|t| {
            let quota = state.quota(t);
            Claim {
                weight: quota.weight,
                cap: quota.slots.map_or(demand[t], |q| q.min(demand[t])),
            }
        })
        .collect();
    let shares = guaranteed_shares(capacity, &claims);
    tenants
        .iter()
        .zip(shares)
        .filter_map(|(t, share)| {
            let above = held.get(*t).copied().unwrap_or(0).saturating_sub(share);
            (above > 0).then(|| (t.to_string(), above))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn shard(
        key: u32,
        priority: u32,
        slots: u32,
        started_at_ms: u64,
    ) -> RunningShard<'static, u32> {
        RunningShard {
            key,
            priority,
            slots,
            started_at_ms,
            tenant: "",
        }
    }

    fn host(
        name: &str,
        free: u32,
        running: Vec<RunningShard<'static, u32>>,
    ) -> Candidate<'static, u32> {
        Candidate {
            taskmanager: name.into(),
            free,
            running,
        }
    }

    #[test]
    fn the_lowest_priority_most_recently_started_shard_goes_first() {
        let hosts = [host(
            "a",
            0,
            vec![
                shard(1, 100, 1, 10),
                shard(2, 100, 1, 50),
                shard(3, 200, 1, 60),
            ],
        )];
        let chosen = choose_preemption(&hosts, &Want::any(1, 500)).expect("room can be made");
        assert_eq!(chosen.victims, vec![2]);
    }

    #[test]
    fn equal_or_higher_priority_is_never_stopped() {
        let hosts = [host("a", 0, vec![shard(1, 500, 4, 1), shard(2, 900, 4, 2)])];
        assert_eq!(choose_preemption(&hosts, &Want::any(1, 500)), None);
        assert_eq!(
            choose_preemption(&hosts, &Want::any(1, 501)).map(|p| p.victims),
            Some(vec![1])
        );
    }

    #[test]
    fn the_taskmanager_that_stops_the_fewest_wins_and_spare_victims_are_given_back() {
        let hosts = [
            host(
                "a",
                0,
                vec![shard(1, 10, 1, 1), shard(2, 10, 1, 2), shard(3, 10, 1, 3)],
            ),
            host("b", 1, vec![shard(4, 20, 1, 1), shard(5, 30, 2, 9)]),
        ];
        // Three slots: a stops three; b stops 4 then 5 (taking 4 first), then gives 4 back.
        let chosen = choose_preemption(&hosts, &Want::any(3, 100)).expect("room");
        assert_eq!(chosen.taskmanager, "b");
        assert_eq!(chosen.victims, vec![5]);
    }

    #[test]
    fn nothing_is_stopped_when_a_slot_is_free_somewhere() {
        let hosts = [host("a", 0, vec![shard(1, 1, 1, 1)]), host("b", 2, vec![])];
        assert_eq!(choose_preemption(&hosts, &Want::any(2, 1000)), None);
    }

    fn hosts() -> impl Strategy<Value = Vec<Candidate<'static, u32>>> {
        proptest::collection::vec(
            (
                0u32..3,
                proptest::collection::vec((0u32..1000, 1u32..4, 0u64..100), 0..6),
            ),
            1..5,
        )
        .prop_map(|hs| {
            let mut key = 0;
            hs.into_iter()
                .enumerate()
                .map(|(i, (free, running))| Candidate {
                    taskmanager: format!("tm-{i}"),
                    free,
                    running: running
                        .into_iter()
                        .map(|(priority, slots, started)| {
                            key += 1;
                            shard(key, priority, slots, started)
                        })
                        .collect(),
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn a_preemption_frees_enough_stops_only_lower_priority_and_nothing_spare(
            hosts in hosts(), slots in 1u32..6, priority in 0u32..1000,
        ) {
            if let Some(p) = choose_preemption(&hosts, &Want::any(slots, priority)) {
                let host = hosts.iter().find(|h| h.taskmanager == p.taskmanager).unwrap();
                let victims: Vec<&RunningShard<u32>> =
                    host.running.iter().filter(|r| p.victims.contains(&r.key)).collect();
                prop_assert_eq!(victims.len(), p.victims.len());
                prop_assert!(victims.iter().all(|v| v.priority < priority));
                let freed: u32 = victims.iter().map(|v| v.slots).sum();
                prop_assert!(host.free + freed >= slots);
                for v in &victims {
                    prop_assert!(host.free + freed - v.slots < slots, "victim {} was not needed", v.key);
                }
            } else if hosts.iter().all(|h| h.free < slots) {
                // None could make room: every host's lower-priority shards are too few.
                for h in &hosts {
                    let lower: u32 = h.running.iter().filter(|r| r.priority < priority).map(|r| r.slots).sum();
                    prop_assert!(h.free + lower < slots);
                }
            }
        }

        #[test]
        fn two_shards_never_stop_each_other(a in 0u32..1000, b in 0u32..1000) {
            let host_with = |key, p| [host("x", 0, vec![shard(key, p, 1, 0)])];
            let a_stops_b = choose_preemption(&host_with(2, b), &Want::any(1, a)).is_some();
            let b_stops_a = choose_preemption(&host_with(1, a), &Want::any(1, b)).is_some();
            prop_assert!(!(a_stops_b && b_stops_a));
        }
    }
}
