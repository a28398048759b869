//! The scheduling side of the client API: a submission's options (priority, `--after`,
//! gang, tenant) as the caller may give them, the options shown in `job status`, and the
//! tenants' quotas.

use super::access::Caller;
use super::error::ApiError;
use crate::domain::{
    ClusterState, JobId, JobScheduling, Role, ShardState, DEFAULT_PRIORITY, DEFAULT_TENANT,
    MAX_AFTER,
};
use crate::fsm::{validate_options, Rejection, SlotLimit};
use crate::pb::api::{JobStatus, QuotaInfo, SetQuotaRequest, SubmitRequest};
use std::collections::BTreeMap;

/// The options of a submission, checked: the tenant is the token's (an admin may name
/// another), and every job named in `--after` exists.
pub fn submit_options(
    request: &SubmitRequest,
    caller: &Caller,
    state: &ClusterState,
) -> Result<JobScheduling, ApiError> {
    if request.after.len() > MAX_AFTER {
        return Err(ApiError::InvalidArgument(format!(
            "--after names {} jobs; the limit is {MAX_AFTER}",
            request.after.len()
        )));
    }
    let mut after = Vec::with_capacity(request.after.len());
    for raw in &request.after {
        let job: JobId = raw.parse().map_err(|e: crate::domain::ParseJobIdError| {
            ApiError::InvalidArgument(e.to_string())
        })?;
        if state.job(job).is_none() {
            return Err(ApiError::Rejected(Rejection::UnknownDependency(job)));
        }
        after.push(job);
    }
    after.sort_unstable();
    after.dedup();
    let tenant = tenant_of(&request.tenant, caller, state)?;
    // A submission that asks for no priority runs at the default, or at its tenant's
    // ceiling when an admin set that lower: asking for nothing is never refused.
    let priority = request
        .priority
        .unwrap_or_else(|| DEFAULT_PRIORITY.min(state.max_priority(&tenant)));
    let options = JobScheduling {
        priority,
        after,
        gang: request.gang,
        tenant,
    };
    validate_options(&options).map_err(ApiError::from)?;
    Ok(options)
}

/// Refuse (`FAILED_PRECONDITION`) a job that could never start as asked: a gang larger than
/// its tenant's slot quota, or (when some TaskManager carrying its labels is known) a shard
/// wider than each of them or a gang wider than all of them together. Waiting would be for
/// ever; a job whose labels no TaskManager carries is let in with a warning instead (one may
/// register).
pub fn check_could_ever_fit(
    spec: &crate::domain::JobSpec,
    options: &JobScheduling,
    state: &ClusterState,
) -> Result<(), ApiError> {
    let slots = u64::from(spec.slots_per_shard);
    let need = if options.gang {
        if spec.shard_count > crate::domain::MAX_GANG_SHARDS {
            return Err(ApiError::InvalidArgument(crate::fsm::gang_too_large(
                spec.shard_count,
            )));
        }
        slots * u64::from(spec.shard_count)
    } else {
        slots
    };
    let tenant = &options.tenant;
    if let Some(limit) = state.quota(tenant).slots {
        if need > limit {
            return Err(ApiError::FailedPrecondition(format!(
                "{} needs {need} slots at once, above tenant '{tenant}''s quota of {limit}; it \
                 could never start: ask an admin to raise it (`quota set {tenant} --slots \
                 {need}`), or submit less at once",
                if options.gang {
                    "the gang"
                } else {
                    "each shard"
                }
            )));
        }
    }
    let matching: Vec<u64> = state
        .taskmanagers
        .values()
        .filter(|tm| {
            tm.state != crate::domain::TaskManagerState::Lost && tm.matches(&spec.selector)
        })
        .map(|tm| u64::from(tm.slots))
        .collect();
    if matching.is_empty() {
        return Ok(());
    }
    let widest = matching.iter().copied().max().unwrap_or(0);
    if slots > widest {
        return Err(ApiError::FailedPrecondition(format!(
            "each shard needs {slots} slots; the largest TaskManager that may run it has \
             {widest}: ask for fewer --slots-per-shard, or start an agent with more --slots"
        )));
    }
    let total: u64 = matching.iter().sum();
    if options.gang && need > total {
        return Err(ApiError::FailedPrecondition(format!(
            "the gang needs {need} slots at once; the TaskManagers that may run it have {total} \
             in all: submit a smaller gang, or add agents first"
        )));
    }
    Ok(())
}

/// A tenant's jobs may ask for at most the highest priority an admin gave the tenant
/// (`quota set --max-priority`, default 500), so that no tenant preempts every other by
/// asking for 1000. An admin's own submissions, and everything under `--insecure`, are not
/// capped.
pub fn check_priority_ceiling(
    options: &JobScheduling,
    caller: &Caller,
    state: &ClusterState,
) -> Result<(), ApiError> {
    let exempt = match caller {
        Caller::Token { role, .. } => *role == Role::Admin,
        _ => true,
    };
    let ceiling = state.max_priority(&options.tenant);
    if exempt || options.priority <= ceiling {
        return Ok(());
    }
    Err(ApiError::Rejected(Rejection::AboveCeiling {
        tenant: options.tenant.clone(),
        priority: options.priority,
        ceiling,
    }))
}

/// The tenant a submission counts against.
pub fn tenant_of(asked: &str, caller: &Caller, state: &ClusterState) -> Result<String, ApiError> {
    match caller {
        Caller::Token { name, role, .. } => {
            let own = state.token_tenant(name);
            if asked.is_empty() || asked == own {
                Ok(own.to_string())
            } else if *role == Role::Admin {
                Ok(asked.to_string())
            } else {
                Err(ApiError::PermissionDenied(format!(
                    "token '{name}' submits as tenant '{own}'; leave out --tenant, or use a \
                     token of tenant '{asked}'"
                )))
            }
        }
        _ if asked.is_empty() => Ok(DEFAULT_TENANT.to_string()),
        _ => Ok(asked.to_string()),
    }
}

/// Fill a job status's scheduling fields from the state.
pub fn fill_status(status: &mut JobStatus, state: &ClusterState, job_id: JobId) {
    status.priority = state.priority(job_id);
    status.after = state.after(job_id).iter().map(JobId::to_string).collect();
    status.tenant = state.tenant(job_id).to_string();
    status.gang = state.is_gang(job_id);
    if let Some(origin) = state.cron.origins.get(&job_id) {
        status.schedule = Some(origin.name.clone());
        status.scheduled_ms = Some(origin.scheduled_ms);
    }
    if status.gang && status.state == "pending" {
        status.reservation = crate::scheduler::current_reservation(state, crate::clock::now_ms())
            .filter(|r| r.job == job_id)
            .map(|r| crate::pb::api::Reservation {
                taskmanagers: r.slots.into_keys().collect(),
                expected_start_ms: r.expected_start_ms,
            });
    }
    status.reason = state
        .job(job_id)
        .and_then(|job| crate::scheduler::waiting_reason(state, job, crate::clock::now_ms()))
        .unwrap_or_default();
    for shard in &mut status.shards {
        shard.preemptions = state
            .preemptions
            .get(&(job_id, shard.index))
            .copied()
            .unwrap_or(0);
    }
}

/// What a `SetQuota` request changes.
pub fn slot_limit(request: &SetQuotaRequest) -> Result<SlotLimit, ApiError> {
    match (request.slots, request.unlimited) {
        (Some(_), true) => Err(ApiError::InvalidArgument(
            "give --slots or --unlimited, not both".into(),
        )),
        (Some(n), false) => Ok(SlotLimit::Set(n)),
        (None, true) => Ok(SlotLimit::Unlimited),
        (None, false) => Ok(SlotLimit::Keep),
    }
}

/// Every tenant with a quota or with jobs that have not ended, by name.
pub fn quotas(state: &ClusterState) -> Vec<QuotaInfo> {
    let mut pending: BTreeMap<&str, u64> = BTreeMap::new();
    for job in state.jobs.values().filter(|j| !j.state.is_terminal()) {
        let waiting = u64::from(job.counts.get(ShardState::Pending));
        *pending.entry(state.tenant(job.id)).or_default() += waiting;
    }
    let held = state.slots_held_by_tenant();
    let mut tenants: Vec<&str> = state.quotas.keys().map(String::as_str).collect();
    tenants.extend(state.max_priorities.keys().map(String::as_str));
    tenants.extend(pending.keys().copied());
    tenants.extend(held.keys().map(String::as_str));
    tenants.extend(state.resource_quotas.keys().map(String::as_str));
    tenants.extend(state.tenant_resources.keys().map(String::as_str));
    tenants.sort_unstable();
    tenants.dedup();
    tenants
        .into_iter()
        .map(|tenant| {
            let quota = state.quota(tenant);
            let mut info = QuotaInfo {
                tenant: tenant.to_string(),
                slots: quota.slots,
                weight: quota.weight,
                running_slots: held.get(tenant).copied().unwrap_or(0),
                pending_shards: pending.get(tenant).copied().unwrap_or(0),
                max_priority: state.max_priority(tenant),
                ..Default::default()
            };
            super::resources::fill_quota(&mut info, state);
            info
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, role: Role) -> Caller {
        Caller::test_token(name, role)
    }

    #[test]
    fn the_tenant_is_the_tokens_and_only_an_admin_may_name_another() {
        let mut state = ClusterState::default();
        state.token_tenants.insert("ci".into(), "team-a".into());
        let submit = token("ci", Role::Submit);
        assert_eq!(tenant_of("", &submit, &state).expect("own"), "team-a");
        assert_eq!(tenant_of("team-a", &submit, &state).expect("own"), "team-a");
        assert!(matches!(
            tenant_of("team-b", &submit, &state),
            Err(ApiError::PermissionDenied(_))
        ));
        let plain = token("alice", Role::Submit);
        assert_eq!(tenant_of("", &plain, &state).expect("name"), "alice");
        let admin = token("root", Role::Admin);
        assert_eq!(tenant_of("team-b", &admin, &state).expect("any"), "team-b");
        assert_eq!(
            tenant_of("", &Caller::Anyone, &state).expect("default"),
            DEFAULT_TENANT
        );
        assert_eq!(tenant_of("x", &Caller::Anyone, &state).expect("asked"), "x");
    }

    #[test]
    fn after_names_existing_jobs_once_each() {
        let state = ClusterState::default();
        let request = SubmitRequest {
            after: vec!["j-7".into()],
            ..Default::default()
        };
        assert!(matches!(
            submit_options(&request, &Caller::Anyone, &state),
            Err(ApiError::Rejected(Rejection::UnknownDependency(JobId(7))))
        ));
        let request = SubmitRequest {
            after: vec!["not-a-job".into()],
            ..Default::default()
        };
        assert!(matches!(
            submit_options(&request, &Caller::Anyone, &state),
            Err(ApiError::InvalidArgument(_))
        ));
    }
}
