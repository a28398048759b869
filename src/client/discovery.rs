//! Finding the leader: before the first call, after a call found none, and while a call waits
//! on a replica that stopped answering. Every endpoint is asked at once where the leader is
//! (`Cluster.Leader`, answered without a Raft round); the first answer that names one decides.
//!
//! - A listed replica that is paused, powered off or cut off (its packets dropped) costs a
//!   fresh client nothing: before, it dialled the endpoints in order and waited out its
//!   deadline on a dead first one (5 s per CLI call).
//! - When the leader is gone (its connection refused or reset) or a replica says it knows no
//!   leader, the others are asked to answer once they know one (a long poll, `LEADER_WAIT` at
//!   most), so the call goes to the new leader as soon as one of them learns of it, instead
//!   of polling through the election.
//! - A call to a leader that stops answering is not waited out: after `HEDGE_AFTER` the other
//!   endpoints are asked the same way, and once a majority of all endpoints name another
//!   leader (by id: an address may be spelled two ways) the call goes there. A healthy leader
//!   is named by a majority and never left; a write left behind that still lands is found
//!   again by its idempotency key when retried.

use super::{Client, ClientChannel};
use crate::pb::api::cluster_client::ClusterClient;
use crate::pb::api::{LeaderReply, LeaderRequest};
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::HashMap;
use std::time::Duration;
use tonic::Code;

/// How long a call waits on a replica before asking the others whether the leader moved. A
/// healthy write takes milliseconds; the others answer only once they know another leader,
/// so asking early costs two waiting calls.
pub const HEDGE_AFTER: Duration = Duration::from_millis(150);

/// How long a replica is asked to wait for a new leader after the old one stopped answering:
/// the longest an election takes with the default timeouts, with room to spare.
pub const LEADER_WAIT: Duration = Duration::from_millis(1000);

/// What one endpoint said.
enum Answer {
    /// It named the leader: its address and id.
    Leader(String, u64),
    /// It answered without naming one (an election under way, or a release without
    /// `Cluster.Leader`): it can take the call and redirect it.
    Alive,
}

impl Client {
    /// Ask every endpoint at once where the leader is, within `discovery_timeout`, and
    /// remember where to go: the leader the first answer names, else the first endpoint that
    /// answered at all. Nothing is remembered when none answers in time.
    pub(super) async fn discover(&self) {
        let mut alive: Option<String> = None;
        let mut asks = self.ask_all();
        let deadline = tokio::time::sleep(self.options.discovery_timeout());
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = asks.next() => match next {
                    Some((_, Some(Answer::Leader(leader, _)))) => {
                        self.remember(Some(leader));
                        return;
                    }
                    Some((addr, Some(Answer::Alive))) => {
                        alive.get_or_insert(addr);
                    }
                    Some((_, None)) => {}
                    None => break,
                },
                _ = &mut deadline => break,
            }
        }
        if alive.is_some() {
            self.remember(alive);
        }
    }

    /// After a call to `failed` went unanswered (or was refused with no leader named): ask the
    /// other endpoints, each of which answers as soon as it knows a leader other than `failed`
    /// (`LEADER_WAIT` at most), and remember the first one named. True if one was: the call
    /// can go there at once instead of pausing and polling through the election.
    /// `failed_silent`: `failed` did not answer at all (connection refused or reset, no answer
    /// in time). Otherwise it answered that it knows no leader, and may yet become it.
    pub(super) async fn discover_past(&self, failed: &str, failed_silent: bool) -> bool {
        let gone = if failed_silent {
            self.lock().ids.get(failed).copied()
        } else {
            None
        };
        let mut asks = self.ask_all_past(failed_silent.then_some(failed), gone);
        let deadline = self.long_poll_deadline();
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = asks.next() => match next {
                    Some((_, Some(Answer::Leader(leader, id))))
                        if Some(id) != gone && !(failed_silent && leader == failed) =>
                    {
                        self.remember(Some(leader));
                        return true;
                    }
                    Some(_) => {}
                    None => return false,
                },
                _ = &mut deadline => return false,
            }
        }
    }

    /// Resolves (never, while `addr` stays the leader) with the address of a leader other
    /// than the replica at `addr`, as the other endpoints name it. They are asked after
    /// `HEDGE_AFTER`, and each answers as soon as it knows a leader other than `addr`
    /// (`LEADER_WAIT` at most; then they are asked again).
    pub(super) async fn leader_moved_from(&self, addr: &str) -> String {
        tokio::time::sleep(HEDGE_AFTER).await;
        loop {
            let round = tokio::time::Instant::now();
            let Some(here) = self.lock().ids.get(addr).copied() else {
                // Which replica this is was never said: nothing to compare with.
                tokio::time::sleep(HEDGE_AFTER).await;
                continue;
            };
            // A majority of the endpoints must name the same other leader: one replica just
            // back from a pause may still name itself, and a slow but healthy call must not
            // be left for it.
            let majority = self.endpoints.len() / 2 + 1;
            let mut named: HashMap<u64, usize> = HashMap::new();
            let mut asks = self.ask_all_past(Some(addr), Some(here));
            let deadline = self.long_poll_deadline();
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    next = asks.next() => match next {
                        Some((_, Some(Answer::Leader(leader, id)))) if id != here => {
                            let count = named.entry(id).or_default();
                            *count += 1;
                            if *count >= majority {
                                return leader;
                            }
                        }
                        Some(_) => {}
                        None => break,
                    },
                    _ = &mut deadline => break,
                }
            }
            // Answers that did not wait (replicas down, or of a release that does not wait):
            // pause before asking again.
            if round.elapsed() < HEDGE_AFTER {
                tokio::time::sleep(HEDGE_AFTER).await;
            }
        }
    }

    /// Ask every endpoint at once.
    fn ask_all(
        &self,
    ) -> FuturesUnordered<impl std::future::Future<Output = (String, Option<Answer>)> + '_> {
        self.endpoints
            .iter()
            .map(|addr| self.ask_leader(addr))
            .collect()
    }

    /// Ask every endpoint but `except` at once, each to answer once it knows a leader other
    /// than `gone` (`ask_leader_past`).
    fn ask_all_past<'a>(
        &'a self,
        except: Option<&'a str>,
        gone: Option<u64>,
    ) -> FuturesUnordered<impl std::future::Future<Output = (String, Option<Answer>)> + 'a> {
        self.endpoints
            .iter()
            .filter(move |addr| Some(addr.as_str()) != except)
            .map(move |addr| self.ask_leader_past(addr, gone))
            .collect()
    }

    /// How long a round of long polls is waited for: the replicas' wait, and the time to
    /// reach them.
    fn long_poll_deadline(&self) -> tokio::time::Sleep {
        tokio::time::sleep(LEADER_WAIT + self.options.discovery_timeout())
    }

    /// One endpoint's answer, or `None` if it gave none. Every id said is remembered.
    async fn ask_leader(&self, addr: &str) -> (String, Option<Answer>) {
        self.ask_leader_with(addr, LeaderRequest::default()).await
    }

    /// Like `ask_leader`, but the endpoint answers once it knows a leader other than `gone`.
    async fn ask_leader_past(&self, addr: &str, gone: Option<u64>) -> (String, Option<Answer>) {
        let request = LeaderRequest {
            not_leader: gone,
            wait_ms: LEADER_WAIT.as_millis() as u32,
        };
        self.ask_leader_with(addr, request).await
    }

    async fn ask_leader_with(
        &self,
        addr: &str,
        request: LeaderRequest,
    ) -> (String, Option<Answer>) {
        let Ok(channel) = self.channel_for(addr) else {
            return (addr.to_string(), None);
        };
        let answer = match leader_of(channel, request).await {
            Ok(reply) => {
                let mut routing = self.lock();
                routing.ids.insert(addr.to_string(), reply.node_id);
                match (reply.leader_addr, reply.leader_id) {
                    (Some(leader), Some(id)) => {
                        routing.ids.insert(leader.clone(), id);
                        Some(Answer::Leader(leader, id))
                    }
                    _ => Some(Answer::Alive),
                }
            }
            // An older release does not know the call; it answered all the same.
            Err(Code::Unimplemented) => Some(Answer::Alive),
            Err(_) => None,
        };
        (addr.to_string(), answer)
    }
}

async fn leader_of(channel: ClientChannel, request: LeaderRequest) -> Result<LeaderReply, Code> {
    let wait = Duration::from_millis(u64::from(request.wait_ms));
    let mut request = tonic::Request::new(request);
    if !wait.is_zero() {
        // The channel's deadline is for prompt answers; this one is meant to wait.
        request.set_timeout(wait + Duration::from_secs(1));
    }
    let reply = ClusterClient::new(channel)
        .leader(request)
        .await
        .map_err(|status| status.code())?;
    Ok(reply.into_inner())
}
