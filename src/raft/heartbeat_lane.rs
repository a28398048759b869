//! The leader's heartbeats to one follower over one long-lived `RaftService.AppendStream`.
//!
//! openraft sends each heartbeat as a stream of one AppendEntries request. Opened anew every
//! time, that is a new HTTP/2 stream per heartbeat, with its headers, its trip through both
//! sides' service stacks and a new follower-side stream session: at a 20 ms interval to two
//! followers it was most of what an idle cluster spent (5 % of a core on the leader, 3 % on
//! each follower). Here the heartbeat client keeps the stream open and sends each heartbeat
//! down it as one more message; the follower answers in order, as it does for replication.
//!
//! The stream is dropped, and opened again on the next heartbeat, after anything unusual: an
//! error, an answer that ends the follower's side (a conflict or a higher vote), a rotated
//! certificate, or a heartbeat given up on before its answer came (openraft gives up after
//! its interval). The stream is taken out of the client for each exchange and put back only
//! once its answer is read, so a late answer is never read as the next heartbeat's.
//!
//! Must not: be used for replication (one request in flight at a time, by design), or read an
//! answer as another request's.

use super::append_stream::{
    answer_of, refuses_stream, AppendAnswer, AppendAnswers, AppendRequests,
};
use super::network::{encode, network, status_to_rpc_error, unreachable, why_failed, PeerClient};
use super::types::TypeConfig;
use crate::pb::raft::RaftPayload;
use futures::StreamExt;
use openraft::base::BoxStream;
use openraft::errors::{RPCError, Timeout};
use openraft::network::{RPCOption, RPCTypes};
use openraft::raft::AppendEntriesRequest;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A heartbeat client's stream to its follower, when one is open and idle.
#[derive(Default)]
pub(super) struct HeartbeatLane {
    idle: Option<OpenLane>,
}

struct OpenLane {
    requests: mpsc::Sender<RaftPayload>,
    answers: tonic::Streaming<RaftPayload>,
    /// The certificate generation the stream was opened with.
    generation: u64,
}

impl PeerClient {
    /// openraft's heartbeat: each request of `input` down the lane, its answer back.
    pub(super) fn heartbeat_append<'s, S: AppendRequests>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> AppendAnswers<'s> {
        // Each exchange has a deadline of its own, whatever the caller does.
        let deadline = option.soft_ttl();
        Box::pin(async move {
            let answers = futures::stream::unfold(Some((self, input)), move |state| async move {
                let (peer, mut input) = state?;
                let request = input.next().await?;
                let answer = peer.exchange(request, deadline).await;
                // After an error the stream is over, as the follower's side is.
                let go_on = matches!(answer, Ok(Ok(_)));
                Some((answer, go_on.then_some((peer, input))))
            });
            Ok(Box::pin(answers) as BoxStream<'s, AppendAnswer>)
        })
    }

    /// Send one request down the lane (opened first if none is idle) and read its answer;
    /// the lane goes back to idle only after an accepted answer.
    async fn exchange(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        deadline: Duration,
    ) -> AppendAnswer {
        let data = encode(&request).map_err(network)?;
        let generation = self.factory.transport_generation();
        let idle = self
            .heartbeat
            .as_mut()
            .and_then(|lane| lane.idle.take())
            .filter(|lane| lane.generation == generation);
        let exchanged = tokio::time::timeout(deadline, async {
            let mut lane = match idle {
                Some(lane) => lane,
                None => self.open_lane(generation).await?,
            };
            if lane.requests.send(RaftPayload { data }).await.is_err() {
                return Err(unreachable(format!(
                    "replica {}: the heartbeat stream closed",
                    self.target
                )));
            }
            match lane.answers.message().await {
                Ok(Some(payload)) => Ok((lane, payload)),
                Ok(None) => Err(unreachable(format!(
                    "replica {} ended the heartbeat stream",
                    self.target
                ))),
                Err(status) => {
                    self.troubles
                        .failed(self.target, &self.addr, &why_failed(&status));
                    Err(status_to_rpc_error(self.target, &self.addr, status))
                }
            }
        })
        .await;
        let (lane, payload) = match exchanged {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(RPCError::Timeout(Timeout {
                    action: RPCTypes::AppendEntries,
                    id: 0,
                    target: self.target,
                    timeout: deadline,
                }))
            }
        };
        self.troubles.answered(self.target);
        let answer = answer_of(self.target, &payload);
        // The follower ends its side after a refusal (a conflict, a higher vote).
        if matches!(answer, Ok(Ok(_))) {
            if let Some(heartbeat) = self.heartbeat.as_mut() {
                heartbeat.idle = Some(lane);
            }
        }
        answer
    }

    async fn open_lane(&self, generation: u64) -> Result<OpenLane, RPCError<TypeConfig>> {
        let (requests, rx) = mpsc::channel(1);
        let outgoing = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|payload| (payload, rx))
        });
        let mut client = self.client()?;
        match client.append_stream(tonic::Request::new(outgoing)).await {
            Ok(answers) => Ok(OpenLane {
                requests,
                answers: answers.into_inner(),
                generation,
            }),
            Err(status) => {
                if refuses_stream(&status) {
                    // A release without the stream: unary heartbeats for a while.
                    self.refused_stream(Some(Instant::now()));
                }
                self.troubles
                    .failed(self.target, &self.addr, &why_failed(&status));
                Err(status_to_rpc_error(self.target, &self.addr, status))
            }
        }
    }
}
