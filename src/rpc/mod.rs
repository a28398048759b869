//! The gRPC edge: the Raft service between replicas, the client-facing `Dispatcher`,
//! `Cluster` and `Access` services, the agents' `TaskManagers` service, the access layer in
//! front of all of them (`access`: who may call what), proto ↔ domain conversion, and the
//! one place that maps errors to gRPC status codes. Protobuf types do not travel past this
//! module.

pub mod access;
mod access_service;
mod assignment_stream;
mod call_metrics;
mod cluster_service;
mod downgrade;
pub use cluster_service::version_of;
pub mod codec;
mod convert;
mod cron_service;
mod dispatcher_service;
mod error;
mod event_stream;
pub mod fuzzing;
mod json;
pub mod leader_contact;
mod leader_lease;
pub mod output_taps;
mod raft_access;
mod raft_service;
mod read_ahead;
mod registration;
mod rejoin;
mod report_budget;
mod reports;
mod resources;
mod scheduling;
mod shard_output;
pub mod stream_right;
mod taskmanager_service;
pub mod visibility;

pub use access::{AccessLayer, Caller, Guard};
pub use access_service::AccessService;
pub use call_metrics::CallMetricsLayer;
pub use cluster_service::{local_status_of, members as cluster_members, ClusterService};
pub use cron_service::PeriodicService;
pub use dispatcher_service::{status_for as job_status_for, taskmanager_status, DispatcherService};
pub use error::{ApiError, LEADER_ADDR_HEADER, LEADER_ID_HEADER};
pub use json::{job_status_json, quota_json, resources_json, taskmanager_json};
pub use raft_service::RaftService;
pub use scheduling::quotas as tenant_quotas;
pub use taskmanager_service::TaskManagerService;

use crate::config::TaskManagerSettings;
use crate::leader::Liveness;
use crate::raft::{Raft, RaftGate, SharedState};
use std::sync::Arc;

/// Largest client request the API decodes; bigger requests are refused by tonic with
/// `OUT_OF_RANGE` before they reach a handler.
pub const API_MAX_MESSAGE_BYTES: usize =
    crate::domain::InputLimits::CEILING.spec_bytes + 1024 * 1024;

/// What every service needs: this replica's id, its Raft handle and the applied state.
#[derive(Clone)]
pub struct ServiceContext {
    pub node_id: u64,
    pub raft: Raft,
    pub shared: Arc<SharedState>,
    /// Heartbeat arrival times, read by the leader's failure detector.
    pub liveness: Arc<Liveness>,
    /// Placements proposed right behind report batches (leader only; see
    /// `leader::behind_reports`).
    pub placements_behind: Arc<crate::leader::PlacementsBehind>,
    pub tm_settings: TaskManagerSettings,
    /// How long after a quorum acknowledged it the leader may still answer heartbeats
    /// alone: no other leader can be elected sooner (the election timeout's lower bound).
    pub leader_lease: std::time::Duration,
    /// Input limits and admission control (`[limits]`).
    pub limits: crate::config::LimitSettings,
    /// `[security] require_isolation`: every submission asks for full isolation.
    pub require_isolation: bool,
    /// `[jobs] default_timeout_secs`, in milliseconds.
    pub default_timeout_ms: Option<u64>,
    /// What this replica's Raft service lets through (reported by `cluster status --local`).
    pub gate: Arc<RaftGate>,
    /// How this replica dials others (plaintext only with `--insecure`).
    pub transport: crate::security::Transport,
    /// Live output followed by `job logs`, as agents send it (leader only).
    pub taps: Arc<output_taps::OutputTaps>,
    /// Reports each agent may still send this second (leader only).
    pub report_budget: Arc<report_budget::ReportBudget>,
    /// Why this replica cannot reach the peers it cannot reach.
    pub peer_troubles: Arc<crate::raft::peer_troubles::PeerTroubles>,
    /// When this replica last heard from a leader; streams end when it is out of touch.
    pub leader_contact: Arc<leader_contact::LeaderContact>,
    /// Out of touch longer than this (an election timeout) ends its streams.
    pub contact_bound: std::time::Duration,
    /// What every member runs (the leader's last round of pings) and this replica's hold
    /// during a downgrade.
    pub versions: Arc<crate::upgrade::VersionSurvey>,
    /// This replica's log, for a downgrade's compaction.
    pub wal: crate::raft::wal::WalLogStore,
    /// When this replica last campaigned and won (`cluster status --local`, the bench).
    pub election_timeline: Arc<crate::raft::election_timeline::ElectionTimeline>,
}

impl ServiceContext {
    /// What guards a stream opened by `caller`: its token, and this replica's touch with
    /// the cluster.
    pub fn stream_guard(&self, caller: &Caller) -> stream_right::Guard {
        stream_right::Guard {
            shared: self.shared.clone(),
            right: stream_right::StreamRight::of(caller),
            touch: Some(stream_right::Touch {
                raft: self.raft.clone(),
                contact: self.leader_contact.clone(),
                bound: self.contact_bound,
            }),
        }
    }
}
