//! Periodic jobs in the replicated state: each schedule's definition (its cron expression,
//! rules and the job it makes), and where its firing stands: the mark up to which every
//! scheduled time is settled, the jobs it made last and what it let go.
//!
//! Pure data. Which times fire on a turn is decided by `periodic`; apply (`fsm`) moves the
//! mark, and only from where the state has it, so a turn decided twice applies once.

use super::ids::JobId;
use super::job::JobSpec;
use super::resources::ResourceRequest;
use super::scheduling::JobScheduling;
use super::state::ClusterState;
use crate::periodic::{CatchUp, Concurrency};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most schedules one tenant may hold.
pub const MAX_SCHEDULES_PER_TENANT: usize = 100;
/// Most schedules the cluster holds, over every tenant.
pub const MAX_SCHEDULES: usize = 10_000;
/// The jobs a schedule remembers it made (the newest), for `cron show` and `forbid`.
pub const CRON_HISTORY: usize = 20;
/// Longest `--starting-deadline`: a time older than this is never worth starting.
pub const MAX_STARTING_DEADLINE_MS: u64 = 30 * 24 * 3600 * 1000;
/// Longest time zone name (the tz database's longest is 32 bytes).
pub const MAX_TIMEZONE_BYTES: usize = 64;
/// Longest reason kept for a skip.
pub const MAX_SKIP_REASON_BYTES: usize = 512;
/// What a fired job's shards find in their environment: the schedule's name, and the
/// scheduled time it stands for (RFC 3339, UTC).
pub const SCHEDULE_ENV: &str = "DISPATCHER_SCHEDULE";
pub const SCHEDULED_TIME_ENV: &str = "DISPATCHER_SCHEDULED_TIME";

/// A schedule is named within its tenant: (tenant, name).
pub type CronKey = (String, String);

/// The job a schedule submits on each fire: `submit`'s options, fixed at `cron add`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobTemplate {
    pub spec: JobSpec,
    /// Who added the schedule: its jobs count against this client's admission, as if it
    /// had submitted them.
    pub owner: String,
    /// Priority, gang and tenant (never `after`: a fixed job id means nothing to the next
    /// fire).
    pub options: JobScheduling,
    pub request: ResourceRequest,
}

/// What `cron add` sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronDefinition {
    pub expression: String,
    /// An IANA zone; `None` is UTC.
    pub timezone: Option<String>,
    pub concurrency: Concurrency,
    pub starting_deadline_ms: Option<u64>,
    pub catch_up: CatchUp,
    pub template: JobTemplate,
}

/// Times let go, the newest batch of them, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronSkip {
    pub count: u64,
    /// There were more than `count` (counting stopped).
    pub at_least: bool,
    pub first_ms: u64,
    pub last_ms: u64,
    pub reason: String,
    /// When the leader let them go.
    pub at_ms: u64,
}

/// One job a schedule made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronRunRecord {
    pub scheduled_ms: u64,
    pub job: JobId,
}

/// A schedule and where its firing stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronSchedule {
    pub definition: CronDefinition,
    /// The log index of the `CronPut` that set this definition: fired jobs' keys carry it,
    /// so a schedule deleted and added again never meets its old keys.
    pub generation: u64,
    pub created_at_ms: u64,
    pub suspended: bool,
    /// Every scheduled time up to here is settled: fired or let go.
    pub settled_until_ms: u64,
    /// The newest `CRON_HISTORY` jobs it made, oldest first.
    pub history: Vec<CronRunRecord>,
    /// Times let go since it was added (saturating).
    pub skipped_total: u64,
    pub last_skip: Option<CronSkip>,
}

impl CronSchedule {
    /// The job of its newest fire, if any.
    pub fn last_job(&self) -> Option<JobId> {
        self.history.last().map(|r| r.job)
    }

    /// Remember a job it made, forgetting the oldest beyond `CRON_HISTORY`.
    pub fn remember(&mut self, record: CronRunRecord) {
        self.history.push(record);
        if self.history.len() > CRON_HISTORY {
            let extra = self.history.len() - CRON_HISTORY;
            self.history.drain(..extra);
        }
    }

    /// Note times let go.
    pub fn note_skip(&mut self, skip: CronSkip) {
        self.skipped_total = self.skipped_total.saturating_add(skip.count);
        self.last_skip = Some(skip);
    }
}

/// Which schedule made a job, and for which scheduled time (a `cron run` fires at the time
/// it was asked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronOrigin {
    pub name: String,
    pub scheduled_ms: u64,
}

/// The periodic part of the state, as snapshot format 12 writes it after the cluster
/// version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronState {
    pub schedules: BTreeMap<CronKey, CronSchedule>,
    /// Jobs made by a schedule (until retention forgets them).
    pub origins: BTreeMap<JobId, CronOrigin>,
}

impl CronState {
    pub fn is_empty(&self) -> bool {
        self.schedules.is_empty() && self.origins.is_empty()
    }

    /// How many schedules `tenant` holds.
    pub fn count_of(&self, tenant: &str) -> usize {
        self.schedules
            .range((tenant.to_string(), String::new())..)
            .take_while(|((t, _), _)| t == tenant)
            .count()
    }
}

impl ClusterState {
    /// Whether any job of `schedule`'s history has not ended.
    pub fn cron_running(&self, schedule: &CronSchedule) -> Vec<JobId> {
        schedule
            .history
            .iter()
            .map(|r| r.job)
            .filter(|job| self.job(*job).is_some_and(|j| !j.state.is_terminal()))
            .collect()
    }
}

/// A scheduled time as a shard sees it: RFC 3339 in UTC, to the second.
pub fn rfc3339(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// A definition of tenant `tenant` that runs `true` on one shard every minute (for tests).
#[cfg(test)]
pub fn test_definition(tenant: &str, concurrency: Concurrency) -> CronDefinition {
    CronDefinition {
        expression: "* * * * *".into(),
        timezone: None,
        concurrency,
        starting_deadline_ms: None,
        catch_up: CatchUp::Last,
        template: JobTemplate {
            spec: JobSpec::of_command("true", 1),
            owner: "me".into(),
            options: JobScheduling {
                tenant: tenant.into(),
                ..JobScheduling::default()
            },
            request: ResourceRequest::default(),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A schedule every minute that runs `true`.
    pub(crate) fn sample() -> CronSchedule {
        CronSchedule {
            definition: test_definition("default", Concurrency::Allow),
            generation: 1,
            created_at_ms: 0,
            suspended: false,
            settled_until_ms: 0,
            history: vec![],
            skipped_total: 0,
            last_skip: None,
        }
    }

    #[test]
    fn scheduled_times_read_as_rfc3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_600_000), "2027-01-01T00:00:00Z");
    }

    #[test]
    fn history_keeps_the_newest() {
        let mut schedule = sample();
        for i in 0..(CRON_HISTORY as u64 + 5) {
            schedule.remember(CronRunRecord {
                scheduled_ms: i,
                job: JobId(i + 1),
            });
        }
        assert_eq!(schedule.history.len(), CRON_HISTORY);
        assert_eq!(schedule.history[0].scheduled_ms, 5);
        assert_eq!(schedule.last_job(), Some(JobId(CRON_HISTORY as u64 + 5)));
    }

    #[test]
    fn schedules_are_counted_per_tenant() {
        let mut cron = CronState::default();
        for (tenant, name) in [("a", "x"), ("a", "y"), ("ab", "x"), ("b", "x")] {
            cron.schedules
                .insert((tenant.to_string(), name.to_string()), sample());
        }
        assert_eq!(cron.count_of("a"), 2);
        assert_eq!(cron.count_of("ab"), 1);
        assert_eq!(cron.count_of("c"), 0);
    }
}
