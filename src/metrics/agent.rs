//! A TaskManager agent's metrics: its registration, its lease, its runs and its heartbeats.

use super::latency_histogram;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

type StaticLabel = [(&'static str, &'static str); 1];

pub struct AgentMetrics {
    registry: Registry,
    slots: Gauge,
    running: Gauge,
    registration_epoch: Gauge,
    lease_valid: Gauge,
    heartbeats: Family<StaticLabel, Counter>,
    heartbeat_seconds: Histogram,
    runs_started: Counter,
    runs_ended: Counter,
    isolation: Family<IsolationLabel, Gauge>,
}

/// `level`: `full`, `partial` or `none`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct IsolationLabel {
    pub level: &'static str,
}

impl std::fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentMetrics")
    }
}

impl AgentMetrics {
    /// The sandbox level the agent found at start.
    pub fn set_isolation(&self, level: &'static str) {
        for other in ["full", "partial", "none"] {
            self.isolation
                .get_or_create(&IsolationLabel { level: other })
                .set(i64::from(other == level));
        }
    }

    pub fn new(slots: u32) -> Self {
        let mut registry = Registry::with_prefix("dispatcher_agent");
        let m = AgentMetrics {
            registry: Registry::default(),
            slots: Gauge::default(),
            running: Gauge::default(),
            registration_epoch: Gauge::default(),
            lease_valid: Gauge::default(),
            heartbeats: Family::default(),
            heartbeat_seconds: latency_histogram(),
            runs_started: Counter::default(),
            runs_ended: Counter::default(),
            isolation: Family::default(),
        };
        m.slots.set(i64::from(slots));
        let r = &mut registry;
        r.register("slots", "Slots this TaskManager offers", m.slots.clone());
        r.register(
            "running_shards",
            "Shard runs this agent holds now",
            m.running.clone(),
        );
        r.register(
            "registration_epoch",
            "The registration the cluster knows this agent by (0 before the first)",
            m.registration_epoch.clone(),
        );
        r.register(
            "lease_valid",
            "1 while a leader's heartbeat reply keeps this agent's lease (runs may go on)",
            m.lease_valid.clone(),
        );
        r.register(
            "heartbeats",
            "Heartbeats sent, by result",
            m.heartbeats.clone(),
        );
        r.register_with_unit(
            "heartbeat_duration",
            "A heartbeat's round trip to the leader",
            Unit::Seconds,
            m.heartbeat_seconds.clone(),
        );
        r.register("runs_started", "Shard runs started", m.runs_started.clone());
        r.register(
            "isolation",
            "1 for the shard sandbox level this agent gives its runs (full, partial, none)",
            m.isolation.clone(),
        );
        r.register(
            "runs_ended",
            "Shard runs that ended (or were stopped)",
            m.runs_ended.clone(),
        );
        AgentMetrics { registry, ..m }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }

    pub fn heartbeat(&self, ok: bool, took: Duration) {
        let label = if ok { "ok" } else { "error" };
        self.heartbeats.get_or_create(&[("result", label)]).inc();
        if ok {
            self.heartbeat_seconds.observe(took.as_secs_f64());
        }
    }

    pub fn registered(&self, epoch: u64) {
        self.registration_epoch
            .set(i64::try_from(epoch).unwrap_or(i64::MAX));
    }

    pub fn set_lease_valid(&self, valid: bool) {
        self.lease_valid.set(i64::from(valid));
    }

    pub fn set_running(&self, runs: usize) {
        self.running.set(i64::try_from(runs).unwrap_or(i64::MAX));
    }

    pub fn run_started(&self) {
        self.runs_started.inc();
    }

    pub fn run_ended(&self) {
        self.runs_ended.inc();
    }
}
