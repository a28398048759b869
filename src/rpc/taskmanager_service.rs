//! The TaskManager agents' API: heartbeats (answered by the leader from memory and its
//! state, never written to the log), shard reports (written to the log, fenced by epoch;
//! see `reports`), pushed assignments (`assignment_stream`) and job specs.

use super::access::{caller, Caller};
use super::assignment_stream::{watch, AssignmentStream};
use super::error::ApiError;
use super::leader_lease::ensure_leader_lease;
use super::raft_access::{not_leader_here, write};
use super::reports::{report_batch, report_command, ReportCommands, MAX_REPORTS_PER_BATCH};
use super::ServiceContext;
use crate::domain::{AssignmentsVersion, JobId, TaskManagerState};
use crate::fsm::{validate_name, Command, Report, Response as FsmResponse};
use crate::pb::api::task_managers_server::TaskManagers;
use crate::pb::api::*;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::ServerState;
use prost::Message;
use std::time::Instant;
use tonic::{Request, Response, Status};

pub struct TaskManagerService {
    ctx: ServiceContext,
}

impl TaskManagerService {
    pub fn new(ctx: ServiceContext) -> Self {
        TaskManagerService { ctx }
    }
}

#[tonic::async_trait]
impl TaskManagers for TaskManagerService {
    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        let received = Instant::now();
        caller(&request)?.require_taskmanager(&request.get_ref().taskmanager_id)?;
        let req = request.into_inner();
        validate_name("TaskManager id", &req.taskmanager_id).map_err(ApiError::from)?;
        ensure_leader_lease(&self.ctx)?;
        let settings = &self.ctx.tm_settings;
        let mut reply = HeartbeatReply {
            registered: false,
            assignments: Vec::new(),
            lease_ms: settings.lease_ms,
            heartbeat_interval_ms: settings.heartbeat_interval_ms,
            output_tail_bytes: self.ctx.limits.output_tail_bytes as u64,
            ..HeartbeatReply::default()
        };
        let view = self.ctx.shared.read();
        let Some(tm) = view.state.taskmanager(&req.taskmanager_id) else {
            return Ok(Response::new(reply));
        };
        // Another agent process took the id over: this one is told it is not registered, and
        // its attempt to register again is refused while the new holder lives.
        let other_incarnation = tm.incarnation != req.incarnation;
        if tm.registration_epoch != req.registration_epoch
            || tm.state == TaskManagerState::Lost
            || other_incarnation
        {
            return Ok(Response::new(reply));
        }
        // An admin narrowed or took back its pin since it registered: it is told it is not
        // registered, and registering again with the same claims is refused with what to do.
        // It is declared lost once silent (its shards move on), like any agent that stops.
        if self.ctx.transport.is_tls()
            && crate::domain::registered_claims_refusal(&view.state, tm).is_some()
        {
            return Ok(Response::new(reply));
        }
        // Refused if the failure detector has condemned it: its shards are being moved.
        if !self.ctx.liveness.heartbeat(&tm.id, received) {
            return Ok(Response::new(reply));
        }
        reply.registered = true;
        // Live output for whoever follows (`job logs`), and what to send next.
        self.ctx.taps.deliver(&tm.id, req.output);
        reply.output_taps = self.ctx.taps.wanted(&tm.id);
        let version = view.state.assignments_version(&tm.id);
        reply.assignments_max_epoch = version.max_epoch;
        reply.assignments_count = version.count;
        reply.applied_index = view.last_applied.as_ref().map(|l| l.index()).unwrap_or(0);
        let known = AssignmentsVersion {
            max_epoch: req.assignments_max_epoch,
            count: req.assignments_count,
        };
        // Most heartbeats find nothing changed: answering them without the list keeps their
        // cost flat however many shards a TaskManager holds.
        if known == version {
            reply.assignments_unchanged = true;
            return Ok(Response::new(reply));
        }
        for (job, shard) in view.state.assignments(&tm.id) {
            reply.assignments.push(Assignment {
                job_id: job.id.to_string(),
                index: shard.index,
                epoch: shard.epoch,
                attempt: shard.attempt,
                shard_count: job.spec.shard_count,
            });
        }
        Ok(Response::new(reply))
    }

    async fn report_shard(
        &self,
        request: Request<ShardReport>,
    ) -> Result<Response<ShardReportReply>, Status> {
        caller(&request)?.require_taskmanager(&request.get_ref().taskmanager_id)?;
        let bytes = request.get_ref().encoded_len();
        self.ctx
            .report_budget
            .take(&request.get_ref().taskmanager_id, 1, bytes)?;
        let ReportCommands { output, main } = report_command(&self.ctx, request.into_inner())?;
        match output {
            None => {
                write(&self.ctx, main.into()).await?;
            }
            Some(output) => {
                // The output goes in the same entry as the end it belongs to.
                let batch = Command::Batch(vec![Report::Output(output), main]);
                if let FsmResponse::Batch(responses) = write(&self.ctx, batch).await? {
                    if let Some(FsmResponse::Rejected(rejection)) = responses.into_iter().last() {
                        return Err(ApiError::Rejected(rejection).into());
                    }
                }
            }
        }
        Ok(Response::new(ShardReportReply {}))
    }

    async fn report_shards(
        &self,
        request: Request<ShardReportBatch>,
    ) -> Result<Response<ShardReportBatchReply>, Status> {
        let who = caller(&request)?;
        let bytes = request.get_ref().encoded_len();
        let reports = request.into_inner().reports;
        if reports.len() > MAX_REPORTS_PER_BATCH {
            return Err(ApiError::InvalidArgument(format!(
                "{} reports in one batch; send at most {MAX_REPORTS_PER_BATCH}",
                reports.len()
            ))
            .into());
        }
        for report in &reports {
            who.require_taskmanager(&report.taskmanager_id)?;
        }
        if let Some(first) = reports.first() {
            // One agent's batch (checked above): all of it against that agent's budget.
            self.ctx
                .report_budget
                .take(&first.taskmanager_id, reports.len(), bytes)?;
        }
        // Refused as a whole off the leader, with the leader's address: per-report refusals
        // inside an OK reply would keep the agent sending to this follower for ever.
        ensure_leader_lease(&self.ctx)?;
        let outcomes = report_batch(&self.ctx, reports).await;
        Ok(Response::new(ShardReportBatchReply { outcomes }))
    }

    type WatchAssignmentsStream = AssignmentStream;

    async fn watch_assignments(
        &self,
        request: Request<WatchAssignmentsRequest>,
    ) -> Result<Response<AssignmentStream>, Status> {
        caller(&request)?.require_taskmanager(&request.get_ref().taskmanager_id)?;
        let stream = watch(self.ctx.clone(), request.into_inner())?;
        Ok(Response::new(stream))
    }

    async fn get_job_spec(
        &self,
        request: Request<JobSpecRequest>,
    ) -> Result<Response<JobSpecReply>, Status> {
        let job_id: JobId =
            request
                .get_ref()
                .job_id
                .parse()
                .map_err(|e: crate::domain::ParseJobIdError| {
                    ApiError::InvalidArgument(e.to_string())
                })?;
        // A spec never changes once submitted, so any replica that has applied the job may
        // answer; one that has not yet sends the agent to the leader. A TaskManager gets only
        // the specs of jobs it holds shards of (a spec's environment may carry secrets).
        let who = caller(&request)?;
        let view = self.ctx.shared.read();
        let holds = |tm: &str| {
            view.state
                .shards_by_taskmanager
                .get(tm)
                .is_some_and(|held| {
                    held.range((job_id, 0)..=(job_id, u32::MAX))
                        .next()
                        .is_some()
                })
        };
        let allowed = match &who {
            Caller::Anyone => true,
            Caller::TaskManager(name) => holds(name),
            _ => false,
        };
        let is_leader = self.ctx.raft.metrics().borrow_watched().state == ServerState::Leader;
        match view.state.job(job_id) {
            Some(_) if !allowed && !is_leader => Err(not_leader_here(&self.ctx).into()),
            Some(_) if !allowed => Err(ApiError::PermissionDenied(format!(
                "{who:?} holds no shard of job {job_id}; only the TaskManagers running it may \
                 read its spec"
            ))
            .into()),
            Some(job) => Ok(Response::new(JobSpecReply {
                command: job.spec.command.clone(),
                args: job.spec.args.clone(),
                env: job
                    .spec
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                resources: view
                    .state
                    .asked_resources(job.id)
                    .map(crate::pb::api::ResourceAmounts::from),
                slots_per_shard: job.spec.slots_per_shard,
                timeout_ms: view.state.requests.get(&job.id).and_then(|r| r.timeout_ms),
            })),
            None if is_leader => {
                drop(view);
                // A new leader that has not applied its own term's first entry may not know
                // a job that exists: the agent asks again rather than fail its run.
                super::leader_lease::ensure_leader_lease(&self.ctx)?;
                Err(ApiError::NotFound(format!("job '{job_id}' not found")).into())
            }
            None => Err(not_leader_here(&self.ctx).into()),
        }
    }
}
