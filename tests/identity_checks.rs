//! Mistakes and impostors at the edges, from outside: a process started with another party's
//! certificate or with a key others can read refuses to start and says why; a client sends
//! its token only to a server that proves it is a replica; `--insecure` never sends a token.

mod common;

use common::BINARY;
use dispatcher::client::{Client, ClientOptions};
use dispatcher::security::{certs, Credentials, Secret, TlsConfig, TlsFiles, Transport};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn make_certs(dir: &Path) -> anyhow::Result<()> {
    certs::init(
        dir,
        &certs::CertsPlan {
            replicas: vec![1],
            taskmanagers: vec!["a".into()],
            clients: vec!["admin".into()],
            hosts: vec![],
        },
    )?;
    Ok(())
}

/// `dispatcher serve` for replica 1 with these extra arguments; it must exit by itself.
fn serve(dir: &Path, extra: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(BINARY)
        .args(["serve", "--id", "1", "--listen", "127.0.0.1:0"])
        .args(["--peers", "1=127.0.0.1:1"])
        .arg("--data-dir")
        .arg(dir.join("r1"))
        .arg("--tls-dir")
        .arg(dir.join("certs"))
        .args(extra)
        .env_remove("DISPATCHER_TLS_NAME")
        .env_remove("DISPATCHER_INSECURE")
        .stdin(Stdio::null())
        .output()?)
}

fn refused_saying(out: &Output, words: &[&str]) {
    assert!(!out.status.success(), "it started");
    let said = String::from_utf8_lossy(&out.stderr);
    for word in words {
        assert!(said.contains(word), "missing '{word}' in: {said}");
    }
    assert_eq!(said.trim().lines().count(), 1, "not one line: {said}");
}

#[test]
fn processes_refuse_another_partys_certificate_and_exposed_keys() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let certs = dir.path().join("certs");
    make_certs(&certs)?;

    // DISPATCHER_TLS_NAME left exported from a client shell.
    let out = serve(dir.path(), &["--tls-name", "client-admin"])?;
    refused_saying(&out, &["client-admin", "replica-1"]);
    let out = serve(dir.path(), &["--tls-name", "tm-a"])?;
    refused_saying(&out, &["tm-a", "replica-1"]);

    let agent = Command::new(BINARY)
        .args(["taskmanager", "--id", "a", "--slots", "1"])
        .args(["--endpoints", "127.0.0.1:1", "--tls-name", "replica-1"])
        .arg("--tls-dir")
        .arg(&certs)
        .arg("--work-dir")
        .arg(dir.path().join("tm"))
        .env_remove("DISPATCHER_INSECURE")
        .stdin(Stdio::null())
        .output()?;
    refused_saying(&agent, &["replica-1", "tm-a"]);

    // A key the world may read, as ssh refuses one.
    let key = certs.join("replica-1-key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644))?;
    let out = serve(dir.path(), &[])?;
    refused_saying(&out, &["replica-1-key.pem", "chmod 600"]);
    assert!(
        !dir.path().join("r1").exists(),
        "a refused replica wrote its data dir"
    );
    Ok(())
}

#[test]
fn insecure_never_sends_a_token() -> anyhow::Result<()> {
    let out = Command::new(BINARY)
        .args(["job", "list", "--insecure", "--endpoints", "127.0.0.1:1"])
        .env("DISPATCHER_TOKEN", "a-secret-that-must-not-travel-in-clear")
        .env_remove("DISPATCHER_TLS_DIR")
        .stdin(Stdio::null())
        .output()?;
    refused_saying(&out, &["cleartext", "--tls-dir"]);
    Ok(())
}

/// A server with `party`'s certificate (of the cluster CA, valid for 127.0.0.1): reports
/// whether a handshake completed and how many bytes of requests it got.
async fn impostor(
    certs: &Path,
    party: &str,
) -> anyhow::Result<(String, tokio::task::JoinHandle<(bool, usize)>)> {
    impostor_at(certs, party, "127.0.0.1:0", Duration::from_secs(3)).await
}

/// `impostor` on `listen`, taking connections for `serving`.
async fn impostor_at(
    certs: &Path,
    party: &str,
    listen: &str,
    serving: Duration,
) -> anyhow::Result<(String, tokio::task::JoinHandle<(bool, usize)>)> {
    use tokio::io::AsyncReadExt;
    let config = TlsConfig::load(&TlsFiles::new(certs, party))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config.server());
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?.to_string();
    let task = tokio::spawn(async move {
        let mut handshakes = false;
        let mut bytes = 0;
        // The client retries: take every connection it makes for a while.
        let until = tokio::time::Instant::now() + serving;
        while let Ok(Ok((tcp, _))) = tokio::time::timeout_at(until, listener.accept()).await {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            handshakes = true;
            let mut buf = vec![0u8; 65536];
            while let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(500), tls.read(&mut buf)).await
            {
                if n == 0 {
                    break;
                }
                bytes += n;
            }
        }
        (handshakes, bytes)
    });
    Ok((addr, task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sends_its_token_only_to_a_replica() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let certs = dir.path().join("certs");
    make_certs(&certs)?;
    let client_for = |addr: &str| -> anyhow::Result<Client> {
        Ok(Client::with_options(
            vec![addr.to_string()],
            ClientOptions {
                rpc_timeout: Duration::from_millis(500),
                call_timeout: Duration::from_secs(1),
                source_ip: None,
                credentials: Credentials {
                    transport: Transport::Tls(TlsConfig::load(&TlsFiles::new(
                        &certs,
                        "client-admin",
                    ))?),
                    token: Some(Secret::generate()?),
                },
            },
        )?)
    };

    for party in ["tm-a", "client-admin"] {
        let (addr, server) = impostor(&certs, party).await?;
        let refused = client_for(&addr)?.list_jobs().await;
        assert!(refused.is_err(), "{party}: {refused:?}");
        let (handshakes, bytes) = server.await?;
        assert!(!handshakes, "the client finished a handshake with {party}");
        assert_eq!(bytes, 0, "{party} received {bytes} bytes of requests");
    }

    // The same server with a replica's certificate does get the request: the check above is
    // what refused the others.
    let (addr, server) = impostor(&certs, "replica-1").await?;
    let _ = client_for(&addr)?.list_jobs().await;
    let (handshakes, bytes) = server.await?;
    assert!(
        handshakes && bytes > 0,
        "a replica's certificate was refused"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_speaks_raft_only_for_itself() -> anyhow::Result<()> {
    use dispatcher::pb::raft::raft_service_client::RaftServiceClient;
    use dispatcher::pb::raft::RaftPayload;
    use dispatcher::raft::{TypeConfig, Vote};
    use openraft::raft::VoteRequest;
    use tonic::Code;

    let cluster = common::start_secure_cluster(3, common::test_config()).await?;
    let dir = cluster.root().join("certs");
    let leader = cluster
        .wait_for_leader(&cluster.ids(), common::DEADLINE)
        .await?;
    let target = common::replica_other_than(&cluster, &[leader])?;
    let speaker = common::replica_other_than(&cluster, &[target])?;
    let impersonated = common::replica_other_than(&cluster, &[target, speaker])?;
    let before = cluster
        .local_status(target)
        .await
        .ok_or_else(|| anyhow::anyhow!("no status"))?;
    let channel = Transport::Tls(TlsConfig::load(&TlsFiles::new(
        &dir,
        format!("replica-{speaker}"),
    ))?)
    .connect(
        &cluster.replica(target)?.addr,
        |e| e.timeout(Duration::from_secs(2)),
        None,
    )
    .await?;
    let mut raft = RaftServiceClient::new(channel);
    let vote_as = |candidate: u64, term: u64| -> anyhow::Result<RaftPayload> {
        let request = VoteRequest::<TypeConfig>::new(Vote::new(term, candidate), None);
        Ok(RaftPayload {
            data: dispatcher::raft::network::encode(&request).map_err(anyhow::Error::msg)?,
        })
    };

    common::log_phase("a vote in another replica's name is refused");
    // A replica taken back as one that lost its disk refuses every vote (UNAVAILABLE) until
    // it is a voter again. A first formation no longer does that to the replica started
    // first (node/bootstrap.rs), but only within its grace: the test waits it out.
    let forged =
        dispatcher::local_cluster::wait_for(common::DEADLINE, "the target to take votes", || {
            let mut raft = raft.clone();
            let request = vote_as(impersonated, before.term + 100);
            async move {
                let answer = raft.vote(request.ok()?).await;
                let not_yet = answer.as_ref().is_err_and(|refused| {
                    refused.code() == Code::Unavailable
                        && refused.message().contains("does not vote")
                });
                (!not_yet).then_some(answer)
            }
        })
        .await?
        .expect_err("forged");
    assert_eq!(forged.code(), Code::PermissionDenied, "{forged:?}");
    let forged = raft
        .pre_vote(vote_as(impersonated, before.term + 100)?)
        .await
        .expect_err("forged");
    assert_eq!(forged.code(), Code::PermissionDenied, "{forged:?}");

    common::log_phase("its own (stale) vote is answered");
    raft.vote(vote_as(speaker, 0)?).await?;

    let after = cluster
        .local_status(target)
        .await
        .ok_or_else(|| anyhow::anyhow!("no status"))?;
    assert_eq!(after.term, before.term, "a forged vote moved the term");
    Ok(())
}

/// What `leader` says of `victim`, if it says something containing `needle`.
async fn trouble_with(
    cluster: &common::TestCluster,
    leader: u64,
    victim: u64,
    needle: &str,
) -> Option<dispatcher::pb::api::PeerTrouble> {
    let status = cluster.local_status(leader).await?;
    status
        .peer_troubles
        .into_iter()
        .find(|t| t.id == victim && t.error.contains(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_says_why_it_cannot_reach_a_peer() -> anyhow::Result<()> {
    let mut cluster = common::start_secure_cluster(3, common::test_config()).await?;
    let dir = cluster.root().join("certs");
    let leader = cluster
        .wait_for_leader(&cluster.ids(), common::DEADLINE)
        .await?;
    let victim = common::replica_other_than(&cluster, &[leader])?;

    common::log_phase("a peer that is down: nothing listens");
    cluster.kill(victim)?;
    let down =
        dispatcher::local_cluster::wait_for(common::DEADLINE, "the leader to say why", || {
            trouble_with(&cluster, leader, victim, "refused")
        })
        .await?;
    eprintln!("leader on a dead peer: {}", down.error);

    common::log_phase("a peer's address answered by a TaskManager's certificate");
    certs::add(
        &dir,
        &certs::CertsPlan {
            taskmanagers: vec!["x".into()],
            ..Default::default()
        },
    )?;
    let listen = cluster.replica(victim)?.listen.clone();
    let (_, impostor) = impostor_at(&dir, "tm-x", &listen, Duration::from_secs(8)).await?;
    let wrong = dispatcher::local_cluster::wait_for(
        common::DEADLINE,
        "the leader to name the party",
        || trouble_with(&cluster, leader, victim, "not of a replica"),
    )
    .await?;
    eprintln!("leader on an impostor: {}", wrong.error);
    assert!(wrong.error.contains("tm-x"), "{}", wrong.error);
    let (handshakes, bytes) = impostor.await?;
    assert!(
        !handshakes && bytes == 0,
        "the leader talked to the impostor"
    );

    common::log_phase("the leader's log says it at warn");
    let log = std::fs::read_to_string(&cluster.replica(leader)?.log_file)?;
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains(&format!("cannot reach replica {victim}"))),
        "no warning in the leader's log"
    );

    common::log_phase("it answers again once restarted");
    cluster.restart(victim)?;
    dispatcher::local_cluster::wait_for(common::DEADLINE, "the trouble to clear", || {
        let status = cluster.local_status(leader);
        async move { status.await?.peer_troubles.is_empty().then_some(()) }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_everywhere_within_a_second() -> anyhow::Result<()> {
    use dispatcher::local_cluster::{wait_for, HarnessSecurity};
    let mut cluster = common::start_secure_cluster(3, common::test_config()).await?;
    let dir = cluster.root().join("certs");
    let admin = cluster.client()?;
    let HarnessSecurity::Tls { admin: token, .. } = cluster.security() else {
        anyhow::bail!("not secure");
    };
    let token = token.clone();
    cluster.start_taskmanager("a", 1, &[])?;
    common::wait_taskmanagers_alive(&admin, 1).await?;
    certs::add(
        &dir,
        &certs::CertsPlan {
            clients: vec!["x".into()],
            ..Default::default()
        },
    )?;
    // One client per replica, so that each replica's own check is timed.
    let per_replica = |party: &str| -> anyhow::Result<Vec<Client>> {
        cluster
            .endpoints()
            .into_iter()
            .map(|e| {
                Ok(Client::with_options(
                    vec![e],
                    ClientOptions {
                        rpc_timeout: Duration::from_millis(500),
                        call_timeout: Duration::from_secs(1),
                        source_ip: None,
                        credentials: Credentials::tls(
                            TlsConfig::load(&TlsFiles::new(&dir, party))?,
                            Some(token.clone()),
                        ),
                    },
                )?)
            })
            .collect()
    };
    let as_x = per_replica("client-x")?;
    for (client, addr) in as_x.iter().zip(cluster.endpoints()) {
        client.who_am_i(Some(&addr)).await?;
    }

    common::log_phase("certs revoke --cert: that certificate is refused by every replica");
    let cert = dir.join("client-x.pem").display().to_string();
    let out = common::cli(&cluster, &["certs", "revoke", "client-x", "--cert", &cert])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let revoked_at = std::time::Instant::now();
    for (client, addr) in as_x.iter().zip(cluster.endpoints()) {
        let code = wait_for(common::DEADLINE, "the revocation to apply", || async {
            match client.who_am_i(Some(&addr)).await {
                Err(e) if e.code().is_some() => e.code(),
                _ => None,
            }
        })
        .await?;
        assert_eq!(code, tonic::Code::Unauthenticated);
    }
    let took = revoked_at.elapsed();
    eprintln!("every replica refused the revoked certificate {took:?} after the command");
    assert!(took < Duration::from_secs(3), "{took:?}");
    admin.list_jobs().await?;

    common::log_phase("a revoked TaskManager is refused and declared lost");
    admin.revoke_certificate("tm-a", None).await?;
    wait_for(common::DEADLINE, "tm a to be lost", || async {
        let tms = admin.list_taskmanagers().await.ok()?;
        tms.iter()
            .any(|t| t.id == "a" && t.state == "lost")
            .then_some(())
    })
    .await?;
    let refused = admin.revoke_certificate("nobody", None).await;
    assert_eq!(
        refused.err().and_then(|e| e.code()),
        Some(tonic::Code::InvalidArgument)
    );
    Ok(())
}

/// The fingerprint of the certificate the server at `addr` presents now.
async fn presented(certs: &Path, addr: &str) -> anyhow::Result<[u8; 32]> {
    let config = TlsConfig::load(&TlsFiles::new(certs, "client-admin"))?;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1")?;
    let tls = tokio_rustls::TlsConnector::from(config.client())
        .connect(name, tcp)
        .await?;
    let der = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| anyhow::anyhow!("no certificate"))?;
    Ok(dispatcher::domain::fingerprint(der.as_ref()))
}

fn file_fingerprint(path: &Path) -> anyhow::Result<[u8; 32]> {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};
    let der = CertificateDer::from_pem_file(path)?;
    Ok(dispatcher::domain::fingerprint(der.as_ref()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_rotated_without_a_restart_and_the_old_one_revoked() -> anyhow::Result<()>
{
    use dispatcher::local_cluster::wait_for;
    let cluster = common::start_secure_cluster(3, common::test_config()).await?;
    let dir = cluster.root().join("certs");
    let admin = cluster.client()?;
    let id = cluster.ids()[0];
    let party = format!("replica-{id}");
    let addr = cluster.replica(id)?.listen.clone();
    let old = file_fingerprint(&dir.join(format!("{party}.pem")))?;
    assert_eq!(presented(&dir, &addr).await?, old);

    common::log_phase("a new certificate for the replica from the same CA, in place of the old");
    let fresh = tempfile::tempdir()?;
    for file in ["ca.pem", "ca-key.pem"] {
        std::fs::copy(dir.join(file), fresh.path().join(file))?;
    }
    certs::add(
        fresh.path(),
        &certs::CertsPlan {
            replicas: vec![id],
            ..Default::default()
        },
    )?;
    let kept_old = fresh.path().join("old.pem");
    std::fs::copy(dir.join(format!("{party}.pem")), &kept_old)?;
    for file in [format!("{party}.pem"), format!("{party}-key.pem")] {
        std::fs::copy(fresh.path().join(&file), dir.join(&file))?;
    }
    let new = file_fingerprint(&dir.join(format!("{party}.pem")))?;
    assert_ne!(new, old);

    common::log_phase("SIGHUP: the replica presents the new certificate, still running");
    let pid = cluster
        .replica(id)?
        .pid()
        .ok_or_else(|| anyhow::anyhow!("no pid"))?;
    // SAFETY: kill(2) on the pid of a replica this test started.
    unsafe {
        libc::kill(pid as i32, libc::SIGHUP);
    }
    wait_for(
        common::DEADLINE,
        "the new certificate to be served",
        || async { (presented(&dir, &addr).await.ok()? == new).then_some(()) },
    )
    .await?;
    assert_eq!(cluster.replica(id)?.pid(), Some(pid), "it restarted");

    common::log_phase("the old certificate is revoked; the replica goes on with the new one");
    let old_cert = kept_old.display().to_string();
    let out = common::cli(&cluster, &["certs", "revoke", &party, "--cert", &old_cert])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = admin
        .submit(common::job_request(
            "after",
            1,
            1,
            1,
            ("/bin/true".into(), vec![]),
        ))
        .await?;
    let index: u64 = job.job_id.trim_start_matches("j-").parse()?;
    wait_for(
        common::DEADLINE,
        "the rotated replica to apply it",
        || async {
            let status = cluster.local_status(id).await?;
            (status.last_applied >= index && status.peer_troubles.is_empty()).then_some(())
        },
    )
    .await?;
    let log = std::fs::read_to_string(&cluster.replica(id)?.log_file)?;
    assert!(log.contains("certificate reloaded"), "no reload in the log");
    Ok(())
}
