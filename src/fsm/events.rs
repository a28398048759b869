//! What happened, as events: derived from each applied command, what apply answered and the
//! state before and after, so every replica derives the same events from the same log. An
//! event is named by the log index of its entry and its place (`seq`) among that entry's
//! events; `(index, seq)` only ever increases.
//!
//! Pure: no clock, no I/O. The state machine keeps the recent ones for streams.

use super::command::{Command, Response, ShardOutcome};
use crate::domain::{rfc3339, ClusterState, JobId, JobState, ShardState};
use crate::periodic::Skipped;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub index: u64,
    pub seq: u32,
    pub kind: &'static str,
    pub job_id: Option<JobId>,
    pub shard: Option<u32>,
    pub taskmanager: Option<String>,
    /// A short human detail: a job's name, an exit code, a count, a term.
    pub detail: String,
    /// The tenant of the job it concerns (none for events of no job, or of a job already
    /// gone): streams show an event to a tenant's tokens only if it is theirs.
    pub tenant: Option<String>,
}

/// What must be known of a command before it is applied (apply consumes it).
pub struct Before {
    kind: BeforeKind,
    job_state: Option<(JobId, JobState)>,
}

enum BeforeKind {
    Submit {
        name: String,
        shards: u32,
    },
    Place(Vec<(JobId, u32, String)>),
    Started(JobId, u32, String),
    /// A run's end; `true` when its start was never reported (the agent sends only the end
    /// of a run that ended within its report batch), so its start is derived here.
    Ended(JobId, u32, String, ShardOutcome, bool),
    Cancel(JobId),
    Register(String),
    Lost(String),
    Drain(String),
    Requeue(String),
    Preempt(String, JobId),
    /// A preemption that also placed shard `.2` of the preemptor.
    PreemptFor(String, JobId, u32),
    Token(&'static str, String),
    GangRestart(JobId),
    Quota(String),
    /// A schedule added, changed, suspended, resumed or deleted: (tenant, name).
    Schedule(String, String),
    /// A schedule's turn or `cron run`: (tenant, name), its jobs that had not ended (a
    /// `replace` fire cancels them) and the times the turn let go as missed.
    CronFire(String, String, Vec<JobId>, Skipped),
    Other,
}

impl Before {
    pub fn of(command: &Command, state: &ClusterState) -> Before {
        let job_of = |job_id: &JobId| state.job(*job_id).map(|j| (*job_id, j.state));
        let (kind, job_state) = match command {
            Command::SubmitJob { name, spec, .. }
            | Command::SubmitScheduledJob { name, spec, .. }
            | Command::SubmitJobWithOptions { name, spec, .. }
            | Command::SubmitJobWithResources { name, spec, .. } => (
                BeforeKind::Submit {
                    name: name.clone(),
                    shards: spec.shard_count,
                },
                None,
            ),
            Command::PlaceShards { placements, .. } => (
                BeforeKind::Place(
                    placements
                        .iter()
                        .map(|p| (p.job_id, p.shard, p.taskmanager.clone()))
                        .collect(),
                ),
                None,
            ),
            Command::ReportShardStarted {
                taskmanager,
                job_id,
                shard,
                ..
            } => (
                BeforeKind::Started(*job_id, *shard, taskmanager.clone()),
                None,
            ),
            Command::ReportShardEnded {
                taskmanager,
                job_id,
                shard,
                epoch,
                outcome,
                ..
            } => {
                // The process ran (it has an outcome of its own) while the state still holds
                // the run as assigned: its start was folded into this end.
                let ran = matches!(
                    outcome,
                    ShardOutcome::Finished
                        | ShardOutcome::Failed { .. }
                        | ShardOutcome::OverLimit { .. }
                );
                let start_unreported = ran
                    && state
                        .job(*job_id)
                        .and_then(|j| j.shards.get(*shard as usize))
                        .is_some_and(|s| s.state == ShardState::Assigned && s.epoch == *epoch);
                (
                    BeforeKind::Ended(
                        *job_id,
                        *shard,
                        taskmanager.clone(),
                        outcome.clone(),
                        start_unreported,
                    ),
                    job_of(job_id),
                )
            }
            Command::CancelJob { job_id, .. } | Command::CancelOwnJob { job_id, .. } => {
                (BeforeKind::Cancel(*job_id), job_of(job_id))
            }
            Command::RegisterTaskManager { id, .. }
            | Command::RegisterTaskManagerWithResources { id, .. } => {
                (BeforeKind::Register(id.clone()), None)
            }
            Command::MarkTaskManagerLost { id, .. } => (BeforeKind::Lost(id.clone()), None),
            Command::DrainTaskManager { id, .. } => (BeforeKind::Drain(id.clone()), None),
            Command::PreemptShards {
                taskmanager,
                for_job,
                ..
            } => (BeforeKind::Preempt(taskmanager.clone(), *for_job), None),
            Command::PreemptForShard {
                taskmanager,
                for_job,
                shard,
                ..
            } => (
                BeforeKind::PreemptFor(taskmanager.clone(), *for_job, *shard),
                None,
            ),
            Command::RequeueShards { taskmanager, .. } => {
                (BeforeKind::Requeue(taskmanager.clone()), None)
            }
            Command::CreateToken { name, .. } | Command::CreateTenantToken { name, .. } => {
                (BeforeKind::Token("token_created", name.clone()), None)
            }
            Command::RestartGang { job_id, .. } => (BeforeKind::GangRestart(*job_id), None),
            Command::SetQuota { tenant, .. }
            | Command::SetQuotaLimits { tenant, .. }
            | Command::SetQuotaWithResources { tenant, .. } => {
                (BeforeKind::Quota(tenant.clone()), None)
            }
            Command::RevokeToken { name, .. } => {
                (BeforeKind::Token("token_revoked", name.clone()), None)
            }
            Command::CronPut { tenant, name, .. }
            | Command::CronSetSuspended { tenant, name, .. }
            | Command::CronDelete { tenant, name, .. } => {
                (BeforeKind::Schedule(tenant.clone(), name.clone()), None)
            }
            Command::CronFired(turn) => {
                let running = cron_running(state, &turn.tenant, &turn.name);
                (
                    BeforeKind::CronFire(
                        turn.tenant.clone(),
                        turn.name.clone(),
                        running,
                        turn.skipped,
                    ),
                    None,
                )
            }
            Command::CronRun { tenant, name, .. } => {
                let running = cron_running(state, tenant, name);
                (
                    BeforeKind::CronFire(tenant.clone(), name.clone(), running, Skipped::default()),
                    None,
                )
            }
            _ => (BeforeKind::Other, None),
        };
        Before { kind, job_state }
    }

    /// The events of the entry at `index`, given what apply answered and the state after.
    pub fn events(self, index: u64, response: &Response, state: &ClusterState) -> Vec<Event> {
        let mut out = Vec::new();
        let mut push = |kind: &'static str,
                        job_id: Option<JobId>,
                        shard: Option<u32>,
                        taskmanager: Option<String>,
                        detail: String| {
            let seq = out.len() as u32;
            let tenant = job_id.and_then(|id| state.job(id).map(|_| state.tenant(id).to_string()));
            out.push(Event {
                index,
                seq,
                kind,
                job_id,
                shard,
                taskmanager,
                detail,
                tenant,
            });
        };
        if matches!(response, Response::Rejected(_)) {
            return out;
        }
        // A schedule's events of no job belong to its tenant, whose tokens alone see them.
        let mut schedule_tenant = None;
        match self.kind {
            BeforeKind::Submit { name, shards } => {
                if let Response::JobSubmitted {
                    job_id,
                    created: true,
                } = response
                {
                    push(
                        "job_submitted",
                        Some(*job_id),
                        None,
                        None,
                        format!("{name}, {shards} shards"),
                    );
                    if let Some(dependency) = state.dependency_failures.get(job_id) {
                        push(
                            "job_failed",
                            Some(*job_id),
                            None,
                            None,
                            dependency_detail(*dependency),
                        );
                    }
                }
            }
            BeforeKind::Place(placements) => {
                for (job_id, shard, tm) in placements {
                    // Placed by this entry: the shard's epoch is this entry's index.
                    let placed = state
                        .job(job_id)
                        .and_then(|j| j.shards.get(shard as usize))
                        .is_some_and(|s| s.epoch == index);
                    if placed {
                        push(
                            "shard_placed",
                            Some(job_id),
                            Some(shard),
                            Some(tm),
                            String::new(),
                        );
                    }
                }
            }
            BeforeKind::Started(job_id, shard, tm) => {
                push(
                    "shard_started",
                    Some(job_id),
                    Some(shard),
                    Some(tm),
                    String::new(),
                );
            }
            BeforeKind::Ended(job_id, shard, tm, outcome, start_unreported) => {
                if start_unreported {
                    push(
                        "shard_started",
                        Some(job_id),
                        Some(shard),
                        Some(tm.clone()),
                        String::new(),
                    );
                }
                let (kind, detail) = match outcome {
                    ShardOutcome::Finished => ("shard_finished", String::new()),
                    ShardOutcome::Failed { exit_code, .. } => (
                        "shard_failed",
                        exit_code
                            .map(|c| format!("exit code {c}"))
                            .unwrap_or_else(|| "no exit code".into()),
                    ),
                    ShardOutcome::Interrupted { .. } => ("shard_interrupted", String::new()),
                    ShardOutcome::CannotStart { .. } => ("shard_cannot_start", String::new()),
                    ShardOutcome::OverLimit { .. } => {
                        ("shard_failed", "over its job's limit".to_string())
                    }
                };
                push(kind, Some(job_id), Some(shard), Some(tm), detail);
                if let Some(kind) = job_end(self.job_state, job_id, state) {
                    push(kind, Some(job_id), None, None, String::new());
                }
            }
            BeforeKind::Cancel(job_id) => {
                if job_end(self.job_state, job_id, state).is_some() {
                    push("job_cancelled", Some(job_id), None, None, String::new());
                }
            }
            BeforeKind::Register(id) => {
                push(
                    "taskmanager_registered",
                    None,
                    None,
                    Some(id),
                    String::new(),
                );
            }
            BeforeKind::Lost(id) => {
                if let Response::TaskManagerLost {
                    shards_requeued, ..
                } = response
                {
                    let detail = format!("{shards_requeued} shards requeued");
                    push("taskmanager_lost", None, None, Some(id), detail);
                }
            }
            BeforeKind::Drain(id) => {
                push("taskmanager_draining", None, None, Some(id), String::new());
            }
            BeforeKind::Requeue(id) => {
                if let Response::ShardsRequeued { count } = response {
                    if *count > 0 {
                        push("shards_requeued", None, None, Some(id), format!("{count}"));
                    }
                }
            }
            BeforeKind::Preempt(id, for_job) => {
                if let Response::ShardsRequeued { count } = response {
                    if *count > 0 {
                        push(
                            "shards_preempted",
                            Some(for_job),
                            None,
                            Some(id),
                            format!("{count}"),
                        );
                    }
                }
            }
            BeforeKind::PreemptFor(id, for_job, shard) => {
                if let Response::ShardsRequeued { count } = response {
                    push(
                        "shards_preempted",
                        Some(for_job),
                        None,
                        Some(id.clone()),
                        format!("{count}"),
                    );
                    push(
                        "shard_placed",
                        Some(for_job),
                        Some(shard),
                        Some(id),
                        String::new(),
                    );
                }
            }
            BeforeKind::Token(kind, name) => push(kind, None, None, None, name),
            BeforeKind::GangRestart(job_id) => {
                if let Response::ShardsRequeued { count } = response {
                    if *count > 0 {
                        push(
                            "gang_restarted",
                            Some(job_id),
                            None,
                            None,
                            format!("{count} shards back to pending"),
                        );
                    }
                }
            }
            BeforeKind::Quota(tenant) => {
                if let Response::QuotaSet {
                    quota,
                    max_priority,
                    ..
                } = response
                {
                    let slots = quota
                        .slots
                        .map_or_else(|| "no slot limit".to_string(), |n| format!("{n} slots"));
                    let detail = format!(
                        "{tenant}: {slots}, weight {}, priority up to {max_priority}",
                        quota.weight
                    );
                    push("quota_set", None, None, None, detail);
                }
            }
            BeforeKind::Schedule(tenant, name) => {
                let kind = match response {
                    Response::CronPut { created: true } => "cron_added",
                    Response::CronPut { created: false } => "cron_updated",
                    Response::CronSuspended { suspended: true } => "cron_suspended",
                    Response::CronSuspended { suspended: false } => "cron_resumed",
                    _ => "cron_deleted",
                };
                push(kind, None, None, None, name);
                schedule_tenant = Some(tenant);
            }
            BeforeKind::CronFire(tenant, name, running, missed) => {
                let (job, refused) = match response {
                    Response::CronFired { job, skipped } => (*job, skipped.clone()),
                    Response::JobSubmitted { job_id, .. } => (Some(*job_id), None),
                    _ => (None, None),
                };
                if let (Some(first), Some(last)) = (missed.first_ms, missed.last_ms) {
                    let more = if missed.at_least { "at least " } else { "" };
                    push(
                        "cron_skipped",
                        None,
                        None,
                        None,
                        format!(
                            "{name}: {more}{} missed times from {} to {} let go",
                            missed.count,
                            rfc3339(first),
                            rfc3339(last)
                        ),
                    );
                }
                if let Some(why) = refused {
                    push("cron_skipped", None, None, None, format!("{name}: {why}"));
                }
                // Made by this entry (a job's id is the index of the entry that made it): a
                // retried `cron run` answered with an older job announces nothing.
                if let Some(job_id) = job.filter(|j| *j == JobId(index)) {
                    let shards = state.job(job_id).map_or(0, |j| j.spec.shard_count);
                    push(
                        "job_submitted",
                        Some(job_id),
                        None,
                        None,
                        format!("{name}, {shards} shards"),
                    );
                    let at = state
                        .cron
                        .origins
                        .get(&job_id)
                        .map_or_else(String::new, |o| rfc3339(o.scheduled_ms));
                    push(
                        "cron_fired",
                        Some(job_id),
                        None,
                        None,
                        format!("{name} for {at}"),
                    );
                    for previous in running {
                        let cancelled = state
                            .job(previous)
                            .is_some_and(|j| j.state == JobState::Cancelled);
                        if cancelled {
                            push("job_cancelled", Some(previous), None, None, String::new());
                            push_failed_with(state, previous, &mut push);
                        }
                    }
                }
                schedule_tenant = Some(tenant);
            }
            BeforeKind::Other => {}
        }
        // The job ended failed or cancelled in this entry: the jobs waiting for it (`--after`),
        // down the chain, ended `failed` with it. Looked up only when a job ends, never per
        // report: a job that 20,000 others wait for has reports as cheap as any.
        let ended_now = self.job_state.filter(|(job_id, before)| {
            !before.is_terminal()
                && state
                    .job(*job_id)
                    .is_some_and(|j| matches!(j.state, JobState::Failed | JobState::Cancelled))
        });
        if let Some((job_id, _)) = ended_now {
            push_failed_with(state, job_id, &mut push);
        }
        if let Some(tenant) = schedule_tenant {
            for event in out.iter_mut().filter(|e| e.tenant.is_none()) {
                event.tenant = Some(tenant.clone());
            }
        }
        out
    }
}

/// The jobs of schedule (`tenant`, `name`) that have not ended.
fn cron_running(state: &ClusterState, tenant: &str, name: &str) -> Vec<JobId> {
    state
        .cron
        .schedules
        .get(&(tenant.to_string(), name.to_string()))
        .map(|schedule| state.cron_running(schedule))
        .unwrap_or_default()
}

/// Why a job ended without running.
pub fn dependency_detail(dependency: JobId) -> String {
    format!("job {dependency}, named in --after, did not finish")
}

/// A `job_failed` event for each job that ended with `job_id` (see `failed_with`).
fn push_failed_with(
    state: &ClusterState,
    job_id: JobId,
    push: &mut impl FnMut(&'static str, Option<JobId>, Option<u32>, Option<String>, String),
) {
    for (dependent, dependency) in failed_with(state, job_id) {
        push(
            "job_failed",
            Some(dependent),
            None,
            None,
            dependency_detail(dependency),
        );
    }
}

/// The jobs that ended `failed` because `job_id` did not finish, directly or down a chain of
/// `--after`, each with the job it waited for, in the order the chain is walked.
fn failed_with(state: &ClusterState, job_id: JobId) -> Vec<(JobId, JobId)> {
    if state.dependency_failures.is_empty() {
        return Vec::new();
    }
    let mut by_dependency: BTreeMap<JobId, Vec<JobId>> = BTreeMap::new();
    for (dependent, dependency) in &state.dependency_failures {
        by_dependency
            .entry(*dependency)
            .or_default()
            .push(*dependent);
    }
    let mut out = Vec::new();
    let mut work = vec![job_id];
    while let Some(next) = work.pop() {
        for dependent in by_dependency.get(&next).into_iter().flatten() {
            out.push((*dependent, next));
            work.push(*dependent);
        }
    }
    out
}

/// Apply `command`, committed at `index`, and derive its events. The commands of a batch
/// are taken one by one, each against the state just before it; their events are numbered
/// in order within the entry.
pub fn apply_with_events(
    state: &mut ClusterState,
    index: u64,
    command: Command,
) -> (Response, Vec<Event>) {
    match command {
        Command::Batch(reports) => {
            let mut responses = Vec::with_capacity(reports.len());
            let mut events = Vec::new();
            for report in reports {
                let (response, more) = apply_with_events(state, index, report.into());
                for mut event in more {
                    event.seq = events.len() as u32;
                    events.push(event);
                }
                responses.push(response);
            }
            (Response::Batch(responses), events)
        }
        command => {
            let before = Before::of(&command, state);
            let response = super::apply(state, index, command);
            let events = before.events(index, &response, state);
            (response, events)
        }
    }
}

/// The job-level event if this entry ended the job.
fn job_end(
    before: Option<(JobId, JobState)>,
    job_id: JobId,
    after: &ClusterState,
) -> Option<&'static str> {
    let (_, was) = before.filter(|(id, _)| *id == job_id)?;
    let now = after.job(job_id)?.state;
    if was.is_terminal() || !now.is_terminal() {
        return None;
    }
    Some(match now {
        JobState::Finished => "job_finished",
        JobState::Cancelled => "job_cancelled",
        _ => "job_failed",
    })
}

/// A new leader's first (blank) entry.
pub fn leader_changed(index: u64, term: u64, leader: u64) -> Event {
    Event {
        index,
        seq: 0,
        kind: "leader_changed",
        job_id: None,
        shard: None,
        taskmanager: None,
        detail: format!("replica {leader}, term {term}"),
        tenant: None,
    }
}

/// Whether an event is about access or quotas (token names, tenants' quotas): operators'
/// business, not shown to a tenant's own tokens.
pub fn is_administrative(kind: &str) -> bool {
    matches!(kind, "token_created" | "token_revoked" | "quota_set")
}

/// Whether an event ends its job's stream.
pub fn ends_job(kind: &str) -> bool {
    matches!(kind, "job_finished" | "job_failed" | "job_cancelled")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Admission, JobSpec};
    use crate::fsm::apply;
    use crate::fsm::command::{Placement, Report};

    fn step(state: &mut ClusterState, index: u64, command: Command) -> Vec<Event> {
        let before = Before::of(&command, state);
        let response = apply(state, index, command);
        before.events(index, &response, state)
    }

    fn kinds(events: &[Event]) -> Vec<(&'static str, Option<u32>)> {
        events.iter().map(|e| (e.kind, e.shard)).collect()
    }

    /// Place `shards` of `job_id` on "tm".
    fn place(job_id: JobId, shards: std::ops::Range<u32>, now_ms: u64) -> Command {
        Command::PlaceShards {
            placements: shards
                .map(|shard| Placement {
                    job_id,
                    shard,
                    taskmanager: "tm".into(),
                })
                .collect(),
            now_ms,
        }
    }

    /// "tm" reports that run `epoch` of `shard` ended with `outcome`.
    fn ended(job_id: JobId, shard: u32, epoch: u64, outcome: ShardOutcome) -> Command {
        Command::ReportShardEnded {
            taskmanager: "tm".into(),
            job_id,
            shard,
            epoch,
            outcome,
            run_ms: 1,
            retry_at_ms: 0,
            now_ms: 4,
        }
    }

    /// TaskManager "tm" with `slots` slots.
    fn register(slots: u32) -> Command {
        Command::RegisterTaskManager {
            incarnation: 1,
            successor_of: None,
            replaces: None,
            id: "tm".into(),
            addr: "127.0.0.1:1".into(),
            slots,
            labels: Default::default(),
            now_ms: 1,
        }
    }

    /// A job of two one-attempt `/bin/true` shards.
    fn submit() -> Command {
        Command::SubmitJob {
            name: "j".into(),
            spec: JobSpec {
                command: "/bin/true".into(),
                args: vec![],
                env: Default::default(),
                shard_count: 2,
                slots_per_shard: 1,
                max_attempts: 1,
                selector: Default::default(),
            },
            idempotency_key: None,
            owner: "me".into(),
            admission: Admission {
                max_pending_shards: u64::MAX,
                max_pending_shards_per_client: u64::MAX,
                max_spec_bytes: u64::MAX,
            },
            now_ms: 2,
        }
    }

    /// `submit()` waiting for `after`.
    fn submit_after(after: JobId) -> Command {
        let Command::SubmitJob {
            name,
            spec,
            idempotency_key,
            owner,
            admission,
            now_ms,
        } = submit()
        else {
            unreachable!("submit() is a SubmitJob")
        };
        Command::SubmitJobWithOptions {
            name,
            spec,
            idempotency_key,
            owner,
            admission,
            options: crate::domain::JobScheduling {
                after: vec![after],
                ..Default::default()
            },
            now_ms,
        }
    }

    #[test]
    fn reports_of_a_job_that_thousands_wait_for_cost_no_more_than_any() {
        // Each report once walked every job waiting for this one, with a quadratic check:
        // with 20,000 dependents that is about 10^8 steps per report. Now dependents are
        // looked up only when the job ends.
        let mut state = ClusterState::default();
        step(&mut state, 1, register(2));
        step(&mut state, 2, submit());
        for index in 3..20_003 {
            step(&mut state, index, submit_after(JobId(2)));
        }
        // The job (two shards) runs again and again: placed, interrupted, placed...
        let started = std::time::Instant::now();
        let mut index = 20_003;
        let mut reports = 0;
        while reports < 100 {
            let now = 1_000_000_000 + index * 1_000_000;
            let Command::PlaceShards { placements, .. } = place(JobId(2), 0..2, now) else {
                unreachable!("place() is a PlaceShards")
            };
            step(
                &mut state,
                index,
                Command::PlaceShards {
                    placements,
                    now_ms: now,
                },
            );
            index += 1;
            for shard in 0..2u32 {
                let epoch = state.job(JobId(2)).expect("job").shards[shard as usize].epoch;
                let report = Command::ReportShardEnded {
                    taskmanager: "tm".into(),
                    job_id: JobId(2),
                    shard,
                    epoch,
                    outcome: ShardOutcome::Interrupted {
                        reason: "test".into(),
                    },
                    run_ms: 1,
                    retry_at_ms: 0,
                    now_ms: now,
                };
                step(&mut state, index, report);
                index += 1;
                reports += 1;
            }
        }
        assert!(
            state.job(JobId(2)).expect("job").shards[0].interruptions >= 40,
            "the runs were placed and interrupted"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?} for 100 reports of a job 20,000 others wait for",
            started.elapsed()
        );
        // When it fails, the whole chain fails with it, one event each.
        let events = step(
            &mut state,
            index,
            Command::CancelJob {
                job_id: JobId(2),
                now_ms: 5,
            },
        );
        assert_eq!(events.len(), 1 + 20_000);
        assert!(events[1..].iter().all(|e| e.kind == "job_failed"));
    }

    #[test]
    fn cancelling_a_job_fails_the_chain_waiting_for_it_with_one_event_each() {
        let mut state = ClusterState::default();
        step(&mut state, 1, submit());
        step(&mut state, 2, submit_after(JobId(1)));
        step(&mut state, 3, submit_after(JobId(2)));
        let events = step(
            &mut state,
            4,
            Command::CancelJob {
                job_id: JobId(1),
                now_ms: 4,
            },
        );
        let jobs: Vec<(&str, Option<JobId>)> = events.iter().map(|e| (e.kind, e.job_id)).collect();
        assert_eq!(
            jobs,
            vec![
                ("job_cancelled", Some(JobId(1))),
                ("job_failed", Some(JobId(2))),
                ("job_failed", Some(JobId(3))),
            ]
        );
        assert!(events[1].detail.contains("job j-1"), "{:?}", events[1]);
        // Submitting after a cancelled job: submitted, and failed in the same entry.
        let late = step(&mut state, 5, submit_after(JobId(1)));
        let kinds: Vec<&str> = late.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec!["job_submitted", "job_failed"]);
    }

    #[test]
    fn a_job_tells_its_story_and_refusals_tell_nothing() {
        let mut state = ClusterState::default();
        assert_eq!(
            kinds(&step(&mut state, 1, register(1))),
            vec![("taskmanager_registered", None)]
        );
        let submitted = step(&mut state, 2, submit());
        assert_eq!(kinds(&submitted), vec![("job_submitted", None)]);
        let job_id = submitted[0].job_id.expect("job");
        // One slot: the second placement of the plan is stale and tells nothing.
        assert_eq!(
            kinds(&step(&mut state, 3, place(job_id, 0..2, 3))),
            vec![("shard_placed", Some(0))]
        );
        let end = |shard, epoch| ended(job_id, shard, epoch, ShardOutcome::Finished);
        // No start was reported: the end brings it (a run shorter than a report batch).
        assert_eq!(
            kinds(&step(&mut state, 4, end(0, 3))),
            vec![("shard_started", Some(0)), ("shard_finished", Some(0))]
        );
        // A stale report is refused: no event.
        assert!(step(&mut state, 5, end(0, 3)).is_empty());
        step(&mut state, 6, place(job_id, 1..2, 5));
        let last = step(&mut state, 7, end(1, 6));
        assert_eq!(
            kinds(&last),
            vec![
                ("shard_started", Some(1)),
                ("shard_finished", Some(1)),
                ("job_finished", None)
            ]
        );
        assert_eq!((last[2].index, last[2].seq), (7, 2));
    }

    #[test]
    fn an_interrupted_or_unstartable_run_gets_no_derived_start() {
        let mut state = ClusterState::default();
        step(&mut state, 1, register(2));
        let job_id = step(&mut state, 2, submit())[0].job_id.expect("job");
        step(&mut state, 3, place(job_id, 0..2, 3));
        let end = |shard, outcome| ended(job_id, shard, 3, outcome);
        let interrupted = ShardOutcome::Interrupted {
            reason: "agent restarted".into(),
        };
        assert_eq!(
            kinds(&step(&mut state, 4, end(0, interrupted))),
            vec![("shard_interrupted", Some(0))]
        );
        let cannot = ShardOutcome::CannotStart {
            error: "no such program".into(),
        };
        let events = kinds(&step(&mut state, 5, end(1, cannot)));
        assert_eq!(events[0], ("shard_cannot_start", Some(1)), "{events:?}");
        assert!(events.iter().all(|(kind, _)| *kind != "shard_started"));
    }

    #[test]
    fn a_batch_answers_and_tells_item_by_item_and_a_refused_item_changes_nothing() {
        let mut state = ClusterState::default();
        step(&mut state, 1, register(2));
        let submitted = step(&mut state, 2, submit());
        let job_id = submitted[0].job_id.expect("job");
        step(&mut state, 3, place(job_id, 0..2, 3));
        let started = |shard| Report::Started {
            taskmanager: "tm".into(),
            job_id,
            shard,
            epoch: 3,
            now_ms: 4,
        };
        let end = |shard, epoch| Report::Ended {
            taskmanager: "tm".into(),
            job_id,
            shard,
            epoch,
            outcome: ShardOutcome::Finished,
            run_ms: 1,
            retry_at_ms: 0,
            now_ms: 4,
        };
        let digest_before_refusal = {
            let mut alone = state.clone();
            apply(&mut alone, 4, started(0).into());
            apply(&mut alone, 4, end(0, 3).into());
            apply(&mut alone, 4, end(1, 3).into());
            alone
        };
        // A start, its end, a stale end (wrong epoch) and the other shard's end.
        let batch = Command::Batch(vec![started(0), end(0, 3), end(1, 99), end(1, 3)]);
        let (response, events) = apply_with_events(&mut state, 4, batch);
        let Response::Batch(answers) = response else {
            panic!("a batch answers a batch: {response:?}");
        };
        assert_eq!(answers.len(), 4);
        assert!(matches!(answers[2], Response::Rejected(_)), "{answers:?}");
        assert!(answers
            .iter()
            .enumerate()
            .all(|(i, a)| i == 2 || !matches!(a, Response::Rejected(_))));
        // Shard 1's start was never reported (folded into its end): it is derived, so every
        // run that ended shows as started first.
        assert_eq!(
            kinds(&events),
            vec![
                ("shard_started", Some(0)),
                ("shard_finished", Some(0)),
                ("shard_started", Some(1)),
                ("shard_finished", Some(1)),
                ("job_finished", None),
            ]
        );
        let seqs: Vec<(u64, u32)> = events.iter().map(|e| (e.index, e.seq)).collect();
        assert_eq!(seqs, vec![(4, 0), (4, 1), (4, 2), (4, 3), (4, 4)]);
        assert_eq!(
            state.digest(),
            digest_before_refusal.digest(),
            "the refused item changed something"
        );
    }

    #[test]
    fn a_schedules_events_belong_to_its_tenant() {
        use crate::periodic::{Concurrency, Skipped};
        let mut state = ClusterState {
            cluster_version: crate::domain::ClusterVersion(3),
            ..ClusterState::default()
        };
        let put = Command::CronPut {
            tenant: "team".into(),
            name: "tick".into(),
            definition: crate::domain::test_definition("team", Concurrency::Allow),
            now_ms: 0,
        };
        let added = step(&mut state, 1, put);
        assert_eq!(kinds(&added), vec![("cron_added", None)]);
        let fired = step(
            &mut state,
            2,
            Command::CronFired(crate::fsm::CronTurn {
                tenant: "team".into(),
                name: "tick".into(),
                generation: 1,
                from_ms: 0,
                until_ms: 180_000,
                fire: Some(180_000),
                skipped: Skipped {
                    count: 2,
                    at_least: false,
                    first_ms: Some(60_000),
                    last_ms: Some(120_000),
                },
                admission: Admission::DEFAULT,
                now_ms: 180_000,
            }),
        );
        assert_eq!(
            kinds(&fired),
            vec![
                ("cron_skipped", None),
                ("job_submitted", None),
                ("cron_fired", None)
            ]
        );
        assert!(fired[0].detail.contains("2 missed times"), "{:?}", fired[0]);
        assert!(
            fired[2].detail.contains("1970-01-01T00:03:00Z"),
            "{:?}",
            fired[2]
        );
        assert!(
            added
                .iter()
                .chain(&fired)
                .all(|e| e.tenant.as_deref() == Some("team")),
            "{added:?} {fired:?}"
        );
    }
}
