//! The cluster's events as server-sent events, for the dashboard: the same events as
//! `dispatcher events`, read from this replica's bounded ring at the consumer's pace (a
//! slow browser holds at most one small channel of them). Each message's id is
//! `index:seq`, so a browser that reconnects resumes where it was (`Last-Event-ID`). When
//! the ring no longer holds the resume point, a `resync` message says so and the stream
//! goes on from the oldest event held: the page reloads its overview then.

use crate::fsm::events::Event;
use crate::raft::{NextEvents, SharedState};
use crate::rpc::stream_right::{guarded, Ending, Guard};
use crate::rpc::visibility::Scope;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;

/// Events read from the ring at a time.
const BATCH: usize = 256;

/// Where a stream starts: after the `Last-Event-ID` a reconnecting browser sends, else at
/// `?from_index=`, else at the first event still held.
pub fn resume_point(headers: &HeaderMap, from_index: Option<u64>) -> (u64, u32) {
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(':'))
        .and_then(|(i, s)| Some((i.parse::<u64>().ok()?, s.parse::<u32>().ok()?)));
    match last {
        Some((index, seq)) => (index, seq.saturating_add(1)),
        None => (from_index.unwrap_or(0), 0),
    }
}

/// The events `scope` may see from `from` on, until the reader leaves or `right` is revoked
/// (then a last `revoked` message says so).
pub fn events(
    shared: Arc<SharedState>,
    from: (u64, u32),
    scope: Scope,
    guard: Guard,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<SseEvent>(64);
    tokio::spawn(async move {
        let mut applied = shared.subscribe();
        let (mut index, mut seq) = from;
        loop {
            let next = tokio::select! {
                _ = tx.closed() => return,
                next = shared.next_events(&mut applied, index, seq, BATCH) => next,
            };
            match next {
                NextEvents::Batch(batch) => {
                    for event in batch {
                        (index, seq) = (event.index, event.seq + 1);
                        if !scope.sees_event(&event) {
                            continue;
                        }
                        if tx.send(to_sse(&event)).await.is_err() {
                            return;
                        }
                    }
                }
                NextEvents::Gone { oldest } => {
                    let resync = SseEvent::default().event("resync").data(oldest.to_string());
                    if tx.send(resync).await.is_err() {
                        return;
                    }
                    (index, seq) = (oldest, 0);
                }
                NextEvents::Stopped => return,
            }
        }
    });
    let stream = Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    }));
    let stream = guarded(guard, stream, |ending| {
        Some(Ok(match ending {
            Ending::Revoked(message) => SseEvent::default().event("revoked").data(message),
            // The page reconnects (with Last-Event-ID), maybe to another replica.
            Ending::CutOff(message) => SseEvent::default().event("cut_off").data(message),
        }))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn to_sse(event: &Event) -> SseEvent {
    let data = json!({
        "index": event.index,
        "seq": event.seq,
        "kind": event.kind,
        "job_id": event.job_id.map(|j| j.to_string()),
        "shard": event.shard,
        "taskmanager": event.taskmanager,
        "detail": event.detail,
    });
    SseEvent::default()
        .id(format!("{}:{}", event.index, event.seq))
        .data(data.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnect_resumes_after_the_last_event_seen() {
        let mut headers = HeaderMap::new();
        assert_eq!(resume_point(&headers, Some(7)), (7, 0));
        assert_eq!(resume_point(&headers, None), (0, 0));
        headers.insert("last-event-id", "42:3".parse().unwrap());
        assert_eq!(resume_point(&headers, Some(7)), (42, 4));
        headers.insert("last-event-id", "junk".parse().unwrap());
        assert_eq!(resume_point(&headers, Some(7)), (7, 0));
    }
}
