//! This process's own certificate and key, swappable while it runs: `serve` and
//! `taskmanager` reload them from their files on SIGHUP, so a certificate is rotated without
//! a restart. New handshakes (served or dialled) present the new pair at once; Raft channels
//! to peers are opened again (see `generation`), so peers see the new certificate within a
//! call or two, and the old one can then be revoked.
//!
//! The CA is not reloaded: a new CA is a new cluster's material.

use super::{Party, SecurityError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::ResolvesClientCert;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::SignatureScheme;

/// The pair in use, and how many times it was replaced.
#[derive(Debug)]
pub struct Identity {
    current: RwLock<Arc<CertifiedKey>>,
    generation: AtomicU64,
}

impl Identity {
    pub fn new(key: CertifiedKey) -> Self {
        Identity {
            current: RwLock::new(Arc::new(key)),
            generation: AtomicU64::new(0),
        }
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Use `key` from now on; it must name `party`, as the one it replaces did.
    pub fn replace(&self, key: CertifiedKey, party: &Party) -> Result<(), SecurityError> {
        let named = key
            .cert
            .first()
            .and_then(|cert| Party::from_certificate(cert.as_ref()));
        if named.as_ref() != Some(party) {
            return Err(SecurityError::Material(format!(
                "the new certificate names {}, not {party}; keeping the one in use",
                named.map_or_else(|| "no party".to_string(), |p| p.to_string())
            )));
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Changes each time the pair is replaced: connections opened before should be opened
    /// again.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The fingerprint of the certificate in use.
    pub fn fingerprint(&self) -> Option<[u8; 32]> {
        self.current()
            .cert
            .first()
            .map(|cert| crate::domain::fingerprint(cert.as_ref()))
    }
}

/// As a server: always the current pair.
#[derive(Debug)]
pub struct ServeCurrent(pub Arc<Identity>);

impl ResolvesServerCert for ServeCurrent {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

/// As a client: always the current pair.
#[derive(Debug)]
pub struct PresentCurrent(pub Arc<Identity>);

impl ResolvesClientCert for PresentCurrent {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A certified key from a chain and a key, checked to belong together.
pub fn certified(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, rustls::Error> {
    CertifiedKey::from_der(chain, key, provider)
}

/// Reload this process's certificate and key from their files on every SIGHUP (TLS only),
/// saying at `info` what is now in use, or at `warn` why the old pair stays.
pub fn reload_on_sighup(transport: &super::Transport) {
    let super::Transport::Tls(config) = transport else {
        return;
    };
    let config = config.clone();
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => signal,
        Err(e) => {
            tracing::warn!("cannot watch SIGHUP; certificates reload only on restart: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match config.reload() {
                Ok(()) => {
                    let fingerprint: String = config
                        .fingerprint()
                        .map(|f| f[..8].iter().map(|b| format!("{b:02x}")).collect())
                        .unwrap_or_default();
                    tracing::info!(
                        party = config.name(),
                        %fingerprint,
                        "SIGHUP: certificate reloaded; new connections present it"
                    );
                }
                Err(e) => tracing::warn!(
                    party = config.name(),
                    "SIGHUP: certificate not reloaded: {e}"
                ),
            }
        }
    });
}
