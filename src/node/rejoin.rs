//! Taking back a replica that lost its data, without letting it vote on what it forgot.
//!
//! Raft's safety rests on every replica remembering its votes and the entries it
//! acknowledged. A replica restarted on an empty `--data-dir` has forgotten both: if it voted,
//! it could elect a leader that lacks writes the cluster already acknowledged (this replica
//! was part of their quorum). So a replica that starts empty in a cluster that already exists
//! goes through three phases, each persisted here before it takes effect:
//!
//! 1. **Awaiting demotion** (gate `Closed`): it refuses every Raft RPC and asks the leader
//!    (`Cluster.Rejoin`) to remove it from the voters, keeping it as a learner. The leader does
//!    so through the log, with a quorum of the other replicas: the cluster stops counting this
//!    replica before it acknowledges anything again.
//! 2. **Awaiting restore** (gate `LearnerOnly`): it accepts replication and snapshots but still
//!    refuses votes and never campaigns, and asks the leader to restore it. The leader makes it
//!    a voter again only once it holds every entry up to the configuration that demoted it —
//!    so everything committed before the wipe.
//! 3. **Restored** (gate `Open`): the marker is deleted; it is an ordinary voter.
//!
//! A new replica that is not a voter (it is about to be added with `cluster add`) is
//! "admitted" at step 1 and skips the rest. If the leader cannot be reached or cannot commit
//! the demotion (not enough other replicas up), the replica keeps waiting: unavailable, not
//! wrong.

use crate::client::{Client, ClientOptions};
use crate::pb::api::cluster_client::ClusterClient;
use crate::pb::api::{RejoinReply, RejoinRequest};
use crate::raft::{GateState, Raft, RaftGate};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const TREE: &str = "replica";
const KEY_PHASE: &[u8] = b"rejoin_phase";
const ASK_EVERY: Duration = Duration::from_millis(300);

/// Where a replica without history stands; absent once it is an ordinary member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejoinPhase {
    /// It saw a first formation (a majority of the named replicas never belonged to a
    /// cluster) and may vote. Persisted so that a restart before it received anything (no
    /// vote, no entries: it did nothing it could forget) does not mistake the cluster it
    /// helped found for one it lost its data in, which could leave the founder without votes.
    Founding,
    AwaitingDemotion,
    AwaitingRestore,
}

impl RejoinPhase {
    fn byte(self) -> u8 {
        match self {
            RejoinPhase::Founding => 3,
            RejoinPhase::AwaitingDemotion => 1,
            RejoinPhase::AwaitingRestore => 2,
        }
    }

    /// The gate this phase opens.
    pub fn gate(self) -> GateState {
        match self {
            RejoinPhase::Founding => GateState::Open,
            RejoinPhase::AwaitingDemotion => GateState::Closed,
            RejoinPhase::AwaitingRestore => GateState::LearnerOnly,
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
        Ok(match value.as_deref() {
            Some([1]) => Some(RejoinPhase::AwaitingDemotion),
            Some([2]) => Some(RejoinPhase::AwaitingRestore),
            Some([3]) => Some(RejoinPhase::Founding),
            Some(other) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("unknown rejoin phase {other:?} in the replica database"),
                ))
            }
            None => None,
        })
    }

    pub async fn store(&self, phase: Option<RejoinPhase>) -> std::io::Result<()> {
        match phase {
            Some(p) => self.tree.insert(KEY_PHASE, &[p.byte()]).map(|_| ()),
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

/// Apply a phase: persist it first, then open the gate it allows.
async fn enter(
    marker: &RejoinMarker,
    gate: &RaftGate,
    raft: &Raft,
    phase: Option<RejoinPhase>,
) -> std::io::Result<()> {
    marker.store(phase).await?;
    match phase {
        Some(p) => gate.set(p.gate()),
        None => open(gate, raft),
    }
    Ok(())
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

/// Drive the rejoin from `phase` until this replica is an ordinary member again.
pub async fn rejoin(
    raft: Raft,
    gate: std::sync::Arc<RaftGate>,
    marker: RejoinMarker,
    id: u64,
    others: Vec<String>,
    source_ip: Option<IpAddr>,
    mut phase: RejoinPhase,
) {
    let options = ClientOptions {
        rpc_timeout: Duration::from_secs(15),
        call_timeout: Duration::from_secs(20),
        source_ip,
    };
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
        "this replica lost its data (empty data dir in an existing cluster): it does not vote \
         until the leader has caught it up and restored it"
    );
    loop {
        let restoring = phase == RejoinPhase::AwaitingRestore;
        let next = match ask(&client, id, restoring).await {
            Ok(reply) => match reply.outcome.as_str() {
                "admitted" | "restored" => None,
                "demoted" => Some(RejoinPhase::AwaitingRestore),
                "catching-up" => Some(phase),
                other => {
                    tracing::warn!("unexpected rejoin answer '{other}': {}", reply.detail);
                    Some(phase)
                }
            },
            Err(e) => {
                tracing::info!("rejoin: {e}; asking again");
                Some(phase)
            }
        };
        if next != Some(phase) {
            if let Err(e) = enter(&marker, &gate, &raft, next).await {
                tracing::error!("rejoin: cannot persist the next phase: {e}; retrying");
                tokio::time::sleep(ASK_EVERY).await;
                continue;
            }
            match next {
                Some(p) => {
                    tracing::info!(phase = ?p, "demoted to learner; catching up");
                    phase = p;
                }
                None => {
                    tracing::info!("restored: this replica votes again");
                    return;
                }
            }
            continue;
        }
        tokio::time::sleep(ASK_EVERY).await;
    }
}

/// Persist `phase`, retrying until the disk takes it (nothing may proceed before it does).
pub async fn persist(marker: &RejoinMarker, phase: RejoinPhase) {
    while let Err(e) = marker.store(Some(phase)).await {
        tracing::error!(?phase, "cannot persist the rejoin marker: {e}; retrying");
        tokio::time::sleep(ASK_EVERY).await;
    }
}
