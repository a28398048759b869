//! The first admin token: a new leader given `--bootstrap-token-file` proposes its hash until
//! the state shows a token was ever created. Apply seeds it only if none ever was, so every
//! initial replica may carry the same file and restarts with it change nothing.

use crate::clock::now_ms;
use crate::domain::TokenHash;
use crate::fsm::Command;
use crate::raft::{Raft, SharedState};
use std::sync::Arc;
use std::time::Duration;

const RETRY_EVERY: Duration = Duration::from_millis(200);

pub async fn run(raft: Raft, shared: Arc<SharedState>, hash: TokenHash) {
    while !shared.read().state.tokens_seeded {
        let command = Command::SeedBootstrapToken {
            hash,
            now_ms: now_ms(),
        };
        match raft.client_write(command).await {
            Ok(_) => tracing::info!("bootstrap admin token seeded"),
            Err(e) => {
                tracing::warn!("seeding the bootstrap token failed: {e}; retrying");
                tokio::time::sleep(RETRY_EVERY).await;
            }
        }
    }
}
