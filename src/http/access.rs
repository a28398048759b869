//! Who may read what over HTTP.
//!
//! - `/healthz`, `/readyz` and `/metrics` are open: probes and scrapers rarely carry
//!   credentials, and they reveal counts and indexes, never a command, a name of a job or a
//!   secret. With TLS on they are served over HTTPS, so they cannot be read or forged on the
//!   way.
//! - The dashboard's page is open (it is static); the data it shows (`/api/...`: jobs with
//!   their names, TaskManagers, events) needs a token of any role when the cluster has
//!   tokens (TLS on), in the `Authorization: Bearer <secret>` header and nowhere else: a
//!   secret in a URL ends up in the logs of every proxy and server on the way (the page reads
//!   the event stream with `fetch`, which sends headers). Under `--insecure` everything is
//!   open.

use crate::domain::Permission;
use crate::raft::SharedState;
use crate::rpc::{access::token_holder, ApiError, Caller};
use crate::security::tokens::parse_bearer;
use axum::http::{HeaderMap, StatusCode};
use std::sync::Arc;

/// How this process's HTTP side checks readers of the dashboard's data.
#[derive(Clone)]
pub enum HttpAccess {
    /// `--insecure`: no tokens.
    Open,
    /// Tokens from this replica's applied state.
    Tokens(Arc<SharedState>),
}

/// A refusal: the status and one line that says what to do.
pub type Refusal = (StatusCode, String);

impl HttpAccess {
    /// Who a request with these headers is, if it may read the cluster's data (what it
    /// may see of the jobs follows from that: `rpc::visibility`).
    pub fn check_read(&self, headers: &HeaderMap) -> Result<Caller, Refusal> {
        let HttpAccess::Tokens(shared) = self else {
            return Ok(Caller::Anyone);
        };
        let from_header = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_bearer);
        let Some(secret) = from_header else {
            return Err((
                StatusCode::UNAUTHORIZED,
                "this needs a token of any role in the header `Authorization: Bearer <secret>` \
                 (not in the URL); an admin makes one with `dispatcher token create`\n"
                    .into(),
            ));
        };
        let applied = shared.read();
        token_holder(&applied.state, secret, Permission::Read)
            .map_err(|e| (status_of(&e), format!("{e}\n")))
    }
}

fn status_of(error: &ApiError) -> StatusCode {
    match error {
        ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        ApiError::PermissionDenied(_) => StatusCode::FORBIDDEN,
        ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
