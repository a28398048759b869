//! Pipelined replication to one follower: openraft's stream of AppendEntries requests over one
//! gRPC bidirectional stream (`RaftService.AppendStream`), with at most `append_pipeline`
//! requests sent and not yet answered. openraft builds the next batch while the previous ones
//! are on the wire or being written to the follower's disk; before, each batch waited for the
//! answer to the one before (one unary call at a time).
//!
//! Answers come back in the order of the requests (the follower's openraft answers them in
//! order over one ordered stream). The oldest unanswered request has a deadline; past it the
//! stream ends with a timeout and openraft starts a new one. A follower on a release without
//! the stream (v0.1.0) answers UNIMPLEMENTED: that peer is then sent unary calls, one at a
//! time, and asked again after `RETRY_STREAM_AFTER` (it may have been upgraded). With TLS,
//! v0.1.0 refuses the unknown method with PERMISSION_DENIED instead; that counts the same.

use super::network::{
    decode, encode, network, status_to_rpc_error, unreachable, why_failed, PeerClient,
    APPEND_DEADLINE_FLOOR,
};
use super::types::{NodeId, TypeConfig};
use crate::pb::raft::RaftPayload;
use futures::StreamExt;
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{RPCError, Timeout};
use openraft::network::{RPCOption, RPCTypes};
use openraft::raft::{AppendEntriesRequest, StreamAppendResult};
use openraft::OptionalSend;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a peer that refused the stream is sent unary calls before it is asked again.
const RETRY_STREAM_AFTER: Duration = Duration::from_secs(60);

/// One follower's answer to one request, as openraft takes it.
pub(super) type AppendAnswer = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

/// The answers to a stream of requests, once the call is open.
pub(super) type AppendAnswers<'s> =
    BoxFuture<'s, Result<BoxStream<'s, AppendAnswer>, RPCError<TypeConfig>>>;

/// The requests openraft hands to `stream_append`.
pub(super) trait AppendRequests:
    futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static
{
}

impl<S> AppendRequests for S where
    S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static
{
}

/// The requests on the wire: when each was sent, and its place in the window.
type InFlight = Arc<Mutex<VecDeque<(Instant, OwnedSemaphorePermit)>>>;

impl PeerClient {
    pub(super) fn append_stream<'s, S: AppendRequests>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> AppendAnswers<'s> {
        Box::pin(async move {
            let deadline = option.hard_ttl().max(APPEND_DEADLINE_FLOOR);
            let window = Arc::new(Semaphore::new(self.factory.append_pipeline));
            let in_flight: InFlight = Arc::default();
            let outgoing = outgoing(input, window, in_flight.clone());
            let mut client = self.client()?;
            let (target, addr) = (self.target, self.addr.clone());
            let answers = match client.append_stream(tonic::Request::new(outgoing)).await {
                Ok(answers) => answers.into_inner(),
                Err(status) if refuses_stream(&status) => {
                    self.refused_stream(Some(Instant::now()));
                    tracing::info!(target, %addr, "this peer's release has no append stream: unary appends");
                    return Err(network(format!(
                        "replica {target} runs a release without AppendStream"
                    )));
                }
                Err(status) => {
                    self.troubles.failed(target, &addr, &why_failed(&status));
                    return Err(status_to_rpc_error(target, &addr, status));
                }
            };
            self.refused_stream(None);
            let troubles = self.troubles.clone();
            let answers = futures::stream::unfold(Some((answers, in_flight)), move |state| {
                let troubles = troubles.clone();
                let addr = addr.clone();
                async move {
                    let (mut answers, in_flight) = state?;
                    let next = match next_answer(&mut answers, &in_flight, deadline).await {
                        Ok(next) => next?,
                        Err(waited) => {
                            let timeout = Timeout {
                                action: RPCTypes::AppendEntries,
                                id: 0,
                                target,
                                timeout: waited,
                            };
                            return Some((Err(RPCError::Timeout(timeout)), None));
                        }
                    };
                    // The oldest request is answered: its place in the window is free.
                    in_flight
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .pop_front();
                    let answer = match next {
                        Ok(payload) => {
                            troubles.answered(target);
                            answer_of(target, &payload)
                        }
                        Err(status) => {
                            troubles.failed(target, &addr, &why_failed(&status));
                            Err(status_to_rpc_error(target, &addr, status))
                        }
                    };
                    // After an error the stream is over; openraft opens a new one.
                    let state = answer.is_ok().then_some((answers, in_flight));
                    Some((answer, state))
                }
            });
            Ok(Box::pin(answers) as BoxStream<'s, AppendAnswer>)
        })
    }
}

/// Decode what the follower sent back for one request.
pub(super) fn answer_of(target: NodeId, payload: &RaftPayload) -> AppendAnswer {
    decode::<Result<StreamAppendResult<TypeConfig>, String>>(&payload.data)
        .map_err(network)
        .and_then(|remote| remote.map_err(|e| unreachable(format!("replica {target} failed: {e}"))))
}

impl PeerClient {
    pub(super) fn stream_refused_recently(&self) -> bool {
        self.factory
            .stream_refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&self.target)
            .is_some_and(|at| at.elapsed() < RETRY_STREAM_AFTER)
    }

    /// Note that this peer refused the stream (`Some`), or took it (`None`).
    pub(super) fn refused_stream(&self, at: Option<Instant>) {
        let mut refused = self
            .factory
            .stream_refused
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match at {
            Some(at) => refused.insert(self.target, at),
            None => refused.remove(&self.target),
        };
    }
}

/// The peer's release has no append stream: plain gRPC says UNIMPLEMENTED; with TLS, v0.1.0's
/// access layer refuses a method it does not know before gRPC sees it (PERMISSION_DENIED, "is
/// not a method this replica serves"). A peer that refuses this replica outright refuses the
/// unary calls too, and says so there.
pub(super) fn refuses_stream(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unimplemented | tonic::Code::PermissionDenied
    )
}

/// The requests as they come from openraft, each sent only once the window has room.
fn outgoing<S>(
    input: S,
    window: Arc<Semaphore>,
    in_flight: InFlight,
) -> impl futures::Stream<Item = RaftPayload> + Send + 'static
where
    S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
{
    futures::stream::unfold(
        (input, window, in_flight),
        |(mut input, window, in_flight)| async move {
            let place = window.clone().acquire_owned().await.ok()?;
            let request = input.next().await?;
            let data = match encode(&request) {
                Ok(data) => data,
                Err(e) => {
                    tracing::error!("an AppendEntries request could not be encoded: {e}");
                    return None;
                }
            };
            in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_back((Instant::now(), place));
            Some((RaftPayload { data }, (input, window, in_flight)))
        },
    )
}

/// The next answer; waits without end while nothing is in flight, and `Err` with how long
/// it waited once the oldest request in flight has waited `deadline`.
async fn next_answer(
    answers: &mut tonic::Streaming<RaftPayload>,
    in_flight: &InFlight,
    deadline: Duration,
) -> Result<Option<Result<RaftPayload, tonic::Status>>, Duration> {
    loop {
        let oldest = in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .front()
            .map(|(sent, _)| *sent);
        let wait = match oldest {
            Some(sent) if sent.elapsed() >= deadline => return Err(sent.elapsed()),
            Some(sent) => deadline - sent.elapsed(),
            // Nothing sent: look again now and then, for a request sent meanwhile.
            None => deadline,
        };
        if let Ok(next) = tokio::time::timeout(wait, answers.next()).await {
            return Ok(next);
        }
    }
}
