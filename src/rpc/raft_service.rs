//! Inbound Raft RPCs: decode, hand to openraft, encode. Undecodable input is refused with
//! `INVALID_ARGUMENT` and never reaches openraft; so is anything the replica's `RaftGate`
//! does not let through (a replica that lost its data neither votes nor acknowledges entries
//! until the leader has taken it back), with `UNAVAILABLE`.

use crate::pb::raft::raft_service_server::RaftService as RaftServiceApi;
use crate::pb::raft::{RaftPayload, SnapshotChunk};
use crate::raft::network::{decode, encode};
use crate::raft::{Raft, RaftGate, Snapshot, SnapshotMeta, Vote};
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Display;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

pub struct RaftService {
    raft: Raft,
    gate: Arc<RaftGate>,
}

impl RaftService {
    pub fn new(raft: Raft, gate: Arc<RaftGate>) -> Self {
        RaftService { raft, gate }
    }

    fn check_replication(&self) -> Result<(), Status> {
        if self.gate.allows_replication() {
            Ok(())
        } else {
            Err(Status::unavailable(
                "this replica started on an empty data dir and waits for the leader to demote it \
                 to learner before it accepts entries",
            ))
        }
    }

    fn check_voting(&self) -> Result<(), Status> {
        if self.gate.allows_voting() {
            Ok(())
        } else {
            Err(Status::unavailable(
                "this replica lost its data and does not vote until the leader has caught it up \
                 and restored it to voter",
            ))
        }
    }
}

fn decode_request<T: DeserializeOwned>(payload: &RaftPayload, what: &str) -> Result<T, Status> {
    decode(&payload.data).map_err(|e| Status::invalid_argument(format!("undecodable {what}: {e}")))
}

fn reply<T: Serialize, E: Display>(result: Result<T, E>) -> Result<Response<RaftPayload>, Status> {
    let result: Result<T, String> = result.map_err(|e| e.to_string());
    let data = encode(&result).map_err(Status::internal)?;
    Ok(Response::new(RaftPayload { data }))
}

#[tonic::async_trait]
impl RaftServiceApi for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check_replication()?;
        let req: AppendEntriesRequest<_> = decode_request(request.get_ref(), "AppendEntries")?;
        reply(self.raft.append_entries(req).await)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_voting()?;
        let req: VoteRequest<_> = decode_request(request.get_ref(), "Vote")?;
        reply(self.raft.vote(req).await)
    }

    async fn pre_vote(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check_voting()?;
        let req: VoteRequest<_> = decode_request(request.get_ref(), "PreVote")?;
        reply(self.raft.pre_vote(req).await)
    }

    async fn transfer_leader(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check_voting()?;
        let req: TransferLeaderRequest<_> = decode_request(request.get_ref(), "TransferLeader")?;
        reply(self.raft.handle_transfer_leader(req).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check_replication()?;
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let (vote, meta): (Vote, SnapshotMeta) = decode(&first.header)
            .map_err(|e| Status::invalid_argument(format!("undecodable snapshot header: {e}")))?;
        let mut data = first.data;
        while let Some(chunk) = stream.message().await? {
            data.extend_from_slice(&chunk.data);
        }
        let snapshot = Snapshot {
            meta,
            snapshot: data,
        };
        reply(self.raft.install_full_snapshot(vote, snapshot).await)
    }
}
