//! The tenants page's data, `/api/tenants`: each tenant's quota, weight and highest
//! priority, the slots and resources it holds, the shards it has waiting, and how many of
//! its shards were preempted (of the jobs the cluster still holds). A tenant's token sees
//! its own tenant only, as `quota list` answers it.

use super::replica::ReplicaHttp;
use crate::rpc::visibility::Scope;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub async fn tenants(State(replica): State<ReplicaHttp>, headers: HeaderMap) -> Response {
    let caller = match replica.access.check_read(&headers) {
        Ok(caller) => caller,
        Err(refusal) => return refusal.into_response(),
    };
    let applied = replica.shared.read();
    let state = &applied.state;
    let scope = Scope::of(&caller, state);
    let mut preempted: BTreeMap<&str, u64> = BTreeMap::new();
    for ((job_id, _), times) in &state.preemptions {
        *preempted.entry(state.tenant(*job_id)).or_default() += u64::from(*times);
    }
    let tenants: Vec<Value> = crate::rpc::tenant_quotas(state)
        .iter()
        .filter(|q| scope.sees_tenant(&q.tenant))
        .map(|q| {
            let mut shown = crate::rpc::quota_json(q);
            shown["preemptions"] = json!(preempted.get(q.tenant.as_str()).copied().unwrap_or(0));
            shown
        })
        .collect();
    Json(json!({
        "tenants": tenants,
        "applied_index": applied.last_applied.map(|l| l.index()).unwrap_or(0),
    }))
    .into_response()
}
