//! The JSON of a job's status, a TaskManager and a tenant's quota, as `job status`,
//! `tm list` and `quota list` print them with `--output json` and the console's pages read
//! them (the contract's names), and of resource amounts, in one place.

use crate::pb::api::{JobStatus, QuotaInfo, ResourceAmounts, TaskManagerInfo};
use serde_json::{json, Map, Value};

/// A job's status as JSON.
pub fn job_status_json(job: &JobStatus) -> Value {
    let shards: Vec<Value> = job
        .shards
        .iter()
        .map(|s| {
            json!({
                "index": s.index, "state": s.state, "taskmanager": s.taskmanager,
                "attempt": s.attempt, "epoch": s.epoch, "exit_code": s.exit_code,
                "failures": s.failures, "error": s.error, "not_before_ms": s.not_before_ms,
                "preemptions": s.preemptions, "started_at_ms": s.started_at_ms,
            })
        })
        .collect();
    json!({
        "job_id": job.job_id,
        "name": job.name,
        "state": job.state,
        "priority": job.priority,
        "after": job.after,
        "tenant": job.tenant,
        "gang": job.gang,
        "reason": (!job.reason.is_empty()).then_some(&job.reason),
        "resources": job.resources.as_ref().map(|r| resources_json(Some(r), None)),
        "isolation": job.isolation_full.then_some("full"),
        "timeout_ms": job.timeout_ms,
        "schedule": job.schedule,
        "scheduled_ms": job.scheduled_ms,
        "reservation": job.reservation.as_ref().map(|r| json!({
            "taskmanagers": r.taskmanagers,
            "expected_start_ms": r.expected_start_ms,
        })),
        "created_at_ms": job.created_at_ms,
        "shards": shards,
    })
}

/// A TaskManager as JSON.
pub fn taskmanager_json(t: &TaskManagerInfo) -> Value {
    json!({
        "id": t.id, "addr": t.addr, "state": t.state, "slots": t.slots,
        "used_slots": t.used_slots, "labels": t.labels,
        "registration_epoch": t.registration_epoch,
        "incarnation": t.incarnation,
        "shard_runs": t.shard_runs, "shard_failures": t.shard_failures,
        "excluded_until_ms": t.excluded_until_ms,
        "drain_deadline_ms": t.drain_deadline_ms,
        "pinned_labels": t.pinned_labels, "pinned_slots": t.pinned_slots,
        "pinned_resources": pinned_resources_json(t),
        "isolation": t.isolation,
        "isolation_missing": (!t.isolation_missing.is_empty()).then_some(&t.isolation_missing),
        "capacity": resources_json(t.capacity.as_ref(), Some(t.slots)),
        "used": resources_json(t.used.as_ref(), Some(t.used_slots)),
    })
}

/// What a resource pin bounds, as `resources_json` lays an amount out (null: no pin).
fn pinned_resources_json(t: &TaskManagerInfo) -> Value {
    if t.pinned_cpu_millis.is_none()
        && t.pinned_memory_bytes.is_none()
        && t.pinned_resources.is_empty()
    {
        return Value::Null;
    }
    let pinned = ResourceAmounts {
        cpu_millis: t.pinned_cpu_millis.unwrap_or(0),
        memory_bytes: t.pinned_memory_bytes.unwrap_or(0),
        named: t.pinned_resources.clone(),
    };
    resources_json(Some(&pinned), None)
}

/// A tenant's quota and load as JSON.
pub fn quota_json(q: &QuotaInfo) -> Value {
    json!({
        "tenant": q.tenant, "slots": q.slots, "weight": q.weight,
        "max_priority": q.max_priority,
        "running_slots": q.running_slots, "pending_shards": q.pending_shards,
        "resource_limits": resources_json(q.resource_limits.as_ref(), None),
        "resources_used": resources_json(q.resources_used.as_ref(), None),
    })
}

/// The JSON map of an amount (`{"cpu": 1.5, "memory": 536870912, "slots": 4, "gpu": 2}`,
/// CPU in cores, memory in bytes), with `slots` when given. CPU and memory appear when set.
pub fn resources_json(amounts: Option<&ResourceAmounts>, slots: Option<u32>) -> Value {
    let mut map = Map::new();
    if let Some(a) = amounts {
        if a.cpu_millis > 0 {
            map.insert("cpu".into(), json!(a.cpu_millis as f64 / 1000.0));
        }
        if a.memory_bytes > 0 {
            map.insert("memory".into(), json!(a.memory_bytes));
        }
        let mut named: Vec<(&String, &u64)> = a.named.iter().collect();
        named.sort();
        for (name, count) in named {
            map.insert(name.clone(), json!(count));
        }
    }
    if let Some(slots) = slots {
        map.insert("slots".into(), json!(slots));
    }
    Value::Object(map)
}
