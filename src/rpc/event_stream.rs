//! `Dispatcher.WatchEvents`: any replica streams the events of its applied log (see
//! `fsm::events`), from a position on, then live. A consumer that falls behind further than
//! the replica keeps events is told where it can resume (`OUT_OF_RANGE`), never fed from
//! unbounded buffers: the stream reads the replica's bounded ring at its own pace.

use super::error::ApiError;
use super::stream_right;
use super::visibility::Scope;
use super::ServiceContext;
use crate::domain::JobId;
use crate::fsm::events::{ends_job, Event};
use crate::pb::api;
use crate::raft::NextEvents;
use futures::Stream;
use std::pin::Pin;
use tonic::Status;

/// Events read from the ring at a time.
const BATCH: usize = 256;

pub type EventStream = Pin<Box<dyn Stream<Item = Result<api::Event, Status>> + Send>>;

pub fn watch(
    ctx: ServiceContext,
    req: api::WatchEventsRequest,
    scope: Scope,
    guard: stream_right::Guard,
) -> Result<EventStream, ApiError> {
    let job: Option<JobId> = if req.job_id.is_empty() {
        None
    } else {
        Some(
            req.job_id
                .parse()
                .map_err(|e: crate::domain::ParseJobIdError| {
                    ApiError::InvalidArgument(e.to_string())
                })?,
        )
    };
    if let Some(job) = job {
        // Another tenant's job is answered as one that does not exist.
        scope.job(&ctx.shared.read().state, job)?;
    }
    // Refused at once when the start is gone, rather than as the stream's first message.
    if let Err(oldest) = ctx.shared.events_from(req.from_index, req.from_seq, 0) {
        return Err(out_of_range(req.from_index, oldest));
    }
    let end_only = job.is_some() && req.job_end_only;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<api::Event, Status>>(64);
    tokio::spawn(async move {
        let mut applied = ctx.shared.subscribe();
        let (mut index, mut seq) = (req.from_index, req.from_seq);
        loop {
            let next = tokio::select! {
                _ = tx.closed() => return,
                next = ctx.shared.next_events(&mut applied, index, seq, BATCH) => next,
            };
            let batch = match next {
                NextEvents::Batch(batch) => batch,
                NextEvents::Gone { oldest } => {
                    let _ = tx.send(Err(out_of_range(index, oldest).into())).await;
                    return;
                }
                NextEvents::Stopped => return,
            };
            for event in batch {
                (index, seq) = (event.index, event.seq + 1);
                if (job.is_some() && event.job_id != job) || !scope.sees_event(&event) {
                    continue;
                }
                let last = job.is_some() && ends_job(event.kind);
                if end_only && !last {
                    continue;
                }
                if tx.send(Ok(to_proto(event))).await.is_err() || last {
                    return;
                }
            }
        }
    });
    let events = Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    Ok(stream_right::grpc(guard, events))
}

fn out_of_range(asked: u64, oldest: u64) -> ApiError {
    ApiError::OutOfRange(format!(
        "events before index {oldest} are no longer held here (asked for {asked}); resume with \
         --from-index {oldest}, and read what happened before from `job status`"
    ))
}

fn to_proto(event: Event) -> api::Event {
    api::Event {
        index: event.index,
        seq: event.seq,
        kind: event.kind.to_string(),
        job_id: event.job_id.map(|j| j.to_string()).unwrap_or_default(),
        shard: event.shard,
        taskmanager: event.taskmanager.unwrap_or_default(),
        detail: event.detail,
    }
}
