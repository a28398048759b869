//! Forming the cluster without an init step, and never forming a second one.
//!
//! A replica whose log is empty asks every other peer (`Cluster.Status`, local view) whether
//! it already belongs to a cluster. If any does, it waits to be caught up by that cluster's
//! leader (it is a member that lost its disk, or a new replica about to be added). Only when
//! a majority of the peers, itself included, answer and none is initialized does the replica
//! with the smallest id among those that answered initialize the membership — the same
//! membership on whichever replica does it, which openraft allows.

use crate::pb::api::cluster_client::ClusterClient;
use crate::pb::api::ClusterStatusRequest;
use crate::raft::{Node, Raft};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
const RETRY_EVERY: Duration = Duration::from_millis(300);

/// `Some(initialized)` if the peer answered.
async fn probe(addr: &str) -> Option<bool> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(PROBE_TIMEOUT)
        .timeout(PROBE_TIMEOUT);
    let channel = endpoint.connect().await.ok()?;
    let mut client = ClusterClient::new(channel);
    let reply = client
        .status(ClusterStatusRequest { local: true })
        .await
        .ok()?
        .into_inner();
    Some(reply.initialized)
}

pub async fn form_or_join(raft: Raft, id: u64, peers: BTreeMap<u64, String>) {
    loop {
        match raft.is_initialized().await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                tracing::error!("raft stopped before the cluster formed: {e}");
                return;
            }
        }
        if peers.contains_key(&id) {
            let mut pristine = BTreeSet::from([id]);
            let mut someone_initialized = false;
            for (peer, addr) in peers.iter().filter(|(p, _)| **p != id) {
                match probe(addr).await {
                    Some(true) => someone_initialized = true,
                    Some(false) => {
                        pristine.insert(*peer);
                    }
                    None => {}
                }
            }
            let majority = peers.len() / 2 + 1;
            if someone_initialized {
                tracing::info!(
                    "a peer already belongs to a cluster; waiting to be caught up by its leader"
                );
            } else if pristine.len() >= majority && pristine.first() == Some(&id) {
                let members: BTreeMap<u64, Node> = peers
                    .iter()
                    .map(|(id, addr)| (*id, Node { addr: addr.clone() }))
                    .collect();
                match raft.initialize(members).await {
                    Ok(()) => {
                        tracing::info!(members = ?peers, "initialized the cluster");
                        return;
                    }
                    Err(e) => tracing::info!("initialize: {e}"),
                }
            }
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}
