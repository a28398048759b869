//! Mutual TLS, identities and tokens, from outside: a secure cluster runs work for its own
//! parties and refuses every stranger with the right code, changing nothing.

mod common;

use common::*;
use dispatcher::client::{Client, ClientError, ClientOptions};
use dispatcher::domain::Role;
use dispatcher::local_cluster::wait_for;
use dispatcher::pb::api::{HeartbeatRequest, RegisterTaskManagerRequest};
use dispatcher::pb::raft::raft_service_client::RaftServiceClient;
use dispatcher::pb::raft::RaftPayload;
use dispatcher::security::{certs, Credentials, Secret, TlsConfig, TlsFiles, Transport};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::Code;

fn tls(dir: &Path, name: &str, token: Option<Secret>) -> anyhow::Result<Credentials> {
    Ok(Credentials::tls(
        TlsConfig::load(&TlsFiles::new(dir, name))?,
        token,
    ))
}

/// A client that gives up quickly: refusals at the handshake are retried until the deadline.
fn quick_client(endpoints: Vec<String>, credentials: Credentials) -> anyhow::Result<Client> {
    Ok(Client::with_options(
        endpoints,
        ClientOptions {
            rpc_timeout: Duration::from_secs(1),
            call_timeout: Duration::from_secs(2),
            source_ip: None,
            credentials,
        },
    )?)
}

/// A TLS 1.3 connection with the cluster's CA but no client certificate: the server must
/// refuse it before any gRPC, so nothing of HTTP/2 ever comes back.
async fn handshake_without_certificate(ca_dir: &Path, addr: &str) -> anyhow::Result<bool> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca_dir.join("ca.pem"))? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
    let Ok(mut stream) = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
    else {
        return Ok(true);
    };
    // TLS 1.3 finishes the client's side before the server has checked it; the refusal
    // arrives as an alert on the first read.
    let _ = stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await?;
    Ok(matches!(read, Err(_) | Ok(0)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_cluster_runs_work_for_its_parties_and_refuses_strangers() -> anyhow::Result<()> {
    let mut cluster = start_secure_cluster(3, test_config()).await?;
    let dir = cluster.root().join("certs");
    let admin = cluster.client()?;
    let endpoints = cluster.endpoints();

    log_phase("a TaskManager with its certificate runs a job over TLS");
    cluster.start_taskmanager("a", 2, &[])?;
    wait_taskmanagers_alive(&admin, 1).await?;
    let job = admin
        .submit(job_request("work", 4, 1, 3, ("/bin/true".into(), vec![])))
        .await?;
    wait_job_state(&admin, &job.job_id, &["finished"], DEADLINE).await?;

    log_phase("tokens: read, two submitters, and a job of alice's");
    let (_, reader) = admin.create_token("reader", Role::Read, None).await?;
    let (_, alice) = admin.create_token("alice", Role::Submit, None).await?;
    let (_, bob) = admin.create_token("bob", Role::Submit, None).await?;
    let as_token = |secret: &Secret| -> anyhow::Result<Client> {
        quick_client(
            endpoints.clone(),
            tls(&dir, "client-admin", Some(secret.clone()))?,
        )
    };
    let mut pending = job_request("alice-job", 1, 1, 1, ("/bin/true".into(), vec![]));
    if let Some(spec) = pending.spec.as_mut() {
        spec.selector.insert("zone".into(), "nowhere".into());
        spec.env.insert("API_KEY".into(), "alice-secret".into());
    }
    let alice_job = as_token(&alice)?.submit(pending).await?;

    log_phase("a job's tenant is its token's: its name, or the tenant it was made with");
    assert_eq!(admin.job_status(&alice_job.job_id).await?.tenant, "alice");
    let (made, ci) = admin
        .create_token("ci", Role::Submit, Some("team-a"))
        .await?;
    assert_eq!(made.tenant, "team-a");
    let ci = as_token(&ci)?;
    let mut request = job_request("ci-job", 1, 1, 1, ("/bin/true".into(), vec![]));
    if let Some(spec) = request.spec.as_mut() {
        // Never placed: the digest compared below must not move with it.
        spec.selector.insert("zone".into(), "nowhere".into());
    }
    let ci_job = ci.submit(request.clone()).await?;
    assert_eq!(admin.job_status(&ci_job.job_id).await?.tenant, "team-a");
    request.tenant = "team-b".into();
    assert_eq!(code(ci.submit(request).await), Some(Code::PermissionDenied));
    let (_, alice_reader) = admin
        .create_token("alice-reader", Role::Read, Some("alice"))
        .await?;
    let (_, alice_too) = admin
        .create_token("alice-too", Role::Submit, Some("alice"))
        .await?;
    let before = leader_digest(&cluster).await?;

    log_phase("a plaintext client is refused");
    let plain = quick_client(endpoints.clone(), Credentials::insecure())?;
    assert!(plain.list_jobs().await.is_err());

    log_phase("a TLS client without a certificate is refused at the handshake");
    assert!(handshake_without_certificate(&dir, &endpoints[0]).await?);

    log_phase("a certificate from another CA is refused, whatever token it carries");
    let other = cluster.root().join("other-ca");
    certs::init(
        &other,
        &certs::CertsPlan {
            clients: vec!["admin".into()],
            ..Default::default()
        },
    )?;
    let stranger = quick_client(endpoints.clone(), tls(&other, "client-admin", None)?)?;
    let refused = stranger.list_jobs().await.expect_err("another CA");
    assert!(
        matches!(refused, ClientError::Unavailable { .. }),
        "{refused}"
    );

    log_phase("no token, an unknown token: UNAUTHENTICATED");
    let tokenless = quick_client(endpoints.clone(), tls(&dir, "client-admin", None)?)?;
    assert_eq!(
        code(tokenless.list_jobs().await),
        Some(Code::Unauthenticated)
    );
    let unknown = as_token(&Secret::generate()?)?;
    assert_eq!(code(unknown.list_jobs().await), Some(Code::Unauthenticated));

    log_phase("a read token may list but not submit, drain or make tokens");
    let read = as_token(&reader)?;
    read.list_jobs().await?;
    let submit = job_request("nope", 1, 1, 1, ("/bin/true".into(), vec![]));
    assert_eq!(
        code(read.submit(submit).await),
        Some(Code::PermissionDenied)
    );
    assert_eq!(
        code(read.drain_taskmanager("a", None).await),
        Some(Code::PermissionDenied)
    );
    assert_eq!(
        code(read.create_token("x", Role::Admin, None).await),
        Some(Code::PermissionDenied)
    );

    log_phase("a job's environment values are for its owner and operators only");
    let seen_by = |client: Client| {
        let job_id = alice_job.job_id.clone();
        async move {
            let status = client.job_status(&job_id).await?;
            let spec = status.spec.expect("spec");
            Ok::<_, anyhow::Error>(spec.env["API_KEY"].clone())
        }
    };
    assert_eq!(seen_by(as_token(&alice_reader)?).await?, "(hidden)");
    assert_eq!(seen_by(as_token(&alice)?).await?, "alice-secret");
    assert_eq!(seen_by(cluster.client()?).await?, "alice-secret");
    // Tokens of other tenants do not see the job at all (tests/tenants.rs).
    assert_eq!(
        code(as_token(&reader)?.job_status(&alice_job.job_id).await),
        Some(Code::NotFound)
    );

    log_phase("a submit token may not cancel someone else's job");
    let as_bob = as_token(&bob)?;
    assert_eq!(
        code(as_bob.cancel_job(&alice_job.job_id).await),
        Some(Code::NotFound)
    );
    assert_eq!(
        code(as_token(&alice_too)?.cancel_job(&alice_job.job_id).await),
        Some(Code::PermissionDenied),
        "a submitter of the same tenant cancels only its own jobs"
    );

    log_phase("a client certificate may not speak Raft");
    let raft_channel = Transport::Tls(TlsConfig::load(&TlsFiles::new(&dir, "client-admin"))?)
        .connect(&endpoints[0], |e| e.timeout(Duration::from_secs(2)), None)
        .await?;
    let mut raft = RaftServiceClient::new(raft_channel);
    for status in [
        raft.vote(RaftPayload {
            data: vec![1, 2, 3],
        })
        .await,
        raft.append_entries(RaftPayload { data: vec![] }).await,
    ] {
        assert_eq!(status.expect_err("raft").code(), Code::PermissionDenied);
    }

    log_phase("nor may a replica certificate of a replica that is not a member");
    certs::add(
        &dir,
        &certs::CertsPlan {
            replicas: vec![9],
            ..Default::default()
        },
    )?;
    let outsider = Transport::Tls(TlsConfig::load(&TlsFiles::new(&dir, "replica-9"))?)
        .connect(&endpoints[0], |e| e.timeout(Duration::from_secs(2)), None)
        .await?;
    let refused = RaftServiceClient::new(outsider)
        .vote(RaftPayload { data: vec![] })
        .await
        .expect_err("not a member");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("not a member"), "{refused:?}");
    // Nor may one replica ask to rejoin (be demoted) on behalf of another.
    let as_nine = quick_client(endpoints.clone(), tls(&dir, "replica-9", None)?)?;
    let demote_one = as_nine
        .call(|ch| async move {
            dispatcher::pb::api::cluster_client::ClusterClient::new(ch)
                .rejoin(dispatcher::pb::api::RejoinRequest {
                    id: 1,
                    restoring: false,
                })
                .await
        })
        .await;
    assert_eq!(code(demote_one), Some(Code::PermissionDenied));

    log_phase("an agent certificate may act only as its own TaskManager");
    certs::add(
        &dir,
        &certs::CertsPlan {
            taskmanagers: vec!["b".into()],
            ..Default::default()
        },
    )?;
    let agent_b = quick_client(endpoints.clone(), tls(&dir, "tm-b", None)?)?;
    let register_as_c = RegisterTaskManagerRequest {
        id: "c".into(),
        addr: "127.0.0.1:9".into(),
        slots: 1,
        ..Default::default()
    };
    assert_eq!(
        code(agent_b.register_taskmanager(register_as_c).await),
        Some(Code::PermissionDenied)
    );
    let heartbeat_as_a = agent_b
        .call(|ch| async move {
            dispatcher::pb::api::task_managers_client::TaskManagersClient::new(ch)
                .heartbeat(HeartbeatRequest {
                    taskmanager_id: "a".into(),
                    ..Default::default()
                })
                .await
        })
        .await;
    assert_eq!(code(heartbeat_as_a), Some(Code::PermissionDenied));
    // A TaskManager certificate is no client: without a token it cannot list jobs.
    assert_eq!(code(agent_b.list_jobs().await), Some(Code::Unauthenticated));

    log_phase("none of that changed the replicated state");
    assert_eq!(leader_digest(&cluster).await?, before);

    log_phase("alice cancels her own job");
    as_token(&alice)?.cancel_job(&alice_job.job_id).await?;

    log_phase("a revoked token is refused by every replica within a second");
    let (_, doomed) = admin.create_token("doomed", Role::Read, None).await?;
    let per_replica: Vec<Client> = endpoints
        .iter()
        .map(|e| {
            quick_client(
                vec![e.clone()],
                tls(&dir, "client-admin", Some(doomed.clone()))?,
            )
        })
        .collect::<anyhow::Result<_>>()?;
    for (client, addr) in per_replica.iter().zip(&endpoints) {
        // Every replica has applied the creation before the revocation is timed.
        wait_for(DEADLINE, "the new token to reach every replica", || async {
            client.who_am_i(Some(addr)).await.ok()
        })
        .await?;
    }
    admin.revoke_token("doomed").await?;
    let revoked_at = Instant::now();
    for (client, addr) in per_replica.iter().zip(&endpoints) {
        wait_for(
            Duration::from_secs(5),
            "the revocation on every replica",
            || async {
                (client.who_am_i(Some(addr)).await.err()?.code() == Some(Code::Unauthenticated))
                    .then_some(())
            },
        )
        .await?;
    }
    let took = revoked_at.elapsed();
    assert!(took < Duration::from_secs(1), "revocation took {took:?}");

    log_phase("a fourth replica with its own certificate joins and votes");
    let addr = cluster.start_extra_replica(4)?;
    let members = admin.add_member(4, &addr).await?;
    assert!(
        members
            .members
            .iter()
            .any(|m| m.id == 4 && m.role == "follower"),
        "{members:?}"
    );
    let fourth = cluster.local_status(4).await.expect("replica 4 answers");
    assert_eq!(fourth.raft_gate, "open");

    log_phase("the CLI: a token made with `token create` works, a read token cannot submit");
    let flags = cluster.client_flags();
    let out = Command::new(BINARY)
        .args([
            "token", "create", "--role", "read", "--name", "cli", "--output", "json",
        ])
        .arg("--endpoints")
        .arg(endpoints.join(","))
        .args(&flags)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(created["role"], "read");
    let secret = created["secret"].as_str().expect("secret").to_string();
    let out = Command::new(BINARY)
        .args(["submit", "--name", "x", "--shards", "1", "--endpoints"])
        .arg(endpoints.join(","))
        .args(["--tls-dir", &dir.display().to_string(), "--token", &secret])
        .args(["--", "/bin/true"])
        .output()?;
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(said.trim().lines().count(), 1, "{said}");
    assert!(said.contains("role read"), "{said}");
    let out = Command::new(BINARY)
        .args(["token", "list", "--output", "json", "--endpoints"])
        .arg(endpoints.join(","))
        .args(&flags)
        .output()?;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("\"cli\"") && !listed.contains(&secret),
        "{listed}"
    );
    Ok(())
}

#[test]
fn commands_without_certificates_or_insecure_refuse_with_a_hint() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let serve = Command::new(BINARY)
        .args([
            "serve",
            "--id",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--peers",
            "1=127.0.0.1:1",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("r1"))
        .env_remove("DISPATCHER_TLS_DIR")
        .env_remove("DISPATCHER_INSECURE")
        .stdin(Stdio::null())
        .output()?;
    let client = Command::new(BINARY)
        .args(["job", "list", "--endpoints", "127.0.0.1:1"])
        .env_remove("DISPATCHER_TLS_DIR")
        .env_remove("DISPATCHER_INSECURE")
        .output()?;
    for out in [serve, client] {
        assert!(!out.status.success());
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("dispatcher certs init"), "{said}");
        assert!(said.contains("--insecure"), "{said}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insecure_replica_warns_at_every_start() -> anyhow::Result<()> {
    let mut cluster = start_cluster(1, test_config()).await?;
    cluster.kill(1)?;
    cluster.restart(1)?;
    cluster.wait_for_leader(&[1], DEADLINE).await?;
    let log = std::fs::read_to_string(&cluster.replica(1)?.log_file)?;
    assert_eq!(log.matches("INSECURE").count(), 2, "{log}");
    Ok(())
}
