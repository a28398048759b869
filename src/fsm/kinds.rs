//! Each command kind's stable id: its place in `Command`, which is also the tag bincode writes
//! first in every log entry. Kinds are only ever appended, so an id never changes meaning.
//! `kind_id` names every variant (no catch-all), so a new kind cannot be added without its
//! id here; the golden files under tests/golden then ask for a new log format version
//! (`persisted_formats`).

use super::command::Command;
use crate::domain::ClusterVersion;

/// How many command kinds this build knows; ids are `0..COMMAND_KINDS`.
pub const COMMAND_KINDS: u32 = 38;

/// The kinds' names, by id.
pub const KIND_NAMES: [&str; COMMAND_KINDS as usize] = [
    "RegisterTaskManager",
    "SubmitJob",
    "PlaceShards",
    "CancelJob",
    "DrainTaskManager",
    "ReportShardStarted",
    "ReportShardEnded",
    "MarkTaskManagerLost",
    "RequeueShards",
    "ForgetJobs",
    "ForgetTaskManagers",
    "CreateToken",
    "RevokeToken",
    "SeedBootstrapToken",
    "CancelOwnJob",
    "Batch",
    "RecordShardOutput",
    "SubmitScheduledJob",
    "PreemptShards",
    "SubmitJobWithOptions",
    "SetQuota",
    "CreateTenantToken",
    "RestartGang",
    "SetQuotaLimits",
    "PinTaskManager",
    "RevokeCertificate",
    "RegisterTaskManagerWithResources",
    "SubmitJobWithResources",
    "PreemptForShard",
    "SetQuotaWithResources",
    "SetClusterVersion",
    "UndrainTaskManager",
    "CronPut",
    "CronSetSuspended",
    "CronDelete",
    "CronFired",
    "CronRun",
    "PinTaskManagerWithResources",
];

/// The cluster version each kind came with, by id: a kind is written to the log only once
/// the cluster runs at its version, so every replica can read it.
pub const KIND_CLUSTER_VERSIONS: [u32; COMMAND_KINDS as usize] = [
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, // 0-9
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, // 10-19
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, // 20-29
    2, 2, // SetClusterVersion, UndrainTaskManager
    3, 3, 3, 3, 3, // the Cron* kinds
    4, // PinTaskManagerWithResources
];

impl Command {
    /// Whether applying it may add, replace or remove an access token: what a stream opened
    /// with a token must look at again (`rpc::stream_right`), and nothing else must.
    pub fn may_change_tokens(&self) -> bool {
        matches!(
            self,
            Command::CreateToken { .. }
                | Command::RevokeToken { .. }
                | Command::SeedBootstrapToken { .. }
                | Command::CreateTenantToken { .. }
        )
    }

    /// This command's kind id (see the module doc).
    pub fn kind_id(&self) -> u32 {
        match self {
            Command::RegisterTaskManager { .. } => 0,
            Command::SubmitJob { .. } => 1,
            Command::PlaceShards { .. } => 2,
            Command::CancelJob { .. } => 3,
            Command::DrainTaskManager { .. } => 4,
            Command::ReportShardStarted { .. } => 5,
            Command::ReportShardEnded { .. } => 6,
            Command::MarkTaskManagerLost { .. } => 7,
            Command::RequeueShards { .. } => 8,
            Command::ForgetJobs { .. } => 9,
            Command::ForgetTaskManagers { .. } => 10,
            Command::CreateToken { .. } => 11,
            Command::RevokeToken { .. } => 12,
            Command::SeedBootstrapToken { .. } => 13,
            Command::CancelOwnJob { .. } => 14,
            Command::Batch(_) => 15,
            Command::RecordShardOutput(_) => 16,
            Command::SubmitScheduledJob { .. } => 17,
            Command::PreemptShards { .. } => 18,
            Command::SubmitJobWithOptions { .. } => 19,
            Command::SetQuota { .. } => 20,
            Command::CreateTenantToken { .. } => 21,
            Command::RestartGang { .. } => 22,
            Command::SetQuotaLimits { .. } => 23,
            Command::PinTaskManager { .. } => 24,
            Command::RevokeCertificate { .. } => 25,
            Command::RegisterTaskManagerWithResources { .. } => 26,
            Command::SubmitJobWithResources { .. } => 27,
            Command::PreemptForShard { .. } => 28,
            Command::SetQuotaWithResources { .. } => 29,
            Command::SetClusterVersion { .. } => 30,
            Command::UndrainTaskManager { .. } => 31,
            Command::CronPut { .. } => 32,
            Command::CronSetSuspended { .. } => 33,
            Command::CronDelete { .. } => 34,
            Command::CronFired(_) => 35,
            Command::CronRun { .. } => 36,
            Command::PinTaskManagerWithResources { .. } => 37,
        }
    }

    /// The cluster version this command needs every replica to read: the version its kind
    /// came with (a batch holds only reports, all of version 1).
    pub fn needs_cluster_version(&self) -> ClusterVersion {
        ClusterVersion(KIND_CLUSTER_VERSIONS[self.kind_id() as usize])
    }

    /// This command's kind name.
    pub fn kind_name(&self) -> &'static str {
        KIND_NAMES[self.kind_id() as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Streams opened with a token look again only after commands that may change tokens:
    /// the token commands are among them (every write of `state.tokens` is in
    /// `fsm/apply/tokens.rs`, one per such command), other commands are not.
    #[test]
    fn the_token_commands_and_no_others_may_change_tokens() {
        let revoke = Command::RevokeToken {
            name: "ci".into(),
            now_ms: 1,
        };
        assert!(revoke.may_change_tokens());
        let seed = Command::SeedBootstrapToken {
            hash: crate::domain::TokenHash::of("secret"),
            now_ms: 1,
        };
        assert!(seed.may_change_tokens());
        assert!(!Command::Batch(Vec::new()).may_change_tokens());
        let forget = Command::ForgetJobs {
            job_ids: Vec::new(),
            now_ms: 1,
        };
        assert!(!forget.may_change_tokens());
    }
}
