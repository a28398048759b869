//! `dispatcher certs init`: one cluster CA and a key pair per party, for mutual TLS.
//!
//! Writes `<out>/ca.pem`, `<out>/ca-key.pem`, and for each party `<out>/<party>.pem` and
//! `<out>/<party>-key.pem`, where `<party>` is `replica-<id>`, `tm-<name>` or
//! `client-<name>`. The party name is the certificate's common name and a URI SAN
//! (`dispatcher:<party>`): it is the identity a server reads from a caller. Replica
//! certificates also name `localhost`, 127.0.0.1 and every `--hosts` entry, and serve as both
//! server and client (replicas dial each other). Private keys are written with mode 0600.
//! Nothing is overwritten: an existing file stops the command before it writes anything.
//!
//! This module writes files only; it makes no network connection.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// The CA outlives the parties' certificates, so they can be renewed under it.
const CA_DAYS: i64 = 10 * 365;
const PARTY_DAYS: i64 = 365;

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{0} already exists; choose another --out, or move the old files away first")]
    Exists(String),
    #[error("invalid name '{0}': use letters, digits, '-', '_' and '.'")]
    BadName(String),
    #[error("invalid host '{0}' for --hosts: give a DNS name or an IP address")]
    BadHost(String),
    #[error(
        "nothing to issue: name at least one party with --replicas, --taskmanagers or --clients"
    )]
    NoParties,
    #[error("cannot write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The parties to issue certificates for.
#[derive(Debug, Clone, Default)]
pub struct CertsPlan {
    pub replicas: Vec<u64>,
    pub taskmanagers: Vec<String>,
    pub clients: Vec<String>,
    /// Extra SANs for the replica certificates.
    pub hosts: Vec<String>,
}

/// What a party's certificate may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    /// Server and client (replicas).
    Replica,
    /// Client of the replicas, and server of its own HTTP side (`--http-listen`).
    TaskManager,
    /// Client only.
    Caller,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl CertsPlan {
    /// Every party's name and role, checked.
    fn parties(&self) -> Result<Vec<(String, Role)>, CertsError> {
        let mut parties: Vec<(String, Role)> = self
            .replicas
            .iter()
            .map(|id| (format!("replica-{id}"), Role::Replica))
            .collect();
        for entry in &self.taskmanagers {
            let (name, host) = split_host(entry);
            if !valid_name(name) {
                return Err(CertsError::BadName(entry.clone()));
            }
            if let Some(host) = host {
                host_san(host)?;
            }
            parties.push((format!("tm-{name}"), Role::TaskManager));
        }
        for name in &self.clients {
            if !valid_name(name) {
                return Err(CertsError::BadName(name.clone()));
            }
            parties.push((format!("client-{name}"), Role::Caller));
        }
        if parties.is_empty() {
            return Err(CertsError::NoParties);
        }
        parties.sort();
        parties.dedup();
        Ok(parties)
    }

    fn replica_sans(&self, party: &str) -> Result<Vec<SanType>, CertsError> {
        sans(self.hosts.iter().map(String::as_str), party)
    }

    /// A TaskManager's names for its HTTPS side: its party name as a DNS name (for a
    /// scraper's `server_name`), and the host given as `--taskmanagers <name>=<host>`.
    fn taskmanager_sans(&self, party: &str) -> Result<Vec<SanType>, CertsError> {
        let own = party
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
            .then_some(party);
        let host = self
            .taskmanagers
            .iter()
            .find_map(|entry| match split_host(entry) {
                (name, Some(host)) if format!("tm-{name}") == party => Some(host),
                _ => None,
            });
        sans(own.into_iter().chain(host), party)
    }
}

/// `localhost`, `127.0.0.1`, then `hosts` (DNS names or IP addresses), then the party's URI.
fn sans<'a>(hosts: impl Iterator<Item = &'a str>, party: &str) -> Result<Vec<SanType>, CertsError> {
    let mut names = vec!["localhost", "127.0.0.1"];
    names.extend(hosts);
    names.dedup();
    let mut sans = names
        .into_iter()
        .map(host_san)
        .collect::<Result<Vec<_>, _>>()?;
    sans.push(uri_san(party)?);
    Ok(sans)
}

/// `name=host` → (name, Some(host)); `name` → (name, None).
fn split_host(entry: &str) -> (&str, Option<&str>) {
    match entry.split_once('=') {
        Some((name, host)) => (name, Some(host)),
        None => (entry, None),
    }
}

fn host_san(host: &str) -> Result<SanType, CertsError> {
    Ok(match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(
            host.to_string()
                .try_into()
                .map_err(|_| CertsError::BadHost(host.to_string()))?,
        ),
    })
}

fn uri_san(party: &str) -> Result<SanType, CertsError> {
    let uri = format!("dispatcher:{party}");
    Ok(SanType::URI(
        uri.try_into()
            .map_err(|_| CertsError::BadName(party.to_string()))?,
    ))
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    // An hour of slack for clocks a little behind the one that issued it.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "dispatcher cluster CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, CA_DAYS);
    params
}

fn party_params(
    plan: &CertsPlan,
    party: &str,
    role: Role,
) -> Result<CertificateParams, CertsError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, party);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    match role {
        Role::Replica => {
            params.subject_alt_names = plan.replica_sans(party)?;
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
        }
        Role::TaskManager => {
            params.subject_alt_names = plan.taskmanager_sans(party)?;
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
        }
        Role::Caller => {
            params.subject_alt_names = vec![uri_san(party)?];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
    }
    validity(&mut params, PARTY_DAYS);
    Ok(params)
}

/// A file to write: path, contents, whether it is a private key.
type Output = (PathBuf, String, bool);

/// Issue the CA and every party's certificate into `out`; returns the files written.
pub fn init(out: &Path, plan: &CertsPlan) -> Result<Vec<PathBuf>, CertsError> {
    let parties = plan.parties()?;
    let ca_key = KeyPair::generate()?;
    let ca_params = ca_params();
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let mut outputs: Vec<Output> = vec![
        (out.join("ca.pem"), ca_cert.pem(), false),
        (out.join("ca-key.pem"), ca_key.serialize_pem(), true),
    ];
    let issuer = Issuer::new(ca_params, ca_key);
    outputs.extend(issue(out, plan, &parties, &issuer)?);
    write_all(out, outputs)
}

/// Issue more parties under the CA already in `dir` (`ca.pem` and `ca-key.pem`): a new
/// TaskManager, client or replica joins without touching anyone else's certificate.
pub fn add(dir: &Path, plan: &CertsPlan) -> Result<Vec<PathBuf>, CertsError> {
    let parties = plan.parties()?;
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| CertsError::Io {
            path: path.display().to_string(),
            source,
        })
    };
    let ca_key = KeyPair::from_pem(&read("ca-key.pem")?)?;
    let issuer = Issuer::from_ca_cert_pem(&read("ca.pem")?, ca_key)?;
    let outputs = issue(dir, plan, &parties, &issuer)?;
    write_all(dir, outputs)
}

fn issue(
    out: &Path,
    plan: &CertsPlan,
    parties: &[(String, Role)],
    issuer: &Issuer<'_, KeyPair>,
) -> Result<Vec<Output>, CertsError> {
    let mut outputs = Vec::new();
    for (party, role) in parties {
        let key = KeyPair::generate()?;
        let cert = party_params(plan, party, *role)?.signed_by(&key, issuer)?;
        outputs.push((out.join(format!("{party}.pem")), cert.pem(), false));
        outputs.push((
            out.join(format!("{party}-key.pem")),
            key.serialize_pem(),
            true,
        ));
    }
    Ok(outputs)
}

/// Write every output, or nothing if any file is already there.
fn write_all(out: &Path, outputs: Vec<Output>) -> Result<Vec<PathBuf>, CertsError> {
    if let Some((path, _, _)) = outputs.iter().find(|(p, _, _)| p.exists()) {
        return Err(CertsError::Exists(path.display().to_string()));
    }
    std::fs::create_dir_all(out).map_err(|source| CertsError::Io {
        path: out.display().to_string(),
        source,
    })?;
    let mut written = Vec::new();
    for (path, pem, secret) in outputs {
        write_new(&path, &pem, secret)?;
        written.push(path);
    }
    Ok(written)
}

/// Create `path` (never overwrite), mode 0600 for a private key, and make it durable.
fn write_new(path: &Path, contents: &str, secret: bool) -> Result<(), CertsError> {
    let io = |source| CertsError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn plan() -> CertsPlan {
        CertsPlan {
            replicas: vec![1, 2],
            taskmanagers: vec!["a".into()],
            clients: vec!["ops".into()],
            hosts: vec!["10.0.0.1".into(), "dispatcher.example".into()],
        }
    }

    #[test]
    fn writes_every_party_with_private_keys_closed() {
        let dir = tempfile::tempdir().expect("dir");
        let out = dir.path().join("certs");
        let written = init(&out, &plan()).expect("init");
        assert_eq!(written.len(), 2 + 2 * 4);
        for name in ["ca", "replica-1", "replica-2", "tm-a", "client-ops"] {
            let cert = std::fs::read_to_string(out.join(format!("{name}.pem"))).expect("cert");
            assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{name}");
            let key = out.join(format!("{name}-key.pem"));
            let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}");
        }
    }

    #[test]
    fn adds_parties_under_the_same_ca() {
        let dir = tempfile::tempdir().expect("dir");
        init(dir.path(), &plan()).expect("init");
        let more = CertsPlan {
            taskmanagers: vec!["b".into()],
            ..CertsPlan::default()
        };
        let written = add(dir.path(), &more).expect("add");
        assert_eq!(written.len(), 2);
        assert!(matches!(add(dir.path(), &more), Err(CertsError::Exists(_))));
        let empty = tempfile::tempdir().expect("dir");
        assert!(matches!(
            add(empty.path(), &more),
            Err(CertsError::Io { .. })
        ));
    }

    #[test]
    fn refuses_to_overwrite_and_checks_names() {
        let dir = tempfile::tempdir().expect("dir");
        init(dir.path(), &plan()).expect("first");
        assert!(matches!(
            init(dir.path(), &plan()),
            Err(CertsError::Exists(_))
        ));
        let bad = CertsPlan {
            taskmanagers: vec!["a b".into()],
            ..CertsPlan::default()
        };
        assert!(matches!(
            init(dir.path(), &bad),
            Err(CertsError::BadName(_))
        ));
        assert!(matches!(
            init(dir.path(), &CertsPlan::default()),
            Err(CertsError::NoParties)
        ));
    }
}
