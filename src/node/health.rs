//! The standard gRPC health service (`grpc.health.v1.Health`) and server reflection on the
//! replica's port. Health says SERVING once this replica is in the membership its Raft has
//! applied (it has joined the cluster), NOT_SERVING before that or after it was removed; a
//! load balancer or `grpc-health-probe` needs nothing of ours to ask.

use crate::raft::{NodeId, Raft, TypeConfig};
use openraft::async_runtime::watch::WatchReceiver;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::ServingStatus;

/// The health service, kept up to date by a task for as long as the Raft runs. Its first
/// status is set before it is returned: the reporter starts at SERVING, and a check that came
/// before the task's first turn would have been told so by a replica not yet a member.
pub async fn service(raft: Raft, id: NodeId) -> HealthServer<impl Health> {
    let (reporter, server) = tonic_health::server::health_reporter();
    // Membership lives in the server metrics, which change far less often than the full
    // ones (those change with every log entry).
    let mut metrics = raft.server_metrics();
    let mut shown = status_of(&metrics.borrow_watched(), id);
    reporter.set_service_status("", shown).await;
    tokio::spawn(async move {
        loop {
            if metrics.changed().await.is_err() {
                reporter
                    .set_service_status("", ServingStatus::NotServing)
                    .await;
                return;
            }
            let status = status_of(&metrics.borrow_watched(), id);
            if status != shown {
                reporter.set_service_status("", status).await;
                shown = status;
            }
        }
    });
    server
}

/// SERVING while this replica is in the membership its Raft has applied.
fn status_of(
    metrics: &openraft::metrics::RaftServerMetrics<TypeConfig>,
    id: NodeId,
) -> ServingStatus {
    if metrics
        .membership_config
        .membership()
        .get_node(&id)
        .is_some()
    {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

/// Server reflection (v1 and v1alpha), listing our services and health's.
pub fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}
