//! Commands that go through the Raft log, and what applying them answers.
//!
//! Variants are only ever appended: an old log must keep decoding after an upgrade.

use crate::domain::{JobId, JobSpec, Labels};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Add a TaskManager, or refresh one that registers again (new registration epoch).
    RegisterTaskManager {
        id: String,
        addr: String,
        slots: u32,
        labels: Labels,
        now_ms: u64,
    },
    /// Create a job. With an idempotency key that already names a job, nothing changes and
    /// the existing job's id is answered.
    SubmitJob {
        name: String,
        spec: JobSpec,
        idempotency_key: Option<String>,
        now_ms: u64,
    },
    /// The leader's placement plan, re-checked entry by entry at apply time.
    PlaceShards {
        placements: Vec<Placement>,
        now_ms: u64,
    },
    /// Cancel every shard of a job that has not ended.
    CancelJob { job_id: JobId, now_ms: u64 },
    /// Stop placing new shards on a TaskManager.
    DrainTaskManager { id: String, now_ms: u64 },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::RegisterTaskManager { id, .. } => write!(f, "RegisterTaskManager({id})"),
            Command::SubmitJob { name, .. } => write!(f, "SubmitJob({name})"),
            Command::PlaceShards { placements, .. } => {
                write!(f, "PlaceShards({} placements)", placements.len())
            }
            Command::CancelJob { job_id, .. } => write!(f, "CancelJob({job_id})"),
            Command::DrainTaskManager { id, .. } => write!(f, "DrainTaskManager({id})"),
        }
    }
}

/// One shard → TaskManager decision of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub job_id: JobId,
    pub shard: u32,
    pub taskmanager: String,
}

/// How many placements of a plan took effect and how many had gone stale.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementOutcome {
    pub placed: u32,
    pub stale: u32,
}

/// Why a command was refused. The state is unchanged when a command is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("job '{0}' not found; list jobs with `dispatcher job list`")]
    UnknownJob(JobId),
    #[error("TaskManager '{0}' not found; list TaskManagers with `dispatcher tm list`")]
    UnknownTaskManager(String),
    #[error("job '{job_id}' already ended as {state}; nothing to cancel")]
    JobAlreadyEnded { job_id: JobId, state: String },
    #[error("job too large: {0}")]
    JobTooLarge(String),
    #[error("invalid request: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Entries that carry no command (blank, membership) answer this.
    Empty,
    TaskManagerRegistered {
        registration_epoch: u64,
    },
    JobSubmitted {
        job_id: JobId,
        created: bool,
    },
    ShardsPlaced(PlacementOutcome),
    JobCancelled {
        job_id: JobId,
        shards_cancelled: u32,
    },
    TaskManagerDraining {
        id: String,
    },
    Rejected(Rejection),
}
