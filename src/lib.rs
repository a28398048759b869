//! # dispatcher — a highly available job dispatcher
//!
//! ```text
//!   CLI / TaskManagers / tests ──► client (follows the leader)
//!                                     │ gRPC (Dispatcher, Cluster)
//!   ┌─────────────────────────────────▼──────────────────────────────┐
//!   │ replica: rpc ──► raft_access ──► openraft ──► raft::network ───┼──► other replicas
//!   │            ▲                        │  ▲                       │
//!   │            │ reads            log (WAL)  state machine          │
//!   │            │                        ▼  │  (fsm::apply over      │
//!   │        SharedState ◄─────────────── apply   domain::ClusterState)│
//!   │            ▲                                                    │
//!   │   leader loops (placement) ── scheduler::plan ── PlaceShards ───┤
//!   └────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Layers, with imports pointing one way only:
//! - [`domain`]: pure data (TaskManagers, jobs, shards, the cluster state and its digest).
//! - [`fsm`]: the replicated commands and their deterministic apply.
//! - [`scheduler`]: the pure placement policy (state view in, plan out).
//! - [`periodic`]: cron schedules and the pure rules for firing them (issue 27, begun).
//! - [`raft`]: openraft glue — write-ahead log store, snapshotting state machine, tonic
//!   transport, the Raft gate.
//! - [`leader`]: loops that run only on the leader and act only through the log.
//! - [`rpc`]: gRPC services, the one table of who may call what (`rpc::access`), what a
//!   tenant's tokens may see (`rpc::visibility`), streams that end with their right
//!   (`rpc::stream_right`) and the single error → status mapping.
//! - [`security`]: certificates, mutual TLS 1.3 connections, the party a certificate names
//!   (and that a server must be a replica), certificates reloaded on SIGHUP, token secrets.
//! - [`private_files`]: data and work dirs that only their owner can read.
//! - [`node`]: wiring of one replica; [`client`]: the leader-following client.
//! - [`cli`], [`commands`]: the command line.

pub mod bench;
pub mod chaos;
pub mod cli;
pub mod client;
pub mod clock;
pub mod commands;
pub mod config;
pub mod decode;
pub mod demo;
pub mod domain;
pub mod durable;
pub mod entropy;
pub mod failpoint;
pub mod formats;
pub mod framing;
pub mod fsm;
pub mod http;
pub mod leader;
pub mod local_cluster;
pub mod metrics;
pub mod node;
pub mod pb;
pub mod periodic;
#[cfg(test)]
mod persisted_formats;
pub mod private_files;
pub mod raft;
pub mod rpc;
pub mod scheduler;
pub mod security;
pub mod taskmanager;
pub mod thread_priority;
pub mod traces;
pub mod upgrade;
pub mod zeroed_tail;
