//! Each command kind's stable id: its place in `Command`, which is also the tag bincode writes
//! first in every log entry. Kinds are only ever appended, so an id never changes meaning.
//! `kind_id` names every variant (no catch-all), so a new kind cannot be added without its
//! id here; the golden files under tests/golden then ask for a new log format version
//! (`persisted_formats`).

use super::command::Command;

/// How many command kinds this build knows; ids are `0..COMMAND_KINDS`.
pub const COMMAND_KINDS: u32 = 30;

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
];

impl Command {
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
        }
    }

    /// This command's kind name.
    pub fn kind_name(&self) -> &'static str {
        KIND_NAMES[self.kind_id() as usize]
    }
}
