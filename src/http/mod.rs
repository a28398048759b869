//! The HTTP side of a replica or an agent (`--http-listen`): Prometheus metrics, liveness
//! and readiness for load balancers and orchestrators, and on replicas the live dashboard.
//! Plain HTTP under `--insecure`; HTTPS with the process's own certificate when TLS is on
//! (a client certificate is not required: see `access` for what each route asks instead).
//!
//! This module serves what the rest of the process already knows and never blocks the gRPC
//! side. It never writes to the log itself: the console's changes are the API's calls,
//! made with the caller's own token (`actions`). Connections are bounded per client address and in all
//! (`connections`), and in how long a handshake and a request's headers may take; answers
//! that cost something are reused for a moment (`recent`).

pub mod access;
mod actions;
mod agent;
mod connections;
mod console;
mod job_filter;
mod jobs;
mod output_follow;
mod readiness;
mod recent;
mod replica;
mod sse;
mod taskmanagers;
mod tenants;

pub use agent::{agent_routes, AgentView};
pub use replica::{replica_routes, ReplicaHttp};

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;

/// A client that has not sent its request headers in this long is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A TLS handshake that takes longer is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Bind the HTTP port now, so a taken port fails the process at start.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Listen { addr, source })
}

/// Serve `app` on `listener` (HTTPS with `tls`) until `shutdown` resolves; open
/// connections, event streams included, are closed then.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let connections = Arc::new(connections::Connections::default());
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let accept_loop = async {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!("HTTP accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Over a limit: closed at once, so the loop goes on taking others' connections.
            let permit = match connections.admit(peer.ip()) {
                Ok(permit) => permit,
                Err(why) => {
                    tracing::debug!(%peer, "HTTP connection refused: {why}");
                    drop(tcp);
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let app = app.clone();
            let acceptor = acceptor.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let served = async {
                    match acceptor {
                        None => serve_connection(tcp, app).await,
                        Some(acceptor) => {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                                .await
                            {
                                Ok(Ok(stream)) => serve_connection(stream, app).await,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, "HTTPS handshake refused: {e}")
                                }
                                Err(_) => tracing::debug!(%peer, "HTTPS handshake timed out"),
                            }
                        }
                    }
                };
                tokio::select! {
                    _ = served => {}
                    _ = stop.wait_for(|stopped| *stopped) => {}
                }
            });
        }
    };
    tokio::select! {
        _ = accept_loop => {}
        _ = shutdown => {}
    }
    let _ = stop_tx.send(true);
}

async fn serve_connection<S>(stream: S, app: axum::Router)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(app);
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = result {
        tracing::debug!("HTTP connection ended: {e}");
    }
}

/// A plain-text response body of one line.
fn line(text: impl Into<String>) -> String {
    let mut text = text.into();
    text.push('\n');
    text
}
