//! Finding the leader: before the first call, and while a call waits on a replica that
//! stopped answering. Every endpoint is asked at once where the leader is (`Cluster.Leader`,
//! answered without a Raft round); the first answer that names one decides.
//!
//! - A listed replica that is paused, powered off or cut off (its packets dropped) costs a
//!   fresh client nothing: before, it dialled the endpoints in order and waited out its
//!   deadline on a dead first one (5 s per CLI call).
//! - A call to a leader that stops answering is not waited out: after `HEDGE_AFTER` the other
//!   endpoints are asked, and once a majority of all endpoints name another leader (by id: an
//!   address may be spelled two ways) the call goes there. A healthy leader is named by a
//!   majority and never left; a write left behind that still lands is found again by its
//!   idempotency key when retried.

use super::{Client, ClientChannel};
use crate::pb::api::cluster_client::ClusterClient;
use crate::pb::api::{LeaderReply, LeaderRequest};
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::HashMap;
use std::time::Duration;
use tonic::Code;

/// How long a call waits on a replica before asking the others whether the leader moved, and
/// then between askings. A healthy write takes milliseconds; an election about 0.2 s.
pub const HEDGE_AFTER: Duration = Duration::from_millis(300);

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
        let mut asks = self.ask_all(None);
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

    /// Resolves (never, while `addr` stays the leader) with the address of a leader other
    /// than the replica at `addr`, as the other endpoints name it: asked after `HEDGE_AFTER`,
    /// and again every `HEDGE_AFTER`.
    pub(super) async fn leader_moved_from(&self, addr: &str) -> String {
        loop {
            tokio::time::sleep(HEDGE_AFTER).await;
            let Some(here) = self.lock().ids.get(addr).copied() else {
                // Which replica this is was never said: nothing to compare with.
                continue;
            };
            // A majority of the endpoints must name the same other leader: one replica just
            // back from a pause may still name itself, and a slow but healthy call must not
            // be left for it.
            let majority = self.endpoints.len() / 2 + 1;
            let mut named: HashMap<u64, usize> = HashMap::new();
            let mut asks = self.ask_all(Some(addr));
            let deadline = tokio::time::sleep(self.options.discovery_timeout());
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
        }
    }

    /// Ask every endpoint but `except` at once.
    fn ask_all(
        &self,
        except: Option<&str>,
    ) -> FuturesUnordered<impl std::future::Future<Output = (String, Option<Answer>)> + '_> {
        self.endpoints
            .iter()
            .filter(|addr| Some(addr.as_str()) != except)
            .map(|addr| self.ask_leader(addr))
            .collect()
    }

    /// One endpoint's answer, or `None` if it gave none. Every id said is remembered.
    async fn ask_leader(&self, addr: &str) -> (String, Option<Answer>) {
        let Ok(channel) = self.channel_for(addr) else {
            return (addr.to_string(), None);
        };
        let answer = match leader_of(channel).await {
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

async fn leader_of(channel: ClientChannel) -> Result<LeaderReply, Code> {
    let reply = ClusterClient::new(channel)
        .leader(LeaderRequest {})
        .await
        .map_err(|status| status.code())?;
    Ok(reply.into_inner())
}
