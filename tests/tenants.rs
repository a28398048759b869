//! Tenants who do not trust each other, from outside: a `read` or `submit` token sees, follows
//! and touches only its own tenant's jobs (another tenant's job is `NOT_FOUND` everywhere,
//! and trying changes nothing), idempotency keys are per tenant, and every open stream ends
//! with `UNAUTHENTICATED` once its token is revoked.

mod common;

use common::http_client::{get, HttpTarget};
use common::*;
use dispatcher::client::{Client, ClientError, ClientOptions};
use dispatcher::domain::Role;
use dispatcher::local_cluster::{wait_for, HarnessSecurity};
use dispatcher::pb::api::SubmitRequest;
use dispatcher::security::{Credentials, Secret, TlsConfig, TlsFiles};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::Code;

/// The error of a job's first shard (with its stderr tail).
async fn shard_error(client: &Client, job: &str) -> anyhow::Result<String> {
    let status = client.job_status(job).await?;
    Ok(status
        .shards
        .first()
        .and_then(|s| s.error.clone())
        .unwrap_or_default())
}

fn shell(name: &str, script: &str, attempts: u32) -> SubmitRequest {
    job_request(
        name,
        1,
        1,
        attempts,
        ("/bin/sh".into(), vec!["-c".into(), script.into()]),
    )
}

/// How long a stream takes to end once `revoke` has run, and how. `follow` runs the stream
/// and calls its argument on each item, so that the revocation waits until it is open.
async fn stream_end_after_revocation<F, Fut>(
    follow: F,
    revoke: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<(Duration, Option<Code>)>
where
    F: FnOnce(Box<dyn Fn() + Send>) -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>> + Send + 'static,
{
    let opened = Arc::new(tokio::sync::Notify::new());
    let signal = opened.clone();
    let stream = tokio::spawn(follow(Box::new(move || signal.notify_one())));
    tokio::time::timeout(DEADLINE, opened.notified()).await?;
    revoke.await?;
    let revoked_at = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), stream).await??;
    let code = ended.err().and_then(|e| e.code());
    Ok((revoked_at.elapsed(), code))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sees_and_touches_only_its_own_jobs() -> anyhow::Result<()> {
    let mut cluster = start_secure_cluster(3, test_config()).await?;
    let dir = cluster.root().join("certs");
    let admin = cluster.client()?;
    cluster.start_taskmanager("a", 4, &[])?;
    wait_taskmanagers_alive(&admin, 1).await?;
    let as_token = |secret: &Secret| client_with_token(&cluster, secret);

    log_phase("two tenants: alice submits and a-reader reads for team-a; mallory for team-b");
    let (_, alice) = admin
        .create_token("alice", Role::Submit, Some("team-a"))
        .await?;
    let (_, a_reader) = admin
        .create_token("a-reader", Role::Read, Some("team-a"))
        .await?;
    let (_, mallory) = admin
        .create_token("mallory", Role::Submit, Some("team-b"))
        .await?;
    let (_, b_reader) = admin
        .create_token("b-reader", Role::Read, Some("team-b"))
        .await?;
    let (_, ops) = admin.create_token("ops", Role::Operator, None).await?;
    let (alice, a_reader, mallory, b_reader, ops) = (
        as_token(&alice)?,
        Arc::new(as_token(&a_reader)?),
        as_token(&mallory)?,
        Arc::new(as_token(&b_reader)?),
        as_token(&ops)?,
    );

    let mut failing = shell("a-fails", "echo a-secret-output >&2; exit 3", 1);
    failing.idempotency_key = "nightly".into();
    let failed = alice.submit(failing).await?;
    wait_job_state(&alice, &failed.job_id, &["failed"], DEADLINE).await?;
    let running = alice
        .submit(shell("a-runs", "while :; do echo tick; sleep 0.2; done", 1))
        .await?;
    wait_all_running(&alice, &running.job_id).await?;
    let error = shard_error(&alice, &failed.job_id).await?;
    assert!(error.contains("a-secret-output"), "{error}");

    log_phase("another tenant's job is NOT_FOUND for every read and every change");
    let before = leader_digest(&cluster).await?;
    for (who, client) in [("mallory", &mallory), ("b-reader", &*b_reader)] {
        for job in [&failed.job_id, &running.job_id] {
            assert_eq!(
                code(client.job_status(job).await),
                Some(Code::NotFound),
                "{who} status {job}"
            );
            assert_eq!(
                code(client.shard_output(job, 0).await),
                Some(Code::NotFound),
                "{who} output {job}"
            );
            let follow = client.follow_shard_output(job, 0, |_| true).await;
            assert_eq!(code(follow), Some(Code::NotFound), "{who} follow {job}");
            let watch = client.follow_events(0, 0, Some(job), |_| true).await;
            assert_eq!(code(watch), Some(Code::NotFound), "{who} watch {job}");
            // A read token may cancel nothing at all: refused for its role before the job
            // is looked at.
            let expected = if who == "mallory" {
                Code::NotFound
            } else {
                Code::PermissionDenied
            };
            assert_eq!(
                code(client.cancel_job(job).await),
                Some(expected),
                "{who} cancel {job}"
            );
        }
        let listed = client.list_jobs().await?;
        assert!(listed.is_empty(), "{who} lists {listed:?}");
        let quotas = client.list_quotas().await?;
        assert!(
            quotas.iter().all(|q| q.tenant != "team-a"),
            "{who} sees team-a's quota and load: {quotas:?}"
        );
    }
    let mut waits = shell("b-waits", "true", 1);
    waits.after = vec![running.job_id.clone()];
    assert_eq!(code(mallory.submit(waits).await), Some(Code::NotFound));
    assert_eq!(
        leader_digest(&cluster).await?,
        before,
        "a refused call changed the state"
    );

    log_phase("the tenant's own reader and an operator see the jobs, the error and output");
    for client in [&*a_reader, &ops] {
        let listed = client.list_jobs().await?;
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert!(shard_error(client, &failed.job_id)
            .await?
            .contains("a-secret-output"));
        let output = client.shard_output(&failed.job_id, 0).await?;
        assert!(String::from_utf8_lossy(&output.stderr).contains("a-secret-output"));
    }

    log_phase("incarnations are for operators only");
    assert!(ops
        .list_taskmanagers()
        .await?
        .iter()
        .all(|tm| tm.incarnation != 0));
    for client in [&*a_reader, &mallory] {
        let listed = client.list_taskmanagers().await?;
        assert_eq!(listed.len(), 1);
        assert!(listed.iter().all(|tm| tm.incarnation == 0), "{listed:?}");
    }

    log_phase("the cluster's event stream shows a tenant only its own jobs");
    let mine = mallory.submit(shell("b-own", "true", 1)).await?;
    // From team-a's first job on: every one of its events is in range.
    let first: u64 = failed.job_id.trim_start_matches("j-").parse()?;
    let mut seen = Vec::new();
    mallory
        .follow_events(first, 0, None, |event| {
            seen.push(event.clone());
            !(event.job_id == mine.job_id && event.kind == "job_submitted")
        })
        .await?;
    let foreign: Vec<_> = seen
        .iter()
        .filter(|e| !e.job_id.is_empty() && e.job_id != mine.job_id)
        .collect();
    assert!(foreign.is_empty(), "team-b saw {foreign:?}");

    log_phase("the dashboard's data shows a tenant only its own jobs");
    let https = HttpTarget::trusting(&dir.join("ca.pem"))?;
    let http = cluster.replica(cluster.ids()[0])?.http.clone();
    let HarnessSecurity::Tls { .. } = cluster.security() else {
        anyhow::bail!("the cluster is not secure");
    };
    let (_, b_web) = admin
        .create_token("b-web", Role::Read, Some("team-b"))
        .await?;
    let bearer = format!("Bearer {}", b_web.expose());
    let overview = wait_for(DEADLINE, "the overview to show team-b's job", || async {
        let reply = get(
            &https,
            &http,
            "/api/overview",
            &[("Authorization", &bearer)],
        )
        .await
        .ok()?;
        let json: serde_json::Value = serde_json::from_str(&reply.body).ok()?;
        (json["jobs_total"] == 1).then_some(json)
    })
    .await?;
    let ids: Vec<&str> = overview["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j["id"].as_str())
        .collect();
    assert_eq!(ids, vec![mine.job_id.as_str()]);
    // A job's page: its own, and another tenant's as if it did not exist.
    for (job, status) in [(&mine.job_id, 200), (&failed.job_id, 404)] {
        let page = get(
            &https,
            &http,
            &format!("/api/jobs/{job}"),
            &[("Authorization", &bearer)],
        )
        .await?;
        assert_eq!(page.status, status, "{job}: {}", page.body);
    }
    // Another tenant's running shard's output, followed through the console: refused by the
    // API as if the job did not exist.
    let followed = get(
        &https,
        &http,
        &format!("/api/jobs/{}/shards/0/follow", running.job_id),
        &[("Authorization", &bearer), ("x-dispatcher-console", "1")],
    )
    .await?;
    assert!(
        followed.body.contains("event: refused") && followed.body.contains("not found"),
        "{}",
        followed.body
    );
    assert!(!followed.body.contains("tick"), "{}", followed.body);

    log_phase("idempotency keys are per tenant");
    let mut same_key = shell("b-nightly", "true", 1);
    same_key.idempotency_key = "nightly".into();
    let theirs = mallory.submit(same_key.clone()).await?;
    assert!(
        theirs.created,
        "team-b's key was answered with team-a's job"
    );
    assert_ne!(theirs.job_id, failed.job_id);
    let again = mallory.submit(same_key).await?;
    assert_eq!((again.job_id, again.created), (theirs.job_id, false));

    log_phase("streams end with UNAUTHENTICATED once their token is revoked");
    let events_reader = b_reader.clone();
    let (took, ended) = stream_end_after_revocation(
        move |opened| async move {
            events_reader
                .follow_events(first, 0, None, move |_| {
                    opened();
                    true
                })
                .await
        },
        async { Ok(admin.revoke_token("b-reader").await.map(|_| ())?) },
    )
    .await?;
    eprintln!("events stream ended {took:?} after the revocation");
    assert_eq!(ended, Some(Code::Unauthenticated));
    assert!(took < Duration::from_secs(3), "{took:?}");

    let follower = a_reader.clone();
    let job = running.job_id.clone();
    let (took, ended) = stream_end_after_revocation(
        move |opened| async move {
            follower
                .follow_shard_output(&job, 0, move |_| {
                    opened();
                    true
                })
                .await
        },
        async { Ok(admin.revoke_token("a-reader").await.map(|_| ())?) },
    )
    .await?;
    eprintln!("output follow ended {took:?} after the revocation");
    assert_eq!(ended, Some(Code::Unauthenticated));
    assert!(took < Duration::from_secs(3), "{took:?}");

    ops.cancel_job(&running.job_id).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_have_owners() -> anyhow::Result<()> {
    let cluster = start_secure_cluster(3, test_config()).await?;
    let dir = cluster.root().join("certs");
    let admin = cluster.client()?;
    let (_, alice) = admin
        .create_token("alice", Role::Submit, Some("team-a"))
        .await?;
    let alice = Client::with_options(
        cluster.endpoints(),
        ClientOptions {
            rpc_timeout: Duration::from_secs(2),
            call_timeout: Duration::from_secs(5),
            source_ip: None,
            credentials: Credentials::tls(
                TlsConfig::load(&TlsFiles::new(&dir, "client-admin"))?,
                Some(alice),
            ),
        },
    )?;
    // Never placed (no agent): only the decision to accept them matters.
    let at = |priority: u32| SubmitRequest {
        priority: Some(priority),
        ..shell("p", "true", 1)
    };

    log_phase("without a ceiling a tenant's jobs are capped at the default, 500");
    alice.submit(at(500)).await?;
    let before = leader_digest(&cluster).await?;
    assert_eq!(
        code(alice.submit(at(501)).await),
        Some(Code::PermissionDenied)
    );
    assert_eq!(
        code(alice.submit(at(1000)).await),
        Some(Code::PermissionDenied)
    );
    assert_eq!(leader_digest(&cluster).await?, before);

    log_phase("an admin raises team-a's ceiling to 900");
    let set = admin
        .set_quota_limits(dispatcher::pb::api::SetQuotaRequest {
            tenant: "team-a".into(),
            max_priority: Some(900),
            ..Default::default()
        })
        .await?;
    assert_eq!(set.max_priority, 900);
    alice.submit(at(900)).await?;
    assert_eq!(
        code(alice.submit(at(901)).await),
        Some(Code::PermissionDenied)
    );
    let listed = admin.list_quotas().await?;
    let team_a = listed
        .iter()
        .find(|q| q.tenant == "team-a")
        .ok_or_else(|| anyhow::anyhow!("team-a not listed: {listed:?}"))?;
    assert_eq!(team_a.max_priority, 900);

    log_phase("under a ceiling below 500, a job that asks for no priority runs at the ceiling");
    admin
        .set_quota_limits(dispatcher::pb::api::SetQuotaRequest {
            tenant: "team-a".into(),
            max_priority: Some(100),
            ..Default::default()
        })
        .await?;
    let plain = alice.submit(shell("plain", "true", 1)).await?;
    assert_eq!(admin.job_status(&plain.job_id).await?.priority, 100);
    admin
        .set_quota_limits(dispatcher::pb::api::SetQuotaRequest {
            tenant: "team-a".into(),
            max_priority: Some(900),
            ..Default::default()
        })
        .await?;

    log_phase("an admin's own submissions are not capped; a ceiling above 1000 is refused");
    admin
        .submit(SubmitRequest {
            tenant: "team-a".into(),
            ..at(1000)
        })
        .await?;
    let too_high = admin
        .set_quota_limits(dispatcher::pb::api::SetQuotaRequest {
            tenant: "team-a".into(),
            max_priority: Some(1001),
            ..Default::default()
        })
        .await;
    assert_eq!(code(too_high), Some(Code::InvalidArgument));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_the_cluster_stops_serving_streams() -> anyhow::Result<()> {
    use dispatcher::pb::api::dispatcher_client::DispatcherClient;
    use dispatcher::pb::api::WatchEventsRequest;
    let cluster = start_cluster(3, test_config()).await?;
    let leader = cluster.wait_for_leader(&cluster.ids(), DEADLINE).await?;
    let follower = replica_other_than(&cluster, &[leader])?;
    let addr = cluster.replica(follower)?.addr.clone();
    let client = Client::new(vec![addr.clone()], Credentials::insecure())?;
    let from = cluster
        .local_status(follower)
        .await
        .ok_or_else(|| anyhow::anyhow!("no status"))?
        .last_applied;
    let mut stream = client
        .call_on(Some(&addr), |ch| async move {
            DispatcherClient::new(ch)
                .watch_events(WatchEventsRequest {
                    from_index: from,
                    ..Default::default()
                })
                .await
        })
        .await?;

    log_phase("the follower's stream is open; the two others are paused");
    let others: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != follower)
        .collect();
    for id in &others {
        cluster.pause(*id)?;
    }
    let paused_at = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status.code()),
            }
        }
    })
    .await;
    for id in &others {
        cluster.resume(*id)?;
    }
    let took = paused_at.elapsed();
    eprintln!("the cut-off follower ended its stream {took:?} after the pause");
    assert_eq!(ended?, Some(Code::Unavailable));
    // The election timeout here is 0.5-1 s.
    assert!(took < Duration::from_secs(4), "{took:?}");
    Ok(())
}
