//! The TaskManager agents' API: heartbeats (answered by the leader from memory and its
//! state, never written to the log) and shard reports (written to the log, fenced by epoch).

use super::access::{caller, Caller};
use super::error::ApiError;
use super::raft_access::{not_leader_here, write};
use super::ServiceContext;
use crate::clock::now_ms;
use crate::domain::{cut_error, AssignmentsVersion, JobId, TaskManagerState};
use crate::fsm::{check_report, validate_name, Command, ShardOutcome};
use crate::pb::api::task_managers_server::TaskManagers;
use crate::pb::api::*;
use crate::scheduler::retry_delay_ms;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::{Instant as _, ServerState};
use std::time::Instant;
use tonic::{Request, Response, Status};

/// Longest shard run a report may claim.
const MAX_REPORTED_RUN_MS: u64 = 365 * 24 * 3600 * 1000;

pub struct TaskManagerService {
    ctx: ServiceContext,
}

impl TaskManagerService {
    pub fn new(ctx: ServiceContext) -> Self {
        TaskManagerService { ctx }
    }

    /// Heartbeats must come from a leader that still holds its lease: a deposed leader
    /// answering from stale state could hand out assignments that were moved elsewhere.
    ///
    /// The lease is checked here, from the metrics openraft publishes, rather than with a
    /// lease read through the Raft core: heartbeats are the hottest call (one per
    /// TaskManager every 500 ms), and a round trip through the core for each one made them
    /// queue behind it. A quorum acknowledged this leader at `last_quorum_acked` (the time
    /// the acknowledged message was sent); no other leader can be elected within an
    /// election timeout of that. Applied state may trail the commit by a moment; moves that
    /// matter (drain, loss) keep a margin over the agent's lease for that.
    ///
    /// A new leader also waits until it has applied an entry of its own term (its first,
    /// blank entry): everything committed before it, such as a takeover or a loss a previous
    /// leader proposed, is then in the state it answers from. Otherwise it could renew the
    /// lease of an agent whose shards that entry is about to move elsewhere.
    fn ensure_leader_lease(&self) -> Result<(), ApiError> {
        let (valid, term) = {
            let metrics = self.ctx.raft.metrics();
            let m = metrics.borrow_watched();
            let alone = m.membership_config.membership().voter_ids().count() == 1;
            let valid = m.state == ServerState::Leader
                && (alone
                    || m.last_quorum_acked
                        .as_ref()
                        .is_some_and(|acked| acked.into_inner().elapsed() < self.ctx.leader_lease));
            (valid, m.current_term)
        };
        if !valid {
            tracing::debug!("heartbeat refused: leader lease not held");
            return Err(not_leader_here(&self.ctx));
        }
        let applied_term = self
            .ctx
            .shared
            .read()
            .last_applied
            .as_ref()
            .map(|l| l.committed_leader_id().term);
        if applied_term != Some(term) {
            return Err(ApiError::Unavailable(
                "this leader has not applied the log of its own term yet; retry shortly".into(),
            ));
        }
        Ok(())
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
        self.ensure_leader_lease()?;
        let settings = &self.ctx.tm_settings;
        let mut reply = HeartbeatReply {
            registered: false,
            assignments: Vec::new(),
            lease_ms: settings.lease_ms,
            heartbeat_interval_ms: settings.heartbeat_interval_ms,
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
        // Refused if the failure detector has condemned it: its shards are being moved.
        if !self.ctx.liveness.heartbeat(&tm.id, received) {
            return Ok(Response::new(reply));
        }
        reply.registered = true;
        let version = view.state.assignments_version(&tm.id);
        reply.assignments_max_epoch = version.max_epoch;
        reply.assignments_count = version.count;
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
        let req = request.into_inner();
        validate_name("TaskManager id", &req.taskmanager_id).map_err(ApiError::from)?;
        let job_id: JobId = req
            .job_id
            .parse()
            .map_err(|e: crate::domain::ParseJobIdError| {
                ApiError::InvalidArgument(e.to_string())
            })?;
        // Checked against the leader's applied state only, once it holds its own term (see
        // `ensure_leader_lease`), so that a replica behind never refuses a report it cannot
        // judge yet.
        self.ensure_leader_lease()?;
        let mut req = req;
        {
            // A report about an assignment the applied state has already seen and moved past
            // is refused here, without a log entry. One whose epoch (the log index of its
            // placement) this replica has not applied yet goes on to apply, which decides.
            let view = self.ctx.shared.read();
            let holder = view
                .state
                .taskmanager(&req.taskmanager_id)
                .map(|tm| tm.incarnation);
            if holder.is_some_and(|h| h != req.incarnation) {
                return Err(ApiError::FailedPrecondition(format!(
                    "TaskManager id '{}' now belongs to another agent process; this one lost it \
                     and must stop its runs",
                    req.taskmanager_id
                ))
                .into());
            }
            let applied = view.last_applied.as_ref().map(|l| l.index()).unwrap_or(0);
            if req.epoch <= applied {
                check_report(
                    &view.state,
                    &req.taskmanager_id,
                    job_id,
                    req.index,
                    req.epoch,
                )
                .map_err(ApiError::from)?;
            }
        }
        // Bounded before it reaches the log.
        req.error = cut_error(std::mem::take(&mut req.error));
        let now = now_ms();
        let kind = ReportKind::try_from(req.kind)
            .map_err(|_| ApiError::InvalidArgument(format!("unknown report kind {}", req.kind)))?;
        let outcome = match kind {
            ReportKind::Started => None,
            ReportKind::Finished => Some(ShardOutcome::Finished),
            ReportKind::Failed => Some(ShardOutcome::Failed {
                exit_code: req.exit_code,
                error: req.error,
            }),
            ReportKind::Interrupted => Some(ShardOutcome::Interrupted { reason: req.error }),
            ReportKind::CannotStart => Some(ShardOutcome::CannotStart { error: req.error }),
        };
        let command = match outcome {
            None => Command::ReportShardStarted {
                taskmanager: req.taskmanager_id,
                job_id,
                shard: req.index,
                epoch: req.epoch,
                now_ms: now,
            },
            Some(outcome) => {
                let failures_after = {
                    let view = self.ctx.shared.read();
                    view.state
                        .job(job_id)
                        .and_then(|j| j.shards.get(req.index as usize))
                        .map(|s| s.failures + 1)
                        .unwrap_or(1)
                };
                let s = &self.ctx.tm_settings;
                let delay = retry_delay_ms(
                    failures_after,
                    s.retry_base_ms,
                    s.retry_max_ms,
                    crate::entropy::unit_random(req.job_id.as_bytes()),
                );
                Command::ReportShardEnded {
                    taskmanager: req.taskmanager_id,
                    job_id,
                    shard: req.index,
                    epoch: req.epoch,
                    outcome,
                    // A run of more than a year is a broken clock or a forged report.
                    run_ms: req.run_ms.min(MAX_REPORTED_RUN_MS),
                    retry_at_ms: now + delay,
                    now_ms: now,
                }
            }
        };
        write(&self.ctx, command).await?;
        Ok(Response::new(ShardReportReply {}))
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
            })),
            None if is_leader => {
                Err(ApiError::NotFound(format!("job '{job_id}' not found")).into())
            }
            None => Err(not_leader_here(&self.ctx).into()),
        }
    }
}
