//! Deterministic apply of one command to the cluster state.

use super::command::{Command, Rejection, Response};
use crate::domain::ClusterState;
use jobs::{cancel_job, forget_jobs, submit_job, Submission};
use scheduling::{restart_gang, set_quota, submit_with_options};
#[cfg(test)]
use shards::interruption_backoff_ms;
use shards::{place_shards, preempt_shards, report_ended, report_started, requeue_shards};
use taskmanagers::{drain_taskmanager, forget_taskmanagers, mark_lost, Registration};
use tokens::{create_tenant_token, create_token, revoke_token, seed_bootstrap_token};

/// Apply `command`, committed at `log_index`, to `state`.
///
/// Every rejection is checked before the first mutation, so a refused command changes
/// nothing.
pub fn apply(state: &mut ClusterState, log_index: u64, command: Command) -> Response {
    // A kind newer than the cluster version is refused where it is proposed; one that got
    // into the log anyway (proposed as a downgrade committed) changes nothing.
    let needed = command.needs_cluster_version();
    if needed > state.cluster_version && !matches!(command, Command::SetClusterVersion { .. }) {
        return Response::Rejected(Rejection::NeedsClusterVersion {
            needed: needed.0,
            current: state.cluster_version.0,
        });
    }
    let result = match command {
        Command::RegisterTaskManager {
            incarnation,
            successor_of,
            replaces,
            id,
            addr,
            slots,
            labels,
            now_ms,
        } => resources::register_without_resources(
            state,
            Registration {
                id,
                addr,
                slots,
                labels,
                incarnation,
                successor_of,
                replaces,
            },
            now_ms,
        ),
        Command::RegisterTaskManagerWithResources {
            incarnation,
            successor_of,
            replaces,
            id,
            addr,
            slots,
            labels,
            resources,
            now_ms,
        } => resources::register_with_resources(
            state,
            Registration {
                id,
                addr,
                slots,
                labels,
                incarnation,
                successor_of,
                replaces,
            },
            resources,
            now_ms,
        ),
        Command::SubmitJobWithResources {
            name,
            spec,
            idempotency_key,
            owner,
            admission,
            options,
            request,
            now_ms,
        } => resources::submit_with_resources(
            state,
            log_index,
            Submission {
                name,
                spec,
                idempotency_key,
                owner,
                admission,
                tenant: options.tenant.clone(),
            },
            options,
            request,
            now_ms,
        ),
        Command::PreemptForShard {
            taskmanager,
            victims,
            for_job,
            shard,
            not_before_ms,
            now_ms,
        } => preemption::preempt_for_shard(
            state,
            log_index,
            preemption::PreemptFor {
                taskmanager,
                victims,
                for_job,
                shard,
                not_before_ms,
            },
            now_ms,
        ),
        Command::SetQuotaWithResources {
            tenant,
            slots,
            weight,
            max_priority,
            resources,
            ..
        } => resources::set_quota_with_resources(
            state,
            tenant,
            slots,
            weight,
            max_priority,
            resources,
        ),
        Command::SubmitJob {
            name,
            spec,
            idempotency_key,
            owner,
            admission,
            now_ms,
        } => submit_job(
            state,
            log_index,
            Submission {
                name,
                spec,
                idempotency_key,
                owner,
                admission,
                tenant: crate::domain::DEFAULT_TENANT.to_string(),
            },
            now_ms,
        ),
        Command::SubmitScheduledJob {
            name,
            spec,
            idempotency_key,
            owner,
            admission,
            scheduling,
            now_ms,
        } => submit_with_options(
            state,
            log_index,
            Submission {
                name,
                spec,
                idempotency_key,
                owner,
                admission,
                tenant: crate::domain::DEFAULT_TENANT.to_string(),
            },
            scheduling.into(),
            now_ms,
        ),
        Command::SubmitJobWithOptions {
            name,
            spec,
            idempotency_key,
            owner,
            admission,
            options,
            now_ms,
        } => submit_with_options(
            state,
            log_index,
            Submission {
                name,
                spec,
                idempotency_key,
                owner,
                admission,
                tenant: options.tenant.clone(),
            },
            options,
            now_ms,
        ),
        Command::SetQuota {
            tenant,
            slots,
            weight,
            ..
        } => set_quota(state, tenant, slots, weight, None),
        Command::SetQuotaLimits {
            tenant,
            slots,
            weight,
            max_priority,
            ..
        } => set_quota(state, tenant, slots, weight, max_priority),
        // From version 4 a pin is whole: one without resources takes back the resource pin
        // (a leader that had not yet applied the raise may still propose this kind).
        Command::PinTaskManager {
            id, labels, slots, ..
        } if state.cluster_version >= crate::domain::ClusterVersion(4) => {
            taskmanagers::pin_taskmanager_with_resources(
                state,
                id,
                labels,
                slots,
                Default::default(),
            )
        }
        Command::PinTaskManager {
            id, labels, slots, ..
        } => taskmanagers::pin_taskmanager(state, id, labels, slots),
        Command::PinTaskManagerWithResources {
            id,
            labels,
            slots,
            resources,
            ..
        } => taskmanagers::pin_taskmanager_with_resources(state, id, labels, slots, resources),
        Command::RevokeCertificate {
            party, fingerprint, ..
        } => certificates::revoke_certificate(state, party, fingerprint),
        Command::CreateTenantToken {
            name,
            role,
            hash,
            tenant,
            now_ms,
        } => create_tenant_token(state, name, role, hash, tenant, now_ms),
        Command::RestartGang {
            job_id,
            not_before_ms,
            now_ms,
        } => Ok(restart_gang(state, job_id, not_before_ms, now_ms)),
        Command::PreemptShards {
            taskmanager,
            shards,
            not_before_ms,
            now_ms,
            ..
        } => Ok(preempt_shards(
            state,
            &taskmanager,
            shards,
            not_before_ms,
            now_ms,
        )),
        Command::PlaceShards { placements, now_ms } => {
            Ok(place_shards(state, log_index, placements, now_ms))
        }
        Command::CancelJob { job_id, now_ms } => cancel_job(state, job_id, None, now_ms),
        Command::CancelOwnJob {
            job_id,
            owner,
            now_ms,
        } => cancel_job(state, job_id, Some(&owner), now_ms),
        Command::DrainTaskManager {
            id, deadline_ms, ..
        } => drain_taskmanager(state, id, deadline_ms),
        Command::ReportShardStarted {
            taskmanager,
            job_id,
            shard,
            epoch,
            now_ms,
        } => report_started(state, &taskmanager, job_id, shard, epoch, now_ms),
        Command::ReportShardEnded {
            taskmanager,
            job_id,
            shard,
            epoch,
            outcome,
            run_ms,
            retry_at_ms,
            now_ms,
        } => report_ended(
            state,
            &taskmanager,
            job_id,
            shard,
            epoch,
            outcome,
            run_ms,
            retry_at_ms,
            now_ms,
        ),
        Command::MarkTaskManagerLost {
            id,
            registration_epoch,
            now_ms,
        } => mark_lost(state, id, registration_epoch, now_ms),
        Command::RequeueShards {
            taskmanager,
            shards,
            not_before_ms,
            now_ms,
        } => Ok(requeue_shards(
            state,
            &taskmanager,
            shards,
            not_before_ms,
            now_ms,
        )),
        Command::ForgetJobs { job_ids, .. } => Ok(forget_jobs(state, job_ids)),
        Command::ForgetTaskManagers { ids, .. } => Ok(forget_taskmanagers(state, ids)),
        Command::CreateToken {
            name,
            role,
            hash,
            now_ms,
        } => create_token(state, name, role, hash, now_ms),
        Command::RevokeToken { name, .. } => revoke_token(state, name),
        Command::SeedBootstrapToken { hash, now_ms } => {
            Ok(seed_bootstrap_token(state, hash, now_ms))
        }
        Command::SetClusterVersion { version, .. } => versions::set_cluster_version(state, version),
        Command::UndrainTaskManager { id, .. } => versions::undrain_taskmanager(state, id),
        Command::CronPut {
            tenant,
            name,
            definition,
            now_ms,
        } => cron::put(state, log_index, tenant, name, definition, now_ms),
        Command::CronSetSuspended {
            tenant,
            name,
            suspended,
            now_ms,
        } => cron::set_suspended(state, &tenant, &name, suspended, now_ms),
        Command::CronDelete { tenant, name, .. } => cron::delete(state, &tenant, &name),
        Command::CronFired(turn) => cron::fired(state, log_index, turn),
        Command::CronRun {
            tenant,
            name,
            request_key,
            admission,
            now_ms,
        } => cron::run_now(
            state,
            log_index,
            &tenant,
            &name,
            &request_key,
            admission,
            now_ms,
        ),
        Command::RecordShardOutput(output) => output::record_output(state, log_index, output),
        Command::Batch(reports) => Ok(Response::Batch(
            reports
                .into_iter()
                .map(|report| apply(state, log_index, report.into()))
                .collect(),
        )),
    };
    result.unwrap_or_else(Response::Rejected)
}

mod admission;
mod certificates;
mod cron;
mod jobs;
mod output;
mod preemption;
mod resources;
mod scheduling;
mod shards;
mod taskmanagers;
mod tokens;
mod versions;
pub use admission::check_admission;
pub use scheduling::{gang_is_split, gang_too_large};
pub use shards::check_report;
pub use tokens::validate_token_name;
pub use versions::needs_above;
#[cfg(test)]
mod tests;
