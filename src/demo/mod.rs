//! `dispatcher demo`: the whole promise in about half a minute. Three replicas and three
//! TaskManagers of this very binary run as child processes in a temporary directory; three
//! real jobs generate a data set of sensor readings, clean and aggregate it in shards, and
//! merge the parts. In the middle of the aggregation the demo kills the leader with SIGKILL,
//! then a TaskManager that is running shards, and shows the leader change, the re-placed
//! shards and the job's progress as they happen. It ends by checking the merged result
//! against a computation of its own.
//!
//! The demo only drives the public API and kills processes by pid, like a user would; it
//! must not reach into a replica. Everything it starts dies with `LocalCluster`'s drop.

pub mod dataset;
pub mod shard;
mod view;

use crate::client::{Client, ClientError, ClientOptions};
use crate::config::ServeConfig;
use crate::local_cluster::{wait_for, LocalCluster, LocalClusterError};
use crate::pb::api::{JobStatus, SubmitRequest, TaskManagerInfo};
use dataset::Aggregate;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use view::{progress_bar, View};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Cluster(#[from] LocalClusterError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the replicas, TaskManagers and data live.
    pub dir: PathBuf,
    /// Parts of the data set = shards of the generate and aggregate jobs.
    pub parts: u32,
    /// How long each aggregate shard works (stands for a heavier computation).
    pub pace: Duration,
    pub taskmanagers: usize,
    pub slots: u32,
    /// Print the live view on stderr (stdout carries JSON).
    pub view_on_stderr: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    pub killed_leader: u64,
    pub new_leader: u64,
    /// SIGKILL of the leader → the first read the new leader answered.
    pub failover_ms: u64,
    pub killed_taskmanager: String,
    pub shards_on_killed_taskmanager: usize,
    /// SIGKILL of the TaskManager → every shard it held running (or done) elsewhere.
    pub taskmanager_recovery_ms: u64,
    pub taskmanager_timeout_ms: u64,
    pub shards_finished: u32,
    pub shards_replaced: usize,
    pub sensors: usize,
    pub clean_readings: u64,
    pub dirty_readings_dropped: u64,
    pub result_verified: bool,
    pub total_seconds: f64,
}

const STEP_DEADLINE: Duration = Duration::from_secs(90);
const TICK: Duration = Duration::from_millis(100);

/// Where the aggregation's fault script stands.
enum Script {
    /// Waiting for the aggregation to be well under way.
    BeforeLeaderKill,
    /// The leader was killed; waiting for a TaskManager that runs shards.
    BeforeTaskManagerKill,
    /// A TaskManager was killed at `at`; waiting for its shards to run elsewhere.
    Recovering {
        at: Instant,
        victim: String,
        lost: BTreeSet<u32>,
    },
    Done,
}

struct Demo {
    cluster: LocalCluster,
    /// Short per-attempt deadline: the view must keep moving while a leader is dead.
    client: Client,
    view: View,
    data: PathBuf,
    binary: PathBuf,
    leader: Option<(u64, u64)>,
    tm_states: BTreeMap<String, String>,
    /// Who last held each shard of the job being watched.
    owners: BTreeMap<u32, String>,
    replaced: usize,
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl Demo {
    /// A job whose shards run `dispatcher demo-shard <step>` over a data set of `parts`.
    fn job_request(&self, step: &str, shards: u32, parts: u32, pace: Duration) -> SubmitRequest {
        let (data, parts, pace) = (
            self.data.display().to_string(),
            parts.to_string(),
            pace.as_millis().to_string(),
        );
        crate::bench::job_request(
            step,
            shards,
            &self.binary.display().to_string(),
            &[
                "demo-shard",
                step,
                "--data",
                &data,
                "--parts",
                &parts,
                "--pace-ms",
                &pace,
            ],
        )
    }

    /// One look at the cluster: report what changed, redraw the status line.
    async fn observe(&mut self, job_id: &str, label: &str) -> Option<JobStatus> {
        if let Ok(status) = self.client.cluster_status().await {
            if let Some(id) = status.leader_id {
                if self.leader != Some((id, status.term)) {
                    self.view.event(&format!(
                        "replica {id} is the leader (term {})",
                        status.term
                    ));
                    self.leader = Some((id, status.term));
                }
            }
        }
        let tms = self.client.list_taskmanagers().await.unwrap_or_default();
        self.note_taskmanagers(&tms);
        let job = self.client.job_status(job_id).await.ok()?;
        self.note_placements(&job);
        self.draw(label, &job, &tms);
        Some(job)
    }

    fn note_taskmanagers(&mut self, tms: &[TaskManagerInfo]) {
        for tm in tms {
            let before = self.tm_states.insert(tm.id.clone(), tm.state.clone());
            if before.as_deref() != Some(tm.state.as_str()) && before.is_some() {
                let what = match tm.state.as_str() {
                    "lost" => {
                        "was declared lost (silent past the timeout); its shards go elsewhere"
                    }
                    "alive" => "is alive again",
                    other => other,
                };
                self.view.event(&format!("TaskManager {} {what}", tm.id));
            }
        }
    }

    fn note_placements(&mut self, job: &JobStatus) {
        for shard in &job.shards {
            let Some(now) = &shard.taskmanager else {
                continue;
            };
            if let Some(before) = self.owners.insert(shard.index, now.clone()) {
                if &before != now {
                    self.replaced += 1;
                    self.view.event(&format!(
                        "shard {} re-placed: {before} → {now} (attempt {})",
                        shard.index, shard.attempt
                    ));
                }
            }
        }
    }

    fn draw(&mut self, label: &str, job: &JobStatus, tms: &[TaskManagerInfo]) {
        let count = |state: &str| job.shards.iter().filter(|s| s.state == state).count();
        let (finished, running) = (count("finished"), count("running") + count("assigned"));
        let total = job.shards.len();
        let leader = self
            .leader
            .map(|(id, term)| format!("leader {id} (term {term})"))
            .unwrap_or_else(|| "no leader".into());
        let tms: Vec<String> = tms
            .iter()
            .map(|t| match t.state.as_str() {
                "alive" => format!("{} {}/{}", t.id, t.used_slots, t.slots),
                other => format!("{} {other}", t.id),
            })
            .collect();
        self.view.status(&format!(
            "{label:<9} {} {finished:>2}/{total} done, {running:>2} running │ {leader} │ {}",
            progress_bar(finished, running, total, 24),
            tms.join("  ")
        ));
    }

    /// Submit a job and follow it until it finishes, running `script` on every look.
    async fn run_job(
        &mut self,
        label: &str,
        request: SubmitRequest,
        mut script: Option<&mut Script>,
        summary: &mut Option<FaultTimes>,
    ) -> Result<JobStatus, DemoError> {
        let shards = request.spec.as_ref().map_or(0, |s| s.shard_count);
        let job_id = self.client.submit(request).await?.job_id;
        self.owners.clear();
        self.view.event(&format!(
            "submitted job '{label}' ({}) as {job_id}",
            plural(shards as usize, "shard", "shards")
        ));
        let began = Instant::now();
        loop {
            if began.elapsed() > STEP_DEADLINE {
                return Err(DemoError::Failed(format!(
                    "job '{label}' did not finish within {STEP_DEADLINE:?}"
                )));
            }
            let Some(job) = self.observe(&job_id, label).await else {
                tokio::time::sleep(TICK).await;
                continue;
            };
            if let Some(script) = script.as_deref_mut() {
                self.step_script(script, &job, summary).await?;
            }
            match job.state.as_str() {
                "finished" => {
                    self.view.event(&format!(
                        "job '{label}' finished: {} in {:.1} s",
                        plural(job.shards.len(), "shard", "shards"),
                        began.elapsed().as_secs_f64()
                    ));
                    return Ok(job);
                }
                "failed" | "cancelled" => {
                    let why = job
                        .shards
                        .iter()
                        .find_map(|s| s.error.clone())
                        .unwrap_or_default();
                    return Err(DemoError::Failed(format!(
                        "job '{label}' {}: {why}",
                        job.state
                    )));
                }
                _ => tokio::time::sleep(TICK).await,
            }
        }
    }

    async fn step_script(
        &mut self,
        script: &mut Script,
        job: &JobStatus,
        times: &mut Option<FaultTimes>,
    ) -> Result<(), DemoError> {
        let running_on = |tm: &str| {
            job.shards
                .iter()
                .filter(|s| s.state == "running" && s.taskmanager.as_deref() == Some(tm))
                .map(|s| s.index)
                .collect::<BTreeSet<u32>>()
        };
        let running = job.shards.iter().filter(|s| s.state == "running").count();
        match script {
            Script::BeforeLeaderKill if running >= 4 => {
                let (killed, failover) = self.kill_leader(&job.job_id).await?;
                *times = Some(FaultTimes {
                    killed_leader: killed,
                    failover,
                    ..FaultTimes::default()
                });
                *script = Script::BeforeTaskManagerKill;
            }
            Script::BeforeTaskManagerKill => {
                let victim = self
                    .cluster
                    .taskmanager_ids()
                    .into_iter()
                    .max_by_key(|tm| running_on(tm).len());
                let Some(victim) = victim.filter(|tm| running_on(tm).len() >= 2) else {
                    return Ok(());
                };
                let lost = running_on(&victim);
                self.cluster.kill_taskmanager(&victim)?;
                self.view.event(&format!(
                    "kill -9 TaskManager {victim}, running shards {lost:?}"
                ));
                *script = Script::Recovering {
                    at: Instant::now(),
                    victim,
                    lost,
                };
            }
            Script::Recovering { at, victim, lost } => {
                let elsewhere = lost.iter().all(|i| {
                    job.shards.iter().any(|s| {
                        s.index == *i
                            && (s.state == "finished"
                                || (s.state == "running"
                                    && s.taskmanager.as_deref() != Some(victim.as_str())))
                    })
                });
                if elsewhere {
                    let took = at.elapsed();
                    self.view.event(&format!(
                        "all {} of {victim}'s shards run elsewhere, {:.1} s after the kill",
                        lost.len(),
                        took.as_secs_f64()
                    ));
                    if let Some(t) = times.as_mut() {
                        t.victim = victim.clone();
                        t.lost = lost.len();
                        t.recovery = took;
                    }
                    *script = Script::Done;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// kill -9 the leader, time how long until a new one answers, restart the old one.
    async fn kill_leader(&mut self, job_id: &str) -> Result<(u64, Duration), DemoError> {
        let ids = self.cluster.ids();
        let leader = self.cluster.wait_for_leader(&ids, STEP_DEADLINE).await?;
        self.cluster.kill(leader)?;
        let killed = Instant::now();
        self.view
            .event(&format!("kill -9 replica {leader}, the leader"));
        let failover = wait_for(STEP_DEADLINE, "a new leader", || async {
            // A job read is linearizable: only a leader of the new term can answer it.
            self.client
                .job_status(job_id)
                .await
                .ok()
                .map(|_| killed.elapsed())
        })
        .await?;
        self.view.event(&format!(
            "a new leader answers, {} ms after the kill",
            failover.as_millis()
        ));
        self.cluster.restart(leader)?;
        self.view.event(&format!(
            "replica {leader} restarted on its data dir; it rejoins as a follower"
        ));
        Ok((leader, failover))
    }
}

#[derive(Debug, Default)]
struct FaultTimes {
    killed_leader: u64,
    failover: Duration,
    victim: String,
    lost: usize,
    recovery: Duration,
}

/// Run the demo in `options.dir` (which must exist). Everything started is stopped when
/// this returns or its future is dropped.
pub async fn run(options: &DemoOptions) -> Result<DemoSummary, DemoError> {
    let started = Instant::now();
    let mut view = View::new(options.view_on_stderr);
    let config = ServeConfig::default();
    let binary = std::env::current_exe()?;
    view.line(&format!(
        "dispatcher demo: 3 replicas and {} in {}",
        plural(options.taskmanagers, "TaskManager", "TaskManagers"),
        options.dir.display()
    ));
    // Secure like a real deployment: throw-away certificates and an admin token under the
    // demo's directory.
    let cluster = LocalCluster::start_secure(&binary, options.dir.join("cluster"), 3, &config)?;
    let client = Client::with_options(
        cluster.endpoints(),
        ClientOptions {
            rpc_timeout: Duration::from_millis(500),
            call_timeout: Duration::from_secs(5),
            source_ip: None,
            credentials: cluster.credentials()?,
        },
    )?;
    let data = options.dir.join("data");
    std::fs::create_dir_all(&data)?;
    let mut demo = Demo {
        cluster,
        client,
        view,
        data,
        binary,
        leader: None,
        tm_states: BTreeMap::new(),
        owners: BTreeMap::new(),
        replaced: 0,
    };
    let ids = demo.cluster.ids();
    demo.cluster.wait_for_leader(&ids, STEP_DEADLINE).await?;
    demo.view.event(&format!(
        "replicas up on {}",
        demo.cluster.endpoints().join(", ")
    ));
    for i in 1..=options.taskmanagers {
        demo.cluster
            .start_taskmanager(&format!("tm-{i}"), options.slots, &[])?;
    }
    let want = options.taskmanagers;
    let client = &demo.client;
    wait_for(STEP_DEADLINE, "the TaskManagers to register", || async {
        let tms = client.list_taskmanagers().await.ok()?;
        (tms.iter().filter(|t| t.state == "alive").count() >= want).then_some(())
    })
    .await?;
    demo.view.event(&format!(
        "{} registered, {} slots each",
        plural(want, "TaskManager", "TaskManagers"),
        options.slots
    ));

    let parts = options.parts;
    let mut times = None;
    let quick = Duration::from_millis(300);
    let generate = demo.job_request("generate", parts, parts, quick);
    demo.run_job("generate", generate, None, &mut times).await?;
    let mut script = Script::BeforeLeaderKill;
    let aggregate = demo.job_request("aggregate", parts, parts, options.pace);
    demo.run_job("aggregate", aggregate, Some(&mut script), &mut times)
        .await?;
    let merge = demo.job_request("merge", 1, parts, quick);
    demo.run_job("merge", merge, None, &mut times).await?;
    demo.view.finish();

    let times = times.ok_or_else(|| {
        DemoError::Failed("the aggregation ended before the leader could be killed".into())
    })?;
    if !matches!(script, Script::Done) {
        return Err(DemoError::Failed(
            "the aggregation ended before a TaskManager could be killed; try a larger --pace-ms"
                .into(),
        ));
    }
    let result = verify(&demo.data, parts)?;
    let new_leader = demo.leader.map(|(id, _)| id).unwrap_or_default();
    Ok(DemoSummary {
        killed_leader: times.killed_leader,
        new_leader,
        failover_ms: times.failover.as_millis() as u64,
        killed_taskmanager: times.victim,
        shards_on_killed_taskmanager: times.lost,
        taskmanager_recovery_ms: times.recovery.as_millis() as u64,
        taskmanager_timeout_ms: config.taskmanagers.timeout_ms,
        shards_finished: 2 * parts + 1,
        shards_replaced: demo.replaced,
        sensors: result.sensors.len(),
        clean_readings: result.sensors.values().map(|s| s.count).sum(),
        dirty_readings_dropped: result.dropped,
        result_verified: true,
        total_seconds: started.elapsed().as_secs_f64(),
    })
}

/// The cluster's merged result must equal the answer computed here, in one process.
fn verify(data: &Path, parts: u32) -> Result<Aggregate, DemoError> {
    let path = shard::result_file(data);
    let text = std::fs::read_to_string(&path)?;
    let got = Aggregate::from_tsv(&text).map_err(DemoError::Failed)?;
    let want = dataset::expected(parts);
    if got != want {
        return Err(DemoError::Failed(format!(
            "the merged result in {} differs from the expected one",
            path.display()
        )));
    }
    Ok(got)
}

/// The summary as the text the demo ends with.
pub fn summary_text(s: &DemoSummary) -> String {
    let lines = [
        format!(
            "  leader failover     {} ms   (kill -9 of replica {} → replica {} answering)",
            s.failover_ms, s.killed_leader, s.new_leader
        ),
        format!(
            "  TaskManager loss    {:.1} s   (kill -9 of {} → its {} running elsewhere; timeout {:.1} s)",
            s.taskmanager_recovery_ms as f64 / 1000.0,
            s.killed_taskmanager,
            plural(s.shards_on_killed_taskmanager, "shard", "shards"),
            s.taskmanager_timeout_ms as f64 / 1000.0
        ),
        format!(
            "  shards              {} finished, {} re-placed, none lost",
            s.shards_finished, s.shards_replaced
        ),
        format!(
            "  result              verified: {} sensors, {} clean readings, {} dirty ones dropped, equal to a one-process computation",
            s.sensors, s.clean_readings, s.dirty_readings_dropped
        ),
        format!("  total               {:.1} s", s.total_seconds),
    ];
    format!("\nSummary\n{}", lines.join("\n"))
}
