//! A replica's routes: `/metrics`, `/healthz`, `/readyz`, and the console (`/`,
//! `/jobs/<id>`, `/taskmanagers/<id>` and `/tenants` with their scripts; their data under
//! `/api/overview`, `/api/jobs/<id>`, `/api/taskmanagers/<id>`, `/api/tenants`,
//! `/api/events` and `/api/history`; the changes the console may make are POSTs under
//! `/api/jobs/<id>/cancel` and `/api/taskmanagers/<id>/drain|undrain`).

use super::access::HttpAccess;
use super::job_filter::JobFilter;
use super::readiness::Readiness;
use super::recent::Recent;
use super::{actions, console, jobs, line, output_follow, sse, taskmanagers, tenants};
use crate::domain::{ClusterState, ShardState};
use crate::metrics::history::HistoryRing;
use crate::metrics::{Metrics, RaftView};
use crate::raft::{Raft, SharedState};
use crate::rpc::stream_right::{Guard, StreamRight, Touch};
use crate::rpc::visibility::Scope;
use crate::security::Transport;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::ServerState;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Jobs the overview lists (the newest).
const OVERVIEW_JOBS: usize = 100;
/// Shards of a job listed one by one in the overview; larger jobs show counts only.
const OVERVIEW_SHARDS: usize = 256;

/// What the replica's HTTP side reads.
#[derive(Clone)]
pub struct ReplicaHttp {
    pub raft: Raft,
    pub shared: Arc<SharedState>,
    pub access: HttpAccess,
    pub readiness: Arc<Readiness>,
    /// The last scrape's text, reused for a moment: a scrape counts every job.
    pub scrape: Arc<Recent<String>>,
    /// This replica's touch with the cluster: the dashboard's event stream ends without it.
    pub touch: Option<Touch>,
    /// The last hours of the headline figures, for the charts.
    pub history: Arc<HistoryRing>,
    /// How this replica dials the cluster: the console's changes go through the API with it.
    pub transport: Transport,
}

impl ReplicaHttp {
    pub fn new(
        raft: Raft,
        shared: Arc<SharedState>,
        transport: Transport,
        access: HttpAccess,
        touch: Option<Touch>,
        history: Arc<HistoryRing>,
    ) -> Self {
        ReplicaHttp {
            raft,
            shared,
            access,
            readiness: Arc::new(Readiness::new(transport.clone())),
            transport,
            scrape: Arc::new(Recent::new(SCRAPE_FRESH_FOR)),
            touch,
            history,
        }
    }
}

/// How long a scrape's text is reused.
const SCRAPE_FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(1);

pub fn replica_routes(replica: ReplicaHttp) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { line("ok") }))
        .route("/readyz", get(ready))
        .route("/", get(console::dashboard))
        .route("/jobs/{id}", get(console::job))
        .route("/taskmanagers/{id}", get(console::taskmanager))
        .route("/tenants", get(console::tenants))
        .route("/console.js", get(console::console_js))
        .route("/console.css", get(console::console_css))
        .route("/dashboard.js", get(console::dashboard_js))
        .route("/job.js", get(console::job_js))
        .route("/taskmanager.js", get(console::taskmanager_js))
        .route("/tenants.js", get(console::tenants_js))
        .route("/api/overview", get(overview))
        .route("/api/jobs/{id}", get(jobs::job))
        .route("/api/taskmanagers/{id}", get(taskmanagers::taskmanager))
        .route("/api/tenants", get(tenants::tenants))
        .route("/api/jobs/{id}/cancel", post(actions::cancel_job))
        .route(
            "/api/jobs/{id}/shards/{shard}/follow",
            get(output_follow::follow),
        )
        .route(
            "/api/taskmanagers/{id}/drain",
            post(actions::drain_taskmanager),
        )
        .route(
            "/api/taskmanagers/{id}/undrain",
            post(actions::undrain_taskmanager),
        )
        .route("/api/events", get(events))
        .route("/api/history", get(history))
        .with_state(replica)
}

fn raft_view(raft: &Raft) -> RaftView {
    let metrics = raft.metrics();
    let m = metrics.borrow_watched();
    RaftView {
        term: m.current_term,
        commit_index: m.local_committed.map(|l| l.index()).unwrap_or(0),
        applied_index: m.last_applied.map(|l| l.index()).unwrap_or(0),
        last_log_index: m.last_log_index.unwrap_or(0),
        is_leader: m.state == ServerState::Leader,
        leader_id: m.current_leader,
    }
}

async fn metrics(State(replica): State<ReplicaHttp>) -> Response {
    let text = replica
        .scrape
        .get_or(|| async {
            let metrics: &Metrics = replica.shared.metrics();
            {
                let applied = replica.shared.read();
                metrics.refresh(raft_view(&replica.raft), &applied.state);
            }
            metrics.encode()
        })
        .await;
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

async fn ready(State(replica): State<ReplicaHttp>) -> Response {
    match replica
        .readiness
        .check(&replica.raft, &replica.shared)
        .await
    {
        Ok(why) => (StatusCode::OK, line(why)).into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, line(why)).into_response(),
    }
}

async fn overview(
    State(replica): State<ReplicaHttp>,
    headers: HeaderMap,
    Query(filter): Query<JobFilter>,
) -> Response {
    let caller = match replica.access.check_read(&headers) {
        Ok(caller) => caller,
        Err(refusal) => return refusal.into_response(),
    };
    let raft_metrics = replica.raft.metrics().borrow_watched().clone();
    let members: Vec<Value> = crate::rpc::cluster_members(&raft_metrics)
        .into_iter()
        .map(|m| json!({"id": m.id, "addr": m.addr, "role": m.role}))
        .collect();
    let applied = replica.shared.read();
    let applied_index = applied.last_applied.map(|l| l.index()).unwrap_or(0);
    let scope = Scope::of(&caller, &applied.state);
    let state = &applied.state;
    let shown =
        |job: &&Arc<crate::domain::Job>| scope.sees(state, job.id) && filter.matches(state, job);
    // Without a filter an operator sees every job: no need to count them one by one.
    let jobs_total = if filter.is_empty() && scope == Scope::All {
        state.jobs.len()
    } else {
        state.jobs.values().filter(shown).count()
    };
    Json(json!({
        "node_id": raft_metrics.id,
        "term": raft_metrics.current_term,
        "leader_id": raft_metrics.current_leader,
        "commit_index": raft_metrics.local_committed.map(|l| l.index()).unwrap_or(0),
        "applied_index": applied_index,
        "members": members,
        "taskmanagers": taskmanagers_json(&applied.state),
        "jobs": jobs_json(state, state.jobs.values().rev().filter(shown)),
        "jobs_total": jobs_total,
    }))
    .into_response()
}

/// The charts' points: this replica's figures over the last hours (no job in them, so any
/// caller that may read may see them).
async fn history(State(replica): State<ReplicaHttp>, headers: HeaderMap) -> Response {
    if let Err(refusal) = replica.access.check_read(&headers) {
        return refusal.into_response();
    }
    Json(json!({
        "sample_secs": replica.history.every.as_secs(),
        "points": replica.history.points(),
    }))
    .into_response()
}

fn taskmanagers_json(state: &ClusterState) -> Vec<Value> {
    state
        .taskmanagers
        .values()
        .map(|tm| {
            json!({
                "id": tm.id,
                "addr": tm.addr,
                "state": tm.state.as_str(),
                "slots": tm.slots,
                "used_slots": tm.used_slots,
                "isolation": state.isolation(&tm.id).as_str(),
            })
        })
        .collect()
}

/// The newest `OVERVIEW_JOBS` of `jobs` (newest first).
fn jobs_json<'a>(
    state: &ClusterState,
    jobs: impl Iterator<Item = &'a Arc<crate::domain::Job>>,
) -> Vec<Value> {
    jobs.take(OVERVIEW_JOBS)
        .map(|job| {
            let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
            for shard in &job.shards {
                *counts.entry(shard.state.as_str()).or_default() += 1;
            }
            let shards: Option<Vec<&str>> = (job.shards.len() <= OVERVIEW_SHARDS).then(|| {
                job.shards
                    .iter()
                    .map(|s: &crate::domain::Shard| ShardState::as_str(s.state))
                    .collect()
            });
            json!({
                "id": job.id.to_string(),
                "name": job.name,
                "state": job.state.as_str(),
                "tenant": state.tenant(job.id),
                "priority": state.priority(job.id),
                "schedule": state.cron.origins.get(&job.id).map(|o| &o.name),
                "shard_count": job.shards.len(),
                "shard_states": counts,
                "shards": shards,
            })
        })
        .collect()
}

#[derive(Deserialize)]
struct EventsQuery {
    from_index: Option<u64>,
}

async fn events(
    State(replica): State<ReplicaHttp>,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Response {
    let caller = match replica.access.check_read(&headers) {
        Ok(caller) => caller,
        Err(refusal) => return refusal.into_response(),
    };
    let scope = Scope::of(&caller, &replica.shared.read().state);
    let from = sse::resume_point(&headers, query.from_index);
    let guard = Guard {
        shared: replica.shared.clone(),
        right: StreamRight::of(&caller),
        touch: replica.touch.clone(),
    };
    sse::events(replica.shared.clone(), from, scope, guard).into_response()
}
