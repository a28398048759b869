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

/// `k=v,k=v` of a map, in its order.
fn pairs<K: std::fmt::Display, V: std::fmt::Display>(
    map: impl IntoIterator<Item = (K, V)>,
) -> String {
    let shown: Vec<String> = map.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    shown.join(",")
}

/// The `tm pin` command that pins `id` to these, as an admin would type it: a refusal
/// suggests the whole pin, since a pin replaces the one before.
pub fn pin_command(
    id: &str,
    labels: &Labels,
    slots: Option<u32>,
    resources: &ResourcePin,
) -> String {
    let mut command = format!("dispatcher tm pin {id}");
    if !labels.is_empty() {
        command.push_str(&format!(" --labels {}", pairs(labels)));
    }
    if let Some(slots) = slots {
        command.push_str(&format!(" --slots {slots}"));
    }
    if let Some(cpu) = resources.cpu_millis {
        command.push_str(&format!(" --cpus {}", super::format_cpu(cpu)));
    }
    if let Some(bytes) = resources.memory_bytes {
        command.push_str(&format!(" --memory {}", super::format_size(bytes)));
    }
    if !resources.named.is_empty() {
        command.push_str(&format!(" --resources {}", pairs(&resources.named)));
    }
    command
}

/// Why TaskManager `id` may not register with `labels` and `slots` under `pin` (none: no
/// pin), if it may not. `resources` is its resource pin, kept in the pin a refusal suggests.
pub fn pin_refusal(
    id: &str,
    pin: Option<&TaskManagerPin>,
    resources: Option<&ResourcePin>,
    labels: &Labels,
    slots: u32,
) -> Option<String> {
    let allowed = pin.map(|p| &p.labels);
    let unpinned: Labels = labels
        .iter()
        .filter(|(k, v)| allowed.and_then(|a| a.get(*k)) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let pinned_slots = pin.and_then(|p| p.slots);
    let resources = resources.cloned().unwrap_or_default();
    if !unpinned.is_empty() {
        let mut wanted = allowed.cloned().unwrap_or_default();
        wanted.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        return Some(format!(
            "TaskManager '{id}' claims label {}, which no admin pinned to it; labels pick \
             trusted pools, so an admin pins them (`{}`), or start the agent without them",
            pairs(&unpinned),
            pin_command(id, &wanted, pinned_slots, &resources)
        ));
    }
    match pinned_slots {
        Some(most) if slots > most => {
            Some(format!(
            "TaskManager '{id}' offers {slots} slots but is pinned to at most {most}; start it \
             with --slots {most}, or have an admin raise the pin (`{}`)",
            pin_command(id, allowed.unwrap_or(&Labels::new()), Some(slots), &resources)
        ))
        }
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

/// An agent offers more of one amount than pinned: (what it offers, the pin, the pin as
/// `--flag` takes it), and the pin an admin would raise it to.
fn over_pin(
    id: &str,
    flag: &str,
    (offers, most, as_flag): (String, String, String),
    raise: &str,
) -> String {
    format!(
        "TaskManager '{id}' offers {offers} but is pinned to at most {most}; start it with \
         --{flag} {as_flag}, or have an admin raise the pin (`{raise}`)"
    )
}

/// Why TaskManager `id` may not declare `declared` (`None`: an agent of a release that
/// declares nothing, so unbounded CPU and memory) under `pin`, its resource pin (none: no
/// resource pin), if it may not. `labels` is its label pin, kept in the pin a refusal
/// suggests. Only checked once the cluster runs at version 4, where pins can say it.
pub fn resource_pin_refusal(
    id: &str,
    labels: Option<&TaskManagerPin>,
    pin: Option<&ResourcePin>,
    declared: Option<&super::Resources>,
) -> Option<String> {
    let no_labels = Labels::new();
    let (pinned_labels, pinned_slots) = labels.map_or((&no_labels, None), |p| (&p.labels, p.slots));
    let current = pin.cloned().unwrap_or_default();
    let suggest = |resources: &ResourcePin| pin_command(id, pinned_labels, pinned_slots, resources);
    let Some(declared) = declared else {
        if current.cpu_millis.is_some() || current.memory_bytes.is_some() {
            return Some(format!(
                "TaskManager '{id}' declares no CPU or memory (an agent of an older release), \
                 but a pin bounds them; run the agent of this release with --cpus and --memory \
                 within its pin (`{}`)",
                suggest(&current)
            ));
        }
        return None;
    };
    let pinned = |name: &str| current.named.get(name).copied().unwrap_or(0);
    let over: Vec<(&String, &u64)> = declared
        .named
        .iter()
        .filter(|(name, count)| **count > pinned(name))
        .collect();
    if !over.is_empty() {
        let mut wanted = current.clone();
        for (name, count) in &declared.named {
            let most = wanted.named.entry(name.clone()).or_default();
            *most = (*most).max(*count);
        }
        let was = if current.named.is_empty() {
            "no admin pinned named resources to it".to_string()
        } else {
            format!("it is pinned to at most {}", pairs(&current.named))
        };
        return Some(format!(
            "TaskManager '{id}' declares {}, but {was}; named resources pick the jobs that ask \
             for them, so an admin pins them (`{}`), or start the agent with no more",
            pairs(over),
            suggest(&wanted)
        ));
    }
    if let Some(most) = current
        .cpu_millis
        .filter(|most| declared.cpu_millis > *most)
    {
        let raised = ResourcePin {
            cpu_millis: Some(declared.cpu_millis),
            ..current.clone()
        };
        let cpus = |millis| format!("{} CPUs", super::format_cpu(millis));
        let amounts = (
            cpus(declared.cpu_millis),
            cpus(most),
            super::format_cpu(most),
        );
        return Some(over_pin(id, "cpus", amounts, &suggest(&raised)));
    }
    if let Some(most) = current
        .memory_bytes
        .filter(|most| declared.memory_bytes > *most)
    {
        let raised = ResourcePin {
            memory_bytes: Some(declared.memory_bytes),
            ..current.clone()
        };
        let memory = |bytes| format!("{} of memory", super::format_size(bytes));
        let amounts = (
            memory(declared.memory_bytes),
            memory(most),
            super::format_size(most),
        );
        return Some(over_pin(id, "memory", amounts, &suggest(&raised)));
    }
    None
}

/// Why TaskManager `id` may not claim `labels`, `slots` and `declared` resources (`None`: an
/// agent of a release that declares none) under what an admin pinned to it in `state`, if it
/// may not: the label and slot pin always, the resource pin from cluster version 4, where
/// pins can say it. Checked (with TLS only) when an agent registers, and on each heartbeat
/// against what it registered with, so that a pin narrowed or taken back since holds as
/// soon as its next heartbeat.
pub fn claims_refusal(
    state: &super::ClusterState,
    id: &str,
    labels: &Labels,
    slots: u32,
    declared: Option<&super::Resources>,
) -> Option<String> {
    let pin = state.pins.get(id);
    let resource_pin = state.resource_pins.get(id);
    pin_refusal(id, pin, resource_pin, labels, slots).or_else(|| {
        (state.cluster_version >= super::ClusterVersion(4))
            .then(|| resource_pin_refusal(id, pin, resource_pin, declared))
            .flatten()
    })
}

/// The same, for `tm` as it registered (checked on its heartbeats). Its resources only where
/// an admin pinned some to it: an agent that registered before the cluster reached version 4
/// declared them unchecked, and the raise to 4 must not turn it away mid-run; it is checked
/// at its next registration. Labels and slots were checked at every registration with TLS.
pub fn registered_claims_refusal(state: &super::ClusterState, tm: &TaskManager) -> Option<String> {
    if state.resource_pins.contains_key(&tm.id) {
        let declared = state.tm_resources.get(&tm.id).map(|r| &r.capacity);
        return claims_refusal(state, &tm.id, &tm.labels, tm.slots, declared);
    }
    pin_refusal(&tm.id, state.pins.get(&tm.id), None, &tm.labels, tm.slots)
}

#[cfg(test)]
mod pin_tests {
    use super::*;

    #[test]
    fn only_pinned_labels_and_slots_up_to_the_pin_are_let_in() {
        let labels: Labels = [("pool".to_string(), "trusted".to_string())].into();
        assert!(pin_refusal("a", None, None, &Labels::new(), 64).is_none());
        let refused = pin_refusal("a", None, None, &labels, 1).expect("unpinned label");
        assert!(
            refused.contains("pool=trusted") && refused.contains("tm pin a"),
            "{refused}"
        );
        let pin = TaskManagerPin {
            labels: labels.clone(),
            slots: Some(4),
        };
        assert!(pin_refusal("a", Some(&pin), None, &labels, 4).is_none());
        assert!(pin_refusal("a", Some(&pin), None, &Labels::new(), 2).is_none());
        assert!(pin_refusal("a", Some(&pin), None, &labels, 5).is_some());
        let other: Labels = [("pool".to_string(), "gpu".to_string())].into();
        assert!(pin_refusal("a", Some(&pin), None, &other, 1).is_some());
    }

    #[test]
    fn named_resources_only_as_pinned_and_cpu_and_memory_up_to_the_pin() {
        use super::super::Resources;
        let declared = |cpu_millis, memory_bytes, named: &[(&str, u64)]| Resources {
            cpu_millis,
            memory_bytes,
            named: named.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        };
        let check = |pin: Option<&ResourcePin>, d: &Resources| {
            resource_pin_refusal("a", None, pin, Some(d))
        };
        // No pin: CPU and memory as offered, no named resource.
        assert!(check(None, &declared(64_000, 1 << 40, &[])).is_none());
        let refused = check(None, &declared(1_000, 1 << 30, &[("gpu", 2)])).expect("unpinned");
        assert!(
            refused.contains("`dispatcher tm pin a --resources gpu=2`"),
            "{refused}"
        );
        let pin = ResourcePin {
            cpu_millis: Some(8_000),
            memory_bytes: Some(16 << 30),
            named: [("gpu".to_string(), 2)].into(),
        };
        let ok = declared(8_000, 16 << 30, &[("gpu", 2)]);
        assert!(check(Some(&pin), &ok).is_none());
        assert!(check(Some(&pin), &declared(1_000, 1, &[])).is_none());
        // Every resource over the pin is named, and the suggested pin keeps the rest of it.
        let over = check(Some(&pin), &declared(1, 1, &[("gpu", 3), ("fpga", 1)])).expect("over");
        assert!(
            over.contains("declares fpga=1,gpu=3")
                && over.contains("at most gpu=2")
                && over.contains("--cpus 8 --memory 16GiB --resources fpga=1,gpu=3"),
            "{over}"
        );
        let cpu = check(Some(&pin), &declared(9_000, 1, &[])).expect("cpu");
        assert!(
            cpu.contains("--cpus 8,") && cpu.contains("--cpus 9 --memory"),
            "{cpu}"
        );
        let memory = check(Some(&pin), &declared(1, 17 << 30, &[])).expect("memory");
        assert!(memory.contains("--memory 16GiB,"), "{memory}");
        // An agent that declares nothing has unbounded CPU and memory: refused under a pin
        // that bounds them, let in under one that pins named resources only.
        assert!(resource_pin_refusal("a", None, Some(&pin), None).is_some());
        let named_only = ResourcePin {
            named: pin.named.clone(),
            ..Default::default()
        };
        assert!(resource_pin_refusal("a", None, Some(&named_only), None).is_none());
        // The suggestion keeps the label pin too: a pin replaces the one before.
        let labels = TaskManagerPin {
            labels: [("pool".to_string(), "gpu".to_string())].into(),
            slots: Some(4),
        };
        let refused = resource_pin_refusal(
            "a",
            Some(&labels),
            None,
            Some(&declared(1, 1, &[("gpu", 1)])),
        )
        .expect("unpinned");
        assert!(
            refused.contains("`dispatcher tm pin a --labels pool=gpu --slots 4 --resources gpu=1`"),
            "{refused}"
        );
        let kept = pin_refusal("a", Some(&labels), Some(&pin), &Labels::new(), 5).expect("slots");
        assert!(
            kept.contains("--slots 5 --cpus 8 --memory 16GiB --resources gpu=2"),
            "{kept}"
        );
    }
}
