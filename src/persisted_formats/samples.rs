//! One value of every persisted shape: every command kind, a state built by applying them,
//! log records of every kind, and journal records of every kind. Fixed forever for a given
//! format version: the golden files are these values encoded.

use crate::domain::{
    Admission, ClusterState, ClusterVersion, CronDefinition, Isolation, JobId, JobScheduling,
    JobSpec, JobTemplate, Labels, PrintedTail, PriorityOnly, ResourcePin, ResourceRequest,
    Resources, Role, TaskManagerResources, TokenHash,
};
use crate::fsm::{
    apply, Command, CronTurn, OutputReport, Placement, Report, ResourceLimits, ShardOutcome,
    SlotLimit,
};
use crate::periodic::{CatchUp, Concurrency, Skipped};
use crate::raft::types::{Entry, Vote};
use crate::raft::wal::record::Record;
use crate::taskmanager::journal::JournalRecord;
use crate::taskmanager::workdir::RunResult;
use openraft::entry::EntryPayload;
use openraft::testing::log_id;
use std::collections::{BTreeMap, BTreeSet};

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn spec(shards: u32) -> JobSpec {
    JobSpec {
        command: "/bin/sh".into(),
        args: vec!["-c".into(), "echo $DISPATCHER_SHARD_INDEX".into()],
        env: [("MODE".to_string(), "golden".to_string())].into(),
        shard_count: shards,
        slots_per_shard: 1,
        max_attempts: 3,
        selector: Labels::new(),
    }
}

fn resources(cpu_millis: u64, memory_bytes: u64, gpus: u64) -> Resources {
    Resources {
        cpu_millis,
        memory_bytes,
        named: [("gpu".to_string(), gpus)].into(),
    }
}

fn output(job: u64, shard: u32) -> OutputReport {
    OutputReport {
        taskmanager: "tm-a".into(),
        job_id: JobId(job),
        shard,
        epoch: 7,
        printed: PrintedTail {
            stdout: b"hello\n".to_vec(),
            stderr: b"warning\n".to_vec(),
            stdout_cut: false,
            stderr_cut: true,
            stdout_len: 6,
            stderr_len: 4096,
        },
        keep_bytes: 1 << 20,
    }
}

/// Every command kind at least once, in an order that builds a state with something of
/// everything (log index = position + 1, so job ids are positions + 1).
pub fn every_command() -> Vec<Command> {
    // Not a token's: a submission without one is not held to a priority ceiling.
    let owner = || "client-1".to_string();
    let admission = Admission::DEFAULT;
    let mut commands = vec![
        Command::RegisterTaskManager {
            incarnation: 7,
            successor_of: None,
            replaces: None,
            id: "tm-a".into(),
            addr: "10.0.0.1:7001".into(),
            slots: 8,
            labels: labels(&[("zone", "a")]),
            now_ms: 1_000,
        },
        Command::RegisterTaskManagerWithResources {
            incarnation: 8,
            successor_of: Some(3),
            replaces: None,
            id: "tm-b".into(),
            addr: "10.0.0.2:7001".into(),
            slots: 4,
            labels: Labels::new(),
            resources: TaskManagerResources {
                capacity: resources(4_000, 8 << 30, 2),
                isolation: Isolation::Partial,
                isolation_missing: "cgroup v2 memory controller".into(),
            },
            now_ms: 1_001,
        },
        // Job 3.
        Command::SubmitJob {
            name: "plain".into(),
            spec: spec(2),
            idempotency_key: Some("key-1".into()),
            owner: owner(),
            admission,
            now_ms: 1_002,
        },
        // Job 4.
        Command::SubmitScheduledJob {
            name: "old-priority".into(),
            spec: spec(1),
            idempotency_key: None,
            owner: owner(),
            admission,
            scheduling: PriorityOnly { priority: 600 },
            now_ms: 1_003,
        },
        // Job 5.
        Command::SubmitJobWithOptions {
            name: "options".into(),
            spec: spec(2),
            idempotency_key: None,
            owner: owner(),
            admission,
            options: JobScheduling {
                priority: 700,
                after: vec![JobId(3)],
                gang: true,
                tenant: "team".into(),
            },
            now_ms: 1_004,
        },
        // Job 6.
        Command::SubmitJobWithResources {
            name: "resources".into(),
            spec: spec(1),
            idempotency_key: None,
            owner: owner(),
            admission,
            options: JobScheduling {
                tenant: "team".into(),
                ..Default::default()
            },
            request: ResourceRequest {
                per_shard: resources(500, 1 << 29, 1),
                isolation_full: false,
                timeout_ms: Some(60_000),
            },
            now_ms: 1_005,
        },
        Command::PlaceShards {
            placements: vec![
                Placement {
                    job_id: JobId(3),
                    shard: 0,
                    taskmanager: "tm-a".into(),
                },
                Placement {
                    job_id: JobId(3),
                    shard: 1,
                    taskmanager: "tm-a".into(),
                },
                Placement {
                    job_id: JobId(6),
                    shard: 0,
                    taskmanager: "tm-b".into(),
                },
            ],
            now_ms: 1_006,
        },
        Command::ReportShardStarted {
            taskmanager: "tm-a".into(),
            job_id: JobId(3),
            shard: 0,
            epoch: 7,
            now_ms: 1_007,
        },
        Command::RecordShardOutput(output(3, 0)),
        Command::ReportShardEnded {
            taskmanager: "tm-a".into(),
            job_id: JobId(3),
            shard: 0,
            epoch: 7,
            outcome: ShardOutcome::Finished,
            run_ms: 5,
            retry_at_ms: 0,
            now_ms: 1_008,
        },
        Command::Batch(vec![
            Report::Started {
                taskmanager: "tm-a".into(),
                job_id: JobId(3),
                shard: 1,
                epoch: 7,
                now_ms: 1_009,
            },
            Report::Output(output(3, 1)),
            Report::Ended {
                taskmanager: "tm-a".into(),
                job_id: JobId(3),
                shard: 1,
                epoch: 7,
                outcome: ShardOutcome::Failed {
                    exit_code: Some(1),
                    error: "exited with 1".into(),
                },
                run_ms: 12,
                retry_at_ms: 2_000,
                now_ms: 1_009,
            },
        ]),
        Command::ReportShardEnded {
            taskmanager: "tm-b".into(),
            job_id: JobId(6),
            shard: 0,
            epoch: 7,
            outcome: ShardOutcome::OverLimit {
                error: "timed out after 1m".into(),
            },
            run_ms: 60_000,
            retry_at_ms: 0,
            now_ms: 1_010,
        },
        Command::ReportShardEnded {
            taskmanager: "tm-b".into(),
            job_id: JobId(6),
            shard: 0,
            epoch: 7,
            outcome: ShardOutcome::CannotStart {
                error: "no such file".into(),
            },
            run_ms: 0,
            retry_at_ms: 0,
            now_ms: 1_010,
        },
        Command::ReportShardEnded {
            taskmanager: "tm-b".into(),
            job_id: JobId(6),
            shard: 0,
            epoch: 7,
            outcome: ShardOutcome::Interrupted {
                reason: "agent restarted".into(),
            },
            run_ms: 3,
            retry_at_ms: 0,
            now_ms: 1_010,
        },
        Command::CancelJob {
            job_id: JobId(4),
            now_ms: 1_011,
        },
        Command::DrainTaskManager {
            id: "tm-b".into(),
            deadline_ms: 5_000,
            now_ms: 1_012,
        },
        Command::MarkTaskManagerLost {
            id: "tm-b".into(),
            registration_epoch: 2,
            now_ms: 1_013,
        },
        Command::RequeueShards {
            taskmanager: "tm-a".into(),
            shards: vec![(JobId(3), 1, 99)],
            not_before_ms: 3_000,
            now_ms: 1_014,
        },
        Command::ForgetJobs {
            job_ids: vec![JobId(4)],
            now_ms: 1_015,
        },
        Command::ForgetTaskManagers {
            ids: vec!["tm-b".into()],
            now_ms: 1_016,
        },
        Command::CreateToken {
            name: "alice".into(),
            role: Role::Submit,
            hash: TokenHash::of("alice-secret"),
            now_ms: 1_017,
        },
        Command::SeedBootstrapToken {
            hash: TokenHash::of("bootstrap-secret"),
            now_ms: 1_018,
        },
        Command::CreateTenantToken {
            name: "bob".into(),
            role: Role::Read,
            hash: TokenHash::of("bob-secret"),
            tenant: "team".into(),
            now_ms: 1_019,
        },
        Command::RevokeToken {
            name: "alice".into(),
            now_ms: 1_020,
        },
        Command::CancelOwnJob {
            job_id: JobId(5),
            owner: "token:bob".into(),
            now_ms: 1_021,
        },
        Command::PreemptShards {
            taskmanager: "tm-a".into(),
            shards: vec![(JobId(3), 1, 7)],
            for_job: JobId(5),
            not_before_ms: 3_500,
            now_ms: 1_021,
        },
        Command::SetQuota {
            tenant: "team".into(),
            slots: SlotLimit::Set(6),
            weight: Some(2),
            now_ms: 1_022,
        },
        Command::RestartGang {
            job_id: JobId(5),
            not_before_ms: 2_000,
            now_ms: 1_023,
        },
        Command::SetQuotaLimits {
            tenant: "team".into(),
            slots: SlotLimit::Unlimited,
            weight: None,
            max_priority: Some(800),
            now_ms: 1_024,
        },
        Command::PinTaskManager {
            id: "tm-a".into(),
            labels: labels(&[("zone", "a")]),
            slots: Some(8),
            now_ms: 1_025,
        },
        Command::RevokeCertificate {
            party: "tm-c".into(),
            fingerprint: Some([7; 32]),
            now_ms: 1_026,
        },
        Command::PreemptForShard {
            taskmanager: "tm-a".into(),
            victims: vec![(JobId(3), 1, 7)],
            for_job: JobId(5),
            shard: 0,
            not_before_ms: 4_000,
            now_ms: 1_027,
        },
        Command::SetQuotaWithResources {
            tenant: "team".into(),
            slots: SlotLimit::Keep,
            weight: None,
            max_priority: None,
            resources: ResourceLimits {
                clear: false,
                set: resources(2_000, 4 << 30, 1),
            },
            now_ms: 1_028,
        },
        // Cluster version 2 from here on.
        Command::SetClusterVersion {
            version: 2,
            now_ms: 1_029,
        },
        Command::UndrainTaskManager {
            id: "tm-b".into(),
            now_ms: 1_030,
        },
    ];
    commands.extend(cron_commands(commands.len() as u64));
    commands
}

/// The kinds of cluster version 3 (periodic jobs), following `before` commands: a
/// schedule fired on time and by `cron run`, another suspended, changed and deleted.
fn cron_commands(before: u64) -> Vec<Command> {
    let admission = Admission::DEFAULT;
    let definition = |expression: &str, tenant: &str| CronDefinition {
        expression: expression.into(),
        timezone: Some("Europe/Berlin".into()),
        concurrency: Concurrency::Replace,
        starting_deadline_ms: Some(60_000),
        catch_up: CatchUp::All,
        template: JobTemplate {
            spec: spec(1),
            owner: "client-1".into(),
            options: JobScheduling {
                tenant: tenant.into(),
                ..JobScheduling::default()
            },
            request: ResourceRequest {
                timeout_ms: Some(30_000),
                ..ResourceRequest::default()
            },
        },
    };
    let nightly_generation = before + 2;
    vec![
        Command::SetClusterVersion {
            version: 3,
            now_ms: 1_031,
        },
        Command::CronPut {
            tenant: "team".into(),
            name: "nightly".into(),
            definition: definition("0 3 * * *", "team"),
            now_ms: 1_032,
        },
        Command::CronPut {
            tenant: "default".into(),
            name: "hourly".into(),
            definition: definition("@hourly", "default"),
            now_ms: 1_033,
        },
        Command::CronSetSuspended {
            tenant: "default".into(),
            name: "hourly".into(),
            suspended: true,
            now_ms: 1_034,
        },
        Command::CronFired(CronTurn {
            tenant: "team".into(),
            name: "nightly".into(),
            generation: nightly_generation,
            from_ms: 1_032,
            until_ms: 93_600_500,
            fire: Some(86_400_000 + 7_200_000),
            skipped: Skipped {
                count: 1,
                at_least: false,
                first_ms: Some(7_200_000),
                last_ms: Some(7_200_000),
            },
            admission,
            now_ms: 93_600_500,
        }),
        Command::CronRun {
            tenant: "team".into(),
            name: "nightly".into(),
            request_key: "k-1".into(),
            admission,
            now_ms: 93_600_501,
        },
        Command::CronPut {
            tenant: "default".into(),
            name: "hourly".into(),
            definition: definition("30 * * * *", "default"),
            now_ms: 93_600_502,
        },
        Command::CronDelete {
            tenant: "default".into(),
            name: "hourly".into(),
            now_ms: 93_600_503,
        },
        Command::SetClusterVersion {
            version: 4,
            now_ms: 93_600_504,
        },
        Command::PinTaskManagerWithResources {
            id: "tm-b".into(),
            labels: labels(&[("zone", "b")]),
            slots: Some(4),
            resources: ResourcePin {
                cpu_millis: Some(8_000),
                memory_bytes: Some(16 << 30),
                named: [("gpu".to_string(), 2)].into(),
            },
            now_ms: 93_600_505,
        },
    ]
}

/// The state every replica holds after applying `every_command` to an empty one.
pub fn state() -> ClusterState {
    state_at(ClusterVersion(u32::MAX))
}

/// The state every replica holds after applying the commands of `every_command` that a
/// cluster at `version` writes: what a release of that version persisted.
pub fn state_at(version: ClusterVersion) -> ClusterState {
    let mut state = ClusterState::default();
    for (i, command) in every_command().into_iter().enumerate() {
        let raises_past = matches!(
            command,
            Command::SetClusterVersion { version: to, .. } if ClusterVersion(to) > version
        );
        if command.needs_cluster_version() <= version && !raises_past {
            apply(&mut state, i as u64 + 1, command);
        }
    }
    state
}

/// Log records of every kind, entries of every payload kind and every command among them.
pub fn log_records() -> Vec<Record> {
    type C = crate::raft::types::TypeConfig;
    let mut records = vec![
        Record::Vote(Vote::new(3, 1)),
        Record::Entry(Entry {
            log_id: log_id::<C>(3, 1, 1),
            payload: EntryPayload::Blank,
        }),
        Record::Entry(Entry {
            log_id: log_id::<C>(3, 1, 2),
            payload: EntryPayload::Membership(openraft::Membership::new_with_defaults(
                vec![BTreeSet::from([1, 2, 3])],
                [4],
            )),
        }),
    ];
    for (i, command) in every_command().into_iter().enumerate() {
        records.push(Record::Entry(Entry {
            log_id: log_id::<C>(3, 1, i as u64 + 3),
            payload: EntryPayload::Normal(command),
        }));
    }
    records.push(Record::Committed(Some(log_id::<C>(3, 1, 20))));
    records.push(Record::Purge(log_id::<C>(3, 1, 2)));
    records.push(Record::TruncateAfter(Some(log_id::<C>(3, 1, 30))));
    records.push(Record::TruncateAfter(None));
    records
}

/// Journal records of every kind.
pub fn journal_records() -> Vec<JournalRecord> {
    let result = |exit_code, error: &str, cannot_start| RunResult {
        exit_code,
        run_ms: 42,
        error: error.into(),
        cannot_start,
        over_limit: false,
    };
    vec![
        JournalRecord::Started {
            job_id: "j-3".into(),
            index: 0,
            epoch: 7,
        },
        JournalRecord::Ended {
            job_id: "j-3".into(),
            index: 0,
            epoch: 7,
            result: result(Some(0), "", false),
        },
        JournalRecord::Started {
            job_id: "j-3".into(),
            index: 1,
            epoch: 7,
        },
        JournalRecord::Ended {
            job_id: "j-3".into(),
            index: 1,
            epoch: 7,
            result: result(None, "no such file", true),
        },
        JournalRecord::Started {
            job_id: "j-6".into(),
            index: 0,
            epoch: 9,
        },
        JournalRecord::EndedOverLimit {
            job_id: "j-6".into(),
            index: 0,
            epoch: 9,
            result: result(None, "timed out after 1m", false),
        },
        JournalRecord::Started {
            job_id: "j-6".into(),
            index: 1,
            epoch: 9,
        },
    ]
}

/// The ids of the command kinds `every_command` holds.
pub fn kinds_covered() -> BTreeMap<u32, usize> {
    let mut kinds = BTreeMap::new();
    for command in every_command() {
        *kinds.entry(command.kind_id()).or_default() += 1;
    }
    kinds
}
