//! Streams end with the right they were opened with: a stream opened with a token
//! (events, job watch, followed output, the dashboard's events) is closed with
//! `UNAUTHENTICATED` as soon as this replica applies the token's revocation. The check runs
//! on every entry this replica applies (a revocation is one), so it takes effect on each
//! replica as it applies it, with no timer.
//!
//! It only reads the applied state; it must not hold the state's lock across an `.await`.

use super::access::Caller;
use crate::domain::{ClusterState, TokenHash};
use crate::raft::SharedState;
use futures::{Stream, StreamExt};
use std::sync::Arc;

/// What a stream was opened with, as far as revocation is concerned.
#[derive(Debug, Clone)]
pub struct StreamRight {
    /// The token's name and secret hash; none for callers without a token (replicas,
    /// `--insecure`), whose right cannot be revoked this way.
    token: Option<(String, TokenHash)>,
}

impl StreamRight {
    pub fn of(caller: &Caller) -> StreamRight {
        StreamRight {
            token: match caller {
                Caller::Token { name, hash, .. } => Some((name.clone(), *hash)),
                _ => None,
            },
        }
    }

    /// Whether the token this stream was opened with is still in `state`.
    pub fn holds(&self, state: &ClusterState) -> bool {
        match &self.token {
            None => true,
            Some((name, hash)) => state.tokens.get(name).is_some_and(|t| t.hash.matches(hash)),
        }
    }

    fn describe(&self) -> String {
        let name = self.token.as_ref().map_or("", |(name, _)| name.as_str());
        format!("token '{name}' was revoked; this stream is closed (ask an admin for a new token)")
    }
}

/// `inner`, ended by `revoked(message)` (then nothing more) once `right` no longer holds in
/// this replica's applied state.
pub fn end_on_revocation<S, T>(
    shared: Arc<SharedState>,
    right: StreamRight,
    inner: S,
    revoked: impl Fn(String) -> Option<T> + Send + 'static,
) -> impl Stream<Item = T> + Send
where
    S: Stream<Item = T> + Send + Unpin + 'static,
    T: Send + 'static,
{
    let applied = shared.subscribe();
    let watching = right.token.is_some();
    let state = (inner, applied, shared, right, revoked, false);
    futures::stream::unfold(
        state,
        move |(mut inner, mut applied, shared, right, revoked, done)| async move {
            if done {
                return None;
            }
            loop {
                if watching && !right.holds(&shared.read().state) {
                    let last = revoked(right.describe())?;
                    return Some((last, (inner, applied, shared, right, revoked, true)));
                }
                tokio::select! {
                    item = inner.next() => {
                        let item = item?;
                        return Some((item, (inner, applied, shared, right, revoked, false)));
                    }
                    changed = applied.changed(), if watching => {
                        // The state machine stopped: the inner stream ends on its own.
                        if changed.is_err() {
                            let item = inner.next().await?;
                            return Some((item, (inner, applied, shared, right, revoked, false)));
                        }
                    }
                }
            }
        },
    )
}

/// The same for a gRPC stream: the last item is `UNAUTHENTICATED`.
pub fn grpc<T: Send + 'static>(
    shared: Arc<SharedState>,
    right: StreamRight,
    inner: std::pin::Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>,
) -> std::pin::Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>> {
    Box::pin(end_on_revocation(shared, right, inner, |message| {
        Some(Err(tonic::Status::unauthenticated(message)))
    }))
}
