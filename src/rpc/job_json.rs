//! The JSON of a job's status, as `job status --output json` prints it and the console's
//! job page reads it (the contract's names), and of resource amounts, in one place.

use crate::pb::api::{JobStatus, ResourceAmounts};
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
                "preemptions": s.preemptions,
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
