//! Agents speak only for what they hold, from outside: with a TaskManager's own certificate
//! and incarnation (all a compromised agent or a shard that read its key has), reports that
//! name an epoch never assigned, or a shard the agent does not hold, are refused before the
//! log (the log does not grow and the state's digest does not move), and a flood of reports
//! is cut off with `RESOURCE_EXHAUSTED` while the honest agent goes on working afterwards.

mod common;

use common::*;
use dispatcher::client::{Client, ClientError, ClientOptions};
use dispatcher::pb::api::task_managers_client::TaskManagersClient;
use dispatcher::pb::api::{ReportKind, ShardReport, ShardReportBatch};
use dispatcher::security::{Credentials, TlsConfig, TlsFiles};
use std::time::Duration;
use tonic::Code;

fn forged(job_id: &str, epoch: u64, incarnation: u64) -> ShardReport {
    ShardReport {
        taskmanager_id: "a".into(),
        job_id: job_id.into(),
        index: 0,
        epoch,
        kind: ReportKind::Failed as i32,
        exit_code: Some(1),
        error: "x".repeat(4096),
        incarnation,
        stderr_tail: vec![b'y'; 16 * 1024],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_for_shards_an_agent_does_not_hold_never_reach_the_log() -> anyhow::Result<()> {
    let mut cluster = start_secure_cluster(3, test_config()).await?;
    let dir = cluster.root().join("certs");
    let admin = cluster.client()?;
    cluster.start_taskmanager("a", 2, &[])?;
    cluster.start_taskmanager("b", 2, &[])?;
    wait_taskmanagers_alive(&admin, 2).await?;

    log_phase("a long job runs; the agent's incarnation is what a shard could read");
    let job = admin
        .submit(job_request(
            "long",
            2,
            1,
            1,
            ("/bin/sleep".into(), vec!["600".into()]),
        ))
        .await?;
    let status = wait_all_running(&admin, &job.job_id).await?;
    let incarnation = admin
        .list_taskmanagers()
        .await?
        .into_iter()
        .find(|tm| tm.id == "a")
        .map(|tm| tm.incarnation)
        .ok_or_else(|| anyhow::anyhow!("no tm a"))?;
    let as_agent = Client::with_options(
        cluster.endpoints(),
        ClientOptions {
            rpc_timeout: Duration::from_millis(500),
            call_timeout: Duration::from_secs(1),
            source_ip: None,
            credentials: Credentials::tls(TlsConfig::load(&TlsFiles::new(&dir, "tm-a"))?, None),
        },
    )?;
    let (applied_before, digest_before) = leader_view(&cluster).await?;

    log_phase("200 batches naming epochs never assigned: each refused, none logged");
    let future = applied_before + 1_000_000;
    for i in 0..200u64 {
        let batch = ShardReportBatch {
            reports: vec![forged(&job.job_id, future + i, incarnation)],
        };
        let reply = as_agent
            .call(|ch| {
                let batch = batch.clone();
                async move { TaskManagersClient::new(ch).report_shards(batch).await }
            })
            .await?;
        assert!(
            reply.outcomes.iter().all(|o| o.code != 0),
            "a forged report was accepted: {reply:?}"
        );
    }
    let single = as_agent
        .call(|ch| {
            let report = forged(&job.job_id, future, incarnation);
            async move { TaskManagersClient::new(ch).report_shard(report).await }
        })
        .await;
    assert!(single.is_err(), "{single:?}");

    log_phase("a report for a shard held by another agent is refused too");
    for shard in &status.shards {
        if shard.taskmanager.as_deref() == Some("b") {
            let mut report = forged(&job.job_id, shard.epoch, incarnation);
            report.index = shard.index;
            let refused = as_agent
                .call(|ch| {
                    let report = report.clone();
                    async move { TaskManagersClient::new(ch).report_shard(report).await }
                })
                .await;
            assert_eq!(
                refused.err().and_then(|e| e.code()),
                Some(Code::FailedPrecondition)
            );
        }
    }
    let (applied_after, digest_after) = leader_view(&cluster).await?;
    assert_eq!(
        applied_after, applied_before,
        "refused reports reached the log"
    );
    assert_eq!(digest_after, digest_before);

    log_phase("a flood is cut off with RESOURCE_EXHAUSTED");
    let big = ShardReportBatch {
        reports: (0..1024)
            .map(|i| ShardReport {
                error: String::new(),
                stderr_tail: Vec::new(),
                ..forged(&job.job_id, future + i, incarnation)
            })
            .collect(),
    };
    let mut exhausted = false;
    for _ in 0..64 {
        let sent = as_agent
            .call(|ch| {
                let batch = big.clone();
                async move { TaskManagersClient::new(ch).report_shards(batch).await }
            })
            .await;
        match sent {
            Err(ClientError::Rejected(status)) if status.code() == Code::ResourceExhausted => {
                exhausted = true;
                break;
            }
            Err(e) => anyhow::bail!("unexpected refusal: {e}"),
            Ok(_) => {}
        }
    }
    assert!(exhausted, "64 batches of 1,024 reports were all taken");
    assert_eq!(leader_view(&cluster).await?.0, applied_before);

    log_phase("the honest agent's own reports still get through");
    admin.cancel_job(&job.job_id).await?;
    wait_job_state(&admin, &job.job_id, &["cancelled"], DEADLINE).await?;
    let next = admin
        .submit(job_request("after", 2, 1, 1, ("/bin/true".into(), vec![])))
        .await?;
    wait_job_state(&admin, &next.job_id, &["finished"], DEADLINE).await?;
    Ok(())
}

/// A client that presents a new agent certificate `tm-<name>`, made under the cluster's CA.
fn new_agent_client(cluster: &TestCluster, name: &str) -> anyhow::Result<Client> {
    let dir = cluster.root().join("certs");
    dispatcher::security::certs::add(
        &dir,
        &dispatcher::security::certs::CertsPlan {
            taskmanagers: vec![name.into()],
            ..Default::default()
        },
    )?;
    let files = TlsFiles::new(&dir, format!("tm-{name}"));
    Ok(Client::with_options(
        cluster.endpoints(),
        ClientOptions {
            rpc_timeout: Duration::from_secs(2),
            call_timeout: Duration::from_secs(5),
            source_ip: None,
            credentials: Credentials::tls(TlsConfig::load(&files)?, None),
        },
    )?)
}

/// The code and message of a refusal (a success fails the test).
fn refusal<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (Code, String) {
    match result {
        Ok(reply) => panic!("admitted: {reply:?}"),
        Err(ClientError::Rejected(status)) => (status.code(), status.message().to_string()),
        Err(e) => panic!("unexpected: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_claims_only_the_labels_and_slots_an_admin_pinned() -> anyhow::Result<()> {
    use dispatcher::pb::api::RegisterTaskManagerRequest;
    let mut cluster = start_secure_cluster(3, test_config()).await?;
    let dir = cluster.root().join("certs");
    let admin = cluster.client()?;
    let as_agent = new_agent_client(&cluster, "p")?;
    let claim = |slots: u32, labels: &[(&str, &str)]| RegisterTaskManagerRequest {
        id: "p".into(),
        addr: "127.0.0.1:9".into(),
        slots,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        incarnation: 7,
        ..Default::default()
    };
    let (_, before) = leader_view(&cluster).await?;

    log_phase("an agent certificate may not name itself into a trusted pool");
    let (code, message) = refusal(
        as_agent
            .register_taskmanager(claim(2, &[("pool", "trusted")]))
            .await,
    );
    assert_eq!(code, Code::PermissionDenied);
    assert!(
        message.contains("tm pin p --labels pool=trusted"),
        "{message}"
    );
    assert_eq!(
        leader_view(&cluster).await?.1,
        before,
        "a refusal changed the state"
    );

    log_phase("an admin pins pool=trusted and 2 slots; more slots are refused");
    admin
        .pin_taskmanager("p", [("pool".into(), "trusted".into())].into(), Some(2))
        .await?;
    let (code, message) = refusal(
        as_agent
            .register_taskmanager(claim(4, &[("pool", "trusted")]))
            .await,
    );
    assert_eq!(code, Code::PermissionDenied);
    assert!(message.contains("at most 2"), "{message}");
    let (code, _) = refusal(
        as_agent
            .register_taskmanager(claim(2, &[("pool", "gpu")]))
            .await,
    );
    assert_eq!(code, Code::PermissionDenied);

    log_phase("the real agent registers with what was pinned, and runs the pool's jobs");
    cluster.start_taskmanager("p", 2, &[("pool", "trusted")])?;
    wait_taskmanagers_alive(&admin, 1).await?;
    let listed = admin.list_taskmanagers().await?;
    assert_eq!(
        listed[0].labels.get("pool").map(String::as_str),
        Some("trusted")
    );
    assert_eq!(listed[0].pinned_slots, Some(2));
    let mut request = job_request("trusted", 2, 1, 1, ("/bin/true".into(), vec![]));
    if let Some(spec) = request.spec.as_mut() {
        spec.selector.insert("pool".into(), "trusted".into());
    }
    let job = admin.submit(request).await?;
    wait_job_state(&admin, &job.job_id, &["finished"], DEADLINE).await?;

    log_phase("a pin is only for admins");
    let (_, ops) = admin
        .create_token("ops", dispatcher::domain::Role::Operator, None)
        .await?;
    let operator = Client::with_options(
        cluster.endpoints(),
        ClientOptions::new(Credentials::tls(
            TlsConfig::load(&TlsFiles::new(&dir, "client-admin"))?,
            Some(ops),
        )),
    )?;
    let refused = operator
        .pin_taskmanager("p", [("pool".into(), "x".into())].into(), None)
        .await;
    assert_eq!(
        refused.err().and_then(|e| e.code()),
        Some(Code::PermissionDenied)
    );

    log_phase(
        "an admin narrows the pin to 1 slot: the agent, registered with 2, loses its registration",
    );
    admin
        .pin_taskmanager("p", [("pool".into(), "trusted".into())].into(), Some(1))
        .await?;
    dispatcher::local_cluster::wait_for(DEADLINE, "TaskManager p declared lost", || async {
        let tms = admin.list_taskmanagers().await.ok()?;
        tms.iter()
            .any(|t| t.id == "p" && t.state == "lost")
            .then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_declares_only_the_named_resources_and_cpu_an_admin_pinned() -> anyhow::Result<()>
{
    use dispatcher::pb::api::{RegisterTaskManagerRequest, ResourceAmounts};
    let mut cluster = start_secure_cluster(3, test_config()).await?;
    let admin = cluster.client()?;
    let as_agent = new_agent_client(&cluster, "g")?;
    log_phase("the cluster raises itself to version 4, where pins bound resources");
    dispatcher::local_cluster::wait_for(DEADLINE, "cluster version 4", || async {
        let status = admin.cluster_status().await.ok()?;
        (status.cluster_version >= Some(4)).then_some(())
    })
    .await?;
    let claim = |cpu_millis: u64, gpus: u64| RegisterTaskManagerRequest {
        id: "g".into(),
        addr: "127.0.0.1:9".into(),
        slots: 1,
        incarnation: 7,
        capacity: Some(ResourceAmounts {
            cpu_millis,
            memory_bytes: 1 << 30,
            named: [("gpu".to_string(), gpus)]
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .collect(),
        }),
        isolation: "none".into(),
        ..Default::default()
    };

    log_phase("an agent certificate may not declare a GPU nobody pinned to it");
    let (code, message) = refusal(as_agent.register_taskmanager(claim(2_000, 1)).await);
    assert_eq!(code, Code::PermissionDenied);
    assert!(message.contains("tm pin g --resources gpu=1"), "{message}");

    log_phase("an admin pins gpu=1 and 2 CPUs; more of either is refused");
    admin
        .pin_taskmanager_with(
            "g",
            Default::default(),
            None,
            dispatcher::domain::ResourcePin {
                cpu_millis: Some(2_000),
                memory_bytes: None,
                named: [("gpu".to_string(), 1)].into(),
            },
        )
        .await?;
    let (code, message) = refusal(as_agent.register_taskmanager(claim(2_000, 2)).await);
    assert_eq!(code, Code::PermissionDenied);
    assert!(
        message.contains("at most gpu=1") && message.contains("--cpus 2 --resources gpu=2"),
        "{message}"
    );
    let (code, message) = refusal(as_agent.register_taskmanager(claim(64_000, 1)).await);
    assert_eq!(code, Code::PermissionDenied);
    assert!(message.contains("--cpus 2,"), "{message}");
    log_phase("an agent that declares nothing (unbounded CPU and memory) is refused under the pin");
    let mut bare = claim(2_000, 0);
    bare.capacity = None;
    bare.isolation = String::new();
    let (code, message) = refusal(as_agent.register_taskmanager(bare).await);
    assert_eq!(code, Code::PermissionDenied);
    assert!(message.contains("declares no CPU or memory"), "{message}");

    log_phase("the real agent registers with what was pinned, and tm list shows the pin");
    cluster.start_taskmanager_with("g", 1, &[], None, &["--cpus", "2", "--resources", "gpu=1"])?;
    wait_taskmanagers_alive(&admin, 1).await?;
    let listed = admin.list_taskmanagers().await?;
    assert_eq!(listed[0].pinned_resources.get("gpu"), Some(&1));
    assert_eq!(listed[0].pinned_cpu_millis, Some(2_000));
    let mut request = job_request("gpu", 1, 1, 1, ("/bin/true".into(), vec![]));
    request.resources = Some(ResourceAmounts {
        named: [("gpu".to_string(), 1)].into(),
        ..Default::default()
    });
    let job = admin.submit(request).await?;
    wait_job_state(&admin, &job.job_id, &["finished"], DEADLINE).await?;
    Ok(())
}
