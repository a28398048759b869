//! Inbound Raft RPCs: decode, hand to openraft, encode. Undecodable input is refused with
//! `INVALID_ARGUMENT` and never reaches openraft; so is anything the replica's `RaftGate`
//! does not let through (a replica that lost its data neither votes nor acknowledges entries
//! until the leader has taken it back), with `UNAVAILABLE`. A message must come from the
//! replica it names: the leader or candidate in it is the replica whose certificate the
//! caller presented (`PERMISSION_DENIED` otherwise). A snapshot install is bounded in size
//! and in time; a stream of appends in the bytes it holds unanswered (`read_ahead`).

use super::access::Caller;
use super::leader_contact::LeaderContact;
use super::read_ahead::{CloseOnDrop, ReadAhead, APPEND_READ_AHEAD_BYTES};
use crate::pb::raft::raft_service_server::RaftService as RaftServiceApi;
use crate::pb::raft::{RaftPayload, SnapshotChunk};
use crate::raft::network::{decode, encode};
use crate::raft::TypeConfig;
use crate::raft::{Raft, RaftGate, Snapshot, SnapshotMeta, Vote};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, StreamAppendError, TransferLeaderRequest,
    VoteRequest,
};
use openraft::vote::RaftLeaderId;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Display;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

/// Largest snapshot a replica takes in.
const MAX_SNAPSHOT_BYTES: usize = 4 << 30;
/// Longest a snapshot may take to arrive.
const SNAPSHOT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(600);

/// The replica that speaks in a message must be the one whose certificate was presented.
fn require_sender<T>(request: &Request<T>, named: u64, what: &str) -> Result<(), Status> {
    require_caller(request.extensions().get::<Caller>(), named, what)
}

/// `require_sender` for a stream's messages, checked against the caller of the stream.
fn require_caller(caller: Option<&Caller>, named: u64, what: &str) -> Result<(), Status> {
    match caller {
        Some(Caller::Replica(id)) if *id == named => Ok(()),
        Some(Caller::Replica(id)) => Err(Status::permission_denied(format!(
            "replica-{id} sent a {what} in the name of replica {named}; a replica speaks only \
             for itself"
        ))),
        // `--insecure`: nobody is identified.
        Some(Caller::Anyone) => Ok(()),
        _ => Err(Status::permission_denied(format!(
            "only replicas may send a {what}"
        ))),
    }
}

pub struct RaftService {
    raft: Raft,
    gate: Arc<RaftGate>,
    /// Told of every AppendEntries a current leader sends (see `leader_contact`).
    contact: Arc<LeaderContact>,
}

impl RaftService {
    pub fn new(raft: Raft, gate: Arc<RaftGate>, contact: Arc<LeaderContact>) -> Self {
        RaftService {
            raft,
            gate,
            contact,
        }
    }

    fn check_replication(&self) -> Result<(), Status> {
        replication_allowed(&self.gate)
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

fn replication_allowed(gate: &RaftGate) -> Result<(), Status> {
    if gate.allows_replication() {
        Ok(())
    } else {
        Err(Status::unavailable(
            "this replica started on an empty data dir and waits for the leader to demote it \
             to learner before it accepts entries",
        ))
    }
}

fn decode_request<T: DeserializeOwned>(payload: &RaftPayload, what: &str) -> Result<T, Status> {
    decode(&payload.data).map_err(|e| {
        // Intact bytes (gRPC checked them) this build cannot read: most likely a newer
        // release's, e.g. an entry of a command kind added since.
        Status::invalid_argument(format!(
            "undecodable {what}: {e}; if the sender runs a newer release, upgrade this replica \
             (it runs {})",
            crate::formats::long_version()
        ))
    })
}

fn reply<T: Serialize, E: Display>(result: Result<T, E>) -> Result<Response<RaftPayload>, Status> {
    let result: Result<T, String> = result.map_err(|e| e.to_string());
    let data = encode(&result).map_err(Status::internal)?;
    Ok(Response::new(RaftPayload { data }))
}

/// The answers of an append stream, in the order of its requests.
type AnswerStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<RaftPayload, Status>> + Send>>;

#[tonic::async_trait]
impl RaftServiceApi for RaftService {
    type AppendStreamStream = AnswerStream;

    /// Pipelined replication: each request is checked as a unary one is (decodable, from the
    /// replica named in it, the gate open); the first that fails ends the stream with why.
    async fn append_stream(
        &self,
        request: Request<Streaming<RaftPayload>>,
    ) -> Result<Response<AnswerStream>, Status> {
        use futures::future::ready;
        use futures::StreamExt;
        self.check_replication()?;
        let caller = request.extensions().get::<Caller>().cloned();
        let gate = self.gate.clone();
        let refusal: Arc<std::sync::Mutex<Option<Status>>> = Arc::default();
        let refused = refusal.clone();
        let read_ahead = Arc::new(ReadAhead::new(APPEND_READ_AHEAD_BYTES));
        let admitting = read_ahead.clone();
        let requests = request
            .into_inner()
            .then(move |message| {
                let admitting = admitting.clone();
                async move {
                    // Taken in only once its bytes fit beside what waits for an answer; not
                    // at all once the answers have ended.
                    let payload = message.ok()?;
                    admitting.admit(payload.data.len()).await.then_some(payload)
                }
            })
            .map(move |payload| {
                // The sender went away, or the answers ended: the stream simply ends.
                let payload = payload?;
                let checked =
                    decode_request::<AppendEntriesRequest<TypeConfig>>(&payload, "AppendEntries")
                        .and_then(|req| {
                            let leader = *req.vote.leader_id().node_id();
                            require_caller(caller.as_ref(), leader, "AppendEntries")?;
                            replication_allowed(&gate)?;
                            Ok(req)
                        });
                checked
                    .map_err(|status| {
                        *refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
                    })
                    .ok()
            })
            .take_while(|req| ready(req.is_some()))
            .filter_map(ready);
        let contact = self.contact.clone();
        let closing = CloseOnDrop(read_ahead);
        let answers = self.raft.stream_append(requests).map(move |answer| {
            // Answers come in the order of the requests: the oldest one's bytes are free.
            closing.0.answered();
            if matches!(&answer, Ok(Ok(_)) | Ok(Err(StreamAppendError::Conflict(_)))) {
                contact.touch();
            }
            let answer: Result<_, String> = answer.map_err(|fatal| fatal.to_string());
            encode(&answer)
                .map(|data| RaftPayload { data })
                .map_err(Status::internal)
        });
        let why_ended = futures::stream::once(async move {
            refusal.lock().unwrap_or_else(|p| p.into_inner()).take()
        })
        .filter_map(|refusal| ready(refusal.map(Err)));
        Ok(Response::new(Box::pin(answers.chain(why_ended))))
    }

    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check_replication()?;
        let req: AppendEntriesRequest<TypeConfig> =
            decode_request(request.get_ref(), "AppendEntries")?;
        require_sender(&request, *req.vote.leader_id().node_id(), "AppendEntries")?;
        let result = self.raft.append_entries(req).await;
        if matches!(&result, Ok(resp) if !matches!(resp, AppendEntriesResponse::HigherVote(_))) {
            self.contact.touch();
        }
        reply(result)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_voting()?;
        let req: VoteRequest<TypeConfig> = decode_request(request.get_ref(), "Vote")?;
        require_sender(&request, *req.vote.leader_id().node_id(), "Vote")?;
        reply(self.raft.vote(req).await)
    }

    async fn pre_vote(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check_voting()?;
        let req: VoteRequest<TypeConfig> = decode_request(request.get_ref(), "PreVote")?;
        require_sender(&request, *req.vote.leader_id().node_id(), "PreVote")?;
        reply(self.raft.pre_vote(req).await)
    }

    async fn transfer_leader(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check_voting()?;
        let req: TransferLeaderRequest<TypeConfig> =
            decode_request(request.get_ref(), "TransferLeader")?;
        require_sender(
            &request,
            *req.from_leader().leader_id().node_id(),
            "TransferLeader",
        )?;
        reply(self.raft.handle_transfer_leader(req).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check_replication()?;
        let caller = request.extensions().get::<Caller>().cloned();
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let (vote, meta): (Vote, SnapshotMeta) = decode(&first.header)
            .map_err(|e| Status::invalid_argument(format!("undecodable snapshot header: {e}")))?;
        require_caller(caller.as_ref(), *vote.leader_id().node_id(), "snapshot")?;
        let mut data = first.data;
        let received = tokio::time::timeout(SNAPSHOT_DEADLINE, async {
            while let Some(chunk) = stream.message().await? {
                if data.len() + chunk.data.len() > MAX_SNAPSHOT_BYTES {
                    return Err(Status::resource_exhausted(format!(
                        "a snapshot of more than {} GiB is refused",
                        MAX_SNAPSHOT_BYTES >> 30
                    )));
                }
                data.extend_from_slice(&chunk.data);
            }
            Ok(())
        })
        .await;
        match received {
            Ok(result) => result?,
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "the snapshot took longer than {} s to arrive",
                    SNAPSHOT_DEADLINE.as_secs()
                )))
            }
        }
        let snapshot = Snapshot {
            meta,
            snapshot: data,
        };
        reply(self.raft.install_full_snapshot(vote, snapshot).await)
    }
}
