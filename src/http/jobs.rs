//! The job page's data, `/api/jobs/{id}`: the job as `job status --output json` shows it,
//! and what each shard printed as far as this replica's state keeps it (the tail of each
//! stream, after the run ended). Any replica answers from what it applied; a job another
//! tenant's token may not see is `404`, as if it did not exist, and its environment's
//! values are hidden from callers below operator who did not submit it, as on the API.

use super::replica::ReplicaHttp;
use crate::domain::JobId;
use crate::rpc::visibility::Scope;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// Shards whose kept output one answer carries (the first ones).
const OUTPUT_SHARDS: usize = 64;

pub async fn job(
    State(replica): State<ReplicaHttp>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let caller = match replica.access.check_read(&headers) {
        Ok(caller) => caller,
        Err(refusal) => return refusal.into_response(),
    };
    let Ok(job_id) = id.parse::<JobId>() else {
        return (
            StatusCode::NOT_FOUND,
            format!("'{id}' is not a job id (they look like j-42)\n"),
        )
            .into_response();
    };
    let applied = replica.shared.read();
    let state = &applied.state;
    let Ok(job) = Scope::of(&caller, state).job(state, job_id) else {
        return (
            StatusCode::NOT_FOUND,
            format!("job {job_id} not found on this replica\n"),
        )
            .into_response();
    };
    let applied_index = applied.last_applied.map(|l| l.index()).unwrap_or(0);
    let viewer = caller.cancels_only_own(None);
    let status = crate::rpc::job_status_for(state, job, applied_index, viewer.as_deref());
    let outputs: Vec<Value> = (0..job.spec.shard_count)
        .take(OUTPUT_SHARDS)
        .filter_map(|shard| {
            let kept = state.outputs.get(job_id, shard)?;
            let printed = &kept.printed;
            Some(json!({
                "shard": shard,
                "epoch": kept.epoch,
                "stdout": String::from_utf8_lossy(&printed.stdout),
                "stderr": String::from_utf8_lossy(&printed.stderr),
                "stdout_cut": printed.stdout_cut,
                "stderr_cut": printed.stderr_cut,
            }))
        })
        .collect();
    Json(json!({
        "job": crate::rpc::job_status_json(&status),
        "applied_index": applied_index,
        "ended_at_ms": job.ended_at_ms,
        "outputs": outputs,
    }))
    .into_response()
}
