//! What the agent lets run at once: never more slots, CPU, memory or named resources than it
//! declared, counted over every run whose process is still alive, including runs being
//! stopped. The cluster frees a stopped run's room at once (a preempted or cancelled shard,
//! a drain past its deadline); the process may take its stop grace to exit, and a shard
//! placed into that room waits here for it instead of running beside it.
//!
//! Named resources are also device indices: a run that asks for `gpu=1` is handed index 0 or
//! 1, told in `DISPATCHER_RESOURCE_GPU`, and gives it back when its process is gone.
//! Resources declared with more than `MAX_INDEXED` units are counted only (no indices).

use crate::domain::Resources;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Resources with more units than this get no indices (a count, not devices).
pub const MAX_INDEXED: u64 = 4096;

pub struct LocalCapacity {
    slots: u64,
    capacity: Resources,
    held: Mutex<Held>,
    returned: Notify,
}

#[derive(Default)]
struct Held {
    slots: u64,
    resources: Resources,
    /// Free device indices per indexed resource.
    free_indices: BTreeMap<String, BTreeSet<u32>>,
}

/// What one run holds; given back when dropped.
pub struct Holding {
    pool: Arc<LocalCapacity>,
    slots: u64,
    resources: Resources,
    indices: BTreeMap<String, Vec<u32>>,
}

impl LocalCapacity {
    pub fn new(slots: u32, capacity: &Resources) -> Arc<Self> {
        let free_indices = capacity
            .named
            .iter()
            .filter(|(_, count)| **count <= MAX_INDEXED)
            .map(|(name, count)| (name.clone(), (0..*count as u32).collect()))
            .collect();
        Arc::new(LocalCapacity {
            slots: u64::from(slots),
            capacity: capacity.clone(),
            held: Mutex::new(Held {
                free_indices,
                ..Held::default()
            }),
            returned: Notify::new(),
        })
    }

    /// Take `slots` slots and `asked`, waiting while runs still alive hold them. Refused
    /// when this agent has less in all than asked.
    pub async fn take(self: &Arc<Self>, slots: u64, asked: &Resources) -> Result<Holding, String> {
        let over = asked.over(&Resources::default(), &self.capacity);
        if slots > self.slots || !over.is_empty() {
            return Err(format!(
                "the shard asks for {slots} slots and {asked}; this TaskManager has {} slots \
                 and {} in all",
                self.slots, self.capacity
            ));
        }
        loop {
            let returned = self.returned.notified();
            if let Some(holding) = self.try_take(slots, asked) {
                return Ok(holding);
            }
            returned.await;
        }
    }

    fn try_take(self: &Arc<Self>, slots: u64, asked: &Resources) -> Option<Holding> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.slots + slots > self.slots || !asked.fits(&held.resources, &self.capacity) {
            return None;
        }
        let mut indices = BTreeMap::new();
        for (name, count) in &asked.named {
            if let Some(free) = held.free_indices.get_mut(name) {
                let taken: Vec<u32> = free.iter().take(*count as usize).copied().collect();
                for index in &taken {
                    free.remove(index);
                }
                indices.insert(name.clone(), taken);
            }
        }
        held.slots += slots;
        held.resources.add_times(asked, 1);
        Some(Holding {
            pool: self.clone(),
            slots,
            resources: asked.clone(),
            indices,
        })
    }
}

impl Holding {
    /// `DISPATCHER_RESOURCE_<NAME>=i,j` for each indexed resource held (name upper-cased,
    /// `-` as `_`).
    pub fn env(&self) -> Vec<(String, String)> {
        self.indices
            .iter()
            .map(|(name, indices)| {
                let list: Vec<String> = indices.iter().map(u32::to_string).collect();
                (
                    format!(
                        "DISPATCHER_RESOURCE_{}",
                        name.to_ascii_uppercase().replace('-', "_")
                    ),
                    list.join(","),
                )
            })
            .collect()
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        let mut held = self.pool.held.lock().unwrap_or_else(|p| p.into_inner());
        held.slots = held.slots.saturating_sub(self.slots);
        held.resources.subtract(&self.resources);
        for (name, indices) in std::mem::take(&mut self.indices) {
            if let Some(free) = held.free_indices.get_mut(&name) {
                free.extend(indices);
            }
        }
        drop(held);
        self.pool.returned.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpus(n: u64) -> Resources {
        Resources {
            named: [("gpu".to_string(), n)].into(),
            ..Resources::default()
        }
    }

    #[tokio::test]
    async fn runs_get_distinct_indices_and_wait_for_a_held_one() {
        let pool = LocalCapacity::new(8, &gpus(2));
        let a = pool.take(1, &gpus(1)).await.expect("first");
        let b = pool.take(1, &gpus(1)).await.expect("second");
        assert_eq!(
            a.env(),
            vec![("DISPATCHER_RESOURCE_GPU".into(), "0".into())]
        );
        assert_eq!(
            b.env(),
            vec![("DISPATCHER_RESOURCE_GPU".into(), "1".into())]
        );
        let waiting = tokio::spawn({
            let pool = pool.clone();
            async move { pool.take(1, &gpus(1)).await.map(|lease| lease.env()) }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no index is free");
        drop(b);
        let env = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the freed index is handed on")
            .expect("task")
            .expect("taken");
        assert_eq!(env, vec![("DISPATCHER_RESOURCE_GPU".into(), "1".into())]);
        assert!(
            pool.take(1, &gpus(3)).await.is_err(),
            "more than the agent has"
        );
        drop(a);
    }

    #[tokio::test]
    async fn a_run_waits_for_the_slots_of_one_still_stopping() {
        let pool = LocalCapacity::new(2, &Resources::default());
        let stopping = pool
            .take(2, &Resources::default())
            .await
            .expect("both slots");
        let newcomer = tokio::spawn({
            let pool = pool.clone();
            async move { pool.take(1, &Resources::default()).await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        assert!(
            !newcomer.is_finished(),
            "it waits while the old run's process lives"
        );
        drop(stopping);
        tokio::time::timeout(std::time::Duration::from_secs(5), newcomer)
            .await
            .expect("then it starts")
            .expect("task")
            .expect("taken");
        assert!(pool.take(3, &Resources::default()).await.is_err());
    }
}
