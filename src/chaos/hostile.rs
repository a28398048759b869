//! A hostile tenant, working while the faults run. It holds a `submit` token of its own tenant
//! (`HOSTILE_TENANT`, priority ceiling `HOSTILE_CEILING`) and the certificate of an agent that
//! never registered (`tm-rogue`), and keeps trying what such a tenant would: read, watch,
//! cancel and depend on the other tenants' jobs, reuse their idempotency keys, submit above
//! its ceiling or as another tenant, raise its own quota, mint a token, and, as the agent,
//! report on shards it does not hold or read their specs. It also runs jobs of its own, so
//! that what it may see is never empty.
//!
//! Every attempt is recorded as an `attack` event with what the cluster answered; the `walls`
//! checker (`walls_checker`) holds the run to "no tenant saw or changed another's job" and
//! "no refused call reached the log". Names of its jobs start with `h-`; the other clients'
//! never do.

use super::executions::Recorder;
use super::history::{Answer, Event, History, Outcome};
use super::rng::Rng;
use super::workload::{outcome_of, Acknowledged, QUOTA_TENANT};
use crate::client::{Client, ClientError, ClientOptions};
use crate::pb::api::task_managers_client::TaskManagersClient;
use crate::pb::api::{
    JobSpec, JobSpecRequest, ReportKind, SetQuotaRequest, ShardReport, ShardReportBatch,
    SubmitRequest,
};
use crate::security::Credentials;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

/// The hostile tenant, its token's name, and the quota an admin gave it.
pub const HOSTILE_TENANT: &str = "mallory";
pub const HOSTILE_CEILING: u32 = 100;
pub const HOSTILE_SLOTS: u64 = 4;
/// The agent certificate the hostile tenant holds (no agent runs with it).
pub const ROGUE_AGENT: &str = "rogue";
/// Prefix of every job name the hostile tenant uses.
pub const HOSTILE_PREFIX: &str = "h-";

/// The attacks, one per wall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attack {
    ReadOther,
    CancelOther,
    OutputOther,
    WatchOther,
    ListAll,
    EventsAll,
    StealKey,
    AfterOther,
    AboveCeiling,
    AsOtherTenant,
    RaiseQuota,
    MintToken,
    ReportAsOtherAgent,
    ReportUnheldShard,
    ReadUnheldSpec,
    /// From inside a shard: the agents' keys, the CA's key, their journals and
    /// incarnations, other processes (`SPY_EXIT` says it got one).
    ShardReadsSecrets,
}

/// The exit code of a spying shard that read something it must not.
pub const SPY_EXIT: i32 = 42;
/// Prefix of the spying jobs' names.
pub const SPY_PREFIX: &str = "h-spy-";

const ATTACKS: [Attack; 16] = [
    Attack::ShardReadsSecrets,
    Attack::ReadOther,
    Attack::CancelOther,
    Attack::OutputOther,
    Attack::WatchOther,
    Attack::ListAll,
    Attack::EventsAll,
    Attack::StealKey,
    Attack::AfterOther,
    Attack::AboveCeiling,
    Attack::AsOtherTenant,
    Attack::RaiseQuota,
    Attack::MintToken,
    Attack::ReportAsOtherAgent,
    Attack::ReportUnheldShard,
    Attack::ReadUnheldSpec,
];

impl Attack {
    fn name(self) -> &'static str {
        match self {
            Attack::ReadOther => "read-other",
            Attack::CancelOther => "cancel-other",
            Attack::OutputOther => "output-other",
            Attack::WatchOther => "watch-other",
            Attack::ListAll => "list-all",
            Attack::EventsAll => "events-all",
            Attack::StealKey => "steal-key",
            Attack::AfterOther => "after-other",
            Attack::AboveCeiling => "above-ceiling",
            Attack::AsOtherTenant => "as-other-tenant",
            Attack::RaiseQuota => "raise-quota",
            Attack::MintToken => "mint-token",
            Attack::ReportAsOtherAgent => "report-as-other-agent",
            Attack::ReportUnheldShard => "report-unheld-shard",
            Attack::ReadUnheldSpec => "read-unheld-spec",
            Attack::ShardReadsSecrets => "shard-reads-secrets",
        }
    }

    /// The codes that count as the wall holding.
    fn refusals(self) -> &'static [Code] {
        match self {
            Attack::ReadOther
            | Attack::CancelOther
            | Attack::OutputOther
            | Attack::WatchOther
            | Attack::AfterOther => &[Code::NotFound],
            Attack::AboveCeiling
            | Attack::AsOtherTenant
            | Attack::RaiseQuota
            | Attack::MintToken
            | Attack::ReportAsOtherAgent
            | Attack::ReadUnheldSpec => &[Code::PermissionDenied],
            // A report of an agent that holds nothing: refused as a whole, or per report;
            // the agent's report budget may refuse it first.
            Attack::ReportUnheldShard => &[
                Code::NotFound,
                Code::FailedPrecondition,
                Code::PermissionDenied,
                Code::ResourceExhausted,
            ],
            // Allowed calls: only what they answer (or, for a spy, how its shard ends) can
            // breach.
            Attack::ListAll | Attack::EventsAll | Attack::StealKey | Attack::ShardReadsSecrets => {
                &[]
            }
        }
    }
}

pub struct HostileTask {
    pub endpoints: Vec<String>,
    /// `client-mallory` with the hostile tenant's `submit` token.
    pub tenant: Credentials,
    /// `tm-rogue`, no token.
    pub agent: Credentials,
    /// How many ordinary clients there are (their keys are `c<client>-<seq>`).
    pub clients: usize,
    pub history: Arc<History>,
    pub recorder: Arc<Recorder>,
    /// The other tenants' acknowledged jobs: the targets.
    pub acknowledged: Acknowledged,
    pub stop: Arc<AtomicBool>,
    pub seed: u64,
    /// Files a shard must never read (agents' keys, journals, incarnations); empty when the
    /// agents cannot sandbox their shards (not root), and then no spy is sent.
    pub secrets: Vec<std::path::PathBuf>,
}

/// One shard of `command`, retried like the other clients' jobs.
fn one_shard(command: String, args: Vec<String>) -> JobSpec {
    JobSpec {
        command,
        args,
        env: Default::default(),
        shard_count: 1,
        slots_per_shard: 1,
        max_attempts: 5,
        selector: Default::default(),
    }
}

/// A submission of the hostile tenant's own, at its ceiling.
fn own_request(name: &str, key: &str, spec: JobSpec) -> SubmitRequest {
    SubmitRequest {
        name: name.to_string(),
        spec: Some(spec),
        idempotency_key: key.to_string(),
        priority: Some(HOSTILE_CEILING),
        ..Default::default()
    }
}

/// The hostile client's id in the history (far from the ordinary clients').
const HOSTILE_CLIENT: usize = 1_000;

fn options(credentials: Credentials) -> ClientOptions {
    ClientOptions {
        rpc_timeout: Duration::from_secs(2),
        call_timeout: Duration::from_secs(8),
        source_ip: None,
        credentials,
    }
}

impl HostileTask {
    pub async fn run(self) -> Result<(), ClientError> {
        let tenant = Client::with_options(self.endpoints.clone(), options(self.tenant.clone()))?;
        let agent = Client::with_options(self.endpoints.clone(), options(self.agent.clone()))?;
        let mut rng = Rng::new(self.seed);
        let mut seq = 0u64;
        let mut own: BTreeSet<String> = BTreeSet::new();
        while !self.stop.load(Ordering::Relaxed) {
            seq += 1;
            if rng.range(0, 4) == 0 {
                self.submit_own(&tenant, seq, &mut rng, &mut own).await;
            } else {
                let attack = ATTACKS[rng.range(0, ATTACKS.len() as u64) as usize];
                self.attack(attack, &tenant, &agent, seq, &mut rng, &mut own)
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(rng.range(100, 300))).await;
        }
        Ok(())
    }

    fn victim(&self, rng: &mut Rng) -> Option<String> {
        let acked = self.acknowledged.lock().unwrap_or_else(|p| p.into_inner());
        rng.pick(&acked).cloned()
    }

    fn spec(&self, rng: &mut Rng) -> JobSpec {
        let (command, args) = self.recorder.command(rng.range(50, 300), "");
        one_shard(command, args)
    }

    /// A shard that tries every secret, prints what it got and exits `SPY_EXIT` if it got
    /// any; otherwise it goes on as an ordinary recorded run.
    fn spy_spec(&self, rng: &mut Rng) -> JobSpec {
        let (record, record_args) = self.recorder.command(rng.range(50, 200), "");
        // Its own output files, whose place a link to a secret could take: the agent (root)
        // reads them back as the run's output.
        let mut script = String::from(
            "got=''\nmv stderr stderr.moved 2>/dev/null && got=\"$got own-output-files\"\n",
        );
        for secret in &self.secrets {
            let path = secret.display().to_string().replace('\'', "");
            script.push_str(&format!(
                "head -c1 '{path}' >/dev/null 2>&1 && got=\"$got {path}\"\n"
            ));
        }
        script.push_str(&format!(
            "others=$(ls /proc | grep -c '^[0-9]'); [ \"$others\" -gt 6 ] && got=\"$got $others-processes\"\n\
             if [ -n \"$got\" ]; then echo \"read:$got\" >&2; exit {SPY_EXIT}; fi\n\
             exec \"$0\" \"$@\"\n",
        ));
        let mut args = vec!["-c".to_string(), script, record];
        args.extend(record_args);
        one_shard("/bin/sh".into(), args)
    }

    /// A job of its own, within its ceiling, recorded as an ordinary submission so the
    /// submissions and executions checkers cover it too.
    async fn submit_own(
        &self,
        client: &Client,
        seq: u64,
        rng: &mut Rng,
        own: &mut BTreeSet<String>,
    ) {
        let name = format!("{HOSTILE_PREFIX}own-{seq}");
        let request = own_request(&name, &name, self.spec(rng));
        self.submit_recorded(client, name, request, own).await;
    }

    async fn submit_recorded(
        &self,
        client: &Client,
        name: String,
        request: SubmitRequest,
        own: &mut BTreeSet<String>,
    ) -> Option<String> {
        let invoke_ns = self.history.now_ns();
        let result = client.submit(request).await;
        let complete_ns = self.history.now_ns();
        let (outcome, job_id, created, error) = match result {
            Ok(reply) => {
                own.insert(reply.job_id.clone());
                (Outcome::Ok, Some(reply.job_id), Some(reply.created), None)
            }
            Err(e) => (outcome_of(&e), None, None, Some(e.to_string())),
        };
        self.history.record(&Event::Op {
            client: HOSTILE_CLIENT,
            op: "submit".into(),
            key: name,
            invoke_ns,
            complete_ns,
            outcome,
            job_id: job_id.clone(),
            created,
            error,
        });
        job_id
    }

    fn record(&self, attack: Attack, answer: Answer, target: Option<String>, detail: String) {
        self.history.record(&Event::Attack {
            at_ns: self.history.now_ns(),
            attack: attack.name().to_string(),
            answer,
            target,
            detail,
        });
    }

    /// Judge a call that must be refused.
    fn judge<T>(&self, attack: Attack, target: Option<String>, result: Result<T, ClientError>) {
        let (answer, detail) = match result {
            Ok(_) => (Answer::Breach, "let through".to_string()),
            Err(e) => match e.code() {
                Some(code) if attack.refusals().contains(&code) => (Answer::Held, e.to_string()),
                Some(
                    code @ (Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Cancelled
                    | Code::Unknown
                    | Code::Aborted),
                ) => (Answer::Unanswered, format!("{code:?}: {e}")),
                Some(code) => (
                    Answer::Breach,
                    format!("refused with {code:?}, not {:?}: {e}", attack.refusals()),
                ),
                None => (Answer::Unanswered, e.to_string()),
            },
        };
        self.record(attack, answer, target, detail);
    }

    async fn attack(
        &self,
        attack: Attack,
        tenant: &Client,
        agent: &Client,
        seq: u64,
        rng: &mut Rng,
        own: &mut BTreeSet<String>,
    ) {
        let victim = self.victim(rng);
        match attack {
            Attack::ListAll => {
                match tenant.list_jobs().await {
                    Ok(jobs) => {
                        let foreign: Vec<String> = jobs
                            .iter()
                            .filter(|j| !j.name.starts_with(HOSTILE_PREFIX))
                            .map(|j| format!("{} ({})", j.job_id, j.name))
                            .collect();
                        let (answer, detail) = if foreign.is_empty() {
                            (Answer::Held, format!("{} jobs, all its own", jobs.len()))
                        } else {
                            (Answer::Breach, format!("listed {foreign:?}"))
                        };
                        self.record(attack, answer, None, detail);
                    }
                    Err(e) => self.record(attack, Answer::Unanswered, None, e.to_string()),
                }
                return;
            }
            Attack::EventsAll => {
                self.events_all(tenant, own).await;
                return;
            }
            Attack::ShardReadsSecrets => {
                if self.secrets.is_empty() {
                    return;
                }
                let name = format!("{SPY_PREFIX}{seq}");
                let request = own_request(&name, &name, self.spy_spec(rng));
                let job = self.submit_recorded(tenant, name, request, own).await;
                let answer = if job.is_some() {
                    Answer::Held
                } else {
                    Answer::Unanswered
                };
                // Judged by how its shard ends (`walls_checker`).
                self.record(attack, answer, job, "submitted".into());
                return;
            }
            Attack::StealKey => {
                // An ordinary client's key (client k's seq-th submission, likely made by now).
                let key = format!("c{}-{}", rng.range(0, self.clients.max(1) as u64), seq);
                let name = format!("{HOSTILE_PREFIX}steal-{seq}");
                let request = own_request(&name, &key, self.spec(rng));
                let job = self.submit_recorded(tenant, name, request, own).await;
                let others = self.acknowledged.lock().unwrap_or_else(|p| p.into_inner());
                let (answer, detail) = match &job {
                    Some(id) if others.contains(id) => (
                        Answer::Breach,
                        format!("key {key} answered with another's job"),
                    ),
                    Some(_) => (Answer::Held, format!("key {key} made its own job")),
                    None => (Answer::Unanswered, format!("key {key}: no answer")),
                };
                drop(others);
                self.record(attack, answer, job, detail);
                return;
            }
            _ => {}
        }
        // The rest need a target.
        let Some(victim) = victim else { return };
        let target = Some(victim.clone());
        match attack {
            Attack::ReadOther => {
                let result = tenant.job_status(&victim).await;
                self.judge(attack, target, result);
            }
            Attack::CancelOther => {
                let result = tenant.cancel_job(&victim).await;
                self.judge(attack, target, result);
            }
            Attack::OutputOther => {
                let result = tenant.shard_output(&victim, 0).await;
                self.judge(attack, target, result);
            }
            Attack::WatchOther => {
                let mut saw = 0usize;
                let watch = tenant.follow_events(1, 0, Some(&victim), |_| {
                    saw += 1;
                    false
                });
                let result = match tokio::time::timeout(Duration::from_secs(3), watch).await {
                    Ok(result) => result,
                    Err(_) => Ok(()),
                };
                if saw > 0 {
                    self.record(attack, Answer::Breach, target, "saw its events".into());
                } else if result.is_ok() {
                    self.record(attack, Answer::Unanswered, target, "no answer".into());
                } else {
                    self.judge(attack, target, result);
                }
            }
            Attack::AfterOther => {
                let name = format!("{HOSTILE_PREFIX}after-{seq}");
                let request = SubmitRequest {
                    after: vec![victim],
                    ..own_request(&name, &name, self.spec(rng))
                };
                let result = tenant.submit(request).await;
                self.judge(attack, target, result);
            }
            Attack::AboveCeiling | Attack::AsOtherTenant => {
                let name = format!("{HOSTILE_PREFIX}{}-{seq}", attack.name());
                let mut request = own_request(&name, &name, self.spec(rng));
                if attack == Attack::AboveCeiling {
                    request.priority = Some(900);
                } else {
                    request.tenant = QUOTA_TENANT.into();
                }
                let result = tenant.submit(request).await;
                self.judge(attack, None, result);
            }
            Attack::RaiseQuota => {
                let result = tenant
                    .set_quota_limits(SetQuotaRequest {
                        tenant: HOSTILE_TENANT.into(),
                        slots: None,
                        unlimited: true,
                        weight: Some(100),
                        max_priority: Some(1_000),
                        resources: None,
                    })
                    .await;
                self.judge(attack, None, result);
            }
            Attack::MintToken => {
                let name = format!("{HOSTILE_PREFIX}token-{seq}");
                let result = tenant
                    .create_token(&name, crate::domain::Role::Admin, None)
                    .await;
                self.judge(attack, None, result);
            }
            Attack::ReportAsOtherAgent | Attack::ReportUnheldShard => {
                let taskmanager_id = if attack == Attack::ReportAsOtherAgent {
                    format!("tm-{}", rng.range(0, 3))
                } else {
                    ROGUE_AGENT.to_string()
                };
                let batch = ShardReportBatch {
                    reports: vec![ShardReport {
                        taskmanager_id,
                        job_id: victim,
                        index: 0,
                        // An epoch the cluster has passed (a later one is refused as
                        // unknown to the leader, before the holder is even looked at).
                        epoch: rng.range(1, 20),
                        kind: ReportKind::Finished as i32,
                        exit_code: Some(0),
                        run_ms: 1,
                        ..Default::default()
                    }],
                };
                let result = agent
                    .call(|ch| {
                        let b = batch.clone();
                        async move { TaskManagersClient::new(ch).report_shards(b).await }
                    })
                    .await;
                // Refused as a whole, or per report inside an OK reply.
                let result = result.and_then(|reply| match reply.outcomes.first() {
                    Some(o) if o.code != 0 => Err(ClientError::Rejected(tonic::Status::new(
                        Code::from(o.code as i32),
                        o.message.clone(),
                    ))),
                    _ => Ok(reply),
                });
                self.judge(attack, target, result);
            }
            Attack::ReadUnheldSpec => {
                let request = JobSpecRequest { job_id: victim };
                let result = agent
                    .call(|ch| {
                        let r = request.clone();
                        async move { TaskManagersClient::new(ch).get_job_spec(r).await }
                    })
                    .await;
                self.judge(attack, target, result);
            }
            Attack::ListAll | Attack::EventsAll | Attack::StealKey | Attack::ShardReadsSecrets => {}
        }
    }

    /// Follow the whole event stream for a moment: nothing of another tenant's jobs, and no
    /// token or quota event, may come through.
    async fn events_all(&self, tenant: &Client, own: &BTreeSet<String>) {
        let others: BTreeSet<String> = self
            .acknowledged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let mut seen = 0usize;
        let mut leaks: Vec<String> = Vec::new();
        let follow = tenant.follow_events(1, 0, None, |event| {
            seen += 1;
            let foreign_job = !event.job_id.is_empty()
                && others.contains(&event.job_id)
                && !own.contains(&event.job_id);
            let administrative = event.kind.starts_with("token_") || event.kind.contains("quota");
            if foreign_job || administrative {
                leaks.push(format!(
                    "{} {} at {}",
                    event.kind, event.job_id, event.index
                ));
            }
            seen < 5_000 && leaks.len() < 5
        });
        let result = tokio::time::timeout(Duration::from_secs(1), follow).await;
        let (answer, detail) = match (leaks.is_empty(), result) {
            (false, _) => (Answer::Breach, format!("saw {leaks:?}")),
            (true, Ok(Err(e))) => (Answer::Unanswered, e.to_string()),
            (true, _) => (Answer::Held, format!("{seen} events, all its own")),
        };
        self.record(Attack::EventsAll, answer, None, detail);
    }
}
