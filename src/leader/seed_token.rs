//! The first admin token: a new leader given `--bootstrap-token-file` proposes its hash while
//! the state holds no admin token. Apply seeds it only then, so every initial replica may
//! carry the same file and restarts with it change nothing.

use crate::clock::now_ms;
use crate::domain::TokenHash;
use crate::fsm::Command;
use crate::raft::{Raft, SharedState};
use std::sync::Arc;
use std::time::Duration;

const RETRY_EVERY: Duration = Duration::from_millis(200);

fn has_admin(shared: &SharedState) -> bool {
    let view = shared.read();
    view.state
        .tokens
        .values()
        .any(|t| t.role == crate::domain::Role::Admin)
}

pub async fn run(raft: Raft, shared: Arc<SharedState>, hash: TokenHash) {
    while !has_admin(&shared) {
        let command = Command::SeedBootstrapToken {
            hash,
            now_ms: now_ms(),
        };
        match shared
            .metrics()
            .time_proposal(raft.client_write(command))
            .await
        {
            Ok(reply) => {
                if reply.data == (crate::fsm::Response::BootstrapTokenSeeded { seeded: true }) {
                    tracing::info!("bootstrap admin token seeded");
                } else {
                    // A token already holds the bootstrap name: nothing to seed.
                    tracing::warn!(
                        "not seeding the bootstrap token: a token named 'bootstrap' exists"
                    );
                }
                return;
            }
            Err(e) => {
                tracing::warn!("seeding the bootstrap token failed: {e}; retrying");
                tokio::time::sleep(RETRY_EVERY).await;
            }
        }
    }
}
