//! What the console may change: cancel a job, drain a TaskManager or let it take work again.
//! Each is the API's own call, made by this replica on the caller's behalf with the caller's
//! token (the page's `Authorization` header), so the same roles, tenants and rules decide as
//! for the CLI, and the call reaches the leader wherever the page was loaded. POST only,
//! with the header `x-dispatcher-console` (another site's page cannot send it without this
//! server's consent, which it never gives), and the token never leaves the header.

use super::access::HttpAccess;
use super::replica::ReplicaHttp;
use crate::client::{Client, ClientError, ClientOptions};
use crate::security::{tokens::parse_bearer, Credentials, Secret};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use openraft::async_runtime::watch::WatchReceiver;
use serde_json::json;
use std::time::Duration;
use tonic::Code;

/// The header a console request carries.
pub const CONSOLE_HEADER: &str = "x-dispatcher-console";

type Refusal = (StatusCode, String);

/// A client of the cluster that acts as the caller: this replica's transport (its own
/// certificate, when TLS is on) with the caller's token.
pub(super) fn client_for(replica: &ReplicaHttp, headers: &HeaderMap) -> Result<Client, Refusal> {
    if headers.get(CONSOLE_HEADER).is_none() {
        return Err((
            StatusCode::FORBIDDEN,
            format!("changes come from the console's own pages (header {CONSOLE_HEADER})\n"),
        ));
    }
    let token = match &replica.access {
        HttpAccess::Open => None,
        HttpAccess::Tokens(_) => {
            let secret = headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_bearer)
                .ok_or_else(|| {
                    (
                        StatusCode::UNAUTHORIZED,
                        "this needs a token in the header `Authorization: Bearer <secret>`\n"
                            .to_string(),
                    )
                })?;
            Some(Secret::parse(secret).map_err(|e| (StatusCode::UNAUTHORIZED, format!("{e}\n")))?)
        }
    };
    let metrics = replica.raft.metrics().borrow_watched().clone();
    let endpoints: Vec<String> = crate::rpc::cluster_members(&metrics)
        .into_iter()
        .map(|m| m.addr)
        .collect();
    let options = ClientOptions {
        rpc_timeout: Duration::from_secs(2),
        call_timeout: Duration::from_secs(10),
        source_ip: None,
        credentials: Credentials {
            transport: replica.transport.clone(),
            token,
        },
    };
    Client::with_options(endpoints, options)
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")))
}

/// The HTTP status of the API's answer, and its one line.
fn refused(error: ClientError) -> Response {
    let status = match error.code() {
        Some(Code::Unauthenticated) => StatusCode::UNAUTHORIZED,
        Some(Code::PermissionDenied) => StatusCode::FORBIDDEN,
        Some(Code::NotFound) => StatusCode::NOT_FOUND,
        Some(Code::InvalidArgument) => StatusCode::BAD_REQUEST,
        Some(Code::FailedPrecondition | Code::AlreadyExists) => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, format!("{error}\n")).into_response()
}

/// Run `change` with a client acting as the caller; its answer as JSON, or the refusal.
async fn act<T, F, Fut>(replica: &ReplicaHttp, headers: &HeaderMap, change: F) -> Response
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
    T: Into<serde_json::Value>,
{
    let client = match client_for(replica, headers) {
        Ok(client) => client,
        Err(refusal) => return refusal.into_response(),
    };
    match change(client).await {
        Ok(done) => Json(done.into()).into_response(),
        Err(e) => refused(e),
    }
}

pub async fn cancel_job(
    State(replica): State<ReplicaHttp>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    act(&replica, &headers, |client| async move {
        let reply = client.cancel_job(&id).await?;
        Ok(json!({
            "job_id": reply.job_id,
            "state": "cancelled",
            "shards_cancelled": reply.shards_cancelled,
        }))
    })
    .await
}

pub async fn drain_taskmanager(
    State(replica): State<ReplicaHttp>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    act(&replica, &headers, |client| async move {
        let reply = client.drain_taskmanager(&id, None).await?;
        Ok(json!({"id": reply.id, "state": "draining"}))
    })
    .await
}

pub async fn undrain_taskmanager(
    State(replica): State<ReplicaHttp>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    act(&replica, &headers, |client| async move {
        let reply = client.undrain_taskmanager(&id).await?;
        Ok(json!({"id": reply.id, "state": "alive"}))
    })
    .await
}
