//! `dispatcher certs init` through the real binary: every party's certificate verifies
//! against the CA for the purpose it is for, names its party, and carries the SANs asked for
//! (checked with the openssl command line, an implementation independent of ours).

mod common;

use common::BINARY;
use std::path::Path;
use std::process::Command;

fn openssl(args: &[&str], dir: &Path) -> anyhow::Result<(bool, String)> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

#[test]
fn certs_init_issues_a_verifiable_certificate_per_party() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("certs");
    let status = Command::new(BINARY)
        .args([
            "certs",
            "init",
            "--replicas",
            "1,2,3",
            "--taskmanagers",
            "w1=10.0.0.9,w2",
            "--clients",
            "ops",
        ])
        .args(["--hosts", "10.0.0.7,db.example"])
        .arg("--out")
        .arg(&out)
        .status()?;
    assert!(status.success());

    for (party, purpose) in [
        ("replica-1", "sslserver"),
        ("replica-1", "sslclient"),
        ("replica-3", "sslserver"),
        ("tm-w1", "sslclient"),
        // Its HTTPS side (`--http-listen`) presents it.
        ("tm-w1", "sslserver"),
        ("tm-w2", "sslserver"),
        ("client-ops", "sslclient"),
    ] {
        let cert = format!("{party}.pem");
        let (ok, said) = openssl(
            &["verify", "-CAfile", "ca.pem", "-purpose", purpose, &cert],
            &out,
        )?;
        assert!(ok, "{party} for {purpose}: {said}");
    }
    // A client's certificate is no server certificate.
    let (ok, _) = openssl(
        &[
            "verify",
            "-CAfile",
            "ca.pem",
            "-purpose",
            "sslserver",
            "client-ops.pem",
        ],
        &out,
    )?;
    assert!(!ok, "client-ops verified as a server");
    // A TaskManager's names: its own, localhost, and the host given for it.
    let (_, text) = openssl(&["x509", "-in", "tm-w1.pem", "-noout", "-text"], &out)?;
    for expected in [
        "DNS:tm-w1",
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "IP Address:10.0.0.9",
        "URI:dispatcher:tm-w1",
    ] {
        assert!(text.contains(expected), "{expected} missing:\n{text}");
    }
    let (_, text) = openssl(&["x509", "-in", "tm-w2.pem", "-noout", "-text"], &out)?;
    assert!(!text.contains("10.0.0.9"), "w1's host in w2's certificate");

    let (_, text) = openssl(&["x509", "-in", "replica-2.pem", "-noout", "-text"], &out)?;
    assert!(
        text.contains("CN = replica-2") || text.contains("CN=replica-2"),
        "{text}"
    );
    for expected in [
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "IP Address:10.0.0.7",
        "DNS:db.example",
        "URI:dispatcher:replica-2",
    ] {
        assert!(text.contains(expected), "{expected} missing:\n{text}");
    }
    let (_, text) = openssl(
        &["x509", "-in", "client-ops.pem", "-noout", "-subject"],
        &out,
    )?;
    assert!(
        text.contains("CN=client-ops") || text.contains("CN = client-ops"),
        "{text}"
    );

    // Run again into the same place: refused, one line, nothing overwritten.
    let before = std::fs::read(out.join("ca.pem"))?;
    let again = Command::new(BINARY)
        .args(["certs", "init", "--replicas", "1", "--out"])
        .arg(&out)
        .output()?;
    assert!(!again.status.success());
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains("already exists"), "{said}");
    assert_eq!(std::fs::read(out.join("ca.pem"))?, before);
    Ok(())
}
