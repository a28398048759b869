//! The TaskManager page's data, `/api/taskmanagers/{id}`: the agent as `tm list` shows it
//! (capacity and use per resource, isolation, labels, runs and failures, exclusion, drain)
//! and the shards it holds. A tenant's token sees its own jobs' shards there and only a
//! count of the others'.

use super::replica::ReplicaHttp;
use crate::rpc::visibility::Scope;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

pub async fn taskmanager(
    State(replica): State<ReplicaHttp>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let caller = match replica.access.check_read(&headers) {
        Ok(caller) => caller,
        Err(refusal) => return refusal.into_response(),
    };
    let applied = replica.shared.read();
    let state = &applied.state;
    let Some(tm) = state.taskmanagers.get(&id) else {
        return (
            StatusCode::NOT_FOUND,
            format!("TaskManager '{id}' is not known to this replica\n"),
        )
            .into_response();
    };
    let scope = Scope::of(&caller, state);
    let info = crate::rpc::taskmanager_status(state, tm, scope == Scope::All);
    let mut shards: Vec<Value> = Vec::new();
    let mut others = 0;
    for (job_id, index) in state
        .shards_by_taskmanager
        .get(&id)
        .into_iter()
        .flat_map(|s| s.iter())
    {
        let Some(job) = state.job(*job_id) else {
            continue;
        };
        if !scope.sees(state, *job_id) {
            others += 1;
            continue;
        }
        let Some(shard) = job.shards.get(*index as usize) else {
            continue;
        };
        shards.push(json!({
            "job_id": job_id.to_string(),
            "name": job.name,
            "tenant": state.tenant(*job_id),
            "shard": index,
            "state": shard.state.as_str(),
            "attempt": shard.attempt,
            "epoch": shard.epoch,
        }));
    }
    Json(json!({
        "taskmanager": crate::rpc::taskmanager_json(&info),
        "shards": shards,
        "other_tenants_shards": others,
        "applied_index": applied.last_applied.map(|l| l.index()).unwrap_or(0),
    }))
    .into_response()
}
