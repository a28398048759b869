//! The faults. Each is applied at a moment the runner picks, held for a while, then healed:
//! processes killed are restarted on their data dir, paused ones continued, links restored.

use super::proxy::Cuts;
use super::rng::Rng;
use crate::local_cluster::{LocalCluster, LocalClusterError};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// kill -9 the leader, restart it on its data dir.
    KillLeader,
    /// kill -9 a random replica, restart it.
    KillReplica,
    /// SIGSTOP the leader, SIGCONT it later.
    PauseLeader,
    /// Cut every link between the leader and the others (leader alone in a minority).
    IsolateLeader,
    /// A clean majority/minority split.
    Split,
    /// One replica cannot reach another; the other way still works.
    OneWay,
    /// kill -9 every replica at once, restart them all.
    KillAll,
    /// kill -9 a TaskManager agent (its shards die with it), restart it.
    KillTaskManager,
    /// SIGSTOP a TaskManager agent, SIGCONT it later.
    PauseTaskManager,
    /// Cut a TaskManager off from every replica.
    IsolateTaskManager,
    /// kill -9 a replica and restart it on the other binary (`--other-binary`, an older
    /// release): a rolling upgrade or downgrade caught half done. Before a replica goes to
    /// the older release, a cluster above version 1 is downgraded (`cluster downgrade 1`).
    RestartUpgrade,
}

pub const ALL_FAULTS: [FaultKind; 10] = [
    FaultKind::KillLeader,
    FaultKind::KillReplica,
    FaultKind::PauseLeader,
    FaultKind::IsolateLeader,
    FaultKind::Split,
    FaultKind::OneWay,
    FaultKind::KillAll,
    FaultKind::KillTaskManager,
    FaultKind::PauseTaskManager,
    FaultKind::IsolateTaskManager,
];

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillReplica => "kill-replica",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::Split => "split",
            FaultKind::OneWay => "one-way",
            FaultKind::KillAll => "kill-all",
            FaultKind::KillTaskManager => "kill-tm",
            FaultKind::PauseTaskManager => "pause-tm",
            FaultKind::IsolateTaskManager => "isolate-tm",
            FaultKind::RestartUpgrade => "restart-upgrade",
        }
    }

    /// Faults that take the leader away (failover is measured after them).
    pub fn hits_leader(self) -> bool {
        matches!(
            self,
            FaultKind::KillLeader
                | FaultKind::PauseLeader
                | FaultKind::IsolateLeader
                | FaultKind::KillAll
        )
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_FAULTS
            .iter()
            .chain([FaultKind::RestartUpgrade].iter())
            .copied()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = ALL_FAULTS.iter().map(|f| f.name()).collect();
                format!(
                    "unknown fault '{s}'; choose from {}, restart-upgrade (with --other-binary)",
                    names.join(", ")
                )
            })
    }
}

/// Where each node dials from, for cutting links by source.
#[derive(Debug, Clone)]
pub struct Addresses {
    pub replica_ip: BTreeMap<u64, IpAddr>,
    pub taskmanager_ip: BTreeMap<String, IpAddr>,
}

/// How to undo an applied fault.
#[derive(Debug)]
pub enum Heal {
    Restart(Vec<u64>),
    /// Restart a replica on this binary (`None`: the cluster's).
    RestartOn(u64, Option<std::path::PathBuf>),
    Resume(u64),
    RestartTaskManager(String),
    ResumeTaskManager(String),
    Links,
}

/// Apply `kind`; returns a description and how to heal it. `other_binary` is the older
/// release `restart-upgrade` switches replicas to.
pub async fn apply(
    kind: FaultKind,
    cluster: &mut LocalCluster,
    cuts: &Arc<Cuts>,
    addrs: &Addresses,
    rng: &mut Rng,
    other_binary: Option<&std::path::Path>,
) -> Result<(String, Heal), LocalClusterError> {
    let ids = cluster.ids();
    let leader = cluster
        .wait_for_leader(&ids, Duration::from_secs(30))
        .await?;
    let others: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
    let tms = cluster.taskmanager_ids();
    let cut_pair = |a: u64, b: u64| {
        if let (Some(ia), Some(ib)) = (addrs.replica_ip.get(&a), addrs.replica_ip.get(&b)) {
            cuts.cut(*ia, b);
            cuts.cut(*ib, a);
        }
    };
    Ok(match kind {
        FaultKind::KillLeader => {
            cluster.kill(leader)?;
            (
                format!("killed leader {leader}"),
                Heal::Restart(vec![leader]),
            )
        }
        FaultKind::KillReplica => {
            let victim = *rng.pick(&ids).unwrap_or(&leader);
            cluster.kill(victim)?;
            (
                format!("killed replica {victim}"),
                Heal::Restart(vec![victim]),
            )
        }
        FaultKind::PauseLeader => {
            cluster.pause(leader)?;
            (format!("paused leader {leader}"), Heal::Resume(leader))
        }
        FaultKind::IsolateLeader => {
            for other in &others {
                cut_pair(leader, *other);
            }
            (
                format!("isolated leader {leader} from {others:?}"),
                Heal::Links,
            )
        }
        FaultKind::Split => {
            let mut shuffled = ids.clone();
            rng.shuffle(&mut shuffled);
            let minority: Vec<u64> = shuffled[..(ids.len() - 1) / 2].to_vec();
            let majority: Vec<u64> = shuffled[(ids.len() - 1) / 2..].to_vec();
            for a in &minority {
                for b in &majority {
                    cut_pair(*a, *b);
                }
            }
            (format!("split {minority:?} | {majority:?}"), Heal::Links)
        }
        FaultKind::OneWay => {
            let mut shuffled = ids.clone();
            rng.shuffle(&mut shuffled);
            let (from, to) = (shuffled[0], shuffled[1 % shuffled.len()]);
            if let Some(ip) = addrs.replica_ip.get(&from) {
                cuts.cut(*ip, to);
            }
            (format!("cut {from} → {to} (one way)"), Heal::Links)
        }
        FaultKind::KillAll => {
            for id in &ids {
                cluster.kill(*id)?;
            }
            (
                "killed every replica".to_string(),
                Heal::Restart(ids.clone()),
            )
        }
        FaultKind::KillTaskManager => {
            let tm = rng.pick(&tms).cloned().unwrap_or_default();
            cluster.kill_taskmanager(&tm)?;
            (
                format!("killed TaskManager {tm}"),
                Heal::RestartTaskManager(tm),
            )
        }
        FaultKind::PauseTaskManager => {
            let tm = rng.pick(&tms).cloned().unwrap_or_default();
            cluster.pause_taskmanager(&tm)?;
            (
                format!("paused TaskManager {tm}"),
                Heal::ResumeTaskManager(tm),
            )
        }
        FaultKind::RestartUpgrade => {
            let victim = *rng.pick(&ids).unwrap_or(&leader);
            restart_on_the_other_binary(cluster, victim, other_binary).await?
        }
        FaultKind::IsolateTaskManager => {
            let tm = rng.pick(&tms).cloned().unwrap_or_default();
            if let Some(ip) = addrs.taskmanager_ip.get(&tm) {
                for id in &ids {
                    cuts.cut(*ip, *id);
                }
            }
            (
                format!("cut TaskManager {tm} off from every replica"),
                Heal::Links,
            )
        }
    })
}

/// `restart-upgrade`: kill -9 `victim`, to be restarted on the other binary. A replica
/// going to the older release needs the cluster at version 1: above it, the cluster is
/// downgraded first, and when that is refused (a member down) the replica restarts on the
/// binary it ran.
async fn restart_on_the_other_binary(
    cluster: &mut LocalCluster,
    victim: u64,
    other_binary: Option<&std::path::Path>,
) -> Result<(String, Heal), LocalClusterError> {
    let other = other_binary.ok_or_else(|| {
        LocalClusterError::Io(std::io::Error::other(
            "restart-upgrade needs --other-binary",
        ))
    })?;
    let to_older = cluster.replica_binary(victim)? != other;
    let mut target = to_older.then(|| other.to_path_buf());
    let mut detail = format!(
        "restarted replica {victim} on {}",
        if to_older {
            "the older release"
        } else {
            "this build"
        }
    );
    if to_older {
        match downgrade_for(cluster, victim).await {
            Ok(true) => detail = format!("downgraded the cluster to version 1, {detail}"),
            Ok(false) => {}
            Err(why) => {
                target = cluster.replica(victim)?.binary.clone();
                detail = format!("restarted replica {victim} on the binary it ran ({why})");
            }
        }
    }
    cluster.kill(victim)?;
    Ok((detail, Heal::RestartOn(victim, target)))
}

/// Bring the cluster to version 1 (what the older release runs in) and `victim`'s data dir
/// to what that release reads; answers whether the version was above 1. Run every time a
/// replica goes to the older release (a replica a downgrade left not ready must not).
async fn downgrade_for(cluster: &LocalCluster, victim: u64) -> Result<bool, String> {
    let ids = cluster.ids();
    let leader = cluster
        .wait_for_leader(&ids, Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())?;
    let version = cluster
        .local_status(leader)
        .await
        .ok_or("the leader did not say its cluster version")?
        .cluster_version
        .unwrap_or(1);
    let options = crate::client::ClientOptions {
        rpc_timeout: Duration::from_secs(60),
        call_timeout: Duration::from_secs(60),
        ..crate::client::ClientOptions::new(cluster.credentials().map_err(|e| e.to_string())?)
    };
    let client = crate::client::Client::with_options(cluster.endpoints(), options)
        .map_err(|e| e.to_string())?;
    let reply = client
        .downgrade(1, false)
        .await
        .map_err(|e| format!("downgrade refused: {e}"))?;
    match reply.replicas.iter().find(|r| r.id == victim) {
        Some(r) if r.ready => Ok(version > 1),
        Some(r) => Err(format!("replica {victim} not ready for it: {}", r.error)),
        None => Err(format!("replica {victim} not in the downgrade's reply")),
    }
}

pub fn heal(
    heal: Heal,
    cluster: &mut LocalCluster,
    cuts: &Arc<Cuts>,
) -> Result<(), LocalClusterError> {
    match heal {
        Heal::Restart(ids) => {
            for id in ids {
                cluster.restart(id)?;
            }
        }
        Heal::RestartOn(id, binary) => {
            cluster.set_replica_binary(id, binary)?;
            cluster.restart(id)?;
        }
        Heal::Resume(id) => cluster.resume(id)?,
        Heal::RestartTaskManager(tm) => cluster.restart_taskmanager(&tm)?,
        Heal::ResumeTaskManager(tm) => cluster.resume_taskmanager(&tm)?,
        Heal::Links => cuts.heal_all(),
    }
    Ok(())
}
