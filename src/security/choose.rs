//! Turning `--insecure`, `--tls-dir` and `--tls-name` into a transport, with one rule for
//! every command: certificates, or `--insecure` said out loud; never plaintext by default.

use super::{Party, SecurityError, TlsConfig, TlsFiles, Transport};
use std::path::Path;

/// The transport a command asked for. `default_name` names the certificate when
/// `--tls-name` is not given (serve: `replica-<id>`, taskmanager: `tm-<id>`).
pub fn choose_transport(
    insecure: bool,
    tls_dir: Option<&Path>,
    tls_name: Option<&str>,
    default_name: impl FnOnce(&Path) -> Option<String>,
) -> Result<Transport, SecurityError> {
    match (insecure, tls_dir) {
        (true, Some(_)) => Err(SecurityError::Material(
            "--insecure and --tls-dir contradict each other; give one of them".into(),
        )),
        (true, None) => Ok(Transport::Plain),
        (false, None) => Err(SecurityError::NoCertificates),
        (false, Some(dir)) => {
            let name = match tls_name {
                Some(name) => name.to_string(),
                None => default_name(dir).ok_or_else(|| {
                    SecurityError::Material(format!(
                        "which certificate of {} is this? give --tls-name client-<name> (env \
                         DISPATCHER_TLS_NAME)",
                        dir.display()
                    ))
                })?,
            };
            Ok(Transport::Tls(TlsConfig::load(&TlsFiles::new(dir, name))?))
        }
    }
}

/// `serve` runs only with `replica-<id>`'s certificate and `taskmanager` only with
/// `tm-<id>`'s: started with another (a client's, say, with `DISPATCHER_TLS_NAME` left
/// exported in the shell) it would never be admitted by its peers, and would say nothing of
/// why.
pub fn require_own_party(transport: &Transport, expected: &Party) -> Result<(), SecurityError> {
    let Transport::Tls(config) = transport else {
        return Ok(());
    };
    match config.party() {
        Some(found) if found == *expected => Ok(()),
        found => Err(SecurityError::Material(format!(
            "the certificate {} names {}, but this process is {expected}: give it {expected}'s \
             certificate (--tls-name {expected}, or unset DISPATCHER_TLS_NAME)",
            config.name(),
            found.map_or_else(|| "no dispatcher party".to_string(), |p| p.to_string()),
        ))),
    }
}

/// The one `client-<name>` certificate in `dir`, if there is exactly one.
pub fn only_client_certificate(dir: &Path) -> Option<String> {
    let mut names = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|file| {
            let name = file.strip_suffix(".pem")?;
            (name.starts_with("client-") && !name.ends_with("-key")).then(|| name.to_string())
        });
    let first = names.next()?;
    names.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::certs::{init, CertsPlan};

    #[test]
    fn certificates_or_insecure_never_plaintext_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let none = |_: &Path| None;
        assert!(matches!(
            choose_transport(false, None, None, none),
            Err(SecurityError::NoCertificates)
        ));
        assert!(matches!(
            choose_transport(true, None, None, none),
            Ok(Transport::Plain)
        ));
        assert!(choose_transport(true, Some(dir.path()), None, none).is_err());

        init(
            dir.path(),
            &CertsPlan {
                replicas: vec![1],
                clients: vec!["ops".into()],
                ..CertsPlan::default()
            },
        )
        .unwrap();
        assert_eq!(
            only_client_certificate(dir.path()).as_deref(),
            Some("client-ops")
        );
        let chosen =
            choose_transport(false, Some(dir.path()), None, only_client_certificate).unwrap();
        assert!(matches!(chosen, Transport::Tls(c) if c.name() == "client-ops"));
        let named = choose_transport(false, Some(dir.path()), Some("replica-1"), none).unwrap();
        assert!(matches!(named, Transport::Tls(c) if c.name() == "replica-1"));
    }
}
