//! Streams end with the right they were opened with, and with the replica's touch with the
//! cluster:
//! - a stream opened with a token (events, job watch, followed output, the dashboard's
//!   events) is closed with `UNAUTHENTICATED` as soon as this replica applies the token's
//!   revocation. The check runs whenever this replica applies a command that may change the
//!   tokens (a revocation is one; `Command::may_change_tokens`) or installs a snapshot, so it
//!   takes effect on each replica as it applies it, with no timer, and the thousands of other
//!   entries a second wake no stream;
//! - a stream served from this replica's applied state is closed with `UNAVAILABLE` once the
//!   replica has been out of touch with a leader longer than an election timeout
//!   (`leader_contact`): cut off, it would not learn of a revocation. Clients resume on
//!   another replica from the last event they saw.
//!
//! It only reads the applied state; it must not hold the state's lock across an `.await`.

use super::access::Caller;
use super::leader_contact::LeaderContact;
use crate::domain::{ClusterState, TokenHash};
use crate::raft::{Raft, SharedState};
use futures::{Stream, StreamExt};
use std::sync::Arc;
use std::time::Duration;

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

/// How a guarded stream may end early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The token was revoked.
    Revoked(String),
    /// The replica lost touch with the cluster.
    CutOff(String),
}

/// The replica's touch with the cluster, checked while a stream served from its applied
/// state is open.
#[derive(Clone)]
pub struct Touch {
    pub raft: Raft,
    pub contact: Arc<LeaderContact>,
    /// Out of touch longer than this ends the stream.
    pub bound: Duration,
}

/// What guards a stream: its right, and for streams of the applied state, the touch.
pub struct Guard {
    pub shared: Arc<SharedState>,
    pub right: StreamRight,
    pub touch: Option<Touch>,
}

impl Guard {
    fn ending(&self, watching: bool) -> Option<Ending> {
        if watching && !self.right.holds(&self.shared.read().state) {
            return Some(Ending::Revoked(self.right.describe()));
        }
        let touch = self.touch.as_ref()?;
        (!touch.contact.in_touch(&touch.raft, touch.bound)).then(|| {
            Ending::CutOff(format!(
                "this replica has not heard from a leader for {} ms; resume on another replica",
                touch.bound.as_millis()
            ))
        })
    }
}

/// `inner`, ended by `last(ending)` (then nothing more) once the guard says so.
pub fn guarded<S, T>(
    guard: Guard,
    inner: S,
    last: impl Fn(Ending) -> Option<T> + Send + 'static,
) -> impl Stream<Item = T> + Send
where
    S: Stream<Item = T> + Send + Unpin + 'static,
    T: Send + 'static,
{
    // Woken when applying may have changed the tokens, not by every entry.
    let applied = guard.shared.subscribe_tokens();
    let watching = guard.right.token.is_some();
    // The touch is checked a few times per bound.
    let period = guard.touch.as_ref().map_or(Duration::from_secs(3600), |t| {
        (t.bound / 4).max(Duration::from_millis(20))
    });
    let ticks = tokio::time::interval(period);
    let state = (inner, applied, ticks, guard, last, false);
    futures::stream::unfold(
        state,
        move |(mut inner, mut applied, mut ticks, guard, last, done)| async move {
            if done {
                return None;
            }
            loop {
                if let Some(ending) = guard.ending(watching) {
                    let item = last(ending)?;
                    return Some((item, (inner, applied, ticks, guard, last, true)));
                }
                tokio::select! {
                    item = inner.next() => {
                        let item = item?;
                        return Some((item, (inner, applied, ticks, guard, last, false)));
                    }
                    changed = applied.changed(), if watching => {
                        // The state machine stopped: the inner stream ends on its own.
                        if changed.is_err() {
                            let item = inner.next().await?;
                            return Some((item, (inner, applied, ticks, guard, last, false)));
                        }
                    }
                    _ = ticks.tick(), if guard.touch.is_some() => {}
                }
            }
        },
    )
}

/// The same for a gRPC stream: the last item is `UNAUTHENTICATED` or `UNAVAILABLE`.
pub fn grpc<T: Send + 'static>(
    guard: Guard,
    inner: std::pin::Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>,
) -> std::pin::Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>> {
    Box::pin(guarded(guard, inner, |ending| {
        Some(Err(match ending {
            Ending::Revoked(message) => tonic::Status::unauthenticated(message),
            Ending::CutOff(message) => tonic::Status::unavailable(message),
        }))
    }))
}
