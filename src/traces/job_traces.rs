//! From a job's events to its trace: the spans of one job, built when the job ends.
//!
//! - `job <id>`: the root, from the submission's stamp to the end, with the job's name,
//!   tenant, shard count and final state.
//! - `submit`: from the client's submission (the leader's stamp) to the entry applying.
//! - `shard <i> placement`: from when the shard became placeable (the submission applied, or
//!   the previous attempt's end) to its placement.
//! - `shard <i> run`: from its start to its end on a TaskManager, with the outcome.
//!
//! Ids are derived from the job's id, so a leader that takes over mid-job adds its spans to
//! the same trace. The first `MAX_SHARDS_TRACED` shards are traced. Pure: the caller says
//! when each event was seen.

use crate::domain::{ClusterState, JobId};
use crate::fsm::events::Event;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span, Status};
use std::collections::BTreeMap;

/// Jobs followed at once; beyond, the oldest is dropped unsent (a bound, not a target).
pub const MAX_OPEN_JOBS: usize = 10_000;
/// Attempts of one shard traced; later ones are left out.
pub const MAX_ATTEMPTS_TRACED: usize = 16;
/// Shards of one job traced (the first ones; the root says how many the job has), so a wide
/// job's trace stays one a collector takes.
pub const MAX_SHARDS_TRACED: u32 = 1_000;

#[derive(Debug, Clone, Default)]
struct Attempt {
    placeable_ms: u64,
    placed_ms: Option<u64>,
    taskmanager: Option<String>,
    started_ms: Option<u64>,
    ended_ms: Option<u64>,
    outcome: Option<&'static str>,
}

#[derive(Debug, Clone)]
struct JobRecord {
    name: String,
    tenant: String,
    shards: u32,
    submitted_ms: u64,
    applied_ms: u64,
    attempts: BTreeMap<u32, Vec<Attempt>>,
}

/// The jobs being followed.
#[derive(Debug, Default)]
pub struct JobTraces {
    jobs: BTreeMap<JobId, JobRecord>,
}

fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    attribute(key, any_value::Value::StringValue(value.to_string()))
}

fn number(key: &str, value: u64) -> KeyValue {
    attribute(key, any_value::Value::IntValue(value as i64))
}

/// The trace id of a job: the same on every replica and every leader.
pub fn trace_id(job: JobId) -> Vec<u8> {
    let hash = blake3::hash(format!("dispatcher trace {job}").as_bytes());
    hash.as_bytes()[..16].to_vec()
}

fn span_id(job: JobId, what: &str) -> Vec<u8> {
    let hash = blake3::hash(format!("dispatcher span {job} {what}").as_bytes());
    hash.as_bytes()[..8].to_vec()
}

fn nanos(ms: u64) -> u64 {
    ms.saturating_mul(1_000_000)
}

impl JobTraces {
    /// Take in `event`, seen at `at_ms`; the job's spans when it ended with this event.
    pub fn observe(
        &mut self,
        event: &Event,
        at_ms: u64,
        state: &ClusterState,
    ) -> Option<Vec<Span>> {
        let job_id = event.job_id?;
        if event.kind == "job_submitted" {
            let job = state.job(job_id)?;
            if self.jobs.len() >= MAX_OPEN_JOBS {
                self.jobs.pop_first();
            }
            self.jobs.insert(
                job_id,
                JobRecord {
                    name: job.name.clone(),
                    tenant: state.tenant(job_id).to_string(),
                    shards: job.spec.shard_count,
                    submitted_ms: job.created_at_ms.min(at_ms),
                    applied_ms: at_ms,
                    attempts: BTreeMap::new(),
                },
            );
            return None;
        }
        let record = self.jobs.get_mut(&job_id)?;
        if let Some(shard) = event.shard {
            if shard >= MAX_SHARDS_TRACED {
                return None;
            }
            let attempts = record.attempts.entry(shard).or_default();
            let placeable_ms = attempts
                .last()
                .and_then(|a| a.ended_ms)
                .unwrap_or(record.applied_ms);
            match event.kind {
                "shard_placed" if attempts.len() < MAX_ATTEMPTS_TRACED => attempts.push(Attempt {
                    placeable_ms,
                    placed_ms: Some(at_ms),
                    taskmanager: event.taskmanager.clone(),
                    ..Attempt::default()
                }),
                "shard_started" => {
                    if let Some(attempt) = attempts.last_mut().filter(|a| a.started_ms.is_none()) {
                        attempt.started_ms = Some(at_ms);
                    }
                }
                kind @ ("shard_finished" | "shard_failed" | "shard_interrupted"
                | "shard_cannot_start") => {
                    if let Some(attempt) = attempts.last_mut().filter(|a| a.ended_ms.is_none()) {
                        attempt.ended_ms = Some(at_ms);
                        attempt.outcome = Some(kind.trim_start_matches("shard_"));
                    }
                }
                _ => {}
            }
            return None;
        }
        let end = match event.kind {
            "job_finished" => "finished",
            "job_failed" => "failed",
            "job_cancelled" => "cancelled",
            _ => return None,
        };
        let record = self.jobs.remove(&job_id)?;
        Some(spans(job_id, &record, end, at_ms))
    }
}

fn spans(job_id: JobId, record: &JobRecord, end: &str, ended_ms: u64) -> Vec<Span> {
    let trace = trace_id(job_id);
    let root = span_id(job_id, "job");
    let child = |name: String, what: &str, start_ms: u64, end_ms: u64, attributes| Span {
        trace_id: trace.clone(),
        span_id: span_id(job_id, what),
        parent_span_id: root.clone(),
        name,
        kind: SpanKind::Internal as i32,
        start_time_unix_nano: nanos(start_ms),
        end_time_unix_nano: nanos(end_ms.max(start_ms)),
        attributes,
        ..Default::default()
    };
    let ok = |failed: bool| Status {
        code: if failed {
            StatusCode::Error
        } else {
            StatusCode::Ok
        } as i32,
        ..Default::default()
    };
    let mut out = vec![Span {
        trace_id: trace.clone(),
        span_id: root.clone(),
        name: format!("job {job_id}"),
        kind: SpanKind::Internal as i32,
        start_time_unix_nano: nanos(record.submitted_ms),
        end_time_unix_nano: nanos(ended_ms.max(record.submitted_ms)),
        attributes: vec![
            text("dispatcher.job.id", &job_id.to_string()),
            text("dispatcher.job.name", &record.name),
            text("dispatcher.tenant", &record.tenant),
            number("dispatcher.job.shards", u64::from(record.shards)),
            text("dispatcher.job.state", end),
        ],
        status: Some(ok(end != "finished")),
        ..Default::default()
    }];
    out.push(child(
        "submit".into(),
        "submit",
        record.submitted_ms,
        record.applied_ms,
        vec![],
    ));
    for (shard, attempts) in &record.attempts {
        for (n, attempt) in attempts.iter().enumerate() {
            let attempt_no = n as u64 + 1;
            let base = vec![
                number("dispatcher.shard", u64::from(*shard)),
                number("dispatcher.attempt", attempt_no),
            ];
            if let Some(placed) = attempt.placed_ms {
                let mut attributes = base.clone();
                if let Some(tm) = &attempt.taskmanager {
                    attributes.push(text("dispatcher.taskmanager", tm));
                }
                out.push(child(
                    format!("shard {shard} placement"),
                    &format!("placement {shard} {attempt_no}"),
                    attempt.placeable_ms,
                    placed,
                    attributes,
                ));
            }
            if let (Some(started), Some(ended)) = (attempt.started_ms, attempt.ended_ms) {
                let outcome = attempt.outcome.unwrap_or("ended");
                let mut attributes = base.clone();
                attributes.push(text("dispatcher.outcome", outcome));
                if let Some(tm) = &attempt.taskmanager {
                    attributes.push(text("dispatcher.taskmanager", tm));
                }
                let mut run = child(
                    format!("shard {shard} run"),
                    &format!("run {shard} {attempt_no}"),
                    started,
                    ended,
                    attributes,
                );
                run.status = Some(ok(outcome != "finished"));
                out.push(run);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Admission, JobSpec};
    use crate::fsm::events::apply_with_events;
    use crate::fsm::{Command, Placement, ShardOutcome};

    #[test]
    fn a_jobs_life_becomes_one_trace_in_order() {
        let mut state = ClusterState::default();
        let mut traces = JobTraces::default();
        // The spans of the jobs that ended with this command.
        let mut step = |state: &mut ClusterState, index: u64, command: Command, at: u64| {
            let (_, events) = apply_with_events(state, index, command);
            let mut ended = Vec::new();
            for event in events {
                ended.extend(traces.observe(&event, at, state).unwrap_or_default());
            }
            ended
        };
        step(
            &mut state,
            1,
            Command::RegisterTaskManager {
                incarnation: 0,
                successor_of: None,
                replaces: None,
                id: "tm".into(),
                addr: "h:0".into(),
                slots: 4,
                labels: Default::default(),
                now_ms: 1_000,
            },
            1_000,
        );
        step(
            &mut state,
            2,
            Command::SubmitJob {
                name: "traced".into(),
                spec: JobSpec::of_command("true", 1),
                idempotency_key: None,
                owner: "me".into(),
                admission: Admission::DEFAULT,
                now_ms: 2_000,
            },
            2_005,
        );
        let job = JobId(2);
        step(
            &mut state,
            3,
            Command::PlaceShards {
                placements: vec![Placement {
                    job_id: job,
                    shard: 0,
                    taskmanager: "tm".into(),
                }],
                now_ms: 2_010,
            },
            2_010,
        );
        let report = |outcome: Option<ShardOutcome>| -> Command {
            match outcome {
                None => Command::ReportShardStarted {
                    taskmanager: "tm".into(),
                    job_id: job,
                    shard: 0,
                    epoch: 3,
                    now_ms: 2_020,
                },
                Some(outcome) => Command::ReportShardEnded {
                    taskmanager: "tm".into(),
                    job_id: job,
                    shard: 0,
                    epoch: 3,
                    outcome,
                    run_ms: 30,
                    retry_at_ms: 0,
                    now_ms: 2_050,
                },
            }
        };
        let before_the_end = step(&mut state, 4, report(None), 2_020);
        assert!(before_the_end.is_empty(), "nothing before the job ends");
        let seen = step(&mut state, 5, report(Some(ShardOutcome::Finished)), 2_050);
        let names: Vec<&str> = seen.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["job j-2", "submit", "shard 0 placement", "shard 0 run"]
        );
        assert!(seen.iter().all(|s| s.trace_id == trace_id(job)));
        let root = &seen[0];
        assert!(seen[1..].iter().all(|s| s.parent_span_id == root.span_id));
        let starts: Vec<u64> = seen[1..]
            .iter()
            .map(|s| s.start_time_unix_nano / 1_000_000)
            .collect();
        assert_eq!(starts, vec![2_000, 2_005, 2_020]);
        assert_eq!(root.end_time_unix_nano / 1_000_000, 2_050);
    }
}
