//! Apply of the periodic-job commands: adding, suspending and deleting a schedule, the
//! leader's turns that fire it, and `cron run`. A fire submits the schedule's job through the
//! same path as `submit`, with an idempotency key made of the schedule, its generation and
//! the scheduled time; the mark check makes a turn decided twice apply once.

use super::jobs::{cancel_job, Submission};
use super::resources::submit_with_resources;
use crate::domain::{
    rfc3339, Admission, ClusterState, CronDefinition, CronKey, CronOrigin, CronRunRecord,
    CronSchedule, CronSkip, InputLimits, JobId, MAX_SCHEDULES, MAX_SCHEDULES_PER_TENANT,
    MAX_SKIP_REASON_BYTES, MAX_STARTING_DEADLINE_MS, MAX_TIMEZONE_BYTES, SCHEDULED_TIME_ENV,
    SCHEDULE_ENV,
};
use crate::fsm::command::{CronTurn, Rejection, Response};
use crate::fsm::validate::{validate_name, validate_options, validate_spec, validate_tenant};
use crate::periodic::{on_fire, FireAction, MAX_EXPRESSION_BYTES};

fn key(tenant: &str, name: &str) -> CronKey {
    (tenant.to_string(), name.to_string())
}

fn unknown(tenant: &str, name: &str) -> Rejection {
    Rejection::UnknownSchedule {
        tenant: tenant.to_string(),
        name: name.to_string(),
    }
}

/// What apply checks of a definition, whatever the edge checked: bounded sizes and a
/// template `submit` would take. The expression is parsed at the edge only (a parser's
/// release must never decide what a replica applies).
fn check_definition(name: &str, definition: &CronDefinition) -> Result<(), Rejection> {
    let invalid = |m: String| Rejection::Invalid(m);
    if definition.expression.is_empty() || definition.expression.len() > MAX_EXPRESSION_BYTES {
        return Err(invalid(format!(
            "a schedule's expression has 1 to {MAX_EXPRESSION_BYTES} bytes"
        )));
    }
    if definition
        .timezone
        .as_ref()
        .is_some_and(|zone| zone.is_empty() || zone.len() > MAX_TIMEZONE_BYTES)
    {
        return Err(invalid(format!(
            "a time zone name has 1 to {MAX_TIMEZONE_BYTES} bytes"
        )));
    }
    if definition
        .starting_deadline_ms
        .is_some_and(|ms| ms == 0 || ms > MAX_STARTING_DEADLINE_MS)
    {
        return Err(invalid(
            "a starting deadline is above zero and at most 30 days".to_string(),
        ));
    }
    let template = &definition.template;
    validate_spec(name, &template.spec, &InputLimits::CEILING)?;
    validate_options(&template.options)?;
    if !template.options.after.is_empty() {
        return Err(invalid(
            "a schedule's job cannot wait for other jobs (--after)".to_string(),
        ));
    }
    Ok(())
}

/// `CronPut`.
pub(super) fn put(
    state: &mut ClusterState,
    log_index: u64,
    tenant: String,
    name: String,
    definition: CronDefinition,
    now_ms: u64,
) -> Result<Response, Rejection> {
    validate_tenant(&tenant)?;
    validate_name("schedule name", &name)?;
    check_definition(&name, &definition)?;
    if definition.template.options.tenant != tenant {
        return Err(Rejection::Invalid(format!(
            "the schedule's job counts against tenant '{}', not the schedule's tenant '{tenant}'",
            definition.template.options.tenant
        )));
    }
    let schedules = &mut state.cron.schedules;
    if let Some(existing) = schedules.get_mut(&key(&tenant, &name)) {
        existing.definition = definition;
        existing.generation = log_index;
        // Never back: a time the old definition settled (the leader may have fired it after
        // this command was stamped) is not fired again by the new one.
        existing.settled_until_ms = existing.settled_until_ms.max(now_ms);
        return Ok(Response::CronPut { created: false });
    }
    if schedules.len() >= MAX_SCHEDULES {
        return Err(Rejection::TooManySchedules(format!(
            "the cluster holds {MAX_SCHEDULES} schedules, the most it keeps; delete some \
             (`dispatcher cron delete`)"
        )));
    }
    if state.cron.count_of(&tenant) >= MAX_SCHEDULES_PER_TENANT {
        return Err(Rejection::TooManySchedules(format!(
            "tenant '{tenant}' holds {MAX_SCHEDULES_PER_TENANT} schedules, the most a tenant \
             may; delete one first (`dispatcher cron delete`)"
        )));
    }
    state.cron.schedules.insert(
        key(&tenant, &name),
        CronSchedule {
            definition,
            generation: log_index,
            created_at_ms: now_ms,
            suspended: false,
            settled_until_ms: now_ms,
            history: Vec::new(),
            skipped_total: 0,
            last_skip: None,
        },
    );
    Ok(Response::CronPut { created: true })
}

/// `CronSetSuspended`.
pub(super) fn set_suspended(
    state: &mut ClusterState,
    tenant: &str,
    name: &str,
    suspended: bool,
    now_ms: u64,
) -> Result<Response, Rejection> {
    let schedule = state
        .cron
        .schedules
        .get_mut(&key(tenant, name))
        .ok_or_else(|| unknown(tenant, name))?;
    if schedule.suspended && !suspended {
        // The times that passed while suspended are not fired.
        schedule.settled_until_ms = schedule.settled_until_ms.max(now_ms);
    }
    schedule.suspended = suspended;
    Ok(Response::CronSuspended { suspended })
}

/// `CronDelete`.
pub(super) fn delete(
    state: &mut ClusterState,
    tenant: &str,
    name: &str,
) -> Result<Response, Rejection> {
    state
        .cron
        .schedules
        .remove(&key(tenant, name))
        .ok_or_else(|| unknown(tenant, name))?;
    Ok(Response::CronDeleted)
}

/// `CronFired`: settle `(from_ms, until_ms]` and fire `fire` under the concurrency rule.
pub(super) fn fired(
    state: &mut ClusterState,
    log_index: u64,
    turn: CronTurn,
) -> Result<Response, Rejection> {
    let CronTurn {
        tenant,
        name,
        generation,
        from_ms,
        until_ms,
        fire,
        skipped,
        admission,
        now_ms,
    } = turn;
    let stale = |why: String| Rejection::StaleCronTurn {
        name: name.clone(),
        why,
    };
    let schedule = state
        .cron
        .schedules
        .get(&key(&tenant, &name))
        .ok_or_else(|| unknown(&tenant, &name))?;
    if schedule.generation != generation {
        return Err(stale(format!(
            "decided for definition {generation}, and it is now {}",
            schedule.generation
        )));
    }
    if schedule.settled_until_ms != from_ms {
        return Err(stale(format!(
            "decided from {from_ms}, and the schedule is settled to {}",
            schedule.settled_until_ms
        )));
    }
    if schedule.suspended {
        return Err(stale("the schedule was suspended meanwhile".to_string()));
    }
    if until_ms < from_ms || fire.is_some_and(|t| t <= from_ms || t > until_ms) {
        return Err(Rejection::Invalid(format!(
            "a turn settles ({from_ms}, {until_ms}] and fires only inside it"
        )));
    }
    let (mut job, mut reason) = (None, None);
    if let Some(scheduled_ms) = fire {
        let idempotency_key = format!("cron/{name}/{generation}/{scheduled_ms}");
        match fire_job(
            state,
            log_index,
            (&tenant, &name),
            scheduled_ms,
            idempotency_key,
            admission,
            now_ms,
        ) {
            Ok(made) => job = Some(made),
            Err(refusal) => reason = Some(String::from(refusal)),
        }
    }
    let schedule = state
        .cron
        .schedules
        .get_mut(&key(&tenant, &name))
        .ok_or_else(|| unknown(&tenant, &name))?;
    schedule.settled_until_ms = until_ms;
    if let (Some(first_ms), Some(last_ms)) = (skipped.first_ms, skipped.last_ms) {
        schedule.note_skip(CronSkip {
            count: skipped.count,
            at_least: skipped.at_least,
            first_ms,
            last_ms,
            reason: "missed: no leader could fire them in time (see --catch-up and \
                     --starting-deadline)"
                .to_string(),
            at_ms: now_ms,
        });
    }
    if let (Some(scheduled_ms), Some(why)) = (fire, &reason) {
        schedule.note_skip(CronSkip {
            count: 1,
            at_least: false,
            first_ms: scheduled_ms,
            last_ms: scheduled_ms,
            reason: crate::domain::prefix_within(why, MAX_SKIP_REASON_BYTES).to_string(),
            at_ms: now_ms,
        });
    }
    Ok(Response::CronFired {
        job,
        skipped: reason,
    })
}

/// `CronRun`: a job now, outside the schedule, under its concurrency rule (a `forbid`
/// schedule whose job still runs refuses, and nothing changes).
pub(super) fn run_now(
    state: &mut ClusterState,
    log_index: u64,
    tenant: &str,
    name: &str,
    request_key: &str,
    admission: Admission,
    now_ms: u64,
) -> Result<Response, Rejection> {
    validate_name("request key", request_key)?;
    let schedule = state
        .cron
        .schedules
        .get(&key(tenant, name))
        .ok_or_else(|| unknown(tenant, name))?;
    let idempotency_key = format!("cron/{name}/{}/run/{request_key}", schedule.generation);
    let known = state
        .idempotency_keys
        .get(&crate::domain::idempotency_slot(tenant, &idempotency_key));
    if let Some(job) = known {
        return Ok(Response::JobSubmitted {
            job_id: *job,
            created: false,
        });
    }
    let job_id = fire_job(
        state,
        log_index,
        (tenant, name),
        now_ms,
        idempotency_key,
        admission,
        now_ms,
    )
    .map_err(|why| match why {
        Fire::Refused(rejection) => rejection,
        Fire::StillRunning(job) => Rejection::CronStillRunning {
            name: name.to_string(),
            job,
        },
    })?;
    Ok(Response::JobSubmitted {
        job_id,
        created: true,
    })
}

/// Why a fire made no job.
#[derive(Debug)]
enum Fire {
    /// `forbid`, and this job of the schedule still runs.
    StillRunning(JobId),
    /// The submission was refused (admission, quota ceiling): nothing changed.
    Refused(Rejection),
}

impl From<Fire> for String {
    fn from(fire: Fire) -> String {
        match fire {
            Fire::StillRunning(job) => format!(
                "the previous job {job} still runs and the schedule forbids overlapping runs"
            ),
            Fire::Refused(rejection) => format!("the job was refused: {rejection}"),
        }
    }
}

/// Submit the schedule's job for `scheduled_ms`, after what its concurrency rule says of
/// the jobs of it still running. Changes nothing when it makes no job.
fn fire_job(
    state: &mut ClusterState,
    log_index: u64,
    (tenant, name): (&str, &str),
    scheduled_ms: u64,
    idempotency_key: String,
    admission: Admission,
    now_ms: u64,
) -> Result<JobId, Fire> {
    let schedule = state
        .cron
        .schedules
        .get(&key(tenant, name))
        .ok_or_else(|| Fire::Refused(unknown(tenant, name)))?;
    let running = state.cron_running(schedule);
    let action = on_fire(schedule.definition.concurrency, !running.is_empty());
    if action == FireAction::SkipWhileRunning {
        return Err(Fire::StillRunning(running[running.len() - 1]));
    }
    let template = schedule.definition.template.clone();
    let mut spec = template.spec;
    spec.env.insert(SCHEDULE_ENV.to_string(), name.to_string());
    spec.env
        .insert(SCHEDULED_TIME_ENV.to_string(), rfc3339(scheduled_ms));
    let submission = Submission {
        name: name.to_string(),
        spec,
        idempotency_key: Some(idempotency_key),
        owner: template.owner,
        admission,
        tenant: tenant.to_string(),
    };
    let response = submit_with_resources(
        state,
        log_index,
        submission,
        template.options,
        template.request,
        now_ms,
    )
    .map_err(Fire::Refused)?;
    let Response::JobSubmitted { job_id, created } = response else {
        return Err(Fire::Refused(Rejection::Invalid(
            "the schedule's job was not submitted".to_string(),
        )));
    };
    if created {
        if action == FireAction::ReplacePrevious {
            for previous in running {
                // Each still runs (checked above), so the cancel cannot be refused.
                let _ = cancel_job(state, previous, None, now_ms);
            }
        }
        state.cron.origins.insert(
            job_id,
            CronOrigin {
                name: name.to_string(),
                scheduled_ms,
            },
        );
        if let Some(schedule) = state.cron.schedules.get_mut(&key(tenant, name)) {
            schedule.remember(CronRunRecord {
                scheduled_ms,
                job: job_id,
            });
        }
    }
    Ok(job_id)
}
