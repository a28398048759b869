//! The TaskManager agent: `dispatcher taskmanager`. It registers with the cluster,
//! heartbeats to the leader (following leader changes through the client), runs exactly the
//! shards the leader lists as its assignments — each as a child process of its shard host
//! (`shard-host`, one per agent, which keeps them alive only while the agent sends
//! keep-alives) — and reports how they started and ended, with their assignment epoch.
//!
//! Assignments are pushed over a stream the agent keeps open to the leader (`watcher`) and
//! come again in every heartbeat reply; each carries the full list of shards this
//! TaskManager owns, and the agent stops any run not on it. If it cannot reach a leader for
//! its lease, it stops every run by itself. Assignments carry ids only; what a job's shards
//! run is fetched once per job (`specs`). The work dir's journal (`journal`) records which
//! runs started and how they ended, so a restarted agent runs nothing twice.

mod agent;
pub mod capacity;
mod host;
mod host_pipes;
pub mod host_protocol;
pub(crate) mod identity;
pub mod journal;
mod lease;
pub mod local_capacity;
mod output_tap;
mod poller;
mod reporter;
mod run_dir_pool;
mod runner;
pub mod sandbox;
pub mod shard_host;
pub mod spawn;
mod specs;
mod sweeper;
mod watcher;
pub mod workdir;

pub use agent::{run, AgentError, AgentOptions};
pub use runner::KEEPALIVE_TIMEOUT;
