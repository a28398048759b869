//! A job's scheduling options beyond its spec: its priority (and, as they come, its
//! dependencies, gang and tenant). Kept beside the jobs in the state, only for jobs that set
//! something other than the defaults.

use serde::{Deserialize, Serialize};

/// Priority of a job submitted without one.
pub const DEFAULT_PRIORITY: u32 = 500;
/// The highest priority.
pub const MAX_PRIORITY: u32 = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobScheduling {
    /// 0..=1000; higher is placed first.
    pub priority: u32,
}

impl Default for JobScheduling {
    fn default() -> Self {
        JobScheduling {
            priority: DEFAULT_PRIORITY,
        }
    }
}

impl JobScheduling {
    pub fn is_default(&self) -> bool {
        *self == JobScheduling::default()
    }
}
