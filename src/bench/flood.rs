//! Admission control under a flood: several clients (each from its own loopback address)
//! submit jobs whose shards can never be placed until the cluster refuses them; then another
//! client tries a small job. Reports what was admitted, how the refusals read, and the
//! replicas' resident memory with the cluster full.

use super::process::rss_bytes;
use super::{job_request, BenchError};
use crate::client::{Client, ClientError, ClientOptions};
use crate::local_cluster::LocalCluster;
use crate::pb::api::SubmitRequest;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;
use tonic::Code;

#[derive(Debug, Clone, Serialize)]
pub struct FloodResult {
    pub clients: usize,
    pub shards_per_job: u32,
    pub admitted_shards: u64,
    pub refusals: u64,
    /// What the first client was told when its flood was cut off.
    pub refusal_message: String,
    /// What a small job from another client got with the cluster full.
    pub small_job_outcome: String,
    pub seconds: f64,
    /// Resident memory of each replica with the cluster full.
    pub replica_rss_bytes: BTreeMap<u64, u64>,
}

fn unplaceable(name: &str, shards: u32) -> SubmitRequest {
    let mut req = job_request(name, shards, "/bin/true", &[]);
    if let Some(spec) = req.spec.as_mut() {
        spec.selector
            .insert("bench".into(), "no-such-taskmanager".into());
    }
    req
}

fn client_from(cluster: &LocalCluster, last_octet: usize) -> Result<Client, BenchError> {
    let source = format!("127.0.0.{last_octet}")
        .parse()
        .map_err(|e| BenchError::Failed(format!("source address: {e}")))?;
    Ok(Client::with_options(
        cluster.endpoints(),
        ClientOptions {
            source_ip: Some(source),
            ..ClientOptions::new(cluster.credentials()?)
        },
    )?)
}

/// Each client submits until refused; returns (shards admitted, first refusal).
async fn flood_one(client: Client, c: usize, shards: u32) -> Result<(u64, String), BenchError> {
    let mut admitted = 0u64;
    let mut seq = 0;
    loop {
        match client
            .submit(unplaceable(&format!("flood-{c}-{seq}"), shards))
            .await
        {
            Ok(_) => admitted += u64::from(shards),
            Err(ClientError::Rejected(s)) if s.code() == Code::ResourceExhausted => {
                return Ok((admitted, s.message().to_string()))
            }
            Err(e) => return Err(e.into()),
        }
        seq += 1;
    }
}

pub async fn measure_flood(
    cluster: &LocalCluster,
    clients: usize,
    shards_per_job: u32,
) -> Result<FloodResult, BenchError> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = client_from(cluster, 10 + c)?;
        tasks.push(tokio::spawn(flood_one(client, c, shards_per_job)));
    }
    let mut admitted = 0;
    let mut refusal_message = String::new();
    for task in tasks {
        let (shards, message) = task
            .await
            .map_err(|e| BenchError::Failed(format!("flood task: {e}")))??;
        admitted += shards;
        if refusal_message.is_empty() {
            refusal_message = message;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let small = client_from(cluster, 200)?
        .submit(job_request("small", 1, "/bin/true", &[]))
        .await;
    let small_job_outcome = match small {
        Ok(reply) => format!("accepted as {}", reply.job_id),
        Err(e) => format!("refused: {e}"),
    };
    let mut replica_rss_bytes = BTreeMap::new();
    for id in cluster.ids() {
        if let Some(pid) = cluster.replica(id)?.pid() {
            if let Some(rss) = rss_bytes(pid) {
                replica_rss_bytes.insert(id, rss);
            }
        }
    }
    Ok(FloodResult {
        clients,
        shards_per_job,
        admitted_shards: admitted,
        refusals: clients as u64,
        refusal_message,
        small_job_outcome,
        seconds,
        replica_rss_bytes,
    })
}
