//! Shard reports from agents, one at a time or in batches: checked before the log (epoch,
//! incarnation, bounded error text) and turned into commands. A batch is proposed at once, so
//! that a burst of short shards costs one round of replication rather than one per report.

use super::error::ApiError;
use super::leader_lease::ensure_leader_lease;
use super::raft_access::{propose_together, write};
use super::ServiceContext;
use crate::clock::now_ms;
use crate::domain::{cut_error, JobId, PrintedTail};
use crate::fsm::{
    check_report, validate_name, Command, OutputReport, Report, Response as FsmResponse,
    ShardOutcome,
};
use crate::leader::behind_reports::{self, plan_behind};
use crate::pb::api::*;
use crate::scheduler::retry_delay_ms;
use openraft::async_runtime::watch::WatchReceiver;

/// Longest shard run a report may claim.
const MAX_REPORTED_RUN_MS: u64 = 365 * 24 * 3600 * 1000;
/// Most reports in one batch.
pub const MAX_REPORTS_PER_BATCH: usize = 1024;

/// What a report becomes in the log: its own command, and before it, with a final report
/// that carries output, the output's.
pub struct ReportCommands {
    pub output: Option<OutputReport>,
    pub main: Report,
}

/// Keep the last `most` bytes; whether anything was cut (here or by the agent).
fn cut_tail(mut bytes: Vec<u8>, most: usize, cut_already: bool) -> (Vec<u8>, bool) {
    if bytes.len() <= most {
        return (bytes, cut_already);
    }
    bytes.drain(..bytes.len() - most);
    (bytes, true)
}

/// The output a final report carries, cut to this cluster's limit; none if empty or not
/// kept at all.
fn output_of(ctx: &ServiceContext, req: &mut ShardReport, job_id: JobId) -> Option<OutputReport> {
    let most = ctx.limits.output_tail_bytes;
    let (stdout, stdout_cut) = cut_tail(std::mem::take(&mut req.stdout_tail), most, req.stdout_cut);
    let (stderr, stderr_cut) = cut_tail(std::mem::take(&mut req.stderr_tail), most, req.stderr_cut);
    if stdout.is_empty() && stderr.is_empty() {
        return None;
    }
    // At least what is kept, whatever the agent claims.
    let stdout_len = req.stdout_len.max(stdout.len() as u64);
    let stderr_len = req.stderr_len.max(stderr.len() as u64);
    Some(OutputReport {
        taskmanager: req.taskmanager_id.clone(),
        job_id,
        shard: req.index,
        epoch: req.epoch,
        printed: PrintedTail {
            stdout,
            stderr,
            stdout_cut,
            stderr_cut,
            stdout_len,
            stderr_len,
        },
        keep_bytes: ctx.limits.max_output_bytes,
    })
}

/// The commands a report stands for, or why it is refused before the log.
pub fn report_command(ctx: &ServiceContext, req: ShardReport) -> Result<ReportCommands, ApiError> {
    validate_name("TaskManager id", &req.taskmanager_id).map_err(ApiError::from)?;
    let job_id: JobId = req
        .job_id
        .parse()
        .map_err(|e: crate::domain::ParseJobIdError| ApiError::InvalidArgument(e.to_string()))?;
    // Checked against the leader's applied state only, once it holds its own term (see
    // `ensure_leader_lease`), so that a replica behind never refuses a report it cannot
    // judge yet.
    ensure_leader_lease(ctx)?;
    let mut req = req;
    {
        // A report is refused here, without a log entry, unless it names a shard this
        // TaskManager holds now at the epoch it was given; apply checks again.
        let view = ctx.shared.read();
        let holder = view
            .state
            .taskmanager(&req.taskmanager_id)
            .map(|tm| tm.incarnation);
        if holder.is_some_and(|h| h != req.incarnation) {
            return Err(ApiError::FailedPrecondition(format!(
                "TaskManager id '{}' now belongs to another agent process; this one lost it \
                 and must stop its runs",
                req.taskmanager_id
            )));
        }
        let applied = view.last_applied.as_ref().map(|l| l.index()).unwrap_or(0);
        if req.epoch > applied {
            // An epoch is the log index of a placement, and an agent learns of a placement
            // only from a leader's applied state. This leader has applied its own term's
            // first entry (`ensure_leader_lease`), so every placement any leader made is
            // applied here: an epoch past it was never assigned. Refused before the log
            // (as retryable, to stay safe should that reasoning ever not hold).
            return Err(ApiError::Unavailable(format!(
                "{job_id} shard {} epoch {} is past this leader's applied index {applied}: \
                 no such assignment is known here",
                req.index, req.epoch
            )));
        }
        check_report(
            &view.state,
            &req.taskmanager_id,
            job_id,
            req.index,
            req.epoch,
        )
        .map_err(ApiError::from)?;
    }
    // Bounded before it reaches the log.
    req.error = cut_error(std::mem::take(&mut req.error));
    let now = now_ms();
    let kind = ReportKind::try_from(req.kind)
        .map_err(|_| ApiError::InvalidArgument(format!("unknown report kind {}", req.kind)))?;
    let output = match kind {
        ReportKind::Finished | ReportKind::Failed | ReportKind::OverLimit => {
            output_of(ctx, &mut req, job_id)
        }
        _ => None,
    };
    let outcome = match kind {
        ReportKind::Started => None,
        ReportKind::Finished => Some(ShardOutcome::Finished),
        ReportKind::Failed => Some(ShardOutcome::Failed {
            exit_code: req.exit_code,
            error: req.error,
        }),
        ReportKind::Interrupted => Some(ShardOutcome::Interrupted { reason: req.error }),
        ReportKind::CannotStart => Some(ShardOutcome::CannotStart { error: req.error }),
        ReportKind::OverLimit => Some(ShardOutcome::OverLimit { error: req.error }),
    };
    let command = match outcome {
        None => Report::Started {
            taskmanager: req.taskmanager_id,
            job_id,
            shard: req.index,
            epoch: req.epoch,
            now_ms: now,
        },
        Some(outcome) => {
            // A finished shard is not retried: its back-off is never read.
            let delay = match outcome {
                ShardOutcome::Finished => 0,
                _ => {
                    let failures_after = {
                        let view = ctx.shared.read();
                        view.state
                            .job(job_id)
                            .and_then(|j| j.shards.get(req.index as usize))
                            .map(|s| s.failures + 1)
                            .unwrap_or(1)
                    };
                    let s = &ctx.tm_settings;
                    retry_delay_ms(
                        failures_after,
                        s.retry_base_ms,
                        s.retry_max_ms,
                        crate::entropy::unit_random(req.job_id.as_bytes()),
                    )
                }
            };
            Report::Ended {
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
    Ok(ReportCommands {
        output,
        main: command,
    })
}

/// Propose every report of a batch in one log entry; one outcome per report, in order.
/// Starts go first, then ends: a shard's start and end in one batch apply in that order.
pub async fn report_batch(
    ctx: &ServiceContext,
    reports: Vec<ShardReport>,
) -> Vec<ShardReportOutcome> {
    let mut outcomes: Vec<Option<ShardReportOutcome>> = vec![None; reports.len()];
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    for (i, report) in reports.into_iter().enumerate() {
        let started = report.kind == ReportKind::Started as i32;
        match report_command(ctx, report) {
            Ok(commands) if started => starts.push((Some(i), commands.main)),
            Ok(ReportCommands { output, main }) => {
                // Output right before its end; its own answer is nobody's outcome.
                if let Some(output) = output {
                    ends.push((None, Report::Output(output)));
                }
                ends.push((Some(i), main));
            }
            Err(e) => outcomes[i] = Some(outcome_of(Err(e))),
        }
    }
    let (positions, reports): (Vec<Option<usize>>, Vec<Report>) =
        starts.into_iter().chain(ends).unzip();
    if !reports.is_empty() {
        match write_with_placements_behind(ctx, reports).await {
            Ok(FsmResponse::Batch(responses)) => {
                for (i, response) in positions.iter().zip(responses) {
                    let Some(i) = i else { continue };
                    outcomes[*i] = Some(outcome_of(match response {
                        FsmResponse::Rejected(rejection) => Err(ApiError::Rejected(rejection)),
                        _ => Ok(()),
                    }));
                }
            }
            other => {
                let failed = outcome_of(Err(match other {
                    Ok(answer) => {
                        ApiError::Internal(format!("a batch of reports was answered {answer:?}"))
                    }
                    Err(e) => e,
                }));
                for i in positions.iter().flatten() {
                    outcomes[*i] = Some(failed.clone());
                }
            }
        }
    }
    outcomes
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect()
}

/// Propose the batch and, right behind it in the same append, a plan into the room its ends
/// give back (`leader::behind_reports`); answer the batch's outcome. The plan's own outcome
/// is nobody's: what it could not place stays pending for the placement loop.
async fn write_with_placements_behind(
    ctx: &ServiceContext,
    reports: Vec<Report>,
) -> Result<FsmResponse, ApiError> {
    let leads = ctx.raft.metrics().borrow_watched().state == openraft::ServerState::Leader;
    let placements = if leads {
        plan_behind(&ctx.shared.read().state, &reports, now_ms())
    } else {
        Vec::new()
    };
    if placements.is_empty() {
        return write(ctx, Command::Batch(reports)).await;
    }
    let _in_flight = ctx.placements_behind.begin();
    let count = placements.len();
    let plan = Command::PlaceShards {
        placements,
        now_ms: now_ms(),
    };
    let mut answers = propose_together(ctx, vec![Command::Batch(reports), plan])
        .await
        .into_iter();
    let batch = answers.next();
    match answers.next() {
        Some(Ok(reply)) => {
            behind_reports::placed(count, &reply, "behind reports");
        }
        Some(Err(e)) => tracing::debug!("plan behind reports not applied: {e}"),
        None => {}
    }
    batch.unwrap_or_else(|| Err(ApiError::Unavailable("raft stopped".into())))
}

fn outcome_of(result: Result<(), ApiError>) -> ShardReportOutcome {
    match result {
        Ok(()) => ShardReportOutcome::default(),
        Err(e) => {
            let status: tonic::Status = e.into();
            ShardReportOutcome {
                code: status.code() as u32,
                message: status.message().to_string(),
            }
        }
    }
}
