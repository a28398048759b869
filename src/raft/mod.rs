//! Everything that touches openraft: the type configuration, the write-ahead log store, the
//! in-memory state machine with its on-disk snapshots, and the tonic transport between
//! replicas. The rest of the crate sees Raft only through this module.

mod append_stream;
pub mod assignment_watch;
pub mod backup;
pub mod election_timeline;
pub mod event_ring;
pub mod fuzzing;
pub mod gate;
mod heartbeat_lane;
pub mod network;
pub mod peer_troubles;
pub mod snapshot_store;
pub mod state_machine;
pub mod types;
pub mod wal;

pub use gate::{GateState, RaftGate};
pub use network::GrpcNetworkFactory;
pub use state_machine::{AppliedState, NextEvents, SharedState, StateMachineStore};
pub use types::*;
pub use wal::WalLogStore;
