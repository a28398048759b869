//! Commands that go through the Raft log, and what applying them answers.
//!
//! Variants are only ever appended: an old log must keep decoding after an upgrade.

use crate::domain::{
    Admission, CronDefinition, JobId, JobScheduling, JobSpec, Labels, PrintedTail, PriorityOnly,
    ResourceRequest, Resources, Role, TaskManagerResources, TokenHash,
};
use crate::periodic::Skipped;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Add a TaskManager, or refresh one that registers again (new registration epoch).
    RegisterTaskManager {
        /// The registering agent process (0: unknown) and, if it found one on its work dir,
        /// the process it succeeds. Another incarnation taking the id over (admitted by the
        /// leader only once the holder's lease has surely run out) requeues what it held.
        incarnation: u64,
        successor_of: Option<u64>,
        /// The holder's incarnation the leader found silent past its lease and fenced, when
        /// this registration takes the id over from it; any other live holder is refused.
        replaces: Option<u64>,
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
        /// The submitting client, for per-client admission.
        owner: String,
        /// The leader's admission limits, stamped in so that apply decides the same way on
        /// every replica whatever their config files say.
        admission: Admission,
        now_ms: u64,
    },
    /// The leader's placement plan, re-checked entry by entry at apply time.
    PlaceShards {
        placements: Vec<Placement>,
        now_ms: u64,
    },
    /// Cancel every shard of a job that has not ended.
    CancelJob { job_id: JobId, now_ms: u64 },
    /// Stop placing new shards on a TaskManager; shards still running there at
    /// `deadline_ms` are stopped and placed elsewhere.
    DrainTaskManager {
        id: String,
        deadline_ms: u64,
        now_ms: u64,
    },
    /// A TaskManager started the run it was assigned with `epoch`.
    ReportShardStarted {
        taskmanager: String,
        job_id: JobId,
        shard: u32,
        epoch: u64,
        now_ms: u64,
    },
    /// A run ended. `retry_at_ms` is the back-off deadline the leader chose (with jitter) in
    /// case this was a failure that will be retried.
    ReportShardEnded {
        taskmanager: String,
        job_id: JobId,
        shard: u32,
        epoch: u64,
        outcome: ShardOutcome,
        run_ms: u64,
        retry_at_ms: u64,
        now_ms: u64,
    },
    /// The leader has not heard from a TaskManager for longer than the timeout: its shards
    /// go back to pending. Ignored if the TaskManager registered again meanwhile.
    MarkTaskManagerLost {
        id: String,
        registration_epoch: u64,
        now_ms: u64,
    },
    /// Put shards back to pending (a drain deadline passed). Each entry names the epoch it
    /// expects, so a shard re-placed meanwhile is left alone. The shards are not placed again
    /// before `not_before_ms`, by which time the TaskManager has surely stopped its copies
    /// (it is told at its next heartbeat, or its lease runs out).
    RequeueShards {
        taskmanager: String,
        shards: Vec<(JobId, u32, u64)>,
        not_before_ms: u64,
        now_ms: u64,
    },
    /// Retention: drop jobs that ended long ago, with their idempotency keys.
    ForgetJobs { job_ids: Vec<JobId>, now_ms: u64 },
    /// Retention: drop TaskManagers lost long ago that hold nothing.
    ForgetTaskManagers { ids: Vec<String>, now_ms: u64 },
    /// Add an access token (its secret's hash; the secret never leaves the client that made it).
    CreateToken {
        name: String,
        role: Role,
        hash: TokenHash,
        now_ms: u64,
    },
    /// Remove an access token: every replica refuses it once this is applied.
    RevokeToken { name: String, now_ms: u64 },
    /// The admin token of `--bootstrap-token-file`, proposed by a new leader; applied only if
    /// no token was ever created, so restarts with the same file change nothing.
    SeedBootstrapToken { hash: TokenHash, now_ms: u64 },
    /// Cancel a job only if `owner` submitted it (a `submit` token cancelling its own job).
    CancelOwnJob {
        job_id: JobId,
        owner: String,
        now_ms: u64,
    },
    /// A TaskManager's batch of reports in one entry: applied in order, each answering on
    /// its own, so one refused changes nothing of the others. One entry instead of one per
    /// report spares a burst of short shards most of the log's work. (Reports, not any
    /// command: a batch cannot nest, so no entry can make decoding recurse.)
    Batch(Vec<Report>),
    /// The end of what a run printed, sent just before its final report: kept with the shard
    /// so `job logs` answers after the TaskManager is gone.
    RecordShardOutput(OutputReport),
    /// `SubmitJob` with a priority, as the first version with options wrote it (still read;
    /// no longer proposed: `SubmitJobWithOptions` replaced it).
    SubmitScheduledJob {
        name: String,
        spec: JobSpec,
        idempotency_key: Option<String>,
        owner: String,
        admission: Admission,
        scheduling: PriorityOnly,
        now_ms: u64,
    },
    /// Put lower-priority shards back to pending to make room for a shard of `for_job`: as
    /// `RequeueShards` (not a failure), and each counts a preemption.
    PreemptShards {
        taskmanager: String,
        shards: Vec<(JobId, u32, u64)>,
        for_job: JobId,
        not_before_ms: u64,
        now_ms: u64,
    },
    /// `SubmitJob` with scheduling options (priority, `--after`, gang, tenant); a job with
    /// the defaults is submitted with `SubmitJob`, which older replicas read too.
    SubmitJobWithOptions {
        name: String,
        spec: JobSpec,
        idempotency_key: Option<String>,
        owner: String,
        admission: Admission,
        options: JobScheduling,
        now_ms: u64,
    },
    /// Set a tenant's quota and weight (what is not given keeps its value).
    SetQuota {
        tenant: String,
        slots: SlotLimit,
        weight: Option<u32>,
        now_ms: u64,
    },
    /// `CreateToken` for a tenant other than the token's name.
    CreateTenantToken {
        name: String,
        role: Role,
        hash: TokenHash,
        tenant: String,
        now_ms: u64,
    },
    /// A gang lost a member (it failed, or its run was cut short): every other shard of the
    /// gang goes back to pending too, so that all start again together. Applied only while
    /// the gang is still split (some shards pending, others not). Shards that held slots are
    /// not placed again before `not_before_ms`, by which time their TaskManagers have
    /// stopped them.
    RestartGang {
        job_id: JobId,
        not_before_ms: u64,
        now_ms: u64,
    },
    /// `SetQuota` that also sets the tenant's highest priority (`quota set --max-priority`);
    /// `None` keeps it. `SetQuota` stays for requests without one, which every version reads.
    SetQuotaLimits {
        tenant: String,
        slots: SlotLimit,
        weight: Option<u32>,
        max_priority: Option<u32>,
        now_ms: u64,
    },
    /// What TaskManager `id` may claim when it registers (`tm pin`): these labels and at most
    /// `slots`. No labels and no slots: the pin is removed.
    PinTaskManager {
        id: String,
        labels: Labels,
        slots: Option<u32>,
        now_ms: u64,
    },
    /// `certs revoke`: every certificate naming `party`, or only the one with `fingerprint`,
    /// is refused from now on.
    RevokeCertificate {
        party: String,
        fingerprint: Option<crate::domain::Fingerprint>,
        now_ms: u64,
    },
    /// `RegisterTaskManager` with the TaskManager's resources and isolation level.
    RegisterTaskManagerWithResources {
        incarnation: u64,
        successor_of: Option<u64>,
        replaces: Option<u64>,
        id: String,
        addr: String,
        slots: u32,
        labels: Labels,
        resources: TaskManagerResources,
        now_ms: u64,
    },
    /// `SubmitJobWithOptions` for a job whose shards ask for CPU, memory, named resources or
    /// full isolation; jobs that ask none are submitted as before.
    SubmitJobWithResources {
        name: String,
        spec: JobSpec,
        idempotency_key: Option<String>,
        owner: String,
        admission: Admission,
        options: JobScheduling,
        request: ResourceRequest,
        now_ms: u64,
    },
    /// Stop `victims` on `taskmanager` (as `PreemptShards`) and place shard `shard` of
    /// `for_job` there in the same step, so the room goes to it and nobody else. Re-checked
    /// whole at apply; a stale one changes nothing.
    PreemptForShard {
        taskmanager: String,
        victims: Vec<(JobId, u32, u64)>,
        for_job: JobId,
        shard: u32,
        not_before_ms: u64,
        now_ms: u64,
    },
    /// `SetQuotaLimits` that also sets limits on CPU, memory and named resources.
    SetQuotaWithResources {
        tenant: String,
        slots: SlotLimit,
        weight: Option<u32>,
        max_priority: Option<u32>,
        resources: ResourceLimits,
        now_ms: u64,
    },
    /// Raise the cluster version (the leader, once every member reads `version`) or lower
    /// it (`cluster downgrade`, refused while the state holds something the lower version
    /// cannot express). Cluster version 2.
    SetClusterVersion { version: u32, now_ms: u64 },
    /// `tm undrain`: a draining TaskManager takes new shards again (a lost one comes back
    /// alive, not draining, when it registers again). Cluster version 2.
    UndrainTaskManager { id: String, now_ms: u64 },
    /// `cron add`: create a schedule, or give one of that name in that tenant a new
    /// definition (a new generation; its history stays). Its mark starts at `now_ms`, so a
    /// definition never catches up on times before it. Cluster version 3.
    CronPut {
        tenant: String,
        name: String,
        definition: CronDefinition,
        now_ms: u64,
    },
    /// `cron suspend` / `cron resume`. On resume the mark moves to `now_ms`: the times
    /// that passed while it was suspended are not fired.
    CronSetSuspended {
        tenant: String,
        name: String,
        suspended: bool,
        now_ms: u64,
    },
    /// `cron delete`. The jobs it made stay, and still say which schedule made them.
    CronDelete {
        tenant: String,
        name: String,
        now_ms: u64,
    },
    /// The leader's turn for one schedule (`CronTurn`). Cluster version 3.
    CronFired(CronTurn),
    /// `cron run`: one job now, outside the schedule (its mark does not move), under its
    /// concurrency rule. `request_key` makes a retried call the same job.
    CronRun {
        tenant: String,
        name: String,
        request_key: String,
        admission: Admission,
        now_ms: u64,
    },
    /// `tm pin` at cluster version 4: the whole pin, labels and slots as `PinTaskManager`
    /// and the most CPU, memory and named resources the agent may declare. Replaces what
    /// was pinned; an empty one removes the pin.
    PinTaskManagerWithResources {
        id: String,
        labels: Labels,
        slots: Option<u32>,
        resources: crate::domain::ResourcePin,
        now_ms: u64,
    },
}

/// The leader's turn for one schedule: every scheduled time in `(from_ms, until_ms]` is
/// settled. `fire`, if any, becomes a job as the schedule's concurrency rule says (decided
/// at apply, from the state, not by the leader); `skipped` were let go. Applied only while
/// the schedule's generation is `generation` and its mark is `from_ms`, so a turn decided
/// twice (by a deposed leader and the new one) applies once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronTurn {
    pub tenant: String,
    pub name: String,
    pub generation: u64,
    pub from_ms: u64,
    pub until_ms: u64,
    pub fire: Option<u64>,
    pub skipped: Skipped,
    pub admission: Admission,
    pub now_ms: u64,
}

/// What `SetQuotaWithResources` does to a tenant's resource limits: `clear` drops them all
/// first, then each dimension given (non-zero) is set; the rest keep their value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceLimits {
    pub clear: bool,
    pub set: Resources,
}

/// What `SetQuota` does to a tenant's slot limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlotLimit {
    Keep,
    Set(u64),
    Unlimited,
}

/// What a run printed, as much as the leader lets into the log, and how much output in all
/// the state may hold (the oldest is dropped beyond that).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputReport {
    pub taskmanager: String,
    pub job_id: JobId,
    pub shard: u32,
    pub epoch: u64,
    pub printed: PrintedTail,
    pub keep_bytes: u64,
}

/// A report in a `Batch`: the same as the command of that name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Report {
    Started {
        taskmanager: String,
        job_id: JobId,
        shard: u32,
        epoch: u64,
        now_ms: u64,
    },
    Ended {
        taskmanager: String,
        job_id: JobId,
        shard: u32,
        epoch: u64,
        outcome: ShardOutcome,
        run_ms: u64,
        retry_at_ms: u64,
        now_ms: u64,
    },
    Output(OutputReport),
}

impl From<Report> for Command {
    fn from(report: Report) -> Command {
        match report {
            Report::Started {
                taskmanager,
                job_id,
                shard,
                epoch,
                now_ms,
            } => Command::ReportShardStarted {
                taskmanager,
                job_id,
                shard,
                epoch,
                now_ms,
            },
            Report::Ended {
                taskmanager,
                job_id,
                shard,
                epoch,
                outcome,
                run_ms,
                retry_at_ms,
                now_ms,
            } => Command::ReportShardEnded {
                taskmanager,
                job_id,
                shard,
                epoch,
                outcome,
                run_ms,
                retry_at_ms,
                now_ms,
            },
            Report::Output(output) => Command::RecordShardOutput(output),
        }
    }
}

/// How a shard run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardOutcome {
    /// Exit code 0.
    Finished,
    /// A non-zero exit (or a failure to start); counts against max attempts.
    Failed {
        exit_code: Option<i32>,
        error: String,
    },
    /// Cut short by the infrastructure (the TaskManager restarted); does not count.
    Interrupted { reason: String },
    /// The command could not be started (not found, not executable): the job's fault. The
    /// shard fails at once, without retries, and the TaskManager's record is untouched.
    CannotStart { error: String },
    /// The run passed a limit its job set (its `--timeout`, or its memory): a failure that
    /// counts against the job's attempts like `Failed`, but not against the TaskManager,
    /// which did nothing wrong (a job that always times out must not get every agent
    /// excluded for failing too often).
    OverLimit { error: String },
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
            Command::ReportShardStarted {
                job_id,
                shard,
                epoch,
                ..
            } => {
                write!(f, "ReportShardStarted({job_id}/{shard}@{epoch})")
            }
            Command::ReportShardEnded {
                job_id,
                shard,
                epoch,
                ..
            } => {
                write!(f, "ReportShardEnded({job_id}/{shard}@{epoch})")
            }
            Command::MarkTaskManagerLost { id, .. } => write!(f, "MarkTaskManagerLost({id})"),
            Command::RequeueShards {
                taskmanager,
                shards,
                ..
            } => {
                write!(f, "RequeueShards({taskmanager}, {})", shards.len())
            }
            Command::ForgetJobs { job_ids, .. } => write!(f, "ForgetJobs({})", job_ids.len()),
            Command::ForgetTaskManagers { ids, .. } => {
                write!(f, "ForgetTaskManagers({})", ids.len())
            }
            Command::CreateToken { name, role, .. } => write!(f, "CreateToken({name}, {role})"),
            Command::RevokeToken { name, .. } => write!(f, "RevokeToken({name})"),
            Command::SeedBootstrapToken { .. } => f.write_str("SeedBootstrapToken"),
            Command::CancelOwnJob { job_id, .. } => write!(f, "CancelOwnJob({job_id})"),
            Command::Batch(commands) => write!(f, "Batch({} commands)", commands.len()),
            Command::SubmitScheduledJob {
                name, scheduling, ..
            } => write!(
                f,
                "SubmitScheduledJob({name}, priority {})",
                scheduling.priority
            ),
            Command::PreemptShards {
                taskmanager,
                shards,
                for_job,
                ..
            } => write!(
                f,
                "PreemptShards({taskmanager}, {} for {for_job})",
                shards.len()
            ),
            Command::RecordShardOutput(o) => {
                write!(f, "RecordShardOutput({}/{}@{})", o.job_id, o.shard, o.epoch)
            }
            Command::SubmitJobWithOptions { name, options, .. } => write!(
                f,
                "SubmitJobWithOptions({name}, priority {}, tenant {})",
                options.priority, options.tenant
            ),
            Command::SetQuota { tenant, .. } => write!(f, "SetQuota({tenant})"),
            Command::CreateTenantToken { name, role, .. } => {
                write!(f, "CreateTenantToken({name}, {role})")
            }
            Command::RestartGang { job_id, .. } => write!(f, "RestartGang({job_id})"),
            Command::SetQuotaLimits { tenant, .. } => write!(f, "SetQuotaLimits({tenant})"),
            Command::PinTaskManager { id, .. } => write!(f, "PinTaskManager({id})"),
            Command::RevokeCertificate { party, .. } => write!(f, "RevokeCertificate({party})"),
            Command::RegisterTaskManagerWithResources { id, resources, .. } => write!(
                f,
                "RegisterTaskManagerWithResources({id}, {}, isolation {})",
                resources.capacity,
                resources.isolation.as_str()
            ),
            Command::SubmitJobWithResources { name, request, .. } => write!(
                f,
                "SubmitJobWithResources({name}, {} per shard)",
                request.per_shard
            ),
            Command::SetQuotaWithResources { tenant, .. } => {
                write!(f, "SetQuotaWithResources({tenant})")
            }
            Command::SetClusterVersion { version, .. } => {
                write!(f, "SetClusterVersion({version})")
            }
            Command::UndrainTaskManager { id, .. } => write!(f, "UndrainTaskManager({id})"),
            Command::CronPut { tenant, name, .. } => write!(f, "CronPut({tenant}/{name})"),
            Command::CronSetSuspended {
                tenant,
                name,
                suspended,
                ..
            } => write!(f, "CronSetSuspended({tenant}/{name}, {suspended})"),
            Command::CronDelete { tenant, name, .. } => {
                write!(f, "CronDelete({tenant}/{name})")
            }
            Command::CronFired(turn) => write!(
                f,
                "CronFired({}/{}, fire {:?}, settled to {})",
                turn.tenant, turn.name, turn.fire, turn.until_ms
            ),
            Command::CronRun { tenant, name, .. } => write!(f, "CronRun({tenant}/{name})"),
            Command::PinTaskManagerWithResources { id, .. } => {
                write!(f, "PinTaskManagerWithResources({id})")
            }
            Command::PreemptForShard {
                taskmanager,
                victims,
                for_job,
                shard,
                ..
            } => write!(
                f,
                "PreemptForShard({taskmanager}, {} for {for_job}/{shard})",
                victims.len()
            ),
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
    #[error("job '{job_id}' has no shard {shard}")]
    UnknownShard { job_id: JobId, shard: u32 },
    #[error("stale report for {job_id} shard {shard}: epoch {epoch} is no longer this TaskManager's assignment; stop that run")]
    StaleEpoch {
        job_id: JobId,
        shard: u32,
        epoch: u64,
    },
    #[error("TaskManager '{id}' registered again since (registration {current}); nothing to do")]
    StaleRegistration { id: String, current: u64 },
    #[error("TaskManager id '{id}' is held by another agent at {addr}; stop that agent, or start this one with another --id")]
    IdInUse { id: String, addr: String },
    /// Admission control: the cluster (or this client) holds as much unfinished work as it
    /// accepts.
    #[error("{0}")]
    Overloaded(String),
    #[error("a token named '{0}' already exists; choose another --name, or revoke it first")]
    TokenExists(String),
    #[error("no token named '{0}'; list tokens with `dispatcher token list`")]
    UnknownToken(String),
    #[error("'{0}' is the last admin token; create another admin token before revoking it")]
    LastAdminToken(String),
    #[error("job '{0}' was submitted by someone else; a submit token cancels only its own jobs (ask an operator)")]
    NotOwner(JobId),
    #[error("job '{0}', named in --after, does not exist; list jobs with `dispatcher job list`")]
    UnknownDependency(JobId),
    #[error("priority {priority} is above tenant '{tenant}''s highest priority {ceiling}; submit at {ceiling} or below, or ask an admin to raise it (`dispatcher quota set {tenant} --max-priority {priority}`)")]
    AboveCeiling {
        tenant: String,
        priority: u32,
        ceiling: u32,
    },
    #[error("this needs cluster version {needed}, and the cluster runs at {current}: every replica must run a release that reads it first (see `dispatcher cluster status`)")]
    NeedsClusterVersion { needed: u32, current: u32 },
    #[error(
        "no schedule '{name}' in tenant '{tenant}'; list schedules with `dispatcher cron list`"
    )]
    UnknownSchedule { tenant: String, name: String },
    /// A leader's turn that another already settled, or for a definition since replaced.
    #[error("stale turn for schedule '{name}': {why}")]
    StaleCronTurn { name: String, why: String },
    #[error("schedule '{name}' forbids overlapping runs and its job {job} still runs; wait for it, or cancel it (`dispatcher job cancel {job}`)")]
    CronStillRunning { name: String, job: JobId },
    #[error("{0}")]
    TooManySchedules(String),
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
    TaskManagerUndrained {
        id: String,
    },
    ClusterVersionSet {
        version: u32,
    },
    ShardReported,
    TaskManagerLost {
        id: String,
        shards_requeued: u32,
    },
    ShardsRequeued {
        count: u32,
    },
    JobsForgotten {
        count: u32,
    },
    TaskManagersForgotten {
        count: u32,
    },
    TokenCreated {
        name: String,
    },
    TokenRevoked {
        name: String,
    },
    /// Whether the bootstrap token was seeded (false: tokens existed already).
    BootstrapTokenSeeded {
        seeded: bool,
    },
    Rejected(Rejection),
    /// One answer per command of a `Batch`, in order.
    Batch(Vec<Response>),
    QuotaSet {
        tenant: String,
        quota: crate::domain::Quota,
        max_priority: u32,
    },

    TaskManagerPinned {
        id: String,
    },
    CertificateRevoked {
        party: String,
    },
    /// `CronPut`: whether the schedule is new (else its definition was replaced).
    CronPut {
        created: bool,
    },
    CronSuspended {
        suspended: bool,
    },
    CronDeleted,
    /// A turn settled: the job it made, if any, and why a time was let go, if one was.
    CronFired {
        job: Option<JobId>,
        skipped: Option<String>,
    },
}
