//! A running shard's output, live, for the job page: `/api/jobs/{id}/shards/{i}/follow` is
//! the API's `FollowShardOutput`, followed by this replica on the page's behalf with the
//! page's token (as `actions` makes changes), so any replica serves it wherever the shard
//! runs and the same tenant rules decide. It is passed on as server-sent events: `output`
//! messages with what is new on each stream (each byte once, across the API's resumptions
//! after a leader change), then `end`, or `refused` with the API's one line.

use super::actions::client_for;
use super::replica::ReplicaHttp;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::convert::Infallible;
use std::time::Duration;

/// Messages a slow page may leave unread before the following stops (it reloads then).
const BUFFER: usize = 256;

/// What of a chunk is new: the bytes past `seen`, and where the stream now ends.
fn fresh(offset: u64, bytes: &[u8], seen: u64) -> &[u8] {
    let skip = seen.saturating_sub(offset).min(bytes.len() as u64) as usize;
    &bytes[skip..]
}

pub async fn follow(
    State(replica): State<ReplicaHttp>,
    headers: HeaderMap,
    Path((id, shard)): Path<(String, u32)>,
) -> Response {
    let client = match client_for(&replica, &headers) {
        Ok(client) => client,
        Err(refusal) => return refusal.into_response(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<SseEvent>(BUFFER);
    let closed = tx.clone();
    tokio::spawn(async move {
        let (mut stdout_seen, mut stderr_seen) = (0u64, 0u64);
        let sender = tx.clone();
        let following = client.follow_shard_output(&id, shard, move |chunk| {
            let stdout = fresh(chunk.stdout_offset, &chunk.stdout, stdout_seen);
            let stderr = fresh(chunk.stderr_offset, &chunk.stderr, stderr_seen);
            stdout_seen = stdout_seen.max(chunk.stdout_offset + chunk.stdout.len() as u64);
            stderr_seen = stderr_seen.max(chunk.stderr_offset + chunk.stderr.len() as u64);
            if stdout.is_empty() && stderr.is_empty() && !chunk.ended {
                return true;
            }
            let data = json!({
                "stdout": String::from_utf8_lossy(stdout),
                "stderr": String::from_utf8_lossy(stderr),
                "ended": chunk.ended,
            });
            sender
                .try_send(SseEvent::default().event("output").data(data.to_string()))
                .is_ok()
        });
        let ending = tokio::select! {
            _ = closed.closed() => return,
            result = following => match result {
                Ok(()) => SseEvent::default().event("end").data("{}"),
                Err(e) => SseEvent::default().event("refused").data(e.to_string()),
            },
        };
        let _ = tx.send(ending).await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::fresh;

    #[test]
    fn each_byte_is_passed_on_once() {
        assert_eq!(fresh(0, b"hello", 0), b"hello");
        assert_eq!(fresh(0, b"hello world", 5), b" world");
        assert_eq!(fresh(3, b"lo", 5), b"");
        assert_eq!(fresh(8, b"rld", 5), b"rld");
    }
}
