//! The resource side of the API: what a submission asks per shard (checked, and refused at
//! once when nothing in the cluster could ever hold it), what a TaskManager declares when it
//! registers, tenants' resource limits, and how all of it shows in `job status`, `tm list`
//! and `quota list`.

use super::error::ApiError;
use crate::domain::{
    format_cpu, format_size, validate_resources, ClusterState, Isolation, JobId, ResourceRequest,
    Resources, TaskManagerResources, TaskManagerState, MAX_ISOLATION_NOTE_BYTES,
};
use crate::pb::api::{
    JobStatus, QuotaInfo, RegisterTaskManagerRequest, ResourceAmounts, SubmitRequest,
    TaskManagerInfo,
};

/// The wire's amounts as the domain's, checked against the ceilings.
pub fn to_domain(amounts: &ResourceAmounts) -> Result<Resources, ApiError> {
    let resources = Resources::from(amounts);
    validate_resources(&resources).map_err(ApiError::InvalidArgument)?;
    Ok(resources)
}

/// What a submission's shards ask for. Refused (`FAILED_PRECONDITION`) when no TaskManager
/// of the cluster could ever hold one shard: a named resource none has, or more CPU or
/// memory than the largest has, so the job does not wait for ever.
pub fn submit_request(
    request: &SubmitRequest,
    require_isolation: bool,
    default_timeout_ms: Option<u64>,
    state: &ClusterState,
) -> Result<ResourceRequest, ApiError> {
    let timeout_ms = request.timeout_ms.or(default_timeout_ms);
    if let Some(ms) = timeout_ms {
        if ms == 0 || ms > crate::domain::MAX_TIMEOUT_MS {
            return Err(ApiError::InvalidArgument(format!(
                "--timeout must be above zero and at most 30 days, not {ms} ms"
            )));
        }
    }
    let isolation_full = match request.isolation.as_str() {
        "" => require_isolation,
        "full" => true,
        other => {
            return Err(ApiError::InvalidArgument(format!(
                "--isolation '{other}' is not a level a job can ask for; give full, or leave \
                 it out"
            )))
        }
    };
    let per_shard = match &request.resources {
        Some(amounts) => to_domain(amounts)?,
        None => Resources::default(),
    };
    if let Some(why) = never_fits(&per_shard, state) {
        return Err(ApiError::FailedPrecondition(why));
    }
    Ok(ResourceRequest {
        per_shard,
        isolation_full,
        timeout_ms,
    })
}

/// Why no TaskManager the cluster knows (not lost) could ever hold a shard asking `asked`.
fn never_fits(asked: &Resources, state: &ClusterState) -> Option<String> {
    if asked.is_empty() {
        return None;
    }
    let known: Vec<&str> = state
        .taskmanagers
        .values()
        .filter(|tm| tm.state != TaskManagerState::Lost)
        .map(|tm| tm.id.as_str())
        .collect();
    let mut missing: Vec<&str> = Vec::new();
    for name in asked.named.keys() {
        let anywhere = known.iter().any(|tm| {
            state
                .tm_resources
                .get(*tm)
                .is_some_and(|r| r.capacity.named.contains_key(name))
        });
        if !anywhere {
            missing.push(name);
        }
    }
    if !missing.is_empty() {
        return Some(format!(
            "needs {asked} per shard; no TaskManager has {}: start an agent with --resources \
             {}=<count>, or submit without it",
            missing.join(", "),
            missing[0]
        ));
    }
    // CPU and memory: only when some TaskManager is known, and every one declared less.
    if known.is_empty() {
        return None;
    }
    let empty = Resources::default();
    let fits_somewhere = known
        .iter()
        .any(|tm| asked.fits(&empty, &state.capacity(tm)));
    if fits_somewhere {
        return None;
    }
    let largest = |get: fn(&Resources) -> u64| {
        known
            .iter()
            .map(|tm| get(&state.capacity(tm)))
            .max()
            .unwrap_or(0)
    };
    let cpu = largest(|r| r.cpu_millis);
    let memory = largest(|r| r.memory_bytes);
    Some(format!(
        "needs {asked} per shard; no TaskManager is that large (the most any has: cpu={}, \
         memory={}); ask for less, or start an agent with more --cpus or --memory",
        format_cpu(cpu),
        format_size(memory)
    ))
}

/// What a registering agent declared: `None` for an agent from before resources.
pub fn declared(
    request: &RegisterTaskManagerRequest,
) -> Result<Option<TaskManagerResources>, ApiError> {
    let Some(capacity) = &request.capacity else {
        return Ok(None);
    };
    let isolation = Isolation::parse(&request.isolation).ok_or_else(|| {
        ApiError::InvalidArgument(format!(
            "isolation '{}' is not full, partial or none",
            request.isolation
        ))
    })?;
    let missing =
        crate::domain::prefix_within(&request.isolation_missing, MAX_ISOLATION_NOTE_BYTES)
            .to_string();
    Ok(Some(TaskManagerResources {
        capacity: to_domain(capacity)?,
        isolation,
        isolation_missing: missing,
    }))
}

/// `job status`: what each shard asks.
pub fn fill_status(status: &mut JobStatus, state: &ClusterState, job_id: JobId) {
    if let Some(request) = state.requests.get(&job_id) {
        status.resources = Some(ResourceAmounts::from(&request.per_shard));
        status.isolation_full = request.isolation_full;
        status.timeout_ms = request.timeout_ms;
    }
}

/// `tm list`: isolation, capacity and use.
pub fn fill_taskmanager(info: &mut TaskManagerInfo, state: &ClusterState) {
    let declared = state.tm_resources.get(&info.id);
    info.isolation = state.isolation(&info.id).as_str().to_string();
    info.isolation_missing = declared
        .map(|d| d.isolation_missing.clone())
        .unwrap_or_default();
    info.capacity = declared.map(|d| ResourceAmounts::from(&d.capacity));
    info.used = Some(ResourceAmounts::from(
        &state.tm_used.get(&info.id).cloned().unwrap_or_default(),
    ));
}

/// `quota list`: a tenant's resource limits and what it holds.
pub fn fill_quota(info: &mut QuotaInfo, state: &ClusterState) {
    info.resource_limits = state
        .resource_quotas
        .get(&info.tenant)
        .map(ResourceAmounts::from);
    info.resources_used = state
        .tenant_resources
        .get(&info.tenant)
        .map(ResourceAmounts::from);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Labels, RunStats, TaskManager};

    fn with_taskmanager(capacity: Option<Resources>) -> ClusterState {
        let mut state = ClusterState::default();
        state.taskmanagers.insert(
            "tm".into(),
            TaskManager {
                id: "tm".into(),
                addr: "127.0.0.1:1".into(),
                slots: 4,
                used_slots: 0,
                labels: Labels::new(),
                state: TaskManagerState::Alive,
                registration_epoch: 1,
                incarnation: 1,
                registered_at_ms: 0,
                lost_at_ms: None,
                stats: RunStats::default(),
                recent_failures_ms: Vec::new(),
                excluded_until_ms: 0,
                drain_deadline_ms: None,
            },
        );
        if let Some(capacity) = capacity {
            state.tm_resources.insert(
                "tm".into(),
                TaskManagerResources {
                    capacity,
                    isolation: Isolation::Full,
                    isolation_missing: String::new(),
                },
            );
        }
        state
    }

    fn submit_request_test(
        request: &SubmitRequest,
        require_isolation: bool,
        state: &ClusterState,
    ) -> Result<ResourceRequest, ApiError> {
        submit_request(request, require_isolation, None, state)
    }

    fn asking(cpu_millis: u64, named: &[(&str, u64)]) -> SubmitRequest {
        SubmitRequest {
            resources: Some(ResourceAmounts {
                cpu_millis,
                memory_bytes: 0,
                named: named.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn what_no_taskmanager_has_is_refused_at_submit() {
        let state = with_taskmanager(Some(Resources {
            cpu_millis: 4000,
            memory_bytes: 1 << 30,
            named: [("gpu".to_string(), 2)].into(),
        }));
        assert!(submit_request_test(&asking(1000, &[("gpu", 1)]), false, &state).is_ok());
        match submit_request_test(&asking(0, &[("fpga", 1)]), false, &state) {
            Err(ApiError::FailedPrecondition(why)) => {
                assert!(
                    why.contains("needs fpga=1") && why.contains("no TaskManager has fpga"),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            submit_request_test(&asking(8000, &[]), false, &state),
            Err(ApiError::FailedPrecondition(_))
        ));
        // An agent from before resources: CPU and memory without limit, no devices.
        let old = with_taskmanager(None);
        assert!(submit_request_test(&asking(64_000, &[]), false, &old).is_ok());
        assert!(submit_request_test(&asking(0, &[("gpu", 1)]), false, &old).is_err());
        // No agent yet: CPU and memory wait, a device nobody declared is refused.
        let empty = ClusterState::default();
        assert!(submit_request_test(&asking(64_000, &[]), false, &empty).is_ok());
    }

    #[test]
    fn isolation_is_asked_or_required() {
        let state = ClusterState::default();
        let mut request = SubmitRequest::default();
        assert!(
            !submit_request_test(&request, false, &state)
                .expect("plain")
                .isolation_full
        );
        assert!(
            submit_request_test(&request, true, &state)
                .expect("required")
                .isolation_full
        );
        request.isolation = "full".into();
        assert!(
            submit_request_test(&request, false, &state)
                .expect("asked")
                .isolation_full
        );
        request.isolation = "partial".into();
        assert!(matches!(
            submit_request_test(&request, false, &state),
            Err(ApiError::InvalidArgument(_))
        ));
    }
}
