//! The client API for jobs and TaskManagers. Writes go through Raft on the leader; reads are
//! linearizable (ReadIndex) and also served only by the leader.

use super::access::caller;
use super::convert::{job_status, job_summary, taskmanager_info};
use super::error::ApiError;
use super::raft_access::{linearizable, write};
use super::scheduling;
use super::visibility::Scope;
use super::ServiceContext;
use crate::clock::now_ms;
use crate::domain::{ClusterState, ClusterVersion, JobId, JobSpec, TaskManagerState};
use crate::fsm::{check_admission, validate_spec, Command, Rejection, Response as FsmResponse};
use crate::pb::api::dispatcher_server::Dispatcher;
use crate::pb::api::*;
use tonic::{Request, Response, Status};

/// How long a drain lets running shards finish before moving them, unless told otherwise.
const DEFAULT_DRAIN_DEADLINE_SECS: u64 = 300;
const MAX_DRAIN_DEADLINE_SECS: u64 = 7 * 24 * 3600;
/// What a job's environment values read as to a caller who may not see them.
const HIDDEN: &str = "(hidden)";

pub struct DispatcherService {
    ctx: ServiceContext,
}

impl DispatcherService {
    pub fn new(ctx: ServiceContext) -> Self {
        DispatcherService { ctx }
    }
}

fn parse_job_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse::<JobId>()
        .map_err(|e| ApiError::InvalidArgument(e.to_string()))
}

/// Who owns what this request submits, for per-client admission and for cancelling: the
/// token's name, or with `--insecure` the peer's IP address.
fn owner_of<T>(request: &Request<T>) -> Result<String, ApiError> {
    Ok(caller(request)?.owner(request.remote_addr()))
}

/// What a submitter should know although the job is accepted.
fn placement_warnings(state: &ClusterState, spec: &JobSpec) -> Vec<String> {
    let fits = state.taskmanagers.values().any(|tm| {
        tm.state != TaskManagerState::Lost
            && tm.slots >= spec.slots_per_shard
            && tm.matches(&spec.selector)
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

/// A job's whole status as `job status` answers it, read at `applied_index`. `viewer` is the
/// owner a caller below operator acts as (`Caller::cancels_only_own`): a job's environment
/// may carry its owner's secrets, so anyone else sees the names only.
pub fn status_for(
    state: &ClusterState,
    job: &crate::domain::Job,
    applied_index: u64,
    viewer: Option<&str>,
) -> JobStatus {
    let mut status = job_status(job);
    scheduling::fill_status(&mut status, state, job.id);
    super::resources::fill_status(&mut status, state, job.id);
    status.applied_index = applied_index;
    if let Some(spec) = status.spec.as_mut() {
        hide_env_from(spec, viewer, &job.owner);
    }
    status
}

/// A job's environment may carry its owner's secrets: `viewer` (the owner a caller below
/// operator acts as; none for operators and admins) sees the values only if it is `owner`.
pub(super) fn hide_env_from(spec: &mut crate::pb::api::JobSpec, viewer: Option<&str>, owner: &str) {
    if viewer.is_some_and(|me| me != owner) {
        for value in spec.env.values_mut() {
            *value = HIDDEN.to_string();
        }
    }
}

/// A TaskManager as `tm list` shows it. Its incarnation is what lets a process with its key
/// succeed it at once: shown only `with_incarnation` (to operators and admins).
pub fn taskmanager_status(
    state: &ClusterState,
    tm: &crate::domain::TaskManager,
    with_incarnation: bool,
) -> TaskManagerInfo {
    let mut info = taskmanager_info(tm);
    super::resources::fill_taskmanager(&mut info, state);
    if !with_incarnation {
        info.incarnation = 0;
    }
    if let Some(pin) = state.pins.get(&tm.id) {
        info.pinned_labels = pin.labels.clone().into_iter().collect();
        info.pinned_slots = pin.slots;
    }
    if let Some(pin) = state.resource_pins.get(&tm.id) {
        info.pinned_cpu_millis = pin.cpu_millis;
        info.pinned_memory_bytes = pin.memory_bytes;
        info.pinned_resources = pin.named.clone().into_iter().collect();
    }
    info
}

pub(super) fn unexpected(resp: FsmResponse) -> ApiError {
    ApiError::Internal(format!("unexpected state machine response {resp:?}"))
}

#[tonic::async_trait]
impl Dispatcher for DispatcherService {
    async fn submit(
        &self,
        request: Request<SubmitRequest>,
    ) -> Result<Response<SubmitReply>, Status> {
        let owner = owner_of(&request)?;
        let who = caller(&request)?;
        let req = request.into_inner();
        let spec: JobSpec = req
            .spec
            .clone()
            .ok_or_else(|| ApiError::InvalidArgument("the request has no job spec".into()))?
            .into();
        let limits = &self.ctx.limits;
        validate_spec(&req.name, &spec, &limits.input()).map_err(ApiError::from)?;
        let idempotency_key =
            (!req.idempotency_key.is_empty()).then(|| req.idempotency_key.clone());
        if let Some(key) = &idempotency_key {
            crate::fsm::validate_name_within("idempotency key", key, &limits.input())
                .map_err(ApiError::from)?;
        }
        let admission = limits.admission();
        let (options, request, warnings) = {
            let view = self.ctx.shared.read();
            let options = scheduling::submit_options(&req, &who, &view.state)?;
            let request = super::resources::submit_request(
                &req,
                self.ctx.require_isolation,
                self.ctx.default_timeout_ms,
                &view.state,
            )?;
            scheduling::check_priority_ceiling(&options, &who, &view.state)?;
            let scope = Scope::of(&who, &view.state);
            if let Some(hidden) = options.after.iter().find(|j| !scope.sees(&view.state, **j)) {
                // Waiting for another tenant's job would tell when it ends.
                return Err(ApiError::Rejected(Rejection::UnknownDependency(*hidden)).into());
            }
            let known = idempotency_key.as_ref().is_some_and(|k| {
                let slot = crate::domain::idempotency_slot(&options.tenant, k);
                view.state.idempotency_keys.contains_key(&slot)
            });
            if !known {
                scheduling::check_could_ever_fit(&spec, &options, &view.state)?;
                // Refused here, a flood never even reaches the log.
                let spec_bytes = spec.encoded_len_estimate() as u64;
                check_admission(
                    &view.state,
                    &owner,
                    spec.shard_count.into(),
                    spec_bytes,
                    &admission,
                )
                .map_err(|refusal| {
                    self.ctx.shared.metrics().admission_refused();
                    ApiError::from(refusal)
                })?;
            }
            (options, request, placement_warnings(&view.state, &spec))
        };
        // Jobs with the default options go as `SubmitJob`, which every version reads.
        let command = if !request.is_empty() {
            Command::SubmitJobWithResources {
                name: req.name,
                spec,
                idempotency_key,
                owner,
                admission,
                options,
                request,
                now_ms: now_ms(),
            }
        } else if options.is_default() {
            Command::SubmitJob {
                name: req.name,
                spec,
                idempotency_key,
                owner,
                admission,
                now_ms: now_ms(),
            }
        } else {
            Command::SubmitJobWithOptions {
                name: req.name,
                spec,
                idempotency_key,
                owner,
                admission,
                options,
                now_ms: now_ms(),
            }
        };
        let written = write(&self.ctx, command).await.inspect_err(|e| {
            if matches!(e, ApiError::Rejected(Rejection::Overloaded(_))) {
                // Admitted here, refused by apply: another submission took the room first.
                self.ctx.shared.metrics().admission_refused();
            }
        });
        match written? {
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
        let who = caller(&request)?;
        linearizable(&self.ctx).await?;
        let applied = self.ctx.shared.read();
        let job = Scope::of(&who, &applied.state).job(&applied.state, job_id)?;
        let applied_index = applied
            .last_applied
            .as_ref()
            .map(|l| l.index())
            .unwrap_or(0);
        let viewer = who.cancels_only_own(request.remote_addr());
        Ok(Response::new(status_for(
            &applied.state,
            job,
            applied_index,
            viewer.as_deref(),
        )))
    }

    type WatchEventsStream = super::event_stream::EventStream;

    async fn watch_events(
        &self,
        request: Request<WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let who = caller(&request)?;
        let scope = Scope::of(&who, &self.ctx.shared.read().state);
        let stream = super::event_stream::watch(
            self.ctx.clone(),
            request.into_inner(),
            scope,
            self.ctx.stream_guard(&who),
        )?;
        Ok(Response::new(stream))
    }

    async fn get_shard_output(
        &self,
        request: Request<ShardOutputRequest>,
    ) -> Result<Response<ShardOutputReply>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let job_id = parse_job_id(&req.job_id)?;
        linearizable(&self.ctx).await?;
        let applied = self.ctx.shared.read();
        let scope = Scope::of(&who, &applied.state);
        Ok(Response::new(super::shard_output::reply(
            &applied.state,
            job_id,
            req.shard,
            &scope,
        )?))
    }

    type FollowShardOutputStream = super::shard_output::OutputStream;

    async fn follow_shard_output(
        &self,
        request: Request<ShardOutputRequest>,
    ) -> Result<Response<Self::FollowShardOutputStream>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let job_id = parse_job_id(&req.job_id)?;
        let scope = Scope::of(&who, &self.ctx.shared.read().state);
        let guard = self.ctx.stream_guard(&who);
        let stream =
            super::shard_output::follow(self.ctx.clone(), job_id, req.shard, scope, guard).await?;
        Ok(Response::new(stream))
    }

    async fn set_quota(
        &self,
        request: Request<SetQuotaRequest>,
    ) -> Result<Response<QuotaInfo>, Status> {
        let req = request.into_inner();
        crate::fsm::validate_tenant(&req.tenant).map_err(ApiError::from)?;
        if let Some(weight) = req.weight {
            crate::fsm::validate_weight(weight).map_err(ApiError::from)?;
        }
        if let Some(max) = req.max_priority {
            crate::fsm::validate_max_priority(max).map_err(ApiError::from)?;
        }
        let slots = scheduling::slot_limit(&req)?;
        let resources = match &req.resources {
            Some(amounts) => super::resources::to_domain(amounts)?,
            None => Default::default(),
        };
        // Without a highest priority or resources, the command every version reads.
        let command = match req.max_priority {
            _ if !resources.is_empty() || req.unlimited => Command::SetQuotaWithResources {
                slots,
                tenant: req.tenant,
                weight: req.weight,
                max_priority: req.max_priority,
                resources: crate::fsm::ResourceLimits {
                    clear: req.unlimited,
                    set: resources,
                },
                now_ms: now_ms(),
            },
            None => Command::SetQuota {
                slots,
                tenant: req.tenant,
                weight: req.weight,
                now_ms: now_ms(),
            },
            max_priority => Command::SetQuotaLimits {
                slots,
                tenant: req.tenant,
                weight: req.weight,
                max_priority,
                now_ms: now_ms(),
            },
        };
        match write(&self.ctx, command).await? {
            FsmResponse::QuotaSet {
                tenant,
                quota,
                max_priority,
            } => {
                tracing::info!(%tenant, slots = ?quota.slots, weight = quota.weight, max_priority, "quota set");
                let applied = self.ctx.shared.read();
                let info = scheduling::quotas(&applied.state)
                    .into_iter()
                    .find(|q| q.tenant == tenant)
                    .unwrap_or(QuotaInfo {
                        tenant,
                        slots: quota.slots,
                        weight: quota.weight,
                        max_priority,
                        ..Default::default()
                    });
                Ok(Response::new(info))
            }
            other => Err(unexpected(other).into()),
        }
    }

    async fn list_quotas(
        &self,
        request: Request<ListQuotasRequest>,
    ) -> Result<Response<ListQuotasReply>, Status> {
        let who = caller(&request)?;
        linearizable(&self.ctx).await?;
        let applied = self.ctx.shared.read();
        let scope = Scope::of(&who, &applied.state);
        let mut quotas = scheduling::quotas(&applied.state);
        // Another tenant's quota and load are not a tenant's business.
        quotas.retain(|q| scope.sees_tenant(&q.tenant));
        Ok(Response::new(ListQuotasReply { quotas }))
    }

    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsReply>, Status> {
        let who = caller(&request)?;
        linearizable(&self.ctx).await?;
        let applied = self.ctx.shared.read();
        let scope = Scope::of(&who, &applied.state);
        let jobs = applied
            .state
            .jobs
            .values()
            .filter(|j| scope.sees(&applied.state, j.id))
            .map(|j| job_summary(j))
            .collect();
        Ok(Response::new(ListJobsReply { jobs }))
    }

    async fn cancel_job(
        &self,
        request: Request<JobRequest>,
    ) -> Result<Response<CancelJobReply>, Status> {
        let job_id = parse_job_id(&request.get_ref().job_id)?;
        let who = caller(&request)?;
        {
            // Another tenant's job is one that does not exist, for cancelling too.
            let applied = self.ctx.shared.read();
            Scope::of(&who, &applied.state).job(&applied.state, job_id)?;
        }
        let command = match who.cancels_only_own(request.remote_addr()) {
            None => Command::CancelJob {
                job_id,
                now_ms: now_ms(),
            },
            Some(owner) => Command::CancelOwnJob {
                job_id,
                owner,
                now_ms: now_ms(),
            },
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
        caller(&request)?.require_taskmanager(&request.get_ref().id)?;
        let reply = super::registration::register(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(reply))
    }

    async fn list_task_managers(
        &self,
        request: Request<ListTaskManagersRequest>,
    ) -> Result<Response<ListTaskManagersReply>, Status> {
        let who = caller(&request)?;
        linearizable(&self.ctx).await?;
        let applied = self.ctx.shared.read();
        let shows_incarnations = Scope::of(&who, &applied.state) == Scope::All;
        let taskmanagers = applied
            .state
            .taskmanagers
            .values()
            .map(|tm| taskmanager_status(&applied.state, tm, shows_incarnations))
            .collect();
        Ok(Response::new(ListTaskManagersReply { taskmanagers }))
    }

    async fn pin_task_manager(
        &self,
        request: Request<PinTaskManagerRequest>,
    ) -> Result<Response<PinTaskManagerReply>, Status> {
        let req = request.into_inner();
        let labels: crate::domain::Labels = req.labels.into_iter().collect();
        crate::fsm::validate_name("TaskManager id", &req.id).map_err(ApiError::from)?;
        crate::fsm::validate_labels(&labels, &self.ctx.limits.input()).map_err(ApiError::from)?;
        let resources = crate::domain::ResourcePin {
            cpu_millis: req.cpu_millis,
            memory_bytes: req.memory_bytes,
            named: req.resources.into_iter().collect(),
        };
        crate::fsm::validate_resource_pin(&resources).map_err(ApiError::from)?;
        // From cluster version 4 a pin is whole, resources included (so a pin without them
        // takes back what was pinned); below it, a pin of resources is refused by the
        // version gate, naming the replicas still on an older release.
        let whole = self.ctx.shared.read().state.cluster_version >= ClusterVersion(4);
        let resources_pinned = whole || !resources.is_empty();
        let command = if resources_pinned {
            Command::PinTaskManagerWithResources {
                id: req.id,
                labels,
                slots: req.slots,
                resources,
                now_ms: now_ms(),
            }
        } else {
            Command::PinTaskManager {
                id: req.id,
                labels,
                slots: req.slots,
                now_ms: now_ms(),
            }
        };
        match write(&self.ctx, command).await? {
            FsmResponse::TaskManagerPinned { id } => {
                tracing::info!(%id, "TaskManager pin set");
                Ok(Response::new(PinTaskManagerReply {
                    id,
                    resources_pinned,
                }))
            }
            other => Err(unexpected(other).into()),
        }
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

    async fn undrain_task_manager(
        &self,
        request: Request<UndrainTaskManagerRequest>,
    ) -> Result<Response<UndrainTaskManagerReply>, Status> {
        let id = request.into_inner().id;
        crate::fsm::validate_name("TaskManager id", &id).map_err(ApiError::from)?;
        let command = Command::UndrainTaskManager {
            id,
            now_ms: now_ms(),
        };
        match write(&self.ctx, command).await? {
            FsmResponse::TaskManagerUndrained { id } => {
                Ok(Response::new(UndrainTaskManagerReply { id }))
            }
            other => Err(unexpected(other).into()),
        }
    }
}
