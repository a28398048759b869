//! Mutual TLS material: the cluster CA and this party's certificate and key, loaded from a
//! `certs init` directory and turned into rustls configurations that offer TLS 1.3 only and
//! require a certificate from the cluster CA on both sides.
//!
//! This module reads files and builds configurations; it opens no connection (that is
//! `transport`) and decides nothing about who may do what (that is `rpc::access`).

use super::identity::{certified, Identity, PresentCurrent, ServeCurrent};
use super::server_party::ReplicasOnly;
use super::{Party, SecurityError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// ALPN for gRPC over HTTP/2.
const ALPN_H2: &[u8] = b"h2";

/// Where a party's certificate lives: `<dir>/ca.pem`, `<dir>/<name>.pem`, `<dir>/<name>-key.pem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub dir: PathBuf,
    pub name: String,
}

impl TlsFiles {
    pub fn new(dir: impl Into<PathBuf>, name: impl Into<String>) -> Self {
        TlsFiles {
            dir: dir.into(),
            name: name.into(),
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join(format!("{}.pem", self.name))
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join(format!("{}-key.pem", self.name))
    }
}

/// Both rustls configurations of one party: it serves with its certificate and dials with it.
#[derive(Clone)]
pub struct TlsConfig {
    name: String,
    /// Where the pair was read from, to read it again (`reload`).
    files: TlsFiles,
    /// The pair in use, shared by the three configurations.
    identity: Arc<Identity>,
    /// The party this certificate names.
    party: Option<Party>,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    https: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn unreadable(path: &Path, what: &str, reason: impl std::fmt::Display) -> SecurityError {
    SecurityError::Material(format!(
        "{} ({what}): {reason}; make the cluster's certificates with `dispatcher certs init`",
        path.display()
    ))
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(path, what, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable(path, what, e))?;
    if certs.is_empty() {
        return Err(unreadable(path, what, "no certificate in it"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, SecurityError> {
    refuse_exposed_key(path)?;
    PrivateKeyDer::from_pem_file(path).map_err(|e| unreadable(path, "private key", e))
}

/// A private key other users may read is refused, as ssh refuses one: whoever else can read
/// it can be this party. Group read is allowed (a key mounted for a service's group), group
/// write and any access by others are not.
fn refuse_exposed_key(path: &Path) -> Result<(), SecurityError> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(metadata) = std::fs::metadata(path) else {
        // Missing or unreadable: reading it says which.
        return Ok(());
    };
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o027 != 0 {
        return Err(SecurityError::Material(format!(
            "{} (private key) may be read or changed by other users (mode {mode:04o}); a key \
             anyone else can read is refused: run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(e: impl std::fmt::Display) -> SecurityError {
    SecurityError::Material(format!("TLS configuration: {e}"))
}

impl TlsConfig {
    /// Load the CA and the party's pair; refuses a key that does not match the certificate.
    pub fn load(files: &TlsFiles) -> Result<Self, SecurityError> {
        let ca = read_certs(&files.ca(), "cluster CA")?;
        let chain = read_certs(&files.cert(), "certificate")?;
        let key = read_key(&files.key())?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in ca {
            roots
                .add(cert)
                .map_err(|e| unreadable(&files.ca(), "cluster CA", e))?;
        }
        let roots = Arc::new(roots);
        let party = chain
            .first()
            .and_then(|cert| Party::from_certificate(cert.as_ref()));
        let pair = certified(chain, key, &provider())
            .map_err(|e| unreadable(&files.key(), "private key", e))?;
        let identity = Arc::new(Identity::new(pair));

        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .map_err(config_error)?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_error)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(ServeCurrent(identity.clone())));
        server.alpn_protocols = vec![ALPN_H2.to_vec()];

        // The HTTP side (metrics, health, dashboard): the same certificate, but a client
        // certificate is optional, since browsers and scrapers rarely carry one; what the
        // HTTP side reveals is decided by its routes, not by the handshake.
        let optional =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .allow_unauthenticated()
                .build()
                .map_err(config_error)?;
        let mut https = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_error)?
            .with_client_cert_verifier(optional)
            .with_cert_resolver(Arc::new(ServeCurrent(identity.clone())));
        https.alpn_protocols = vec![b"http/1.1".to_vec()];

        // Dialling is always to a replica: the server must prove it is one.
        let server_verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(config_error)?;
        let mut client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_error)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ReplicasOnly::new(server_verifier)))
            .with_client_cert_resolver(Arc::new(PresentCurrent(identity.clone())));
        client.alpn_protocols = vec![ALPN_H2.to_vec()];
        // No session resumption: a resumed session carries the certificate of the handshake
        // it resumes, so after a rotation a new connection would still present the old one
        // (and be refused once it is revoked). Connections here are long-lived anyway.
        client.resumption = rustls::client::Resumption::disabled();

        Ok(TlsConfig {
            name: files.name.clone(),
            files: files.clone(),
            identity,
            party,
            server: Arc::new(server),
            client: Arc::new(client),
            https: Arc::new(https),
        })
    }

    /// The party name this configuration presents (`replica-1`, `tm-a`, `client-ops`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Read the certificate and key again from their files and use them for every new
    /// handshake (SIGHUP). The new certificate must name the same party.
    pub fn reload(&self) -> Result<(), SecurityError> {
        let chain = read_certs(&self.files.cert(), "certificate")?;
        let key = read_key(&self.files.key())?;
        let pair = certified(chain, key, &provider())
            .map_err(|e| unreadable(&self.files.key(), "private key", e))?;
        let party = self.party.clone().ok_or_else(|| {
            SecurityError::Material("the certificate in use names no party".into())
        })?;
        self.identity.replace(pair, &party)
    }

    /// Changes each time the certificate is replaced.
    pub fn generation(&self) -> u64 {
        self.identity.generation()
    }

    /// The fingerprint of the certificate in use.
    pub fn fingerprint(&self) -> Option<[u8; 32]> {
        self.identity.fingerprint()
    }

    /// The party its certificate names (none if it names none).
    pub fn party(&self) -> Option<Party> {
        self.party.clone()
    }

    pub fn server(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }

    pub fn client(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
    }

    /// Serving HTTPS: this certificate, TLS 1.3, a client certificate optional.
    pub fn https_server(&self) -> Arc<rustls::ServerConfig> {
        self.https.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::certs::{init, CertsPlan};

    #[test]
    fn loads_every_party_and_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let plan = CertsPlan {
            replicas: vec![1],
            taskmanagers: vec!["a".into()],
            clients: vec!["ops".into()],
            hosts: vec![],
        };
        init(dir.path(), &plan).unwrap();
        for name in ["replica-1", "tm-a", "client-ops"] {
            let config = TlsConfig::load(&TlsFiles::new(dir.path(), name)).unwrap();
            assert_eq!(config.name(), name);
        }
        let missing = TlsConfig::load(&TlsFiles::new(dir.path(), "tm-b")).unwrap_err();
        let text = missing.to_string();
        assert!(text.contains("tm-b.pem"), "{text}");
        assert!(text.contains("dispatcher certs init"), "{text}");
    }
}
