//! A replica's Prometheus metrics: one registry per replica (tests run several in one
//! process), filled where things happen (proposals, apply, snapshots, fsync, admission,
//! every gRPC call) and, for what the applied state and Raft already know (term, indexes,
//! TaskManagers, slots, shards), refreshed from them when scraped. Encoding is
//! prometheus-client's OpenMetrics text; nothing here writes exposition by hand.
//!
//! This module only counts: it decides nothing and never blocks the path it observes.

mod agent;
pub mod history;
mod state_gauges;

pub use agent::AgentMetrics;
pub use state_gauges::RaftView;

use crate::raft::TypeConfig;
use openraft::errors::{ClientWriteError, RaftError};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

/// What a proposal can fail with.
pub type ProposalError = RaftError<TypeConfig, ClientWriteError<TypeConfig>>;

/// The content type of what `Metrics::encode` writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One label, fixed at compile time (`state="running"`).
type StaticLabel = [(&'static str, &'static str); 1];
/// A gRPC method and the status code it ended with.
type RpcLabels = [(&'static str, String); 2];

/// Latency buckets from 100 µs to about 52 s, doubling.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_1, 2.0, 20)
}

/// A histogram of durations in seconds.
pub fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// Everything one replica counts.
pub struct Metrics {
    registry: Registry,
    // Raft, refreshed on scrape.
    term: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    last_log_index: Gauge,
    is_leader: Gauge,
    leader_id: Gauge,
    // Raft, counted as they happen.
    leader_changes: Counter,
    proposals: Family<StaticLabel, Counter>,
    proposal_seconds: Histogram,
    apply_seconds: Histogram,
    applied_entries: Counter,
    snapshot_bytes: Gauge,
    snapshot_build_seconds: Histogram,
    // The state, refreshed on scrape.
    taskmanagers: Family<StaticLabel, Gauge>,
    slots_used: Gauge,
    slots_free: Gauge,
    cluster_version: Gauge,
    shards: Family<StaticLabel, Gauge>,
    jobs: Family<StaticLabel, Gauge>,
    // Scheduling, counted from the applied events.
    events: Family<StaticLabel, Counter>,
    placements: Counter,
    recoveries: Counter,
    dispatch_seconds: Histogram,
    // The API.
    admission_refusals: Counter,
    rpcs: Family<RpcLabels, Counter>,
    /// The `rpcs` counters by method and code, found without allocating: every heartbeat
    /// and report passes here.
    rpc_counters: std::sync::RwLock<HashMap<String, HashMap<&'static str, Counter>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// A registry with every family, and the write-ahead log's fsync histogram (owned by
    /// the log, observed by its sync thread).
    pub fn new(fsync_seconds: Histogram) -> Self {
        let mut registry = Registry::with_prefix("dispatcher");
        let m = Metrics {
            term: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            last_log_index: Gauge::default(),
            is_leader: Gauge::default(),
            leader_id: Gauge::default(),
            leader_changes: Counter::default(),
            proposals: Family::default(),
            proposal_seconds: latency_histogram(),
            apply_seconds: latency_histogram(),
            applied_entries: Counter::default(),
            snapshot_bytes: Gauge::default(),
            snapshot_build_seconds: latency_histogram(),
            taskmanagers: Family::default(),
            slots_used: Gauge::default(),
            slots_free: Gauge::default(),
            cluster_version: Gauge::default(),
            shards: Family::default(),
            jobs: Family::default(),
            events: Family::default(),
            placements: Counter::default(),
            recoveries: Counter::default(),
            dispatch_seconds: latency_histogram(),
            admission_refusals: Counter::default(),
            rpcs: Family::default(),
            rpc_counters: Default::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        // `dispatcher_build_info`: one series per replica, so that replicas on different
        // releases show (the `DispatcherMixedVersions` alert).
        r.register(
            "build",
            "This replica's release and the newest cluster version it can run in",
            prometheus_client::metrics::info::Info::new(vec![
                ("version", crate::formats::release().to_string()),
                (
                    "max_cluster_version",
                    crate::formats::MAX_CLUSTER_VERSION.to_string(),
                ),
            ]),
        );
        r.register(
            "cluster_version",
            "The cluster version in this replica's applied state (what every replica must read)",
            m.cluster_version.clone(),
        );
        r.register("raft_term", "Current Raft term", m.term.clone());
        r.register(
            "raft_commit_index",
            "Highest log index this replica knows committed",
            m.commit_index.clone(),
        );
        r.register(
            "raft_applied_index",
            "Highest log index applied to this replica's state",
            m.applied_index.clone(),
        );
        r.register(
            "raft_last_log_index",
            "Highest log index in this replica's log",
            m.last_log_index.clone(),
        );
        r.register(
            "raft_is_leader",
            "1 while this replica is the leader",
            m.is_leader.clone(),
        );
        r.register(
            "raft_leader_id",
            "Id of the leader this replica knows, 0 if none",
            m.leader_id.clone(),
        );
        r.register(
            "raft_leader_changes",
            "Leaderships begun, as applied by this replica",
            m.leader_changes.clone(),
        );
        r.register(
            "raft_proposals",
            "Commands this replica proposed as leader, by result",
            m.proposals.clone(),
        );
        r.register_with_unit(
            "raft_proposal_duration",
            "From proposing a command to its result (committed and applied)",
            Unit::Seconds,
            m.proposal_seconds.clone(),
        );
        r.register_with_unit(
            "raft_apply_duration",
            "Applying one log entry to the state",
            Unit::Seconds,
            m.apply_seconds.clone(),
        );
        r.register(
            "raft_applied_entries",
            "Log entries applied",
            m.applied_entries.clone(),
        );
        r.register_with_unit(
            "snapshot_size",
            "Size of the newest snapshot this replica built",
            Unit::Bytes,
            m.snapshot_bytes.clone(),
        );
        r.register_with_unit(
            "snapshot_build_duration",
            "Building and saving one snapshot",
            Unit::Seconds,
            m.snapshot_build_seconds.clone(),
        );
        r.register_with_unit(
            "wal_fsync_duration",
            "One fdatasync of the write-ahead log (one may cover many appends)",
            Unit::Seconds,
            fsync_seconds,
        );
        r.register(
            "taskmanagers",
            "TaskManagers by state",
            m.taskmanagers.clone(),
        );
        r.register(
            "slots_used",
            "Slots held by shards on TaskManagers that are not lost",
            m.slots_used.clone(),
        );
        r.register(
            "slots_free",
            "Free slots on TaskManagers that are alive",
            m.slots_free.clone(),
        );
        r.register("shards", "Shards by state", m.shards.clone());
        r.register("jobs", "Jobs by state", m.jobs.clone());
        r.register(
            "events",
            "Events applied, by kind (as in `dispatcher events`)",
            m.events.clone(),
        );
        r.register(
            "placements",
            "Shards placed on a TaskManager",
            m.placements.clone(),
        );
        r.register(
            "recoveries",
            "Shards sent back to pending because their run was interrupted or their \
             TaskManager was lost",
            m.recoveries.clone(),
        );
        r.register_with_unit(
            "dispatch_latency",
            "From a job's submission to one of its shards reported started",
            Unit::Seconds,
            m.dispatch_seconds.clone(),
        );
        r.register(
            "admission_refusals",
            "Submissions refused because the cluster or the client holds too much",
            m.admission_refusals.clone(),
        );
        r.register(
            "rpcs",
            "gRPC calls served, by method and status code",
            m.rpcs.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The registry in OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Run a proposal (`raft.client_write`), timing it and counting its result: `ok`,
    /// `not_leader` (refused at once on a follower; not timed) or `error`.
    pub async fn time_proposal<T>(
        &self,
        proposal: impl Future<Output = Result<T, ProposalError>>,
    ) -> Result<T, ProposalError> {
        let started = Instant::now();
        let result = proposal.await;
        let label = match &result {
            Ok(_) => "ok",
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => "not_leader",
            Err(_) => "error",
        };
        if label != "not_leader" {
            self.proposal_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        self.proposals.get_or_create(&[("result", label)]).inc();
        result
    }

    /// One entry applied in `took`, with the kinds of the events it produced.
    pub fn entry_applied(&self, took: Duration, event_kinds: impl Iterator<Item = &'static str>) {
        self.applied_entries.inc();
        self.apply_seconds.observe(took.as_secs_f64());
        for kind in event_kinds {
            self.event_applied(kind);
        }
    }

    /// Events of `kind` this replica applied since it started.
    pub fn event_count(&self, kind: &'static str) -> u64 {
        self.events.get_or_create(&[("kind", kind)]).get()
    }

    /// Leader changes this replica applied since it started.
    pub fn leader_changes(&self) -> u64 {
        self.leader_changes.get()
    }

    fn event_applied(&self, kind: &'static str) {
        self.events.get_or_create(&[("kind", kind)]).inc();
        match kind {
            "shard_placed" => {
                self.placements.inc();
            }
            "shard_interrupted" => {
                self.recoveries.inc();
            }
            "leader_changed" => {
                self.leader_changes.inc();
            }
            _ => {}
        }
    }

    /// Shards sent back to pending by a lost TaskManager or a requeue.
    pub fn shards_recovered(&self, count: u64) {
        self.recoveries.inc_by(count);
    }

    /// A shard reported started `ms` after its job was submitted.
    pub fn dispatched_after_ms(&self, ms: u64) {
        self.dispatch_seconds.observe(ms as f64 / 1000.0);
    }

    pub fn snapshot_built(&self, bytes: usize, took: Duration) {
        self.snapshot_bytes.set(bytes as i64);
        self.snapshot_build_seconds.observe(took.as_secs_f64());
    }

    pub fn admission_refused(&self) {
        self.admission_refusals.inc();
    }

    /// A gRPC call ended with `code`; `method` must come from a bounded set.
    pub fn rpc_served(&self, method: &str, code: &'static str) {
        {
            let known = self.rpc_counters.read().unwrap_or_else(|p| p.into_inner());
            if let Some(counter) = known.get(method).and_then(|codes| codes.get(code)) {
                counter.inc();
                return;
            }
        }
        let counter = self
            .rpcs
            .get_or_create(&[("method", method.to_string()), ("code", code.to_string())])
            .clone();
        counter.inc();
        self.rpc_counters
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(method.to_string())
            .or_default()
            .insert(code, counter);
    }
}
