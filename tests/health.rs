//! The standard gRPC endpoints every replica serves beside our own: health
//! (`grpc.health.v1.Health`, SERVING once the replica is a member) and server reflection, with
//! and without TLS. A certificate of the cluster is enough to ask; no token is needed.

mod common;

use common::*;
use dispatcher::local_cluster::wait_for;
use std::time::Duration;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

async fn serving(channel: tonic::transport::Channel) -> Option<()> {
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    (reply.into_inner().status == ServingStatus::Serving as i32).then_some(())
}

async fn services(channel: tonic::transport::Channel) -> anyhow::Result<Vec<String>> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await?
        .into_inner();
    let reply = replies
        .message()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no reflection reply"))?;
    match reply.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        other => anyhow::bail!("unexpected reflection reply {other:?}"),
    }
}

async fn check_every_replica(cluster: &TestCluster, party: &str) -> anyhow::Result<()> {
    let transport = cluster.credentials_as(party)?.transport;
    for endpoint in cluster.endpoints() {
        let channel = transport
            .connect(&endpoint, |e| e.timeout(Duration::from_secs(2)), None)
            .await?;
        wait_for(DEADLINE, "the replica to report SERVING", || {
            serving(channel.clone())
        })
        .await?;
        let names = services(channel).await?;
        for expected in [
            "dispatcher.v1.Dispatcher",
            "dispatcher.v1.TaskManagers",
            "grpc.health.v1.Health",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{endpoint} does not list {expected}: {names:?}"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_reports_serving_and_lists_its_services() -> anyhow::Result<()> {
    let mut cluster = start_cluster(3, test_config()).await?;
    check_every_replica(&cluster, "any").await?;

    log_phase("a replica not yet added is up but NOT_SERVING, then SERVING once added");
    let addr = cluster.start_extra_replica(4)?;
    let transport = cluster.credentials()?.transport;
    let channel = wait_for(DEADLINE, "the new replica to answer", || async {
        let channel = transport
            .connect(&addr, |e| e.timeout(Duration::from_secs(2)), None)
            .await
            .ok()?;
        HealthClient::new(channel.clone())
            .check(HealthCheckRequest::default())
            .await
            .ok()
            .map(|reply| (channel, reply.into_inner().status))
    })
    .await?;
    assert_eq!(channel.1, ServingStatus::NotServing as i32);
    cluster.client()?.add_member(4, &addr).await?;
    wait_for(DEADLINE, "the added replica to report SERVING", || {
        serving(channel.0.clone())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_a_cluster_certificate_without_a_token_may_ask() -> anyhow::Result<()> {
    let cluster = start_secure_cluster(3, test_config()).await?;
    check_every_replica(&cluster, "client-probe").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_with_json_logs_writes_one_object_per_line() -> anyhow::Result<()> {
    let mut cluster = start_cluster(3, test_config()).await?;
    let log = cluster.replica(2)?.log_file.clone();
    cluster.kill(2)?;
    let before = std::fs::metadata(&log)?.len() as usize;
    cluster.set_env(
        2,
        vec![("DISPATCHER_LOG_FORMAT".to_string(), "json".to_string())],
    )?;
    cluster.restart(2)?;
    cluster.wait_converged(&[1, 2, 3], DEADLINE).await?;
    let text = std::fs::read_to_string(&log)?;
    let lines: Vec<&str> = text[before..].lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty(), "the restarted replica logged nothing");
    for line in lines {
        let object: serde_json::Value =
            serde_json::from_str(line).map_err(|e| anyhow::anyhow!("not JSON ({e}): {line}"))?;
        for key in ["timestamp", "level", "target"] {
            assert!(object.get(key).is_some(), "no {key}: {line}");
        }
        assert!(
            object["fields"]["message"].is_string(),
            "no message: {line}"
        );
    }
    Ok(())
}
