//! The TaskManager agent: `dispatcher taskmanager`. It registers with the cluster,
//! heartbeats to the leader (following leader changes through the client), runs exactly the
//! shards the leader's heartbeat reply lists as its assignments — each as a child process
//! under a keep-alive supervisor (`shard-exec`) — and reports how they started and ended,
//! with their assignment epoch.
//!
//! Assignments arrive in heartbeat replies (pull, no inbound port): every reply carries the
//! full list of shards this TaskManager owns, and the agent stops any run not on it. If it
//! cannot reach a leader for its lease, it stops every run by itself. Assignments carry ids
//! only; what a job's shards run is fetched once per job (`specs`).

mod agent;
mod identity;
mod lease;
mod reporter;
mod runner;
mod specs;
pub mod supervisor;
mod watcher;
pub mod workdir;

pub use agent::{run, AgentError, AgentOptions};
pub use runner::KEEPALIVE_TIMEOUT;
