//! Clients that submit jobs with idempotency keys (and a few invalid ones, which must never
//! appear) and read job status, recording every operation in the history. Jobs carry
//! scheduling options now and then: priorities, `--after` an acknowledged job, gangs,
//! tenants (one of which has a quota and preempts the others), and time limits.

use super::executions::Recorder;
use super::history::{Event, History, Outcome};
use super::rng::Rng;
use crate::client::{Client, ClientError, ClientOptions};
use crate::pb::api::{JobSpec, SubmitRequest};
use crate::security::Credentials;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::Code;

/// The tenant with a slot quota, and the quota. Its jobs run at the highest priority the
/// workload uses and are never gangs, so none of its shards is ever stopped to make room
/// (a stopped shard may run through its stop grace after its slot is given back, which a
/// count of processes would take for a quota breach).
pub const QUOTA_TENANT: &str = "t0";
pub const QUOTA_SLOTS: u64 = 3;
/// A tenant with weight 2 (the others have 1).
pub const HEAVY_TENANT: &str = "t1";

/// Jobs the clients got acknowledged, for reads.
pub type Acknowledged = Arc<Mutex<Vec<String>>>;

pub fn outcome_of(err: &ClientError) -> Outcome {
    match err {
        ClientError::Rejected(status)
            if matches!(
                status.code(),
                Code::InvalidArgument
                    | Code::NotFound
                    | Code::FailedPrecondition
                    | Code::OutOfRange
            ) =>
        {
            Outcome::Fail
        }
        _ => Outcome::Unknown,
    }
}

pub struct ClientTask {
    pub id: usize,
    pub endpoints: Vec<String>,
    pub history: Arc<History>,
    pub recorder: Arc<Recorder>,
    pub acknowledged: Acknowledged,
    pub stop: Arc<AtomicBool>,
    pub seed: u64,
    pub credentials: Credentials,
}

impl ClientTask {
    pub async fn run(self) -> Result<(), ClientError> {
        let client = Client::with_options(
            self.endpoints.clone(),
            ClientOptions {
                rpc_timeout: Duration::from_secs(2),
                call_timeout: Duration::from_secs(8),
                source_ip: None,
                credentials: self.credentials.clone(),
            },
        )?;
        let mut rng = Rng::new(self.seed);
        let mut seq = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            seq += 1;
            let roll = rng.range(0, 10);
            if roll == 0 {
                self.invalid_submit(&client, seq).await;
            } else if roll == 1 {
                self.read(&client, &mut rng).await;
            } else {
                self.submit(&client, seq, &mut rng).await;
            }
            // Keep the offered load well inside the TaskManagers' capacity, so that the
            // liveness check measures recovery, not a backlog.
            tokio::time::sleep(Duration::from_millis(rng.range(100, 400))).await;
        }
        Ok(())
    }

    fn key(&self, seq: u64) -> String {
        format!("c{}-{seq}", self.id)
    }

    /// Scheduling options for a submission: mostly none, else one rule at a time.
    fn options(&self, request: &mut SubmitRequest, rng: &mut Rng) {
        match rng.range(0, 10) {
            0 => request.priority = Some(if rng.range(0, 2) == 0 { 100 } else { 800 }),
            1 => {
                request.gang = true;
                if let Some(spec) = request.spec.as_mut() {
                    spec.shard_count = rng.range(2, 4) as u32;
                }
            }
            2 | 3 => {
                let acked = self.acknowledged.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(job) = rng.pick(&acked) {
                    request.after = vec![job.clone()];
                }
            }
            4 => {
                request.tenant = QUOTA_TENANT.into();
                request.priority = Some(900);
            }
            5 => request.tenant = HEAVY_TENANT.into(),
            // A time limit, shorter than some runs: those are stopped and fail "timed out".
            6 => request.timeout_ms = Some(rng.range(300, 3_000)),
            _ => {}
        }
    }

    async fn submit(&self, client: &Client, seq: u64, rng: &mut Rng) {
        let key = self.key(seq);
        let (command, args) = self.recorder.command(rng.range(50, 500), "");
        let mut request = SubmitRequest {
            name: key.clone(),
            spec: Some(JobSpec {
                command,
                args,
                env: Default::default(),
                shard_count: rng.range(1, 4) as u32,
                slots_per_shard: 1,
                max_attempts: 5,
                selector: Default::default(),
            }),
            idempotency_key: key.clone(),
            priority: None,
            ..Default::default()
        };
        self.options(&mut request, rng);
        let invoke_ns = self.history.now_ns();
        let result = client.submit(request).await;
        let complete_ns = self.history.now_ns();
        let (outcome, job_id, created, error) = match result {
            Ok(reply) => {
                let mut acked = self.acknowledged.lock().unwrap_or_else(|p| p.into_inner());
                acked.push(reply.job_id.clone());
                (Outcome::Ok, Some(reply.job_id), Some(reply.created), None)
            }
            Err(e) => (outcome_of(&e), None, None, Some(e.to_string())),
        };
        self.history.record(&Event::Op {
            client: self.id,
            op: "submit".into(),
            key,
            invoke_ns,
            complete_ns,
            outcome,
            job_id,
            created,
            error,
        });
    }

    /// A submission the cluster must refuse (zero shards): it must never show up as a job.
    async fn invalid_submit(&self, client: &Client, seq: u64) {
        let key = self.key(seq);
        let (command, args) = self.recorder.command(100, "");
        let request = SubmitRequest {
            name: key.clone(),
            spec: Some(JobSpec {
                command,
                args,
                env: Default::default(),
                shard_count: 0,
                slots_per_shard: 1,
                max_attempts: 1,
                selector: Default::default(),
            }),
            idempotency_key: key.clone(),
            priority: None,
            ..Default::default()
        };
        let invoke_ns = self.history.now_ns();
        let result = client.submit(request).await;
        let complete_ns = self.history.now_ns();
        let (outcome, job_id, error) = match result {
            Ok(reply) => (Outcome::Ok, Some(reply.job_id), None),
            Err(e) => (outcome_of(&e), None, Some(e.to_string())),
        };
        self.history.record(&Event::Op {
            client: self.id,
            op: "invalid_submit".into(),
            key,
            invoke_ns,
            complete_ns,
            outcome,
            job_id,
            created: None,
            error,
        });
    }

    async fn read(&self, client: &Client, rng: &mut Rng) {
        let target = {
            let acked = self.acknowledged.lock().unwrap_or_else(|p| p.into_inner());
            rng.pick(&acked).cloned()
        };
        let Some(job_id) = target else { return };
        let invoke_ns = self.history.now_ns();
        let result = client.job_status(&job_id).await;
        let complete_ns = self.history.now_ns();
        let (outcome, error) = match result {
            Ok(_) => (Outcome::Ok, None),
            Err(e) => (outcome_of(&e), Some(e.to_string())),
        };
        self.history.record(&Event::Op {
            client: self.id,
            op: "read".into(),
            key: job_id.clone(),
            invoke_ns,
            complete_ns,
            outcome,
            job_id: Some(job_id),
            created: None,
            error,
        });
    }
}
