//! A schedule that runs through the chaos run, and its checker: every scheduled time from
//! the schedule's creation to its mark made exactly one job. The schedule catches up on
//! every missed time (`--catch-up all`, no starting deadline), so a time lost to a fault is
//! a violation, as is a time fired twice (a deposed leader's turn applied after the new
//! one's). Its shards run the recording script, so the execution checkers see them too.
//!
//! The older release knows no schedules: before `restart-upgrade` may downgrade the
//! cluster, the schedule is checked and deleted, and it is added again once the cluster
//! runs at a version with schedules. Each life of it is a segment, checked on its own.

use super::checker::{capped, Verdict};
use super::executions::Recorder;
use crate::client::{Client, ClientError};
use crate::pb::api::{AddScheduleRequest, JobSpec, JobStatus, ScheduleInfo, SubmitRequest};
use std::collections::BTreeMap;
use std::time::Duration;

/// The schedule's name.
pub const SCHEDULE: &str = "chaos-tick";
/// It fires every two seconds.
const EXPRESSION: &str = "*/2 * * * * *";
const PERIOD_MS: u64 = 2_000;

/// The schedule over a run: whether it is live now, and the verdicts of its closed lives.
#[derive(Default)]
pub struct PeriodicProbe {
    live: bool,
    segments: Vec<Verdict>,
}

impl PeriodicProbe {
    /// Add the schedule if it is not live (refused while the cluster runs below the version
    /// that has schedules: tried again after the next fault).
    pub async fn start(&mut self, admin: &Client, recorder: &Recorder) {
        if self.live {
            return;
        }
        match add(admin, recorder).await {
            Ok(_) => self.live = true,
            Err(e) => tracing::info!("the chaos schedule is not added (yet): {e}"),
        }
    }

    /// Suspend the live schedule and check what it made; with `delete`, remove it too (a
    /// downgrade to the older release follows).
    pub async fn close(&mut self, client: &Client, delete: bool) {
        if !self.live {
            return;
        }
        let verdict = close(client).await;
        let checked = verdict.is_some();
        self.segments.push(verdict.unwrap_or_else(|| Verdict {
            name: "periodic".into(),
            checked: "the schedule".into(),
            violations: vec!["the schedule could not be suspended and read".into()],
        }));
        if delete && checked {
            self.live = client.delete_schedule(SCHEDULE, "").await.is_err();
        }
    }

    /// Every life's verdict in one.
    pub fn verdict(self) -> Verdict {
        let checked: Vec<String> = self.segments.iter().map(|v| v.checked.clone()).collect();
        Verdict {
            name: "periodic".into(),
            checked: if checked.is_empty() {
                "no life of the schedule".into()
            } else {
                checked.join("; ")
            },
            violations: capped(
                self.segments
                    .into_iter()
                    .flat_map(|v| v.violations)
                    .collect(),
            ),
        }
    }
}

/// Suspend the schedule (retrying through a leader change) and check its jobs.
async fn close(client: &Client) -> Option<Verdict> {
    let schedule = crate::local_cluster::wait_for(
        Duration::from_secs(30),
        "the schedule suspended",
        || async { client.suspend_schedule(SCHEDULE, "", true).await.ok() },
    )
    .await
    .ok()?;
    let mut jobs = Vec::new();
    for job in client.list_jobs().await.ok()? {
        if job.name == SCHEDULE {
            jobs.push(client.job_status(&job.job_id).await.ok()?);
        }
    }
    Some(once_per_time(&schedule, &jobs))
}

/// Add the schedule (the same request on a retry only renews it).
async fn add(admin: &Client, recorder: &Recorder) -> Result<ScheduleInfo, ClientError> {
    let (command, args) = recorder.command(100, "");
    admin
        .add_schedule(AddScheduleRequest {
            name: SCHEDULE.into(),
            schedule: EXPRESSION.into(),
            catch_up: "all".into(),
            job: Some(SubmitRequest {
                name: SCHEDULE.into(),
                spec: Some(JobSpec {
                    command,
                    args,
                    shard_count: 1,
                    slots_per_shard: 1,
                    max_attempts: 3,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
}

/// Each time in `(created, mark]` of `schedule` (read once it was suspended) made exactly
/// one of `jobs`, and none made a job for another time since its creation (the jobs of an
/// earlier life of it are older).
pub fn once_per_time(schedule: &ScheduleInfo, jobs: &[JobStatus]) -> Verdict {
    let mut made: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for job in jobs {
        let time = job.scheduled_ms.unwrap_or_default();
        if job.schedule.as_deref() == Some(SCHEDULE) && time > schedule.created_at_ms {
            made.entry(time).or_default().push(&job.job_id);
        }
    }
    let first = (schedule.created_at_ms / PERIOD_MS + 1) * PERIOD_MS;
    let expected: Vec<u64> = (first..=schedule.settled_until_ms)
        .step_by(PERIOD_MS as usize)
        .collect();
    let mut violations = Vec::new();
    for time in &expected {
        match made.get(time).map(Vec::len) {
            None => violations.push(format!("no job for the time {time}")),
            Some(1) => {}
            Some(_) => violations.push(format!("two jobs for the time {time}: {:?}", made[time])),
        }
    }
    for (time, jobs) in &made {
        if expected.binary_search(time).is_err() {
            violations.push(format!(
                "jobs {jobs:?} for {time}, which is not a scheduled time"
            ));
        }
    }
    Verdict {
        name: "periodic".into(),
        checked: format!(
            "{} scheduled times of '{SCHEDULE}' (every {} s), each one job",
            expected.len(),
            PERIOD_MS / 1_000
        ),
        violations: capped(violations),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, time: u64) -> JobStatus {
        JobStatus {
            job_id: id.into(),
            schedule: Some(SCHEDULE.into()),
            scheduled_ms: Some(time),
            ..Default::default()
        }
    }

    #[test]
    fn a_lost_and_a_doubled_time_are_both_caught() {
        let schedule = ScheduleInfo {
            created_at_ms: 1_500,
            settled_until_ms: 8_100,
            ..Default::default()
        };
        // "old" is of an earlier life of the schedule.
        let all = [
            job("old", 1_000),
            job("a", 2_000),
            job("b", 4_000),
            job("c", 6_000),
            job("d", 8_000),
        ];
        assert!(once_per_time(&schedule, &all).ok());
        let lost_and_doubled = [
            job("a", 2_000),
            job("b", 4_000),
            job("b2", 4_000),
            job("d", 8_000),
        ];
        let verdict = once_per_time(&schedule, &lost_and_doubled);
        assert_eq!(verdict.violations.len(), 2, "{verdict:?}");
    }
}
