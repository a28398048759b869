//! A job's scheduling options beyond its spec (priority, dependencies, gang, tenant) and the
//! tenants' quotas. Options are kept beside the jobs in the state, only for jobs that set
//! something other than the defaults.

use super::ids::JobId;
use serde::{Deserialize, Serialize};

/// Priority of a job submitted without one.
pub const DEFAULT_PRIORITY: u32 = 500;
/// The highest priority.
pub const MAX_PRIORITY: u32 = 1000;
/// The tenant of jobs submitted without one (under `--insecure`).
pub const DEFAULT_TENANT: &str = "default";
/// Most jobs one job may wait for (`--after`).
pub const MAX_AFTER: usize = 32;
/// Longest tenant name, in bytes.
pub const MAX_TENANT_BYTES: usize = 64;
/// Most tenants with a quota.
pub const MAX_QUOTAS: usize = 1000;
/// The most shards of one gang: a gang is placed in one plan (one log entry), whole.
pub const MAX_GANG_SHARDS: u32 = 20_000;
/// The largest fair-share weight.
pub const MAX_WEIGHT: u32 = 1000;

/// Where a tenant's idempotency key is kept in the state: keys are per tenant, so one
/// tenant's key never answers another's submission. The default tenant's keys are kept as
/// given (as before tenants had keys of their own); others' are prefixed with the tenant and
/// a control character, which neither a tenant name nor a key may contain.
pub fn idempotency_slot(tenant: &str, key: &str) -> String {
    if tenant == DEFAULT_TENANT {
        key.to_string()
    } else {
        format!("{tenant}\u{1f}{key}")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobScheduling {
    /// 0..=1000; higher is placed first.
    pub priority: u32,
    /// Jobs that must have finished before this one's shards are placed (sorted, unique).
    pub after: Vec<JobId>,
    /// All shards are placed in one decision or none; a failure restarts them all.
    pub gang: bool,
    /// Whose quota and fair share the job counts against.
    pub tenant: String,
}

impl Default for JobScheduling {
    fn default() -> Self {
        JobScheduling {
            priority: DEFAULT_PRIORITY,
            after: Vec::new(),
            gang: false,
            tenant: DEFAULT_TENANT.to_string(),
        }
    }
}

impl JobScheduling {
    pub fn is_default(&self) -> bool {
        *self == JobScheduling::default()
    }
}

/// The options as the first version with options wrote them (a priority alone): the
/// `SubmitScheduledJob` command and snapshot format 6 carry this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriorityOnly {
    pub priority: u32,
}

impl From<PriorityOnly> for JobScheduling {
    fn from(old: PriorityOnly) -> Self {
        JobScheduling {
            priority: old.priority,
            ..JobScheduling::default()
        }
    }
}

/// A tenant's share of the cluster: at most `slots` running slots (none: no limit), and
/// free slots split between tenants with waiting work in proportion to `weight`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub slots: Option<u64>,
    /// 1..=1000.
    pub weight: u32,
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            slots: None,
            weight: 1,
        }
    }
}
