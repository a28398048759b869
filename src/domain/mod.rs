//! Pure domain data: TaskManagers, jobs, shards and the whole replicated cluster state.
//!
//! Nothing here knows about Raft, the network or the disk: this module imports no tokio,
//! tonic, openraft or sled. Every collection whose order can reach the state (and therefore
//! the state digest) is a `BTreeMap`/`BTreeSet`, so two replicas that applied the same
//! commands hold byte-identical encodings.

mod cluster_version;
mod cron;
mod ids;
mod job;
mod key_index;
mod limits;
mod output;
mod pending;
mod resources;
mod revocation;
mod scheduling;
mod state;
mod stopping;
mod taskmanager;
mod token;

pub use cluster_version::ClusterVersion;
#[cfg(test)]
pub use cron::test_definition;
pub use cron::{
    rfc3339, CronDefinition, CronKey, CronOrigin, CronRunRecord, CronSchedule, CronSkip, CronState,
    JobTemplate, CRON_HISTORY, MAX_SCHEDULES, MAX_SCHEDULES_PER_TENANT, MAX_SKIP_REASON_BYTES,
    MAX_STARTING_DEADLINE_MS, MAX_TIMEZONE_BYTES, SCHEDULED_TIME_ENV, SCHEDULE_ENV,
};
pub use ids::{JobId, ParseJobIdError, TaskManagerId};
pub use job::{Job, JobSpec, JobState, Shard, ShardCounts, ShardMut, ShardState};
pub use key_index::KeyIndex;
pub use limits::*;
pub use output::{OutputStore, PrintedTail, ShardOutput};
pub use pending::{PendingIndex, QueueKey};
pub use resources::*;
pub use revocation::{
    fingerprint, is_revoked, Fingerprint, Revocations, Revoked, MAX_REVOKED_PARTIES,
    MAX_REVOKED_PER_PARTY,
};
pub use scheduling::{
    idempotency_slot, JobScheduling, PriorityOnly, Quota, DEFAULT_PRIORITY, DEFAULT_TENANT,
    MAX_AFTER, MAX_GANG_SHARDS, MAX_PRIORITY, MAX_QUOTAS, MAX_TENANT_BYTES, MAX_WEIGHT,
};
pub use state::{AssignmentsVersion, ClusterState, StateDigest};
pub use stopping::{Held, StoppingHolds};
pub use taskmanager::{
    claims_refusal, pin_command, pin_refusal, registered_claims_refusal, resource_pin_refusal,
    Labels, ResourcePin, RunStats, TaskManager, TaskManagerPin, TaskManagerState,
};
pub use token::{
    find_token, Permission, Role, Token, TokenHash, BOOTSTRAP_TOKEN_NAME, MAX_TOKENS,
    MAX_TOKEN_NAME_BYTES,
};
