//! Whom a client accepts as the server: the cluster CA's signature alone is not enough, since
//! TaskManagers and clients hold certificates of the same CA. Every party that dials the
//! gRPC API (clients, agents, replicas dialling their peers) accepts only a certificate that
//! names a replica (`replica-<id>`), so a TaskManager's certificate (which serves its HTTPS
//! side) cannot pose as a replica and collect the tokens and reports sent to it.
//!
//! It checks the certificate the handshake presents; it opens no connection.

use super::Party;
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{DigitallySignedStruct, SignatureScheme};

/// The CA's usual verification, then: the certificate must name a replica.
#[derive(Debug)]
pub struct ReplicasOnly {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ReplicasOnly {
    pub fn new(inner: Arc<rustls::client::WebPkiServerVerifier>) -> Self {
        ReplicasOnly { inner }
    }
}

/// Why a server's certificate is not a replica's, or none.
pub fn refusal(end_entity: &[u8]) -> Option<String> {
    match Party::from_certificate(end_entity) {
        Some(Party::Replica(_)) => None,
        Some(other) => Some(format!(
            "the server presented the certificate of {other}, not of a replica: only a \
             replica-<id> certificate may serve the dispatcher API (check the endpoint's \
             address, and that the replica was started with its own certificate)"
        )),
        None => Some(
            "the server's certificate names no dispatcher party; only a replica-<id> \
             certificate may serve the dispatcher API"
                .to_string(),
        ),
    }
}

impl ServerCertVerifier for ReplicasOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        match refusal(end_entity.as_ref()) {
            None => Ok(verified),
            Some(why) => Err(rustls::Error::General(why)),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
