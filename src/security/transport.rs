//! Connections with or without TLS: the one place that dials a replica and the one place that
//! accepts connections. With TLS, the handshake (TLS 1.3, certificates from the cluster CA on
//! both sides) happens here, bounded in time and in how many run at once, before a byte of
//! gRPC is read; a plaintext peer or one without a certificate never reaches a service.

use super::{Secret, SecurityError, TlsConfig};
use futures::Stream;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_rustls::rustls::pki_types::ServerName;
use tonic::transport::{Channel, Endpoint};

/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Handshakes in progress at once, in all and from one address. A connection beyond either
/// is closed at once, so that silent connections from a few addresses cannot stall the
/// acceptor for everyone else.
const MAX_PENDING_HANDSHAKES: usize = 1024;
const MAX_PENDING_HANDSHAKES_PER_IP: usize = 16;

/// Handshakes in progress, by peer address.
#[derive(Default)]
struct Pending(std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>);

/// One admitted handshake; releases its place when dropped.
struct PendingSlot {
    pending: Arc<Pending>,
    ip: IpAddr,
}

impl Pending {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<PendingSlot> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = map.values().sum();
        let mine = map.entry(ip).or_insert(0);
        if total >= MAX_PENDING_HANDSHAKES || *mine >= MAX_PENDING_HANDSHAKES_PER_IP {
            return None;
        }
        *mine += 1;
        Some(PendingSlot {
            pending: self.clone(),
            ip,
        })
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut map = self.pending.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = map.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// How connections are made: plaintext (only with `--insecure`) or mutual TLS.
#[derive(Debug, Clone)]
pub enum Transport {
    Plain,
    Tls(TlsConfig),
}

/// What a client presents: a transport and, for client calls, a bearer token.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub transport: Transport,
    pub token: Option<Secret>,
}

impl Credentials {
    /// Plaintext, no token: only against replicas started with `--insecure`.
    pub fn insecure() -> Self {
        Credentials {
            transport: Transport::Plain,
            token: None,
        }
    }

    pub fn tls(config: TlsConfig, token: Option<Secret>) -> Self {
        Credentials {
            transport: Transport::Tls(config),
            token,
        }
    }

    /// The same transport with another token (or none).
    pub fn with_token(&self, token: Option<Secret>) -> Self {
        Credentials {
            transport: self.transport.clone(),
            token,
        }
    }
}

impl Transport {
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// Changes each time this process's certificate is replaced (`TlsConfig::reload`):
    /// channels opened before present the old one and should be opened again.
    pub fn generation(&self) -> u64 {
        match self {
            Transport::Plain => 0,
            Transport::Tls(config) => config.generation(),
        }
    }

    /// A channel to `addr` (host:port) that connects on first use, with `endpoint`'s
    /// timeouts and keep-alives, dialing from `source_ip` if given.
    pub fn channel(
        &self,
        addr: &str,
        endpoint: impl FnOnce(Endpoint) -> Endpoint,
        source_ip: Option<IpAddr>,
    ) -> Result<Channel, SecurityError> {
        let base = endpoint(plain_endpoint(addr)?);
        Ok(match self {
            Transport::Plain => base.local_address(source_ip).connect_lazy(),
            Transport::Tls(config) => {
                base.connect_with_connector_lazy(TlsConnector::new(config, addr, source_ip)?)
            }
        })
    }

    /// Like `channel`, but connects now and fails if the replica cannot be reached.
    pub async fn connect(
        &self,
        addr: &str,
        endpoint: impl FnOnce(Endpoint) -> Endpoint,
        source_ip: Option<IpAddr>,
    ) -> Result<Channel, SecurityError> {
        let base = endpoint(plain_endpoint(addr)?);
        let connected = match self {
            Transport::Plain => base.local_address(source_ip).connect().await,
            Transport::Tls(config) => {
                base.connect_with_connector(TlsConnector::new(config, addr, source_ip)?)
                    .await
            }
        };
        connected.map_err(|e| SecurityError::Connect {
            addr: addr.to_string(),
            reason: error_chain(&e),
        })
    }
}

/// An error with its sources, so a handshake refusal says why ("unknown issuer").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn plain_endpoint(addr: &str) -> Result<Endpoint, SecurityError> {
    Endpoint::from_shared(format!("http://{addr}")).map_err(|e| SecurityError::Connect {
        addr: addr.to_string(),
        reason: format!("not a host:port address ({e})"),
    })
}

/// Split `host:port` (IPv6 in brackets) into the name TLS checks and the dial target.
fn server_name(addr: &str) -> Result<ServerName<'static>, SecurityError> {
    let host = addr
        .rsplit_once(':')
        .map(|(host, _)| host)
        .unwrap_or(addr)
        .trim_start_matches('[')
        .trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| SecurityError::Connect {
        addr: addr.to_string(),
        reason: format!("'{host}' cannot be checked against a certificate ({e})"),
    })
}

/// Dials TCP (from `source_ip` if set) and runs the client side of the handshake. The
/// server's certificate must come from the cluster CA and name the host dialed.
#[derive(Clone)]
struct TlsConnector {
    connector: tokio_rustls::TlsConnector,
    addr: String,
    server_name: ServerName<'static>,
    source_ip: Option<IpAddr>,
}

impl TlsConnector {
    fn new(
        config: &TlsConfig,
        addr: &str,
        source_ip: Option<IpAddr>,
    ) -> Result<Self, SecurityError> {
        Ok(TlsConnector {
            connector: tokio_rustls::TlsConnector::from(config.client()),
            addr: addr.to_string(),
            server_name: server_name(addr)?,
            source_ip,
        })
    }
}

type TlsClientIo = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower::Service<tonic::codegen::http::Uri> for TlsConnector {
    type Response = TlsClientIo;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<TlsClientIo, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: tonic::codegen::http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = dial(&this.addr, this.source_ip).await?;
            let tls = this.connector.connect(this.server_name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

async fn dial(addr: &str, source_ip: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let mut last = None;
    for target in tokio::net::lookup_host(addr).await? {
        let attempt = async {
            let socket = if target.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            if let Some(ip) = source_ip.filter(|ip| ip.is_ipv4() == target.is_ipv4()) {
                socket.bind(SocketAddr::new(ip, 0))?;
            }
            let stream = socket.connect(target).await?;
            stream.set_nodelay(true)?;
            Ok::<_, std::io::Error>(stream)
        };
        match attempt.await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other(format!("{addr} resolves to no address"))))
}

/// Accepted connections after a completed server-side handshake, for
/// `Router::serve_with_incoming_shutdown`. Ends when the server drops it.
pub fn tls_incoming(
    listener: TcpListener,
    config: &TlsConfig,
) -> impl Stream<Item = Result<tokio_rustls::server::TlsStream<TcpStream>, std::io::Error>> {
    tls_incoming_with(listener, config.server())
}

/// Like `tls_incoming`, with any server configuration (the HTTP side's).
pub fn tls_incoming_with(
    listener: TcpListener,
    server: Arc<tokio_rustls::rustls::ServerConfig>,
) -> impl Stream<Item = Result<tokio_rustls::server::TlsStream<TcpStream>, std::io::Error>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let pending = Arc::new(Pending::default());
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(slot) = pending.admit(peer.ip()) else {
                tracing::debug!(%peer, "too many TLS handshakes in progress; connection closed");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        drop(slot);
                        let _ = tx.send(stream).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake refused: {e}"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|stream| (Ok(stream), rx))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_handshakes_are_bounded_per_address() {
        let pending = Arc::new(Pending::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let held: Vec<PendingSlot> = (0..MAX_PENDING_HANDSHAKES_PER_IP)
            .map(|_| pending.admit(a).expect("under the cap"))
            .collect();
        assert!(pending.admit(a).is_none(), "one address cannot take more");
        let other = pending.admit(b).expect("another address still gets in");
        drop(held);
        drop(other);
        assert!(
            pending.admit(a).is_some(),
            "places come back when handshakes end"
        );
        assert!(pending.0.lock().unwrap().len() <= 1);
    }

    #[test]
    fn server_names_come_from_the_host_part() {
        assert!(matches!(
            server_name("127.0.0.1:7000").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]:7000").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("replica-1.example:7000").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(server_name("bad host:1").is_err());
    }
}
