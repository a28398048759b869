//! Proto ↔ domain conversions, in one place.

use crate::domain::{Job, JobSpec, Labels, ShardState, TaskManager};
use crate::pb::api;

impl From<api::JobSpec> for JobSpec {
    fn from(s: api::JobSpec) -> Self {
        JobSpec {
            command: s.command,
            args: s.args,
            env: s.env.into_iter().collect(),
            shard_count: s.shard_count,
            slots_per_shard: s.slots_per_shard,
            max_attempts: s.max_attempts,
            selector: s.selector.into_iter().collect::<Labels>(),
        }
    }
}

impl From<&JobSpec> for api::JobSpec {
    fn from(s: &JobSpec) -> Self {
        api::JobSpec {
            command: s.command.clone(),
            args: s.args.clone(),
            env: s.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            shard_count: s.shard_count,
            slots_per_shard: s.slots_per_shard,
            max_attempts: s.max_attempts,
            selector: s
                .selector
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

pub fn job_status(job: &Job) -> api::JobStatus {
    api::JobStatus {
        job_id: job.id.to_string(),
        name: job.name.clone(),
        state: job.state.as_str().to_string(),
        created_at_ms: job.created_at_ms,
        // Set by the caller, which knows what it read.
        applied_index: 0,
        priority: crate::domain::DEFAULT_PRIORITY,
        after: Vec::new(),
        tenant: crate::domain::DEFAULT_TENANT.to_string(),
        gang: false,
        reason: String::new(),
        // Set by the caller, which has the state.
        resources: None,
        isolation_full: false,
        timeout_ms: None,
        reservation: None,
        schedule: None,
        scheduled_ms: None,
        spec: Some((&job.spec).into()),
        shards: job
            .shards
            .iter()
            .map(|s| api::ShardStatus {
                index: s.index,
                state: s.state.as_str().to_string(),
                taskmanager: s.taskmanager.clone(),
                attempt: s.attempt,
                epoch: s.epoch,
                exit_code: s.exit_code,
                failures: s.failures,
                error: s.error.clone(),
                not_before_ms: (s.not_before_ms > 0
                    && s.state == crate::domain::ShardState::Pending)
                    .then_some(s.not_before_ms),
                // Set by the caller, which has the state.
                preemptions: 0,
                started_at_ms: s.started_at_ms,
            })
            .collect(),
    }
}

pub fn job_summary(job: &Job) -> api::JobSummary {
    api::JobSummary {
        job_id: job.id.to_string(),
        name: job.name.clone(),
        state: job.state.as_str().to_string(),
        shard_count: job.spec.shard_count,
        shards_finished: job
            .shards
            .iter()
            .filter(|s| s.state == ShardState::Finished)
            .count() as u32,
        shards_pending: job
            .shards
            .iter()
            .filter(|s| s.state == ShardState::Pending)
            .count() as u32,
    }
}

pub fn taskmanager_info(tm: &TaskManager) -> api::TaskManagerInfo {
    api::TaskManagerInfo {
        incarnation: tm.incarnation,
        id: tm.id.clone(),
        addr: tm.addr.clone(),
        state: tm.state.as_str().to_string(),
        slots: tm.slots,
        used_slots: tm.used_slots,
        labels: tm
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        registration_epoch: tm.registration_epoch,
        shard_runs: tm.stats.runs,
        shard_failures: tm.stats.failures,
        excluded_until_ms: tm
            .is_excluded(crate::clock::now_ms())
            .then_some(tm.excluded_until_ms),
        drain_deadline_ms: tm.drain_deadline_ms,
        // Filled by the caller, which sees the pins.
        pinned_labels: Default::default(),
        pinned_slots: None,
        pinned_cpu_millis: None,
        pinned_memory_bytes: None,
        pinned_resources: Default::default(),
        isolation: String::new(),
        isolation_missing: String::new(),
        capacity: None,
        used: None,
    }
}
