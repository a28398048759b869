//! Who is on the other end of a mutual-TLS connection: the party name its certificate carries
//! (URI SAN `dispatcher:<party>`, else the common name), read from the verified chain.
//! The handshake already checked the chain against the cluster CA; this only reads the name.

use std::fmt;

/// A party of the cluster, as named in its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Party {
    /// `replica-<id>`: a dispatcher replica.
    Replica(u64),
    /// `tm-<name>`: a TaskManager agent, which may act only as TaskManager `<name>`.
    TaskManager(String),
    /// `client-<name>`: a person or a script; what it may do comes from its token.
    Client(String),
    /// A certificate from the cluster CA that names none of the above.
    Other(String),
}

impl Party {
    pub fn parse(name: &str) -> Party {
        if let Some(id) = name
            .strip_prefix("replica-")
            .and_then(|id| id.parse::<u64>().ok())
        {
            return Party::Replica(id);
        }
        if let Some(tm) = name.strip_prefix("tm-").filter(|n| !n.is_empty()) {
            return Party::TaskManager(tm.to_string());
        }
        if let Some(client) = name.strip_prefix("client-").filter(|n| !n.is_empty()) {
            return Party::Client(client.to_string());
        }
        Party::Other(name.to_string())
    }

    /// Whether the name is none of the cluster's parties.
    pub fn is_other(&self) -> bool {
        matches!(self, Party::Other(_))
    }

    /// The party named by a DER certificate, if it names one.
    pub fn from_certificate(der: &[u8]) -> Option<Party> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::URI(uri) = name {
                    if let Some(party) = uri.strip_prefix("dispatcher:") {
                        return Some(Party::parse(party));
                    }
                }
            }
        }
        let cn = cert.subject().iter_common_name().next()?;
        Some(Party::parse(cn.as_str().ok()?))
    }
}

impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Party::Replica(id) => write!(f, "replica-{id}"),
            Party::TaskManager(name) => write!(f, "tm-{name}"),
            Party::Client(name) => write!(f, "client-{name}"),
            Party::Other(name) => f.write_str(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::certs::{init, CertsPlan};
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::CertificateDer;

    #[test]
    fn names_round_trip() {
        for name in ["replica-3", "tm-a-1", "client-ops", "replica-x", "tm-"] {
            assert_eq!(Party::parse(name).to_string(), name);
        }
        assert_eq!(Party::parse("replica-7"), Party::Replica(7));
        assert_eq!(Party::parse("tm-"), Party::Other("tm-".into()));
    }

    #[test]
    fn reads_the_party_from_issued_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let plan = CertsPlan {
            replicas: vec![2],
            taskmanagers: vec!["gpu-1".into()],
            clients: vec!["ci".into()],
            hosts: vec![],
        };
        init(dir.path(), &plan).unwrap();
        for (file, party) in [
            ("replica-2.pem", Party::Replica(2)),
            ("tm-gpu-1.pem", Party::TaskManager("gpu-1".into())),
            ("client-ci.pem", Party::Client("ci".into())),
        ] {
            let der = CertificateDer::from_pem_file(dir.path().join(file)).unwrap();
            assert_eq!(Party::from_certificate(&der), Some(party));
        }
        assert_eq!(Party::from_certificate(b"not a certificate"), None);
    }
}
