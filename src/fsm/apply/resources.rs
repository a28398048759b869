//! Apply of the resource commands: a TaskManager's registration with its capacity and
//! isolation, a job submitted with a per-shard request, and a tenant's resource limits. Each
//! wraps the command it extends and keeps the resources beside what that command keeps.

use super::jobs::Submission;
use super::scheduling::{set_quota, submit_with_options};
use super::taskmanagers::{register_taskmanager, Registration};
use crate::domain::{
    validate_resources, ClusterState, JobScheduling, ResourceRequest, TaskManagerResources,
    MAX_ISOLATION_NOTE_BYTES, MAX_QUOTAS,
};
use crate::fsm::command::{Rejection, ResourceLimits, Response, SlotLimit};

fn invalid(message: String) -> Rejection {
    Rejection::Invalid(message)
}

/// Register a TaskManager and keep what it declared.
pub(super) fn register_with_resources(
    state: &mut ClusterState,
    registration: Registration,
    resources: TaskManagerResources,
    now_ms: u64,
) -> Result<Response, Rejection> {
    validate_resources(&resources.capacity).map_err(invalid)?;
    if resources.isolation_missing.len() > MAX_ISOLATION_NOTE_BYTES {
        return Err(invalid(format!(
            "the isolation note is longer than {MAX_ISOLATION_NOTE_BYTES} bytes"
        )));
    }
    let id = registration.id.clone();
    let response = register_taskmanager(state, registration, now_ms)?;
    state.tm_resources.insert(id, resources);
    Ok(response)
}

/// A registration without resources (an agent of a version before them): whatever an
/// earlier registration declared no longer holds.
pub(super) fn register_without_resources(
    state: &mut ClusterState,
    registration: Registration,
    now_ms: u64,
) -> Result<Response, Rejection> {
    let id = registration.id.clone();
    let response = register_taskmanager(state, registration, now_ms)?;
    state.tm_resources.remove(&id);
    Ok(response)
}

/// Submit a job whose shards ask for resources or full isolation.
pub(super) fn submit_with_resources(
    state: &mut ClusterState,
    log_index: u64,
    submission: Submission,
    options: JobScheduling,
    request: ResourceRequest,
    now_ms: u64,
) -> Result<Response, Rejection> {
    validate_resources(&request.per_shard).map_err(invalid)?;
    if request
        .timeout_ms
        .is_some_and(|ms| ms == 0 || ms > crate::domain::MAX_TIMEOUT_MS)
    {
        return Err(invalid(
            "a timeout must be above zero and at most 30 days".to_string(),
        ));
    }
    let response = submit_with_options(state, log_index, submission, options, now_ms)?;
    if let Response::JobSubmitted {
        job_id,
        created: true,
    } = response
    {
        if !request.is_empty() {
            state.requests.insert(job_id, request);
        }
    }
    Ok(response)
}

/// `quota set` with resource limits.
pub(super) fn set_quota_with_resources(
    state: &mut ClusterState,
    tenant: String,
    slots: SlotLimit,
    weight: Option<u32>,
    max_priority: Option<u32>,
    limits: ResourceLimits,
) -> Result<Response, Rejection> {
    validate_resources(&limits.set).map_err(invalid)?;
    if !limits.set.is_empty()
        && !state.resource_quotas.contains_key(&tenant)
        && state.resource_quotas.len() >= MAX_QUOTAS
    {
        return Err(Rejection::Overloaded(format!(
            "{MAX_QUOTAS} tenants have resource limits, the most the cluster keeps; clear \
             unused ones with `quota set <tenant> --unlimited`"
        )));
    }
    let response = set_quota(state, tenant.clone(), slots, weight, max_priority)?;
    let mut current = if limits.clear {
        Default::default()
    } else {
        state
            .resource_quotas
            .get(&tenant)
            .cloned()
            .unwrap_or_default()
    };
    if limits.set.cpu_millis > 0 {
        current.cpu_millis = limits.set.cpu_millis;
    }
    if limits.set.memory_bytes > 0 {
        current.memory_bytes = limits.set.memory_bytes;
    }
    for (name, count) in limits.set.named {
        current.named.insert(name, count);
    }
    if current.is_empty() {
        state.resource_quotas.remove(&tenant);
    } else {
        state.resource_quotas.insert(tenant, current);
    }
    Ok(response)
}
