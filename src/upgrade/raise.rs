//! The leader raises the cluster version once every member runs a release that reads a
//! newer one. It never lowers it (that is `cluster downgrade`), and a member that does not
//! answer holds the raise back: it may run an older release.

use super::survey::{ask_members, member_addresses, Round, VersionSurvey};
use crate::fsm::Command;
use crate::raft::{Raft, SharedState};
use crate::security::Transport;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::ServerState;
use std::sync::Arc;
use std::time::Duration;

/// How often the leader asks every member what it runs.
pub const SURVEY_EVERY: Duration = Duration::from_secs(1);

/// What the raise loop needs.
pub struct Raiser {
    pub raft: Raft,
    pub shared: Arc<SharedState>,
    pub survey: Arc<VersionSurvey>,
    pub transport: Transport,
    pub node_id: u64,
}

impl Raiser {
    /// Every `SURVEY_EVERY` while this replica leads a cluster below this build's newest
    /// version: ask every member, keep the answers for the proposal gate, and raise the
    /// version when all read a newer one.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(SURVEY_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // At this build's newest version there is nothing to raise to, and the gate never
            // asks for a round: no pings (each is a fresh connection to every member).
            let current = self.shared.read().state.cluster_version.0;
            if !self.leads() || current >= crate::formats::MAX_CLUSTER_VERSION {
                continue;
            }
            let round = self.ask().await;
            self.survey.record(round.clone());
            if self.raise_to(&round).is_none() {
                continue;
            }
            // Alone against proposals and downgrades, and asked again: a downgrade that
            // finished since the round above has put holds on the members.
            let Ok(_alone) = self.survey.alone().await else {
                continue;
            };
            let round = self.ask().await;
            self.survey.record(round.clone());
            if let Some(version) = self.raise_to(&round) {
                self.propose(version).await;
            }
        }
    }

    fn leads(&self) -> bool {
        self.raft.metrics().borrow_watched().state == ServerState::Leader
    }

    async fn ask(&self) -> Round {
        ask_members(
            &self.transport,
            self.node_id,
            &self.survey,
            member_addresses(&self.raft),
        )
        .await
    }

    /// The version to raise the cluster to, if every member reads one above the state's.
    fn raise_to(&self, round: &Round) -> Option<u32> {
        let common = round.common_version()?;
        let current = self.shared.read().state.cluster_version.0;
        (common > current).then_some(common)
    }

    async fn propose(&self, version: u32) {
        let command = Command::SetClusterVersion {
            version,
            now_ms: crate::clock::now_ms(),
        };
        match self.raft.client_write(command).await {
            Ok(_) => tracing::info!(version, "every member reads it: cluster version raised"),
            Err(e) => tracing::warn!(version, "raising the cluster version failed: {e}"),
        }
    }
}
