//! A TaskManager (worker) as the replicated state knows it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Labels a TaskManager carries and a job may select on.
pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskManagerState {
    /// Registered and eligible for placements.
    Alive,
    /// Takes no new placements; its running shards are left to finish.
    Draining,
    /// Declared lost by the leader; holds no shards.
    Lost,
}

impl TaskManagerState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskManagerState::Alive => "alive",
            TaskManagerState::Draining => "draining",
            TaskManagerState::Lost => "lost",
        }
    }
}

/// What the scheduler has observed of a TaskManager's shard runs. Times are milliseconds of
/// shard run time, stamped by the leader into the commands that report them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStats {
    /// Shard runs that ended (finished or failed).
    pub runs: u64,
    /// Total run time of those runs.
    pub run_time_ms: u64,
    /// Runs that ended in failure.
    pub failures: u64,
}

impl RunStats {
    /// Mean run time of a shard here, if any shard has ended here.
    pub fn mean_run_ms(&self) -> Option<f64> {
        (self.runs > 0).then(|| self.run_time_ms as f64 / self.runs as f64)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskManager {
    pub id: String,
    /// Where the TaskManager's agent listens (host:port), as it registered.
    pub addr: String,
    pub slots: u32,
    /// Slots held by shards assigned here that have not ended. Kept in step by apply.
    pub used_slots: u32,
    pub labels: Labels,
    pub state: TaskManagerState,
    /// Bumped every time the TaskManager registers again, so that a restarted agent can be
    /// told apart from its previous life.
    pub registration_epoch: u64,
    /// The agent process holding the id (random per process; 0 when unknown).
    pub incarnation: u64,
    pub registered_at_ms: u64,
    /// When it was declared lost (cleared when it registers again); retention forgets
    /// TaskManagers lost this long ago, so ids that come and go do not pile up.
    pub lost_at_ms: Option<u64>,
    pub stats: RunStats,
    /// Times of the most recent failed runs here (at most `RECENT_FAILURES_KEPT`).
    pub recent_failures_ms: Vec<u64>,
    /// Kept out of placement until this time after failing too often (0 = never excluded).
    pub excluded_until_ms: u64,
    /// While draining: when running shards are stopped and re-placed if not done by then.
    pub drain_deadline_ms: Option<u64>,
}

impl TaskManager {
    pub fn free_slots(&self) -> u32 {
        self.slots.saturating_sub(self.used_slots)
    }

    /// Alive and not excluded at `now_ms`.
    pub fn accepts_placements(&self, now_ms: u64) -> bool {
        self.state == TaskManagerState::Alive && !self.is_excluded(now_ms)
    }

    pub fn is_excluded(&self, now_ms: u64) -> bool {
        self.excluded_until_ms > now_ms
    }

    /// True when this TaskManager carries every label of `selector`.
    pub fn matches(&self, selector: &Labels) -> bool {
        selector
            .iter()
            .all(|(k, v)| self.labels.get(k).is_some_and(|have| have == v))
    }
}

/// What an admin lets one TaskManager claim (`tm pin`): the labels it may carry (jobs pick
/// trusted pools by label, so an agent must not name itself into one) and the most slots it
/// may offer. With TLS on, an agent registers only labels pinned to it and no more slots than
/// pinned; without a pin, no labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskManagerPin {
    pub labels: Labels,
    /// None: as many slots as it offers.
    pub slots: Option<u32>,
}

/// Why TaskManager `id` may not register with `labels` and `slots` under `pin` (none: no
/// pin), if it may not.
pub fn pin_refusal(
    id: &str,
    pin: Option<&TaskManagerPin>,
    labels: &Labels,
    slots: u32,
) -> Option<String> {
    let allowed = pin.map(|p| &p.labels);
    let unpinned: Vec<String> = labels
        .iter()
        .filter(|(k, v)| allowed.and_then(|a| a.get(*k)) != Some(*v))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !unpinned.is_empty() {
        return Some(format!(
            "TaskManager '{id}' claims label {}, which no admin pinned to it; labels pick \
             trusted pools, so an admin pins them (`dispatcher tm pin {id} --labels {}`), or \
             start the agent without them",
            unpinned.join(","),
            unpinned.join(",")
        ));
    }
    match pin.and_then(|p| p.slots) {
        Some(most) if slots > most => Some(format!(
            "TaskManager '{id}' offers {slots} slots but is pinned to at most {most}; start it \
             with --slots {most}, or have an admin raise the pin (`dispatcher tm pin {id} \
             --slots {slots}`)"
        )),
        _ => None,
    }
}

/// The most of each resource an admin lets one TaskManager declare (`tm pin --cpus --memory
/// --resources`, cluster version 4). CPU and memory are unbounded unless set. Named
/// resources pick the jobs that ask for them, as labels pick pools, so with TLS on an agent
/// declares only those pinned to it, each up to its count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourcePin {
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub named: BTreeMap<String, u64>,
}

impl ResourcePin {
    pub fn is_empty(&self) -> bool {
        self.cpu_millis.is_none() && self.memory_bytes.is_none() && self.named.is_empty()
    }
}

/// Why TaskManager `id` may not declare `declared` under `pin` (none: no resource pin), if
/// it may not. Only checked once the cluster runs at version 4, where pins can say it.
pub fn resource_pin_refusal(
    id: &str,
    pin: Option<&ResourcePin>,
    declared: &super::Resources,
) -> Option<String> {
    let pinned = |name: &str| pin.and_then(|p| p.named.get(name)).copied().unwrap_or(0);
    if let Some((name, count)) = declared
        .named
        .iter()
        .find(|(name, count)| **count > pinned(name))
    {
        let most = pinned(name);
        return Some(format!(
            "TaskManager '{id}' declares {name}={count}, but {}; named resources pick the jobs \
             that ask for them, so an admin pins them (`dispatcher tm pin {id} --resources \
             {name}={count}`), or start the agent with no more than that",
            if most == 0 {
                format!("no admin pinned {name} to it")
            } else {
                format!("it is pinned to at most {name}={most}")
            }
        ));
    }
    let pin = pin?;
    if let Some(most) = pin.cpu_millis.filter(|most| declared.cpu_millis > *most) {
        return Some(format!(
            "TaskManager '{id}' offers {} CPUs but is pinned to at most {}; start it with \
             --cpus {}, or have an admin raise the pin",
            super::format_cpu(declared.cpu_millis),
            super::format_cpu(most),
            super::format_cpu(most)
        ));
    }
    if let Some(most) = pin
        .memory_bytes
        .filter(|most| declared.memory_bytes > *most)
    {
        return Some(format!(
            "TaskManager '{id}' offers {} of memory but is pinned to at most {}; start it with \
             --memory {}, or have an admin raise the pin",
            super::format_size(declared.memory_bytes),
            super::format_size(most),
            super::format_size(most)
        ));
    }
    None
}

#[cfg(test)]
mod pin_tests {
    use super::*;

    #[test]
    fn only_pinned_labels_and_slots_up_to_the_pin_are_let_in() {
        let labels: Labels = [("pool".to_string(), "trusted".to_string())].into();
        assert!(pin_refusal("a", None, &Labels::new(), 64).is_none());
        let refused = pin_refusal("a", None, &labels, 1).expect("unpinned label");
        assert!(
            refused.contains("pool=trusted") && refused.contains("tm pin a"),
            "{refused}"
        );
        let pin = TaskManagerPin {
            labels: labels.clone(),
            slots: Some(4),
        };
        assert!(pin_refusal("a", Some(&pin), &labels, 4).is_none());
        assert!(pin_refusal("a", Some(&pin), &Labels::new(), 2).is_none());
        assert!(pin_refusal("a", Some(&pin), &labels, 5).is_some());
        let other: Labels = [("pool".to_string(), "gpu".to_string())].into();
        assert!(pin_refusal("a", Some(&pin), &other, 1).is_some());
    }

    #[test]
    fn named_resources_only_as_pinned_and_cpu_and_memory_up_to_the_pin() {
        use super::super::Resources;
        let declared = |cpu_millis, memory_bytes, named: &[(&str, u64)]| Resources {
            cpu_millis,
            memory_bytes,
            named: named.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        };
        // No pin: CPU and memory as offered, no named resource.
        assert!(resource_pin_refusal("a", None, &declared(64_000, 1 << 40, &[])).is_none());
        let refused = resource_pin_refusal("a", None, &declared(1_000, 1 << 30, &[("gpu", 2)]))
            .expect("an unpinned gpu");
        assert!(
            refused.contains("gpu=2") && refused.contains("tm pin a --resources gpu=2"),
            "{refused}"
        );
        let pin = ResourcePin {
            cpu_millis: Some(8_000),
            memory_bytes: Some(16 << 30),
            named: [("gpu".to_string(), 2)].into(),
        };
        let ok = declared(8_000, 16 << 30, &[("gpu", 2)]);
        assert!(resource_pin_refusal("a", Some(&pin), &ok).is_none());
        assert!(resource_pin_refusal("a", Some(&pin), &declared(1_000, 1, &[])).is_none());
        let more_gpus = resource_pin_refusal("a", Some(&pin), &declared(1, 1, &[("gpu", 3)]))
            .expect("over the pin");
        assert!(more_gpus.contains("at most gpu=2"), "{more_gpus}");
        assert!(resource_pin_refusal("a", Some(&pin), &declared(1, 1, &[("fpga", 1)])).is_some());
        let cpu = resource_pin_refusal("a", Some(&pin), &declared(9_000, 1, &[])).expect("cpu");
        assert!(cpu.contains("--cpus 8"), "{cpu}");
        let memory =
            resource_pin_refusal("a", Some(&pin), &declared(1, 17 << 30, &[])).expect("memory");
        assert!(memory.contains("--memory 16GiB"), "{memory}");
    }
}
