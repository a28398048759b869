//! The chaos suite: a Jepsen-style runner that attacks a real local cluster (replicas and
//! TaskManager agents as processes of this binary) with faults while clients work, records
//! a history, and checks it.
//!
//! Pieces: `proxy` (per-link network cuts), `nemesis` (the faults), `workload` (clients
//! submitting and reading), `sampler` (each replica's own status over time), `history` and
//! `executions` (the record), `checker`, `scheduling_checker` and `periodic_checker` (a
//! schedule fired throughout: one job per scheduled time) (the verdicts), `suspicion` (TaskManagers declared
//! lost, shards interrupted), `load` (busy threads for a loaded machine), `hostile` (a tenant
//! that attacks the others, with `--hostile`) and `walls_checker` (its verdict), and `runner`
//! (the whole run).

pub mod checker;
pub mod executions;
pub mod history;
pub mod hostile;
pub mod load;
pub mod nemesis;
pub mod periodic_checker;
pub mod proxy;
pub mod rng;
pub mod runner;
pub mod sampler;
pub mod scheduling_checker;
pub mod suspicion;
pub mod walls_checker;
pub mod workload;

pub use runner::{run, ChaosError, ChaosOptions, ChaosReport};
