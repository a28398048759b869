//! Taking back a replica that lost its data, without letting it vote on what it forgot.
//!
//! Raft's safety rests on every replica remembering its votes and the entries it
//! acknowledged. A replica restarted on an empty `--data-dir` has forgotten both: if it voted,
//! it could elect a leader that lacks writes the cluster already acknowledged (this replica
//! was part of their quorum). So a replica that starts empty in a cluster that already exists
//! goes through these phases, each persisted here before it takes effect:
//!
//! 1. **Awaiting demotion** (gate `Closed`): it refuses every Raft RPC and asks the leader
//!    (`Cluster.Rejoin`) to remove it from the voters, keeping it as a learner. The leader does
//!    so through the log, committed by a quorum of the other replicas, and answers with the
//!    index `d` of the committed configuration in which this replica is not a voter. From then
//!    on the cluster does not count it, and everything committed before the wipe is at or
//!    below `d`. (A replica that is not a member at all, about to be added with `cluster add`,
//!    gets the same kind of answer.)
//! 2. **Awaiting restore at `d`** (gate `LearnerOnly`): it accepts replication and snapshots
//!    but refuses votes and never campaigns, and asks the leader to restore it; the leader
//!    makes it a voter again once it holds every entry up to `d`.
//! 3. **Restored**: it opens its gate by itself as soon as its own log holds a configuration
//!    after `d` that lists it as a voter. Holding that entry means holding every entry before
//!    it, so every write committed before the wipe; and only a leader that chose to make it a
//!    voter writes such a configuration. No answer from a leader is needed for this step, so a
//!    leader that dies right after restoring it cannot leave it mute.
//!
//! If the leader cannot be reached or cannot commit the demotion (not enough other replicas
//! up), the replica keeps waiting: unavailable, not wrong.
//!
//! What this cannot cover: a replica that, before losing its disk, voted in a term higher
//! than any the surviving replicas have seen (a candidate that reached only it). The votes it
//! forgot are in no other replica's memory. Raft cannot be made safe against every loss of
//! acknowledged state; this closes the common case, a wiped replica rejoining a cluster that
//! went on without it.

use crate::client::{Client, ClientOptions};
use crate::pb::api::cluster_client::ClusterClient;
use crate::pb::api::{RejoinReply, RejoinRequest};
use crate::raft::{GateState, Raft, RaftGate};
use openraft::async_runtime::watch::WatchReceiver;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const TREE: &str = "replica";
const KEY_PHASE: &[u8] = b"rejoin_phase";
const ASK_EVERY: Duration = Duration::from_millis(300);

/// Where a replica without history stands; absent once it is an ordinary member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejoinPhase {
    /// It saw a first formation (every named replica answered and none ever belonged to a
    /// cluster) and may vote. Persisted so that a restart before it received anything (no
    /// vote, no entries: it did nothing it could forget) does not mistake the cluster it
    /// helped found for one it lost its data in, which could leave the founder without votes.
    Founding,
    AwaitingDemotion,
    /// Not a voter in the committed configuration at this log index.
    AwaitingRestore {
        demoted_at: u64,
    },
}

impl RejoinPhase {
    fn encode(self) -> Vec<u8> {
        match self {
            RejoinPhase::AwaitingDemotion => vec![1],
            RejoinPhase::AwaitingRestore { demoted_at } => {
                let mut bytes = vec![2];
                bytes.extend_from_slice(&demoted_at.to_be_bytes());
                bytes
            }
            RejoinPhase::Founding => vec![3],
        }
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        match bytes {
            [1] => Some(RejoinPhase::AwaitingDemotion),
            [2, rest @ ..] => Some(RejoinPhase::AwaitingRestore {
                demoted_at: u64::from_be_bytes(rest.try_into().ok()?),
            }),
            [3] => Some(RejoinPhase::Founding),
            _ => None,
        }
    }

    /// The gate this phase opens.
    pub fn gate(self) -> GateState {
        match self {
            RejoinPhase::Founding => GateState::Open,
            RejoinPhase::AwaitingDemotion => GateState::Closed,
            RejoinPhase::AwaitingRestore { .. } => GateState::LearnerOnly,
        }
    }
}

/// The persisted rejoin phase, in its own tree of the replica's sled database. Every change
/// is flushed and the database file fsynced before it takes effect.
#[derive(Clone)]
pub struct RejoinMarker {
    tree: sled::Tree,
    db: sled::Db,
    db_file: PathBuf,
}

impl RejoinMarker {
    pub fn open(db: &sled::Db, db_path: &Path) -> std::io::Result<Self> {
        Ok(RejoinMarker {
            tree: db.open_tree(TREE).map_err(std::io::Error::other)?,
            db: db.clone(),
            db_file: db_path.join("db"),
        })
    }

    pub fn load(&self) -> std::io::Result<Option<RejoinPhase>> {
        let value = self.tree.get(KEY_PHASE).map_err(std::io::Error::other)?;
        match value {
            None => Ok(None),
            Some(bytes) => RejoinPhase::decode(&bytes).map(Some).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("unknown rejoin phase {bytes:?} in the replica database"),
                )
            }),
        }
    }

    pub async fn store(&self, phase: Option<RejoinPhase>) -> std::io::Result<()> {
        match phase {
            Some(p) => self.tree.insert(KEY_PHASE, p.encode()).map(|_| ()),
            None => self.tree.remove(KEY_PHASE).map(|_| ()),
        }
        .map_err(std::io::Error::other)?;
        self.db.flush_async().await.map_err(std::io::Error::other)?;
        // sled's flush ends in sync_file_range, which does not survive a power loss.
        let file = self.db_file.clone();
        tokio::task::spawn_blocking(move || std::fs::File::open(file)?.sync_all())
            .await
            .map_err(std::io::Error::other)?
    }
}

/// Persist `phase` (retrying until the disk takes it: nothing may proceed before), then set
/// the gate it allows.
pub async fn enter(
    marker: &RejoinMarker,
    gate: &RaftGate,
    raft: &Raft,
    phase: Option<RejoinPhase>,
) {
    while let Err(e) = marker.store(phase).await {
        tracing::error!(?phase, "cannot persist the rejoin marker: {e}; retrying");
        tokio::time::sleep(ASK_EVERY).await;
    }
    match phase {
        Some(p) if p.gate() != GateState::Open => gate.set(p.gate()),
        _ => open(gate, raft),
    }
}

/// Let everything through and allow this replica to campaign.
pub fn open(gate: &RaftGate, raft: &Raft) {
    gate.set(GateState::Open);
    raft.runtime_config().elect(true);
}

async fn ask(client: &Client, id: u64, restoring: bool) -> Result<RejoinReply, String> {
    client
        .call(|channel| async move {
            ClusterClient::new(channel)
                .rejoin(RejoinRequest { id, restoring })
                .await
        })
        .await
        .map_err(|e| e.to_string())
}

/// Whether this replica's own log holds a configuration after `demoted_at` that lists it as
/// a voter (see the module doc, step 3).
fn restored_locally(raft: &Raft, id: u64, demoted_at: u64) -> bool {
    let metrics = raft.metrics().borrow_watched().clone();
    let config = &metrics.membership_config;
    config.log_id().is_some_and(|l| l.index() > demoted_at)
        && config.membership().voter_ids().any(|v| v == id)
}

/// Drive the rejoin from `phase` until this replica is an ordinary member again.
pub async fn rejoin(
    raft: Raft,
    gate: Arc<RaftGate>,
    marker: RejoinMarker,
    id: u64,
    others: Vec<String>,
    options: ClientOptions,
    mut phase: RejoinPhase,
) {
    let client = match Client::with_options(others, options) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("cannot rejoin: {e}; restart with --peers naming the other replicas");
            return;
        }
    };
    gate.set(phase.gate());
    tracing::warn!(
        ?phase,
        "this replica has no data but the cluster exists: it does not vote until the leader \
         has caught it up and made it a voter again"
    );
    loop {
        match phase {
            RejoinPhase::Founding => return,
            RejoinPhase::AwaitingDemotion => match ask(&client, id, false).await {
                Ok(reply) if matches!(reply.outcome.as_str(), "demoted" | "not-a-member") => {
                    tracing::info!("{}: catching up as a learner", reply.detail);
                    phase = RejoinPhase::AwaitingRestore {
                        demoted_at: reply.demoted_at,
                    };
                    enter(&marker, &gate, &raft, Some(phase)).await;
                }
                Ok(reply) => {
                    tracing::info!("rejoin: {} ({})", reply.outcome, reply.detail);
                    tokio::time::sleep(ASK_EVERY).await;
                }
                Err(e) => {
                    tracing::info!("rejoin: {e}; asking again");
                    tokio::time::sleep(ASK_EVERY).await;
                }
            },
            RejoinPhase::AwaitingRestore { demoted_at } => {
                // Prompt the leader in the background; its answers open nothing.
                let client = Arc::new(client);
                let prompter = tokio::spawn(async move {
                    loop {
                        match ask(&client, id, true).await {
                            Ok(r) => tracing::debug!("rejoin: {} ({})", r.outcome, r.detail),
                            Err(e) => tracing::debug!("rejoin: {e}; asking again"),
                        }
                        tokio::time::sleep(ASK_EVERY).await;
                    }
                });
                let mut metrics = raft.metrics();
                while !restored_locally(&raft, id, demoted_at) {
                    if metrics.changed().await.is_err() {
                        prompter.abort();
                        return;
                    }
                }
                prompter.abort();
                enter(&marker, &gate, &raft, None).await;
                tracing::info!("a voter again: this replica votes and may lead");
                return;
            }
        }
    }
}
