//! The console: static pages and scripts compiled into the binary (no build step, nothing
//! loaded from the internet). The overview (`/`), a job's page (`/jobs/<id>`), a
//! TaskManager's (`/taskmanagers/<id>`) and the tenants' (`/tenants`), each a link that
//! works when shared, read the replica's `/api/...` data and follow `/api/events`, so they
//! stay live without a reload. The pages themselves are open; the data needs what `access`
//! says.

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

const DASHBOARD: &str = include_str!("console/dashboard.html");
const JOB: &str = include_str!("console/job.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");
const DASHBOARD_JS: &str = include_str!("console/dashboard.js");
const JOB_JS: &str = include_str!("console/job.js");
const TASKMANAGER: &str = include_str!("console/taskmanager.html");
const TASKMANAGER_JS: &str = include_str!("console/taskmanager.js");
const TENANTS: &str = include_str!("console/tenants.html");
const TENANTS_JS: &str = include_str!("console/tenants.js");

/// Only our own scripts and styles (nothing inline), and no framing by other sites.
const POLICY: &str = "default-src 'self'; frame-ancestors 'none'";

fn served(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    response
}

pub async fn dashboard() -> Response {
    served("text/html; charset=utf-8", DASHBOARD)
}

/// The job page; the id is read by its script from the URL (an unknown one says so there).
pub async fn job(Path(_id): Path<String>) -> Response {
    served("text/html; charset=utf-8", JOB)
}

/// A TaskManager's page; the id is read by its script from the URL.
pub async fn taskmanager(Path(_id): Path<String>) -> Response {
    served("text/html; charset=utf-8", TASKMANAGER)
}

pub async fn tenants() -> Response {
    served("text/html; charset=utf-8", TENANTS)
}

pub async fn taskmanager_js() -> Response {
    served("text/javascript; charset=utf-8", TASKMANAGER_JS)
}

pub async fn tenants_js() -> Response {
    served("text/javascript; charset=utf-8", TENANTS_JS)
}

pub async fn console_css() -> Response {
    served("text/css; charset=utf-8", CONSOLE_CSS)
}

pub async fn console_js() -> Response {
    served("text/javascript; charset=utf-8", CONSOLE_JS)
}

pub async fn dashboard_js() -> Response {
    served("text/javascript; charset=utf-8", DASHBOARD_JS)
}

pub async fn job_js() -> Response {
    served("text/javascript; charset=utf-8", JOB_JS)
}
