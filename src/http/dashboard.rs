//! The dashboard: one static page compiled into the binary (no build step, nothing loaded
//! from the internet). It reads `/api/overview` once, then follows `/api/events` and reloads
//! the overview as events arrive, so it stays live without reloading the page.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("dashboard.html");

pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Only our own script and styles, and no framing by other sites.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 frame-ancestors 'none'",
            ),
        ],
        PAGE,
    )
}
