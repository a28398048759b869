//! The `Periodic` service: `cron add|list|show|suspend|resume|delete|run`. A schedule's job
//! is checked at `cron add` exactly as `submit` checks a job (limits, tenant, priority
//! ceiling, whether it could ever fit), and its expression and zone are parsed here, so a
//! schedule that could never fire or never run is refused before it reaches the log.
//! Schedules belong to a tenant: a tenant's tokens see and change only their own.

use super::access::{caller, Caller};
use super::error::ApiError;
use super::raft_access::{linearizable, write};
use super::scheduling;
use super::visibility::Scope;
use super::ServiceContext;
use crate::clock::now_ms;
use crate::domain::{
    ClusterState, CronDefinition, CronSchedule, JobSpec, JobTemplate, MAX_STARTING_DEADLINE_MS,
};
use crate::fsm::{validate_name, validate_spec, Command, Rejection, Response as FsmResponse};
use crate::pb::api::periodic_server::Periodic;
use crate::pb::api::*;
use crate::periodic::{CatchUp, Concurrency, Schedule};
use tonic::{Request, Response, Status};

/// How many next fire times `cron show` lists.
const NEXT_FIRES: usize = 5;

pub struct PeriodicService {
    ctx: ServiceContext,
}

impl PeriodicService {
    pub fn new(ctx: ServiceContext) -> Self {
        PeriodicService { ctx }
    }
}

fn concurrency_of(raw: &str) -> Result<Concurrency, ApiError> {
    Ok(match raw {
        "" | "allow" => Concurrency::Allow,
        "forbid" => Concurrency::Forbid,
        "replace" => Concurrency::Replace,
        other => {
            return Err(ApiError::InvalidArgument(format!(
                "--concurrency is allow, forbid or replace, not {other:?}"
            )))
        }
    })
}

fn catch_up_of(raw: &str) -> Result<CatchUp, ApiError> {
    Ok(match raw {
        "" | "last" => CatchUp::Last,
        "none" => CatchUp::None,
        "all" => CatchUp::All,
        other => {
            return Err(ApiError::InvalidArgument(format!(
                "--catch-up is none, last or all, not {other:?}"
            )))
        }
    })
}

pub fn concurrency_name(concurrency: Concurrency) -> &'static str {
    match concurrency {
        Concurrency::Allow => "allow",
        Concurrency::Forbid => "forbid",
        Concurrency::Replace => "replace",
    }
}

pub fn catch_up_name(catch_up: CatchUp) -> &'static str {
    match catch_up {
        CatchUp::None => "none",
        CatchUp::Last => "last",
        CatchUp::All => "all",
    }
}

/// The schedule a request names: its tenant (the caller's own unless an admin, or anyone
/// under `--insecure`, names another) and name.
fn named(
    name: &str,
    tenant: &str,
    who: &Caller,
    state: &ClusterState,
) -> Result<(String, String), ApiError> {
    validate_name("schedule name", name).map_err(ApiError::from)?;
    let tenant = scheduling::tenant_of(tenant, who, state)?;
    Ok((tenant, name.to_string()))
}

/// A schedule as `cron show` and `cron list` describe it, at `now`. `viewer` is the owner a
/// caller below operator acts as: the job's environment may carry the secrets of whoever
/// added the schedule, so anyone else sees the names only (as `job status` shows a job).
fn info(
    tenant: &str,
    name: &str,
    schedule: &CronSchedule,
    state: &ClusterState,
    viewer: Option<&str>,
) -> ScheduleInfo {
    let definition = &schedule.definition;
    let next_fires_ms = if schedule.suspended {
        Vec::new()
    } else {
        Schedule::read(&definition.expression, definition.timezone.as_deref())
            .map(|parsed| {
                parsed
                    .times_after(schedule.settled_until_ms.max(now_ms()))
                    .take(NEXT_FIRES)
                    .collect()
            })
            .unwrap_or_default()
    };
    let recent = schedule
        .history
        .iter()
        .map(|run| ScheduleRun {
            scheduled_ms: run.scheduled_ms,
            job_id: run.job.to_string(),
            state: state
                .job(run.job)
                .map_or("forgotten", |j| j.state.as_str())
                .to_string(),
        })
        .collect();
    let template = &definition.template;
    let mut spec: crate::pb::api::JobSpec = (&template.spec).into();
    super::dispatcher_service::hide_env_from(&mut spec, viewer, &template.owner);
    ScheduleInfo {
        name: name.to_string(),
        tenant: tenant.to_string(),
        schedule: definition.expression.clone(),
        timezone: definition
            .timezone
            .clone()
            .unwrap_or_else(|| "UTC".to_string()),
        concurrency: concurrency_name(definition.concurrency).to_string(),
        starting_deadline_ms: definition.starting_deadline_ms,
        catch_up: catch_up_name(definition.catch_up).to_string(),
        suspended: schedule.suspended,
        next_fires_ms,
        settled_until_ms: schedule.settled_until_ms,
        recent,
        skipped_total: schedule.skipped_total,
        last_skip: schedule.last_skip.as_ref().map(|skip| ScheduleSkip {
            count: skip.count,
            at_least: skip.at_least,
            first_ms: skip.first_ms,
            last_ms: skip.last_ms,
            reason: skip.reason.clone(),
            at_ms: skip.at_ms,
        }),
        created_at_ms: schedule.created_at_ms,
        spec: Some(spec),
        priority: template.options.priority,
        gang: template.options.gang,
        created: false,
    }
}

impl PeriodicService {
    /// The definition `cron add` asks for, checked as `submit` checks a job.
    fn definition(
        &self,
        req: &AddScheduleRequest,
        who: &Caller,
        owner: String,
        state: &ClusterState,
    ) -> Result<CronDefinition, ApiError> {
        let job = req
            .job
            .as_ref()
            .ok_or_else(|| ApiError::InvalidArgument("the request has no job".into()))?;
        if !job.after.is_empty() {
            return Err(ApiError::InvalidArgument(
                "a schedule's job cannot wait for other jobs (--after): every fire would wait \
                 for the same ones"
                    .into(),
            ));
        }
        let timezone = (!req.timezone.is_empty()).then(|| req.timezone.clone());
        Schedule::parse(&req.schedule, timezone.as_deref(), now_ms())
            .map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
        if let Some(ms) = req.starting_deadline_ms {
            if ms == 0 || ms > MAX_STARTING_DEADLINE_MS {
                return Err(ApiError::InvalidArgument(format!(
                    "--starting-deadline must be above zero and at most 30 days, not {ms} ms"
                )));
            }
        }
        let spec: JobSpec = job
            .spec
            .clone()
            .ok_or_else(|| ApiError::InvalidArgument("the request has no job spec".into()))?
            .into();
        let limits = &self.ctx.limits;
        validate_spec(&req.name, &spec, &limits.input()).map_err(ApiError::from)?;
        let options = scheduling::submit_options(job, who, state)?;
        let request = super::resources::submit_request(
            job,
            self.ctx.require_isolation,
            self.ctx.default_timeout_ms,
            state,
        )?;
        scheduling::check_priority_ceiling(&options, who, state)?;
        scheduling::check_could_ever_fit(&spec, &options, state)?;
        Ok(CronDefinition {
            expression: req.schedule.trim().to_string(),
            timezone,
            concurrency: concurrency_of(&req.concurrency)?,
            starting_deadline_ms: req.starting_deadline_ms,
            catch_up: catch_up_of(&req.catch_up)?,
            template: JobTemplate {
                spec,
                owner,
                options,
                request,
            },
        })
    }

    /// The schedule after a write, as the leader applied it, as `viewer` may see it.
    fn read_back(
        &self,
        tenant: &str,
        name: &str,
        viewer: Option<&str>,
    ) -> Result<ScheduleInfo, ApiError> {
        let view = self.ctx.shared.read();
        let schedule = view
            .state
            .cron
            .schedules
            .get(&(tenant.to_string(), name.to_string()))
            .ok_or_else(|| {
                ApiError::Rejected(Rejection::UnknownSchedule {
                    tenant: tenant.to_string(),
                    name: name.to_string(),
                })
            })?;
        Ok(info(tenant, name, schedule, &view.state, viewer))
    }
}

fn unexpected(resp: FsmResponse) -> Status {
    super::dispatcher_service::unexpected(resp).into()
}

#[tonic::async_trait]
impl Periodic for PeriodicService {
    async fn add_schedule(
        &self,
        request: Request<AddScheduleRequest>,
    ) -> Result<Response<ScheduleInfo>, Status> {
        let who = caller(&request)?;
        let owner = who.owner(request.remote_addr());
        let viewer = who.cancels_only_own(request.remote_addr());
        let req = request.into_inner();
        let (tenant, name, definition) = {
            let view = self.ctx.shared.read();
            let asked = req.job.as_ref().map_or("", |j| j.tenant.as_str());
            let (tenant, name) = named(&req.name, asked, &who, &view.state)?;
            let definition = self.definition(&req, &who, owner, &view.state)?;
            (tenant, name, definition)
        };
        let command = Command::CronPut {
            tenant: tenant.clone(),
            name: name.clone(),
            definition,
            now_ms: now_ms(),
        };
        match write(&self.ctx, command).await? {
            FsmResponse::CronPut { created } => {
                let mut shown = self.read_back(&tenant, &name, viewer.as_deref())?;
                shown.created = created;
                Ok(Response::new(shown))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn list_schedules(
        &self,
        request: Request<ListSchedulesRequest>,
    ) -> Result<Response<ListSchedulesReply>, Status> {
        let who = caller(&request)?;
        let viewer = who.cancels_only_own(request.remote_addr());
        linearizable(&self.ctx).await?;
        let view = self.ctx.shared.read();
        let scope = Scope::of(&who, &view.state);
        let schedules = view
            .state
            .cron
            .schedules
            .iter()
            .filter(|((tenant, _), _)| scope.sees_tenant(tenant))
            .map(|((tenant, name), schedule)| {
                info(tenant, name, schedule, &view.state, viewer.as_deref())
            })
            .collect();
        Ok(Response::new(ListSchedulesReply { schedules }))
    }

    async fn get_schedule(
        &self,
        request: Request<ScheduleRequest>,
    ) -> Result<Response<ScheduleInfo>, Status> {
        let who = caller(&request)?;
        let viewer = who.cancels_only_own(request.remote_addr());
        let req = request.into_inner();
        linearizable(&self.ctx).await?;
        let (tenant, name) = {
            let view = self.ctx.shared.read();
            named(&req.name, &req.tenant, &who, &view.state)?
        };
        Ok(Response::new(self.read_back(
            &tenant,
            &name,
            viewer.as_deref(),
        )?))
    }

    async fn suspend_schedule(
        &self,
        request: Request<SuspendScheduleRequest>,
    ) -> Result<Response<ScheduleInfo>, Status> {
        let who = caller(&request)?;
        let viewer = who.cancels_only_own(request.remote_addr());
        let req = request.into_inner();
        let (tenant, name) = {
            let view = self.ctx.shared.read();
            named(&req.name, &req.tenant, &who, &view.state)?
        };
        let command = Command::CronSetSuspended {
            tenant: tenant.clone(),
            name: name.clone(),
            suspended: req.suspended,
            now_ms: now_ms(),
        };
        match write(&self.ctx, command).await? {
            FsmResponse::CronSuspended { .. } => Ok(Response::new(self.read_back(
                &tenant,
                &name,
                viewer.as_deref(),
            )?)),
            other => Err(unexpected(other)),
        }
    }

    async fn delete_schedule(
        &self,
        request: Request<ScheduleRequest>,
    ) -> Result<Response<DeleteScheduleReply>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let (tenant, name) = {
            let view = self.ctx.shared.read();
            named(&req.name, &req.tenant, &who, &view.state)?
        };
        let command = Command::CronDelete {
            tenant: tenant.clone(),
            name: name.clone(),
            now_ms: now_ms(),
        };
        match write(&self.ctx, command).await? {
            FsmResponse::CronDeleted => Ok(Response::new(DeleteScheduleReply { name, tenant })),
            other => Err(unexpected(other)),
        }
    }

    async fn run_schedule(
        &self,
        request: Request<RunScheduleRequest>,
    ) -> Result<Response<SubmitReply>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let (tenant, name) = {
            let view = self.ctx.shared.read();
            named(&req.name, &req.tenant, &who, &view.state)?
        };
        if req.request_key.is_empty() {
            return Err(ApiError::InvalidArgument(
                "the request has no request key (any unique string; the same one on a retry)"
                    .into(),
            )
            .into());
        }
        crate::fsm::validate_name_within("request key", &req.request_key, &self.ctx.limits.input())
            .map_err(ApiError::from)?;
        let command = Command::CronRun {
            tenant,
            name,
            request_key: req.request_key,
            admission: self.ctx.limits.admission(),
            now_ms: now_ms(),
        };
        match write(&self.ctx, command).await? {
            FsmResponse::JobSubmitted { job_id, created } => Ok(Response::new(SubmitReply {
                warnings: Vec::new(),
                job_id: job_id.to_string(),
                created,
            })),
            other => Err(unexpected(other)),
        }
    }
}
