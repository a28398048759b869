//! The client API for jobs and TaskManagers. Writes go through Raft on the leader; reads are
//! linearizable (ReadIndex) and also served only by the leader.

use super::convert::{job_status, job_summary, taskmanager_info};
use super::error::ApiError;
use super::raft_access::{linearizable, not_leader_here, write};
use super::ServiceContext;
use crate::clock::now_ms;
use crate::domain::{ClusterState, JobId, JobSpec, TaskManagerState};
use crate::fsm::{
    check_admission, validate_registration, validate_spec, Command, Response as FsmResponse,
};
use crate::leader::fencing;
use crate::pb::api::dispatcher_server::Dispatcher;
use crate::pb::api::*;
use openraft::async_runtime::watch::WatchReceiver;
use tonic::{Request, Response, Status};

/// How long a drain lets running shards finish before moving them, unless told otherwise.
const DEFAULT_DRAIN_DEADLINE_SECS: u64 = 300;
const MAX_DRAIN_DEADLINE_SECS: u64 = 7 * 24 * 3600;

pub struct DispatcherService {
    ctx: ServiceContext,
}

impl DispatcherService {
    pub fn new(ctx: ServiceContext) -> Self {
        DispatcherService { ctx }
    }

    /// A registration under an id another agent process holds: refused while the holder may
    /// still run shards, admitted (as a takeover, the holder condemned) once it surely
    /// cannot. See `leader::fencing`. Returns the holder's incarnation this registration
    /// takes the id over from.
    fn check_takeover(&self, req: &RegisterTaskManagerRequest) -> Result<Option<u64>, ApiError> {
        let (holder, addr) = {
            let view = self.ctx.shared.read();
            match view.state.taskmanager(&req.id) {
                Some(tm)
                    if tm.state != TaskManagerState::Lost
                        && tm.incarnation != req.incarnation
                        && req.successor_of != Some(tm.incarnation) =>
                {
                    (tm.incarnation, tm.addr.clone())
                }
                _ => return Ok(None),
            }
        };
        // Only the leader knows when it last heard from the holder.
        let (is_leader, term) = {
            let m = self.ctx.raft.metrics().borrow_watched().clone();
            (m.state == openraft::ServerState::Leader, m.current_term)
        };
        if !is_leader {
            return Err(not_leader_here(&self.ctx));
        }
        let bound = fencing::takeover_after(&self.ctx.tm_settings);
        match self.ctx.liveness.take_over(&req.id, term, bound) {
            Ok(()) => {
                tracing::warn!(
                    id = %req.id,
                    old = holder,
                    new = req.incarnation,
                    "another agent takes over TaskManager id '{}': its holder at {addr} has been silent past its lease",
                    req.id
                );
                Ok(Some(holder))
            }
            Err(silent) => Err(ApiError::AlreadyExists(format!(
                "TaskManager id '{}' is held by another agent at {addr}, heard from {:.1} s ago; \
                 stop that agent, or start this one with another --id (the id frees itself {:.1} s \
                 after its holder falls silent)",
                req.id,
                silent.as_secs_f64(),
                bound.as_secs_f64()
            ))),
        }
    }
}

fn parse_job_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse::<JobId>()
        .map_err(|e| ApiError::InvalidArgument(e.to_string()))
}

/// Who is calling, for per-client admission: the peer's IP address (a token's name once
/// clients authenticate).
fn client_identity<T>(request: &Request<T>) -> String {
    request
        .remote_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

/// What a submitter should know although the job is accepted.
fn placement_warnings(state: &ClusterState, spec: &JobSpec) -> Vec<String> {
    let fits = state.taskmanagers.values().any(|tm| {
        tm.state != TaskManagerState::Lost
            && tm.slots >= spec.slots_per_shard
            && spec
                .selector
                .iter()
                .all(|(k, v)| tm.labels.get(k) == Some(v))
    });
    if fits {
        return Vec::new();
    }
    let selector = if spec.selector.is_empty() {
        String::new()
    } else {
        let labels: Vec<String> = spec
            .selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(" carrying {}", labels.join(","))
    };
    vec![format!(
        "no live TaskManager{selector} has {} slots: the shards wait until one registers",
        spec.slots_per_shard
    )]
}

fn unexpected(resp: FsmResponse) -> ApiError {
    ApiError::Internal(format!("unexpected state machine response {resp:?}"))
}

#[tonic::async_trait]
impl Dispatcher for DispatcherService {
    async fn submit(
        &self,
        request: Request<SubmitRequest>,
    ) -> Result<Response<SubmitReply>, Status> {
        let owner = client_identity(&request);
        let req = request.into_inner();
        let spec: JobSpec = req
            .spec
            .ok_or_else(|| ApiError::InvalidArgument("the request has no job spec".into()))?
            .into();
        let limits = &self.ctx.limits;
        validate_spec(&req.name, &spec, &limits.input()).map_err(ApiError::from)?;
        let idempotency_key = (!req.idempotency_key.is_empty()).then_some(req.idempotency_key);
        if let Some(key) = &idempotency_key {
            crate::fsm::validate_name_within("idempotency key", key, &limits.input())
                .map_err(ApiError::from)?;
        }
        let admission = limits.admission();
        let warnings = {
            let view = self.ctx.shared.read();
            let known = idempotency_key
                .as_ref()
                .is_some_and(|k| view.state.idempotency_keys.contains_key(k));
            if !known {
                // Refused here, a flood never even reaches the log.
                let spec_bytes = spec.encoded_len_estimate() as u64;
                check_admission(
                    &view.state,
                    &owner,
                    spec.shard_count.into(),
                    spec_bytes,
                    &admission,
                )
                .map_err(ApiError::from)?;
            }
            placement_warnings(&view.state, &spec)
        };
        let command = Command::SubmitJob {
            name: req.name,
            spec,
            idempotency_key,
            owner,
            admission,
            now_ms: now_ms(),
        };
        match write(&self.ctx, command).await? {
            FsmResponse::JobSubmitted { job_id, created } => Ok(Response::new(SubmitReply {
                job_id: job_id.to_string(),
                created,
                warnings,
            })),
            other => Err(unexpected(other).into()),
        }
    }

    async fn get_job(&self, request: Request<JobRequest>) -> Result<Response<JobStatus>, Status> {
        let job_id = parse_job_id(&request.get_ref().job_id)?;
        linearizable(&self.ctx).await?;
        let applied = self.ctx.shared.read();
        let job = applied.state.job(job_id).ok_or(ApiError::Rejected(
            crate::fsm::Rejection::UnknownJob(job_id),
        ))?;
        Ok(Response::new(job_status(job)))
    }

    async fn list_jobs(
        &self,
        _request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsReply>, Status> {
        linearizable(&self.ctx).await?;
        let applied = self.ctx.shared.read();
        let jobs = applied
            .state
            .jobs
            .values()
            .map(|j| job_summary(j))
            .collect();
        Ok(Response::new(ListJobsReply { jobs }))
    }

    async fn cancel_job(
        &self,
        request: Request<JobRequest>,
    ) -> Result<Response<CancelJobReply>, Status> {
        let job_id = parse_job_id(&request.get_ref().job_id)?;
        let command = Command::CancelJob {
            job_id,
            now_ms: now_ms(),
        };
        match write(&self.ctx, command).await? {
            FsmResponse::JobCancelled {
                job_id,
                shards_cancelled,
            } => Ok(Response::new(CancelJobReply {
                job_id: job_id.to_string(),
                shards_cancelled,
            })),
            other => Err(unexpected(other).into()),
        }
    }

    async fn register_task_manager(
        &self,
        request: Request<RegisterTaskManagerRequest>,
    ) -> Result<Response<RegisterTaskManagerReply>, Status> {
        let req = request.into_inner();
        let labels = req
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        validate_registration(
            &req.id,
            &req.addr,
            req.slots,
            &labels,
            &self.ctx.limits.input(),
        )
        .map_err(ApiError::from)?;
        let id = req.id.clone();
        {
            let view = self.ctx.shared.read();
            let most = self.ctx.limits.max_taskmanagers;
            let held = view.state.taskmanagers.len();
            if view.state.taskmanager(&req.id).is_none() && held >= most {
                return Err(
                    ApiError::Rejected(crate::fsm::Rejection::Overloaded(format!(
                    "the cluster holds {held} TaskManagers, the limit (limits.max_taskmanagers in \
                     the replicas' config file); lost ones are forgotten after jobs.retention_secs"
                )))
                    .into(),
                );
            }
        }
        let replaces = self.check_takeover(&req)?;
        let command = Command::RegisterTaskManager {
            incarnation: req.incarnation,
            successor_of: req.successor_of,
            replaces,
            id: req.id,
            addr: req.addr,
            slots: req.slots,
            labels,
            now_ms: now_ms(),
        };
        // Runs to its end even if the caller gives up: a takeover proposal still in flight
        // must keep its holder condemned, and one that failed must pardon it.
        let ctx = self.ctx.clone();
        let outcome = tokio::spawn(async move {
            let result = write(&ctx, command).await;
            match &result {
                // Registering is contact, and lifts any condemnation of an older life.
                Ok(_) => ctx.liveness.registered(&id, std::time::Instant::now()),
                // Not taken over (the entry will not commit): the holder may heartbeat again.
                Err(_) if replaces.is_some() => ctx.liveness.pardon(&id),
                Err(_) => {}
            }
            result
        })
        .await
        .map_err(|e| ApiError::Internal(format!("registration task: {e}")))?;
        match outcome? {
            FsmResponse::TaskManagerRegistered { registration_epoch } => {
                Ok(Response::new(RegisterTaskManagerReply {
                    registration_epoch,
                }))
            }
            other => Err(unexpected(other).into()),
        }
    }

    async fn list_task_managers(
        &self,
        _request: Request<ListTaskManagersRequest>,
    ) -> Result<Response<ListTaskManagersReply>, Status> {
        linearizable(&self.ctx).await?;
        let applied = self.ctx.shared.read();
        let taskmanagers = applied
            .state
            .taskmanagers
            .values()
            .map(taskmanager_info)
            .collect();
        Ok(Response::new(ListTaskManagersReply { taskmanagers }))
    }

    async fn drain_task_manager(
        &self,
        request: Request<DrainTaskManagerRequest>,
    ) -> Result<Response<DrainTaskManagerReply>, Status> {
        let req = request.into_inner();
        let id = req.id;
        crate::fsm::validate_name("TaskManager id", &id).map_err(ApiError::from)?;
        let deadline_secs = req.deadline_secs.unwrap_or(DEFAULT_DRAIN_DEADLINE_SECS);
        if deadline_secs > MAX_DRAIN_DEADLINE_SECS {
            return Err(ApiError::InvalidArgument(format!(
                "drain deadline {deadline_secs} s is longer than the limit of {MAX_DRAIN_DEADLINE_SECS} s"
            ))
            .into());
        }
        let now = now_ms();
        let command = Command::DrainTaskManager {
            id,
            deadline_ms: now + deadline_secs * 1000,
            now_ms: now,
        };
        match write(&self.ctx, command).await? {
            FsmResponse::TaskManagerDraining { id } => {
                Ok(Response::new(DrainTaskManagerReply { id }))
            }
            other => Err(unexpected(other).into()),
        }
    }
}
