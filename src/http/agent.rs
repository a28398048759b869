//! An agent's routes: `/metrics`, `/healthz`, and `/readyz` (200 while the agent is
//! registered and holds a lease from the leader, so it may run shards).

use super::line;
use crate::metrics::{AgentMetrics, CONTENT_TYPE};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

/// What the agent's HTTP side reads: its metrics, and whether it is ready (with why).
#[derive(Clone)]
pub struct AgentView {
    pub metrics: Arc<AgentMetrics>,
    pub ready: Arc<dyn Fn() -> Result<String, String> + Send + Sync>,
}

pub fn agent_routes(view: AgentView) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { line("ok") }))
        .route("/readyz", get(ready))
        .with_state(view)
}

async fn metrics(State(view): State<AgentView>) -> Response {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        view.metrics.encode(),
    )
        .into_response()
}

async fn ready(State(view): State<AgentView>) -> Response {
    match (view.ready)() {
        Ok(why) => (StatusCode::OK, line(why)).into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, line(why)).into_response(),
    }
}
