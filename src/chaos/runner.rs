//! One chaos run, start to verdict.

use super::checker::{self, Verdict};
use super::executions::{self, Recorder};
use super::history::{self, Event, History};
use super::hostile::{HostileTask, HOSTILE_CEILING, HOSTILE_SLOTS, HOSTILE_TENANT, ROGUE_AGENT};
use super::nemesis::{self, Addresses, FaultKind};
use super::proxy::{Cuts, Proxy};
use super::rng::Rng;
use super::sampler::{self, Incarnations};
use super::scheduling_checker;
use super::walls_checker;
use super::workload::{Acknowledged, ClientTask, HEAVY_TENANT, QUOTA_SLOTS, QUOTA_TENANT};
use crate::bench::Summary;
use crate::client::Client;
use crate::config::ServeConfig;
use crate::local_cluster::{free_port, wait_for, HarnessSecurity, LocalCluster, LocalClusterError};
use crate::pb::api::{JobStatus, SetQuotaRequest};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error(transparent)]
    Cluster(#[from] LocalClusterError),
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
}

#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub binary: PathBuf,
    pub dir: PathBuf,
    pub duration: Duration,
    pub seed: u64,
    pub replicas: u64,
    pub taskmanagers: usize,
    pub clients: usize,
    pub faults: Vec<FaultKind>,
    /// Busy threads for the whole run.
    pub load: usize,
    /// After healing, every job must end within this.
    pub liveness_bound: Duration,
    pub config: ServeConfig,
    /// Mutual TLS and tokens on every process (else `--insecure`).
    pub tls: bool,
    /// A hostile tenant attacks the others throughout (implies `tls`).
    pub hostile: bool,
    /// An older release, for the `restart-upgrade` fault.
    pub other_binary: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    pub seed: u64,
    pub duration_secs: f64,
    pub faults: BTreeMap<String, usize>,
    pub operations: BTreeMap<String, usize>,
    pub failover: Option<Summary>,
    pub verdicts: Vec<Verdict>,
}

impl ChaosReport {
    pub fn ok(&self) -> bool {
        self.verdicts.iter().all(|v| v.ok())
    }
}

fn replica_ip(id: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + id as u8))
}

fn taskmanager_ip(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 100 + index as u8))
}

/// What a run leaves in its directory, `history.jsonl` (made first) marking it as a run's.
/// A replay of the same seed goes to the same directory by default: the previous run's
/// record, its cluster's data dirs above all, is removed first, or the new replicas would
/// start from the old ones' logs and membership (whose proxy ports are gone) and never elect
/// a leader. A directory without the mark is not a run's: nothing in it is removed.
const RECORD: [&str; 5] = [
    "cluster",
    "history.jsonl",
    "executions.log",
    "record.sh",
    "report.json",
];

fn clear_previous_record(dir: &std::path::Path) -> std::io::Result<()> {
    if !dir.join("history.jsonl").is_file() {
        return Ok(());
    }
    for name in RECORD {
        let path = dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path)?,
            Ok(_) => std::fs::remove_file(&path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub async fn run(opts: ChaosOptions) -> Result<ChaosReport, ChaosError> {
    std::fs::create_dir_all(&opts.dir)?;
    clear_previous_record(&opts.dir)?;
    {
        // The shards run sandboxed (as root), as users of their own: they reach the recording
        // script and file through this directory, and nothing else in it is theirs to read.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&opts.dir, std::fs::Permissions::from_mode(0o711))?;
    }
    let began = Instant::now();
    let history = Arc::new(History::create(&opts.dir.join("history.jsonl"))?);
    let recorder = Arc::new(Recorder::new(&opts.dir)?);
    let cuts = Cuts::new();
    let mut rng = Rng::new(opts.seed);

    // Each replica listens on its own loopback address and is reached through its proxy.
    let mut proxies = Vec::new();
    let mut topology = Vec::new();
    for id in 1..=opts.replicas {
        let listen = SocketAddr::new(replica_ip(id), free_port()?);
        let proxy = Proxy::start(
            "127.0.0.1:0".parse().map_err(std::io::Error::other)?,
            listen,
            id,
            cuts.clone(),
        )
        .await?;
        topology.push((id, listen.to_string(), proxy.listen.to_string()));
        proxies.push(proxy);
    }
    let security = if opts.tls || opts.hostile {
        HarnessSecurity::tls_under(&opts.dir.join("cluster"))?
    } else {
        HarnessSecurity::Insecure
    };
    let mut cluster = LocalCluster::start_proxied_with(
        &opts.binary,
        opts.dir.join("cluster"),
        &topology,
        &opts.config,
        security,
    )?;
    let credentials = cluster.credentials()?;
    cluster.set_sandbox(true);
    let ids = cluster.ids();
    let incarnations: Incarnations = Arc::new(Mutex::new(ids.iter().map(|i| (*i, 1)).collect()));
    cluster
        .wait_for_leader(&ids, Duration::from_secs(60))
        .await?;
    let mut addrs = Addresses {
        replica_ip: ids.iter().map(|i| (*i, replica_ip(*i))).collect(),
        taskmanager_ip: BTreeMap::new(),
    };
    for k in 0..opts.taskmanagers {
        let id = format!("tm-{k}");
        cluster.start_taskmanager_from(&id, AGENT_SLOTS, &[], Some(taskmanager_ip(k)))?;
        addrs.taskmanager_ip.insert(id, taskmanager_ip(k));
    }
    let endpoints = cluster.endpoints();
    tracing::info!(
        seed = opts.seed,
        replicas = opts.replicas,
        taskmanagers = opts.taskmanagers,
        "chaos run started"
    );

    // The tenants' quotas the workload's checkers hold the cluster to.
    let admin = Client::new(endpoints.clone(), credentials.clone())?;
    wait_for(Duration::from_secs(30), "quotas to be set", || async {
        admin
            .set_quota(QUOTA_TENANT, Some(QUOTA_SLOTS), false, None)
            .await
            .ok()?;
        admin
            .set_quota(HEAVY_TENANT, None, false, Some(2))
            .await
            .ok()
    })
    .await?;

    // A schedule fires throughout; its checker wants one job per scheduled time.
    let mut periodic = super::periodic_checker::PeriodicProbe::default();
    periodic.start(&admin, &recorder).await;

    // Elections from here on are the faults' doing; in a soak there must be none.
    let term_at_start = highest_term(&cluster, &ids).await;

    // Observers and workload.
    let load = super::load::Load::start(opts.load);
    let suspicions = super::suspicion::Suspicions::default();
    let suspicion_watch = suspicions.watch(Client::new(endpoints.clone(), credentials.clone())?);
    let stop_sampler = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sampler::run(
        topology
            .iter()
            .map(|(id, listen, _)| (*id, listen.clone()))
            .collect(),
        incarnations.clone(),
        history.clone(),
        stop_sampler.clone(),
        credentials.clone(),
    ));
    let stop_clients = Arc::new(AtomicBool::new(false));
    let acknowledged: Acknowledged = Arc::default();
    let mut clients = Vec::new();
    for c in 0..opts.clients {
        let task = ClientTask {
            id: c,
            endpoints: endpoints.clone(),
            history: history.clone(),
            recorder: recorder.clone(),
            acknowledged: acknowledged.clone(),
            stop: stop_clients.clone(),
            seed: opts.seed.wrapping_add(1 + c as u64),
            credentials: credentials.clone(),
        };
        clients.push(tokio::spawn(task.run()));
    }
    let hostile = if opts.hostile {
        let task =
            hostile_task(&cluster, &admin, &opts, &history, &recorder, &acknowledged).await?;
        let stop = task.stop.clone();
        Some((tokio::spawn(task.run()), stop))
    } else {
        None
    };

    // The nemesis: every enabled fault in a shuffled order, again and again.
    let mut fault_counts: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = began + opts.duration;
    let mut order: Vec<FaultKind> = Vec::new();
    while Instant::now() < deadline && !opts.faults.is_empty() {
        if order.is_empty() {
            order = opts.faults.clone();
            rng.shuffle(&mut order);
        }
        let kind = order.remove(0);
        tokio::time::sleep(Duration::from_millis(rng.range(1_000, 3_000))).await;
        if kind == FaultKind::RestartUpgrade {
            // The older release knows no schedules: the cluster must drop it to go there.
            periodic.close(&admin, true).await;
        }
        let applied = nemesis::apply(
            kind,
            &mut cluster,
            &cuts,
            &addrs,
            &mut rng,
            opts.other_binary.as_deref(),
        )
        .await;
        let (detail, heal) = match applied {
            Ok(applied) => applied,
            Err(e) => {
                tracing::warn!(fault = kind.name(), "could not apply: {e}");
                continue;
            }
        };
        let restarted: &[u64] = match &heal {
            nemesis::Heal::Restart(ids) => ids,
            nemesis::Heal::RestartOn(id, _) => std::slice::from_ref(id),
            _ => &[],
        };
        {
            // Count the next incarnation before the process comes back.
            let mut inc = incarnations.lock().unwrap_or_else(|p| p.into_inner());
            for id in restarted {
                *inc.entry(*id).or_default() += 1;
            }
        }
        *fault_counts.entry(kind.name().to_string()).or_default() += 1;
        tracing::info!(fault = kind.name(), %detail, "fault");
        history.record(&Event::Fault {
            at_ns: history.now_ns(),
            fault: kind.name().into(),
            detail: detail.clone(),
            phase: "start".into(),
        });
        let hold = if kind == FaultKind::KillAll {
            rng.range(500, 1_500)
        } else {
            rng.range(2_000, 6_000)
        };
        tokio::time::sleep(Duration::from_millis(hold)).await;
        nemesis::heal(heal, &mut cluster, &cuts)?;
        history.record(&Event::Fault {
            at_ns: history.now_ns(),
            fault: kind.name().into(),
            detail,
            phase: "heal".into(),
        });
        if let Err(e) = cluster.wait_for_leader(&ids, Duration::from_secs(30)).await {
            tracing::warn!("no leader 30 s after healing {}: {e}", kind.name());
        }
        periodic.start(&admin, &recorder).await;
    }

    // A soak (no faults): the workload runs for the whole duration all the same.
    tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;

    // Heal everything, stop the clients, let the work finish.
    cuts.heal_all();
    drop(load);
    stop_clients.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let hostile_ran = hostile.is_some();
    if let Some((task, stop)) = hostile {
        stop.store(true, Ordering::Relaxed);
        let _ = task.await;
    }
    cluster
        .wait_for_leader(&ids, Duration::from_secs(60))
        .await?;
    let client = Client::new(endpoints.clone(), credentials.clone())?;
    // No turn after this: the schedule's mark says up to where it must have fired.
    periodic.close(&client, false).await;
    let mut verdicts = Vec::new();
    let liveness = wait_for(opts.liveness_bound, "every job to end", || async {
        let jobs = client.list_jobs().await.ok()?;
        jobs.iter()
            .all(|j| matches!(j.state.as_str(), "finished" | "failed" | "cancelled"))
            .then_some(())
    })
    .await;
    let jobs = client.list_jobs().await?;
    let unfinished: Vec<String> = jobs
        .iter()
        .filter(|j| !matches!(j.state.as_str(), "finished" | "failed" | "cancelled"))
        .map(|j| format!("{} ({}) is still {}", j.job_id, j.name, j.state))
        .collect();
    let unfinished = checker::capped(unfinished);
    verdicts.push(Verdict {
        name: "liveness".into(),
        checked: format!(
            "{} jobs all ended within {:?} of healing",
            jobs.len(),
            opts.liveness_bound
        ),
        violations: if liveness.is_ok() {
            Vec::new()
        } else {
            unfinished
        },
    });
    let convergence = cluster.wait_converged(&ids, Duration::from_secs(60)).await;
    let mut digests = Vec::new();
    for id in &ids {
        if let Some(s) = cluster.local_status(*id).await {
            digests.push(format!(
                "replica {id}: applied {} digest {}",
                s.last_applied, s.state_digest
            ));
        }
    }
    verdicts.push(Verdict {
        name: "convergence".into(),
        checked: format!("state digests of {} replicas after healing", ids.len()),
        violations: if convergence.is_ok() {
            Vec::new()
        } else {
            digests
        },
    });
    if opts.faults.is_empty() {
        verdicts.push(steady_leadership(
            term_at_start,
            highest_term(&cluster, &ids).await,
        ));
    }
    stop_sampler.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    history.flush();

    let mut final_jobs: Vec<JobStatus> = Vec::with_capacity(jobs.len());
    for j in &jobs {
        final_jobs.push(client.job_status(&j.job_id).await?);
    }
    let events = history::read(&opts.dir.join("history.jsonl"))?;
    let runs = executions::read(&recorder.file);
    verdicts.push(checker::submissions(&events, &final_jobs));
    verdicts.push(checker::executions(&runs, &final_jobs));
    verdicts.push(checker::leaders_and_commits(&events));
    verdicts.push(scheduling_checker::dependencies(&runs, &final_jobs));
    verdicts.push(scheduling_checker::gangs(&runs, &final_jobs));
    verdicts.push(periodic.verdict());
    let slots_of: BTreeMap<String, u32> = (0..opts.taskmanagers)
        .map(|k| (format!("tm-{k}"), AGENT_SLOTS))
        .collect();
    verdicts.push(scheduling_checker::capacity(&runs, &slots_of));
    verdicts.push(scheduling_checker::quotas(
        &runs,
        &final_jobs,
        &[(QUOTA_TENANT, QUOTA_SLOTS)],
    ));
    if hostile_ran {
        let quotas = client.list_quotas().await?;
        let tokens = client.list_tokens().await?;
        verdicts.push(walls_checker::walls(
            &events,
            &walls_checker::FinalState {
                jobs: &final_jobs,
                quotas: &quotas,
                tokens: &tokens,
            },
        ));
    }
    suspicion_watch.abort();
    // Every fault may leave an agent without a leader for longer than its lease.
    verdicts.push(suspicions.verdict(!opts.faults.is_empty()));

    let mut operations: BTreeMap<String, usize> = BTreeMap::new();
    for e in &events {
        if let Event::Attack { answer, .. } = e {
            *operations
                .entry(format!(
                    "attack:{}",
                    serde_json::to_string(answer)
                        .unwrap_or_default()
                        .trim_matches('"')
                ))
                .or_default() += 1;
        }
        if let Event::Op { op, outcome, .. } = e {
            *operations
                .entry(format!(
                    "{op}:{}",
                    serde_json::to_string(outcome)
                        .unwrap_or_default()
                        .trim_matches('"')
                ))
                .or_default() += 1;
        }
    }
    operations.insert("shard runs".into(), runs.len());
    let failover: Vec<Duration> = checker::failovers(&events)
        .into_iter()
        .map(Duration::from_nanos)
        .collect();
    drop(proxies);
    Ok(ChaosReport {
        seed: opts.seed,
        duration_secs: began.elapsed().as_secs_f64(),
        faults: fault_counts,
        operations,
        failover: Summary::of(&failover),
        verdicts,
    })
}

/// The highest term any replica reports (0 if none answers).
async fn highest_term(cluster: &LocalCluster, ids: &[u64]) -> u64 {
    let mut highest = 0;
    for id in ids {
        if let Some(status) = cluster.local_status(*id).await {
            highest = highest.max(status.term);
        }
    }
    highest
}

/// A soak provokes no election: one there means timeouts too tight for the load (a false
/// election costs more than a slow real one).
fn steady_leadership(term_at_start: u64, term_at_end: u64) -> Verdict {
    Verdict {
        name: "steady leadership".into(),
        checked: format!("the term stayed at {term_at_start} with no fault"),
        violations: if term_at_end > term_at_start {
            vec![format!(
                "the term rose from {term_at_start} to {term_at_end}: elections nobody provoked"
            )]
        } else {
            Vec::new()
        },
    }
}

/// What a shard of the hostile tenant must never read: the CA's and the agents' keys, the
/// bootstrap token, the agents' journals and incarnations. Nothing when the agents cannot
/// sandbox their shards (not root): they then run as the agent's user, as the README says.
fn secrets(cluster: &LocalCluster) -> Vec<PathBuf> {
    let HarnessSecurity::Tls { dir: certs, .. } = cluster.security() else {
        return Vec::new();
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Vec::new();
    }
    let mut files = vec![
        certs.join("ca-key.pem"),
        certs.join("admin.token"),
        certs.join("replica-1-key.pem"),
    ];
    for id in cluster.taskmanager_ids() {
        files.push(crate::security::TlsFiles::new(certs, format!("tm-{id}")).key());
        if let Ok(agent) = cluster.agent(&id) {
            files.push(agent.work_dir.join("incarnation"));
            files.push(agent.work_dir.join(crate::taskmanager::journal::FILE_NAME));
        }
    }
    files
}

/// The hostile tenant's token (`submit`, its own tenant), quota and ceiling, and its task.
async fn hostile_task(
    cluster: &LocalCluster,
    admin: &Client,
    opts: &ChaosOptions,
    history: &Arc<History>,
    recorder: &Arc<Recorder>,
    acknowledged: &Acknowledged,
) -> Result<HostileTask, ChaosError> {
    // The token's secret is made on the caller's side: one secret, retried until it lands
    // (a retry after an unknown outcome finds the token there and refuses it).
    let secret = crate::security::Secret::generate()?;
    wait_for(
        Duration::from_secs(30),
        "the hostile tenant's token",
        || async {
            match admin
                .create_token_with(
                    HOSTILE_TENANT,
                    crate::domain::Role::Submit,
                    Some(HOSTILE_TENANT),
                    &secret,
                )
                .await
            {
                Ok(_) => Some(()),
                Err(e) if e.code() == Some(tonic::Code::AlreadyExists) => Some(()),
                Err(_) => None,
            }
        },
    )
    .await?;
    wait_for(
        Duration::from_secs(30),
        "the hostile tenant's quota",
        || async {
            admin
                .set_quota_limits(SetQuotaRequest {
                    tenant: HOSTILE_TENANT.into(),
                    slots: Some(HOSTILE_SLOTS),
                    unlimited: false,
                    weight: Some(1),
                    max_priority: Some(HOSTILE_CEILING),
                    resources: None,
                })
                .await
                .ok()
        },
    )
    .await?;
    let token = secret;
    Ok(HostileTask {
        endpoints: cluster.endpoints(),
        tenant: cluster
            .credentials_as(&format!("client-{HOSTILE_TENANT}"))?
            .with_token(Some(token)),
        agent: cluster.credentials_as(&format!("tm-{ROGUE_AGENT}"))?,
        clients: opts.clients,
        history: history.clone(),
        recorder: recorder.clone(),
        acknowledged: acknowledged.clone(),
        stop: Arc::new(AtomicBool::new(false)),
        seed: opts.seed.wrapping_add(1_000),
        secrets: secrets(cluster),
    })
}
/// Slots of each chaos agent.
const AGENT_SLOTS: u32 = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_removes_the_previous_record_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("chaos-record-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("cluster/replica-1")).unwrap();
        std::fs::write(dir.join("cluster/replica-1/log"), b"old").unwrap();
        std::fs::write(dir.join("history.jsonl"), b"old").unwrap();
        std::fs::write(dir.join("report.json"), b"old").unwrap();
        std::fs::write(dir.join("notes.txt"), b"the operator's").unwrap();
        clear_previous_record(&dir).unwrap();
        assert!(!dir.join("cluster").exists());
        assert!(!dir.join("history.jsonl").exists());
        assert!(!dir.join("report.json").exists());
        assert!(dir.join("notes.txt").exists());
        // Nothing to clear is no error.
        clear_previous_record(&dir).unwrap();
        // Without a run's history the directory is not a record: its `cluster` stays.
        std::fs::create_dir_all(dir.join("cluster")).unwrap();
        clear_previous_record(&dir).unwrap();
        assert!(dir.join("cluster").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
