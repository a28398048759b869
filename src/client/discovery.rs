//! Finding the leader before the first call: every endpoint is asked at once where the
//! leader is (`Cluster.Leader`, answered without a Raft round), and the first answer that
//! names one decides. A listed replica that is paused, powered off or cut off (its packets
//! dropped) then costs nothing: before, a fresh client dialled the endpoints in order and
//! waited out its deadline on a dead first one (5 s per CLI call).

use super::{Client, ClientChannel};
use crate::pb::api::cluster_client::ClusterClient;
use crate::pb::api::LeaderRequest;
use futures::stream::{FuturesUnordered, StreamExt};
use tonic::Code;

/// What one endpoint said.
enum Answer {
    /// It named the leader's address.
    Leader(String),
    /// It answered without naming one (an election under way, or a release without
    /// `Cluster.Leader`): it can take the call and redirect it.
    Alive,
}

impl Client {
    /// Ask every endpoint at once where the leader is, within `discovery_timeout`, and
    /// remember where to go: the leader the first answer names, else the first endpoint that
    /// answered at all. Nothing is remembered when none answers in time.
    pub(super) async fn discover(&self) {
        let mut asks: FuturesUnordered<_> = self
            .endpoints
            .iter()
            .map(|addr| self.ask_leader(addr))
            .collect();
        let deadline = tokio::time::sleep(self.options.discovery_timeout());
        tokio::pin!(deadline);
        let mut alive: Option<String> = None;
        loop {
            tokio::select! {
                next = asks.next() => match next {
                    Some((_, Some(Answer::Leader(leader)))) => {
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

    /// One endpoint's answer, or `None` if it gave none.
    async fn ask_leader(&self, addr: &str) -> (String, Option<Answer>) {
        let Ok(channel) = self.channel_for(addr) else {
            return (addr.to_string(), None);
        };
        let answer = match leader_of(channel).await {
            Ok(Some(leader)) => Some(Answer::Leader(leader)),
            Ok(None) => Some(Answer::Alive),
            // An older release does not know the call; it answered all the same.
            Err(Code::Unimplemented) => Some(Answer::Alive),
            Err(_) => None,
        };
        (addr.to_string(), answer)
    }
}

async fn leader_of(channel: ClientChannel) -> Result<Option<String>, Code> {
    let reply = ClusterClient::new(channel)
        .leader(LeaderRequest {})
        .await
        .map_err(|status| status.code())?;
    Ok(reply.into_inner().leader_addr)
}
