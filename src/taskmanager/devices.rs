//! The agent's named resources (`--resources gpu=2`) as device indices: a run that asks for
//! `gpu=1` is handed index 0 or 1, told in `DISPATCHER_RESOURCE_GPU`, and gives it back
//! when its process is gone. The cluster counts; the agent says which.
//!
//! A run whose indices are still held by a run being stopped (the cluster freed them at the
//! stop, the process may take its grace to exit) waits for them rather than share a device.
//! Resources declared with more than `MAX_INDEXED` units are counted only (no indices).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Resources with more units than this get no indices (a count, not devices).
pub const MAX_INDEXED: u64 = 4096;

pub struct DevicePool {
    capacity: BTreeMap<String, u64>,
    free: Mutex<BTreeMap<String, BTreeSet<u32>>>,
    returned: Notify,
}

/// Indices a run holds; given back when dropped.
pub struct DeviceLease {
    pool: Arc<DevicePool>,
    held: BTreeMap<String, Vec<u32>>,
}

impl DevicePool {
    pub fn new(named: &BTreeMap<String, u64>) -> Arc<Self> {
        let free = named
            .iter()
            .filter(|(_, count)| **count <= MAX_INDEXED)
            .map(|(name, count)| (name.clone(), (0..*count as u32).collect()))
            .collect();
        Arc::new(DevicePool {
            capacity: named.clone(),
            free: Mutex::new(free),
            returned: Notify::new(),
        })
    }

    /// Take the lowest free indices of each resource `asked` names, waiting while another
    /// run still holds them. Refused when this agent has fewer in all than asked.
    pub async fn take(
        self: &Arc<Self>,
        asked: &BTreeMap<String, u64>,
    ) -> Result<DeviceLease, String> {
        for (name, count) in asked {
            let have = self.capacity.get(name).copied().unwrap_or(0);
            if *count > have {
                return Err(format!(
                    "the shard asks for {name}={count}; this TaskManager has {name}={have}"
                ));
            }
        }
        loop {
            let returned = self.returned.notified();
            if let Some(lease) = self.try_take(asked) {
                return Ok(lease);
            }
            returned.await;
        }
    }

    fn try_take(self: &Arc<Self>, asked: &BTreeMap<String, u64>) -> Option<DeviceLease> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let enough = asked.iter().all(|(name, count)| match free.get(name) {
            Some(indices) => indices.len() as u64 >= *count,
            None => true, // counted only
        });
        if !enough {
            return None;
        }
        let mut held = BTreeMap::new();
        for (name, count) in asked {
            if let Some(indices) = free.get_mut(name) {
                let taken: Vec<u32> = indices.iter().take(*count as usize).copied().collect();
                for index in &taken {
                    indices.remove(index);
                }
                held.insert(name.clone(), taken);
            }
        }
        Some(DeviceLease {
            pool: self.clone(),
            held,
        })
    }
}

impl DeviceLease {
    /// `DISPATCHER_RESOURCE_<NAME>=i,j` for each resource held (name upper-cased, `-` as `_`).
    pub fn env(&self) -> Vec<(String, String)> {
        self.held
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

impl Drop for DeviceLease {
    fn drop(&mut self) {
        let mut free = self.pool.free.lock().unwrap_or_else(|p| p.into_inner());
        for (name, indices) in std::mem::take(&mut self.held) {
            if let Some(pool) = free.get_mut(&name) {
                pool.extend(indices);
            }
        }
        drop(free);
        self.pool.returned.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_get_distinct_indices_and_wait_for_a_held_one() {
        let pool = DevicePool::new(&[("gpu".to_string(), 2)].into());
        let one: BTreeMap<String, u64> = [("gpu".to_string(), 1)].into();
        let a = pool.take(&one).await.expect("first");
        let b = pool.take(&one).await.expect("second");
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
            let one = one.clone();
            async move { pool.take(&one).await.map(|lease| lease.env()) }
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
        let three: BTreeMap<String, u64> = [("gpu".to_string(), 3)].into();
        assert!(pool.take(&three).await.is_err(), "more than the agent has");
        drop(a);
    }
}
