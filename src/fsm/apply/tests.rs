//! Unit tests of the deterministic apply.

use super::*;
use crate::domain::{
    JobId, JobSpec, JobState, Labels, RunStats, Shard, ShardState, TaskManagerState,
    MAX_SHARDS_PER_JOB, MAX_TASKMANAGER_SLOTS,
};
use crate::fsm::command::{Placement, PlacementOutcome, Rejection, ShardOutcome};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn register_cmd(id: &str, addr: &str, slots: u32, label_pairs: &[(&str, &str)]) -> Command {
    Command::RegisterTaskManager {
        incarnation: 0,
        successor_of: None,
        replaces: None,
        id: id.to_string(),
        addr: addr.to_string(),
        slots,
        labels: labels(label_pairs),
        now_ms: 1_000,
    }
}

/// Registers a TaskManager at `127.0.0.1:7001` and asserts it was accepted.
fn register(
    state: &mut ClusterState,
    idx: u64,
    id: &str,
    slots: u32,
    label_pairs: &[(&str, &str)],
) -> u64 {
    match apply(
        state,
        idx,
        register_cmd(id, "127.0.0.1:7001", slots, label_pairs),
    ) {
        Response::TaskManagerRegistered { registration_epoch } => registration_epoch,
        other => panic!("registering {id} was refused: {other:?}"),
    }
}

fn spec(shards: u32, slots: u32) -> JobSpec {
    JobSpec {
        command: "/bin/echo".to_string(),
        args: vec!["hi".to_string()],
        env: Default::default(),
        shard_count: shards,
        slots_per_shard: slots,
        max_attempts: 3,
        selector: Labels::new(),
    }
}

fn submit_cmd(spec: JobSpec, key: Option<&str>) -> Command {
    Command::SubmitJob {
        name: "job".to_string(),
        spec,
        idempotency_key: key.map(str::to_string),
        owner: "client-a".to_string(),
        admission: crate::domain::Admission {
            max_pending_shards: u64::MAX,
            max_pending_shards_per_client: u64::MAX,
            max_spec_bytes: u64::MAX,
        },
        now_ms: 2_000,
    }
}

/// Submits a job without idempotency key and asserts it was created at `idx`.
fn submit_spec(state: &mut ClusterState, idx: u64, spec: JobSpec) -> JobId {
    match apply(state, idx, submit_cmd(spec, None)) {
        Response::JobSubmitted {
            job_id,
            created: true,
        } => {
            assert_eq!(job_id, JobId(idx));
            job_id
        }
        other => panic!("submission was refused: {other:?}"),
    }
}

fn submit(state: &mut ClusterState, idx: u64, shards: u32, slots: u32) -> JobId {
    submit_spec(state, idx, spec(shards, slots))
}

fn placement(job_id: JobId, shard: u32, tm: &str) -> Placement {
    Placement {
        job_id,
        shard,
        taskmanager: tm.to_string(),
    }
}

fn place_cmd(placements: Vec<Placement>) -> Command {
    Command::PlaceShards {
        placements,
        now_ms: 3_000,
    }
}

fn place(state: &mut ClusterState, idx: u64, placements: Vec<Placement>) -> PlacementOutcome {
    match apply(state, idx, place_cmd(placements)) {
        Response::ShardsPlaced(outcome) => outcome,
        other => panic!("PlaceShards answered {other:?}"),
    }
}

fn outcome(placed: u32, stale: u32) -> PlacementOutcome {
    PlacementOutcome { placed, stale }
}

fn cancel_cmd(job_id: JobId) -> Command {
    Command::CancelJob {
        job_id,
        now_ms: 4_000,
    }
}

fn drain_cmd(id: &str) -> Command {
    Command::DrainTaskManager {
        id: id.to_string(),
        deadline_ms: 65_000,
        now_ms: 5_000,
    }
}

fn used(state: &ClusterState, tm: &str) -> u32 {
    state.taskmanager(tm).expect("known TaskManager").used_slots
}

fn shard(state: &ClusterState, job_id: JobId, index: u32) -> &Shard {
    &state.job(job_id).expect("known job").shards[index as usize]
}

/// Applies `command` to a copy of `state` and asserts it was refused with `expected` and left
/// the state (and its digest) untouched.
fn assert_rejected(
    state: &ClusterState,
    idx: u64,
    command: Command,
    expected: impl Fn(&Rejection) -> bool,
) {
    let mut after = state.clone();
    let shown = format!("{command:?}");
    match apply(&mut after, idx, command) {
        Response::Rejected(r) => assert!(expected(&r), "{shown} refused with unexpected {r:?}"),
        other => panic!("{shown} was not refused: {other:?}"),
    }
    assert_eq!(&after, state, "refused {shown} changed the state");
    assert_eq!(after.digest(), state.digest());
}

/// A mixed sequence of commands touching every command kind, with their log indexes.
fn scenario(last_placement_tm: &str) -> Vec<(u64, Command)> {
    let job = JobId(3);
    let other = JobId(4);
    let mut gpu_spec = spec(2, 2);
    gpu_spec.selector = labels(&[("gpu", "yes")]);
    gpu_spec.env = [("K".to_string(), "V".to_string())].into_iter().collect();
    vec![
        (
            1,
            register_cmd("tm-a", "10.0.0.1:7001", 4, &[("gpu", "yes")]),
        ),
        (
            2,
            register_cmd("tm-b", "10.0.0.2:7001", 4, &[("gpu", "yes")]),
        ),
        (3, submit_cmd(gpu_spec, Some("key-1"))),
        (4, submit_cmd(spec(1, 1), None)),
        (5, place_cmd(vec![placement(job, 0, "tm-a")])),
        (6, cancel_cmd(other)),
        (7, place_cmd(vec![placement(job, 1, last_placement_tm)])),
        (8, drain_cmd("tm-a")),
    ]
}

fn run(commands: Vec<(u64, Command)>) -> (ClusterState, Vec<Response>) {
    let mut state = ClusterState::default();
    let responses = commands
        .into_iter()
        .map(|(idx, cmd)| apply(&mut state, idx, cmd))
        .collect();
    (state, responses)
}

// ---------------------------------------------------------------------------------------
// Determinism and snapshots
// ---------------------------------------------------------------------------------------

#[test]
fn same_commands_give_same_state_and_digest() {
    let (a, ra) = run(scenario("tm-b"));
    let (b, rb) = run(scenario("tm-b"));
    assert_eq!(ra, rb);
    assert_eq!(a, b);
    assert_eq!(a.digest(), b.digest());
    // The scenario really did something: both placements took effect.
    assert_eq!(ra[4], Response::ShardsPlaced(outcome(1, 0)));
    assert_eq!(ra[6], Response::ShardsPlaced(outcome(1, 0)));
    assert_ne!(a.digest(), ClusterState::default().digest());
}

#[test]
fn different_commands_give_different_digest() {
    let (a, _) = run(scenario("tm-b"));
    let (b, rb) = run(scenario("tm-a"));
    assert_eq!(rb[6], Response::ShardsPlaced(outcome(1, 0)));
    assert_ne!(a, b);
    assert_ne!(a.digest(), b.digest());

    // Same commands, one of them at another log index: the job id differs, so does the digest.
    let mut shifted = scenario("tm-b");
    shifted.truncate(4);
    shifted[3].0 = 40;
    let mut unshifted = scenario("tm-b");
    unshifted.truncate(4);
    assert_ne!(run(shifted).0.digest(), run(unshifted).0.digest());
}

#[test]
fn every_mutating_command_changes_the_digest() {
    let mut state = ClusterState::default();
    let mut seen = vec![state.digest()];
    for (idx, cmd) in scenario("tm-b") {
        apply(&mut state, idx, cmd);
        let d = state.digest();
        assert!(!seen.contains(&d), "digest repeated after index {idx}");
        seen.push(d);
    }
}

#[test]
fn snapshot_round_trips() {
    let (mut state, _) = run(scenario("tm-b"));
    state.taskmanagers.get_mut("tm-b").unwrap().stats = RunStats {
        runs: 7,
        run_time_ms: 12_345,
        failures: 2,
    };
    let bytes = state.encode();
    let decoded = ClusterState::decode(&bytes).expect("decodes");
    assert_eq!(decoded, state);
    assert_eq!(decoded.digest(), state.digest());
    assert_eq!(decoded.encode(), bytes);

    let empty = ClusterState::default();
    assert_eq!(ClusterState::decode(&empty.encode()).unwrap(), empty);

    assert!(ClusterState::decode(&bytes[..bytes.len() - 1]).is_err());
}

// ---------------------------------------------------------------------------------------
// RegisterTaskManager
// ---------------------------------------------------------------------------------------

#[test]
fn new_taskmanager_gets_registration_epoch_1() {
    let mut state = ClusterState::default();
    let resp = apply(
        &mut state,
        1,
        register_cmd("tm-a", "10.0.0.1:7001", 4, &[("zone", "a")]),
    );
    assert_eq!(
        resp,
        Response::TaskManagerRegistered {
            registration_epoch: 1
        }
    );
    let tm = state.taskmanager("tm-a").unwrap();
    assert_eq!(tm.id, "tm-a");
    assert_eq!(tm.addr, "10.0.0.1:7001");
    assert_eq!(tm.slots, 4);
    assert_eq!(tm.used_slots, 0);
    assert_eq!(tm.labels, labels(&[("zone", "a")]));
    assert_eq!(tm.state, TaskManagerState::Alive);
    assert_eq!(tm.registration_epoch, 1);
    assert_eq!(tm.registered_at_ms, 1_000);
}

#[test]
fn reregistration_bumps_epoch_and_updates_fields() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 4, &[("zone", "a")]);
    let job = submit(&mut state, 2, 1, 3);
    assert_eq!(
        place(&mut state, 3, vec![placement(job, 0, "tm-a")]),
        outcome(1, 0)
    );

    let resp = apply(
        &mut state,
        4,
        Command::RegisterTaskManager {
            incarnation: 0,
            successor_of: None,
            replaces: None,
            id: "tm-a".to_string(),
            addr: "10.0.0.9:8000".to_string(),
            slots: 16,
            labels: labels(&[("zone", "b"), ("gpu", "yes")]),
            now_ms: 9_000,
        },
    );
    assert_eq!(
        resp,
        Response::TaskManagerRegistered {
            registration_epoch: 2
        }
    );
    let tm = state.taskmanager("tm-a").unwrap();
    assert_eq!(tm.registration_epoch, 2);
    assert_eq!(tm.addr, "10.0.0.9:8000");
    assert_eq!(tm.slots, 16);
    assert_eq!(tm.labels, labels(&[("zone", "b"), ("gpu", "yes")]));
    assert_eq!(tm.registered_at_ms, 9_000);
    // The shard assigned before the re-registration still holds its slots.
    assert_eq!(tm.used_slots, 3);
    assert_eq!(state.taskmanagers.len(), 1);

    assert_eq!(register(&mut state, 5, "tm-a", 16, &[]), 3);
}

#[test]
fn invalid_registrations_are_rejected_without_change() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 4, &[]);
    let invalid = |r: &Rejection| matches!(r, Rejection::Invalid(_));
    let cases = [
        ("tm-b", "127.0.0.1:7001", 0),
        ("", "127.0.0.1:7001", 4),
        ("tm b", "127.0.0.1:7001", 4),
        ("tm-b", "nohost", 4),
        ("tm-b", "h:x", 4),
        ("tm-b", ":7001", 4),
        ("tm-b", "h:99999", 4),
        ("tm-b", "127.0.0.1:7001", MAX_TASKMANAGER_SLOTS + 1),
        // A bad re-registration of a known TaskManager leaves it as it was.
        ("tm-a", "127.0.0.1:7001", 0),
        ("tm-a", "nohost", 8),
    ];
    for (id, addr, slots) in cases {
        assert_rejected(&state, 2, register_cmd(id, addr, slots, &[]), invalid);
    }
    assert_rejected(
        &state,
        2,
        register_cmd("tm-b", "127.0.0.1:7001", 4, &[("bad key", "v")]),
        invalid,
    );
    assert_eq!(state.taskmanager("tm-a").unwrap().registration_epoch, 1);
}

// ---------------------------------------------------------------------------------------
// SubmitJob
// ---------------------------------------------------------------------------------------

#[test]
fn submit_creates_job_with_pending_shards() {
    let mut state = ClusterState::default();
    let resp = apply(&mut state, 7, submit_cmd(spec(3, 2), Some("k")));
    assert_eq!(
        resp,
        Response::JobSubmitted {
            job_id: JobId(7),
            created: true
        }
    );
    let job = state.job(JobId(7)).unwrap();
    assert_eq!(job.id, JobId(7));
    assert_eq!(job.state, JobState::Pending);
    assert_eq!(job.spec, spec(3, 2));
    assert_eq!(job.created_at_ms, 2_000);
    assert_eq!(job.idempotency_key.as_deref(), Some("k"));
    assert_eq!(job.shards.len(), 3);
    for (i, s) in job.shards.iter().enumerate() {
        assert_eq!(s, &Shard::new(i as u32));
        assert_eq!(s.state, ShardState::Pending);
        assert_eq!(s.taskmanager, None);
    }
    assert!(state.jobs_with_pending_shards.contains(&JobId(7)));
    assert_eq!(state.idempotency_keys.get("k"), Some(&JobId(7)));
}

#[test]
fn resubmit_with_same_idempotency_key_returns_existing_job() {
    let mut state = ClusterState::default();
    apply(&mut state, 7, submit_cmd(spec(3, 2), Some("k")));
    let before = state.clone();

    // Different log index, and even a different spec: the existing job is answered.
    let resp = apply(&mut state, 9, submit_cmd(spec(50, 1), Some("k")));
    assert_eq!(
        resp,
        Response::JobSubmitted {
            job_id: JobId(7),
            created: false
        }
    );
    assert_eq!(state, before);
    assert_eq!(state.digest(), before.digest());
    assert!(state.job(JobId(9)).is_none());

    // Another key does create a new job.
    let resp = apply(&mut state, 10, submit_cmd(spec(1, 1), Some("other")));
    assert_eq!(
        resp,
        Response::JobSubmitted {
            job_id: JobId(10),
            created: true
        }
    );
    assert_eq!(state.jobs.len(), 2);
}

#[test]
fn invalid_submissions_are_rejected_without_change() {
    let mut state = ClusterState::default();
    submit(&mut state, 1, 1, 1);
    let invalid = |r: &Rejection| matches!(r, Rejection::Invalid(_));
    let too_large = |r: &Rejection| matches!(r, Rejection::JobTooLarge(_));

    assert_rejected(&state, 2, submit_cmd(spec(0, 1), None), invalid);
    assert_rejected(
        &state,
        2,
        submit_cmd(spec(MAX_SHARDS_PER_JOB + 1, 1), None),
        too_large,
    );
    assert_rejected(&state, 2, submit_cmd(spec(1, 0), None), invalid);
    let mut empty = spec(1, 1);
    empty.command = String::new();
    assert_rejected(&state, 2, submit_cmd(empty, Some("k")), invalid);
    let mut blank = spec(1, 1);
    blank.command = "   ".to_string();
    assert_rejected(&state, 2, submit_cmd(blank, None), invalid);
    let mut no_attempts = spec(1, 1);
    no_attempts.max_attempts = 0;
    assert_rejected(&state, 2, submit_cmd(no_attempts, None), invalid);
}

#[test]
fn rejected_submission_does_not_claim_its_idempotency_key() {
    let mut state = ClusterState::default();
    let resp = apply(&mut state, 1, submit_cmd(spec(0, 1), Some("k")));
    assert!(matches!(resp, Response::Rejected(_)));
    assert!(state.idempotency_keys.is_empty());
    let resp = apply(&mut state, 2, submit_cmd(spec(1, 1), Some("k")));
    assert_eq!(
        resp,
        Response::JobSubmitted {
            job_id: JobId(2),
            created: true
        }
    );
}

#[test]
fn largest_allowed_job_is_accepted() {
    let mut state = ClusterState::default();
    let job = submit(&mut state, 1, MAX_SHARDS_PER_JOB, 1);
    assert_eq!(
        state.job(job).unwrap().shards.len(),
        MAX_SHARDS_PER_JOB as usize
    );
}

// ---------------------------------------------------------------------------------------
// PlaceShards
// ---------------------------------------------------------------------------------------

#[test]
fn valid_placement_assigns_shard() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 8, &[]);
    let job = submit(&mut state, 2, 2, 3);

    assert_eq!(
        place(&mut state, 17, vec![placement(job, 1, "tm-a")]),
        outcome(1, 0)
    );
    let s = shard(&state, job, 1);
    assert_eq!(s.state, ShardState::Assigned);
    assert_eq!(s.taskmanager.as_deref(), Some("tm-a"));
    assert_eq!(s.attempt, 1);
    assert_eq!(s.epoch, 17);
    assert_eq!(s.exit_code, None);
    assert_eq!(used(&state, "tm-a"), 3);
    // The other shard is untouched, and the job still waits for it.
    assert_eq!(shard(&state, job, 0), &Shard::new(0));
    assert_eq!(state.job(job).unwrap().state, JobState::Running);
    assert!(state.jobs_with_pending_shards.contains(&job));
}

/// tm-a: 4 slots, zone=a, holds shard 0 of the job; tm-b: no labels; tm-d: zone=a, draining;
/// tm-s: zone=a, 1 slot. The job wants zone=a, 3 shards × 2 slots.
fn stale_fixture() -> (ClusterState, JobId) {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 4, &[("zone", "a")]);
    register(&mut state, 2, "tm-b", 8, &[]);
    register(&mut state, 3, "tm-d", 8, &[("zone", "a")]);
    register(&mut state, 4, "tm-s", 1, &[("zone", "a")]);
    assert!(matches!(
        apply(&mut state, 5, drain_cmd("tm-d")),
        Response::TaskManagerDraining { .. }
    ));
    let mut s = spec(3, 2);
    s.selector = labels(&[("zone", "a")]);
    let job = submit_spec(&mut state, 6, s);
    assert_eq!(
        place(&mut state, 7, vec![placement(job, 0, "tm-a")]),
        outcome(1, 0)
    );
    (state, job)
}

#[test]
fn stale_placements_change_nothing() {
    let (state, job) = stale_fixture();
    // Sanity: shard 1 of the job does fit on tm-a.
    let mut control = state.clone();
    assert_eq!(
        place(&mut control, 8, vec![placement(job, 1, "tm-a")]),
        outcome(1, 0)
    );

    let cases = [
        ("shard already assigned", placement(job, 0, "tm-a")),
        ("unknown TaskManager", placement(job, 1, "tm-zzz")),
        ("draining TaskManager", placement(job, 1, "tm-d")),
        (
            "TaskManager without the selector labels",
            placement(job, 1, "tm-b"),
        ),
        (
            "TaskManager without enough free slots",
            placement(job, 1, "tm-s"),
        ),
        ("unknown job", placement(JobId(999), 0, "tm-a")),
        ("shard index out of range", placement(job, 3, "tm-a")),
    ];
    for (what, p) in cases {
        let mut after = state.clone();
        assert_eq!(place(&mut after, 8, vec![p]), outcome(0, 1), "{what}");
        assert_eq!(after, state, "{what} changed the state");
        assert_eq!(after.digest(), state.digest(), "{what}");
    }
}

#[test]
fn placements_are_checked_one_by_one_within_a_command() {
    let (mut state, job) = stale_fixture();
    let placements = vec![
        placement(job, 0, "tm-a"), // already assigned
        placement(job, 1, "tm-b"), // labels
        placement(job, 1, "tm-a"), // valid: tm-a now full
        placement(job, 1, "tm-a"), // duplicate of the one just placed
        placement(job, 2, "tm-a"), // no room left on tm-a
        placement(JobId(999), 0, "tm-a"),
    ];
    assert_eq!(place(&mut state, 8, placements), outcome(1, 5));
    assert_eq!(used(&state, "tm-a"), 4);
    assert_eq!(used(&state, "tm-b"), 0);
    assert_eq!(shard(&state, job, 1).epoch, 8);
    assert_eq!(shard(&state, job, 2).state, ShardState::Pending);
}

#[test]
fn placing_every_shard_runs_the_job_and_clears_the_work_list() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 4, &[]);
    register(&mut state, 2, "tm-b", 4, &[]);
    let job = submit(&mut state, 3, 3, 2);
    assert_eq!(state.job(job).unwrap().state, JobState::Pending);

    assert_eq!(
        place(
            &mut state,
            4,
            vec![placement(job, 0, "tm-a"), placement(job, 2, "tm-b")]
        ),
        outcome(2, 0)
    );
    assert_eq!(state.job(job).unwrap().state, JobState::Running);
    assert!(state.jobs_with_pending_shards.contains(&job));

    assert_eq!(
        place(&mut state, 5, vec![placement(job, 1, "tm-a")]),
        outcome(1, 0)
    );
    assert_eq!(state.job(job).unwrap().state, JobState::Running);
    assert!(!state.jobs_with_pending_shards.contains(&job));
    assert_eq!(shard(&state, job, 0).epoch, 4);
    assert_eq!(shard(&state, job, 1).epoch, 5);
    assert_eq!(used(&state, "tm-a"), 4);
    assert_eq!(used(&state, "tm-b"), 2);
}

// ---------------------------------------------------------------------------------------
// CancelJob
// ---------------------------------------------------------------------------------------

#[test]
fn cancel_cancels_shards_and_releases_slots() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 8, &[]);
    register(&mut state, 2, "tm-b", 8, &[]);
    let job = submit(&mut state, 3, 3, 2);
    let other = submit(&mut state, 4, 1, 1);
    assert_eq!(
        place(
            &mut state,
            5,
            vec![
                placement(job, 0, "tm-a"),
                placement(job, 1, "tm-b"),
                placement(other, 0, "tm-a"),
            ]
        ),
        outcome(3, 0)
    );
    assert_eq!(used(&state, "tm-a"), 3);

    let resp = apply(&mut state, 6, cancel_cmd(job));
    assert_eq!(
        resp,
        Response::JobCancelled {
            job_id: job,
            shards_cancelled: 3
        }
    );
    let j = state.job(job).unwrap();
    assert_eq!(j.state, JobState::Cancelled);
    assert!(j.shards.iter().all(|s| s.state == ShardState::Cancelled));
    assert!(!state.jobs_with_pending_shards.contains(&job));
    // Only the cancelled job's slots are released.
    assert_eq!(used(&state, "tm-a"), 1);
    assert_eq!(used(&state, "tm-b"), 0);
    assert_eq!(shard(&state, other, 0).state, ShardState::Assigned);

    // A cancelled job takes no placements.
    let before = state.clone();
    assert_eq!(
        place(&mut state, 7, vec![placement(job, 2, "tm-a")]),
        outcome(0, 1)
    );
    assert_eq!(state, before);

    // Cancelling again is a retry, not an error (apply.rs: "a client that lost the first
    // answer may retry"): it answers zero shards cancelled and changes nothing.
    let before = state.clone();
    assert_eq!(
        apply(&mut state, 8, cancel_cmd(job)),
        Response::JobCancelled {
            job_id: job,
            shards_cancelled: 0
        }
    );
    assert_eq!(state, before);
    assert_eq!(state.digest(), before.digest());
}

#[test]
fn cancel_job_that_ended_otherwise_is_rejected() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 4, &[]);
    let job = submit(&mut state, 2, 1, 1);
    assert_eq!(
        place(&mut state, 3, vec![placement(job, 0, "tm-a")]),
        outcome(1, 0)
    );
    // No command ends a job yet; mark it finished directly.
    for (ended, name) in [
        (JobState::Finished, "finished"),
        (JobState::Failed, "failed"),
    ] {
        let mut ended_state = state.clone();
        ended_state
            .jobs
            .get_mut(&job)
            .map(std::sync::Arc::make_mut)
            .unwrap()
            .state = ended;
        assert_rejected(&ended_state, 4, cancel_cmd(job), |r| {
            *r == Rejection::JobAlreadyEnded {
                job_id: job,
                state: name.to_string(),
            }
        });
    }
}

#[test]
fn cancel_unknown_job_is_rejected() {
    let mut state = ClusterState::default();
    submit(&mut state, 1, 1, 1);
    assert_rejected(&state, 2, cancel_cmd(JobId(42)), |r| {
        *r == Rejection::UnknownJob(JobId(42))
    });
}

// ---------------------------------------------------------------------------------------
// DrainTaskManager
// ---------------------------------------------------------------------------------------

#[test]
fn drain_unknown_taskmanager_is_rejected() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 4, &[]);
    assert_rejected(&state, 2, drain_cmd("nope"), |r| {
        *r == Rejection::UnknownTaskManager("nope".to_string())
    });
}

#[test]
fn drained_taskmanager_takes_no_new_placements() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 4, &[]);
    let job = submit(&mut state, 2, 2, 1);
    assert_eq!(
        place(&mut state, 3, vec![placement(job, 0, "tm-a")]),
        outcome(1, 0)
    );

    let resp = apply(&mut state, 4, drain_cmd("tm-a"));
    assert_eq!(
        resp,
        Response::TaskManagerDraining {
            id: "tm-a".to_string()
        }
    );
    let tm = state.taskmanager("tm-a").unwrap();
    assert_eq!(tm.state, TaskManagerState::Draining);
    assert!(!tm.accepts_placements(5_000));
    // The shard already there keeps running and keeps its slot.
    assert_eq!(tm.used_slots, 1);
    assert_eq!(shard(&state, job, 0).state, ShardState::Assigned);

    let before = state.clone();
    assert_eq!(
        place(&mut state, 5, vec![placement(job, 1, "tm-a")]),
        outcome(0, 1)
    );
    assert_eq!(state, before);

    // Registering again does not undo the operator's drain.
    register(&mut state, 6, "tm-a", 4, &[]);
    assert_eq!(
        state.taskmanager("tm-a").unwrap().state,
        TaskManagerState::Draining
    );
    assert_eq!(
        place(&mut state, 7, vec![placement(job, 1, "tm-a")]),
        outcome(0, 1)
    );
}

#[test]
fn only_ended_jobs_are_forgotten_with_their_keys() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 4, &[]);
    let running = submit(&mut state, 2, 1, 1);
    let ended = match apply(&mut state, 3, submit_cmd(spec(1, 1), Some("key-ended"))) {
        Response::JobSubmitted { job_id, .. } => job_id,
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        apply(&mut state, 4, cancel_cmd(ended)),
        Response::JobCancelled { .. }
    ));
    assert_eq!(state.job(ended).and_then(|j| j.ended_at_ms), Some(4_000));
    assert_eq!(state.job(running).and_then(|j| j.ended_at_ms), None);

    let forget = Command::ForgetJobs {
        job_ids: vec![running, ended, JobId(999)],
        now_ms: 9_000,
    };
    assert_eq!(
        apply(&mut state, 5, forget),
        Response::JobsForgotten { count: 1 }
    );
    assert!(state.job(ended).is_none());
    assert!(
        state.job(running).is_some(),
        "a job that has not ended is never forgotten"
    );
    assert!(!state.idempotency_keys.contains_key("key-ended"));
    // The key is free again: resubmitting creates a new job.
    match apply(&mut state, 6, submit_cmd(spec(1, 1), Some("key-ended"))) {
        Response::JobSubmitted { job_id, created } => {
            assert!(created);
            assert_eq!(job_id, JobId(6));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn repeated_interruptions_back_off() {
    use super::interruption_backoff_ms;
    assert_eq!(
        interruption_backoff_ms(1),
        0,
        "the first interruption is re-placed at once"
    );
    assert_eq!(interruption_backoff_ms(2), 1_000);
    assert_eq!(interruption_backoff_ms(3), 2_000);
    assert_eq!(interruption_backoff_ms(30), 60_000);

    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 4, &[]);
    let job = submit(&mut state, 2, 1, 1);
    for (round, expected_backoff) in [(0u64, 0u64), (1, 1_000), (2, 2_000)] {
        let idx = 10 + round * 10;
        assert_eq!(
            place(&mut state, idx, vec![placement(job, 0, "tm-a")]),
            outcome(1, 0)
        );
        let epoch = shard(&state, job, 0).epoch;
        let now = 50_000 + round;
        let report = Command::ReportShardEnded {
            taskmanager: "tm-a".into(),
            job_id: job,
            shard: 0,
            epoch,
            outcome: ShardOutcome::Interrupted {
                reason: "agent restarted".into(),
            },
            run_ms: 5,
            retry_at_ms: 0,
            now_ms: now,
        };
        assert_eq!(apply(&mut state, idx + 1, report), Response::ShardReported);
        let s = shard(&state, job, 0);
        assert_eq!(s.failures, 0, "interruptions are not failures");
        assert_eq!(s.not_before_ms, now + expected_backoff);
        // Let the back-off pass before the next placement.
        state
            .jobs
            .get_mut(&job)
            .map(std::sync::Arc::make_mut)
            .expect("job")
            .shards[0]
            .not_before_ms = 0;
    }
}

#[test]
fn assignments_version_changes_with_the_list_and_only_then() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 8, &[]);
    let empty = state.assignments_version("tm-a");
    assert_eq!((empty.max_epoch, empty.count), (0, 0));
    let job = submit(&mut state, 2, 3, 1);
    place(
        &mut state,
        3,
        vec![placement(job, 0, "tm-a"), placement(job, 1, "tm-a")],
    );
    let two = state.assignments_version("tm-a");
    assert_eq!((two.max_epoch, two.count), (3, 2));
    // A shard starting changes nothing the agent is told.
    let started = Command::ReportShardStarted {
        taskmanager: "tm-a".into(),
        job_id: job,
        shard: 0,
        epoch: 3,
        now_ms: 3_500,
    };
    assert_eq!(apply(&mut state, 4, started), Response::ShardReported);
    assert_eq!(state.assignments_version("tm-a"), two);
    // A shard ending leaves the list: a new version.
    let ended = Command::ReportShardEnded {
        taskmanager: "tm-a".into(),
        job_id: job,
        shard: 0,
        epoch: 3,
        outcome: ShardOutcome::Finished,
        run_ms: 5,
        retry_at_ms: 0,
        now_ms: 3_600,
    };
    assert_eq!(apply(&mut state, 5, ended), Response::ShardReported);
    let one = state.assignments_version("tm-a");
    assert_eq!((one.max_epoch, one.count), (3, 1));
    // Another placement brings the count back to two, with a greater epoch.
    place(&mut state, 6, vec![placement(job, 2, "tm-a")]);
    let again = state.assignments_version("tm-a");
    assert_eq!((again.max_epoch, again.count), (6, 2));
    assert_ne!(again, two);
    assert_eq!(state.assignments("tm-a").count(), 2);
}

#[test]
fn runs_over_their_jobs_limit_use_attempts_but_never_get_the_taskmanager_excluded() {
    // Three failures within a minute exclude a TaskManager; three runs that passed their
    // own time limit must not (a job that always times out would take every agent out).
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 4, &[]);
    let job = submit(&mut state, 2, 3, 1);
    place(
        &mut state,
        3,
        vec![
            placement(job, 0, "tm-a"),
            placement(job, 1, "tm-a"),
            placement(job, 2, "tm-a"),
        ],
    );
    for shard in 0..3 {
        let report = Command::ReportShardEnded {
            taskmanager: "tm-a".into(),
            job_id: job,
            shard,
            epoch: 3,
            outcome: ShardOutcome::OverLimit {
                error: "timed out after 1s".into(),
            },
            run_ms: 1_000,
            retry_at_ms: 0,
            now_ms: 4_000 + u64::from(shard),
        };
        assert_eq!(
            apply(&mut state, 4 + u64::from(shard), report),
            Response::ShardReported
        );
    }
    let tm = &state.taskmanagers["tm-a"];
    assert_eq!((tm.stats.runs, tm.stats.failures), (3, 0));
    assert_eq!(tm.excluded_until_ms, 0);
    let s = shard(&state, job, 0);
    assert_eq!(
        (s.state, s.failures),
        (ShardState::Pending, 1),
        "retried, an attempt used"
    );
    assert_eq!(s.error.as_deref(), Some("timed out after 1s"));
}

#[test]
fn a_command_that_cannot_start_fails_its_job_at_once_and_blames_no_taskmanager() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 4, &[]);
    let job = submit(&mut state, 2, 3, 1);
    place(
        &mut state,
        3,
        vec![placement(job, 0, "tm-a"), placement(job, 1, "tm-a")],
    );
    let report = Command::ReportShardEnded {
        taskmanager: "tm-a".into(),
        job_id: job,
        shard: 0,
        epoch: 3,
        outcome: ShardOutcome::CannotStart {
            error: "shard-exec: cannot start 'nope': No such file or directory".into(),
        },
        run_ms: 1,
        retry_at_ms: 0,
        now_ms: 4_000,
    };
    assert_eq!(apply(&mut state, 4, report), Response::ShardReported);
    let failed = shard(&state, job, 0);
    assert_eq!(failed.state, ShardState::Failed, "no retry");
    assert_eq!(failed.failures, 1);
    let j = state.job(job).expect("job");
    assert_eq!(j.state, JobState::Failed);
    assert!(
        j.shards.iter().all(|s| s.state.is_terminal()),
        "{:?}",
        j.shards
    );
    let tm = &state.taskmanagers["tm-a"];
    assert_eq!(tm.stats.failures, 0);
    assert_eq!(tm.excluded_until_ms, 0);
    assert_eq!(state.assignments("tm-a").count(), 0, "slots released");
}

#[test]
fn admission_caps_unfinished_shards_per_cluster_and_per_client_and_releases_them() {
    let mut state = ClusterState::default();
    let limits = crate::domain::Admission {
        max_pending_shards: 10,
        max_pending_shards_per_client: 6,
        max_spec_bytes: u64::MAX,
    };
    let submit_as = |state: &mut ClusterState, idx: u64, owner: &str, shards: u32| {
        apply(
            state,
            idx,
            Command::SubmitJob {
                name: "job".into(),
                spec: spec(shards, 1),
                idempotency_key: None,
                owner: owner.into(),
                admission: limits,
                now_ms: 1_000,
            },
        )
    };
    assert!(matches!(
        submit_as(&mut state, 1, "a", 5),
        Response::JobSubmitted { .. }
    ));
    // Client a may hold 6: one more is fine, two more are not.
    let refused = submit_as(&mut state, 2, "a", 2);
    let before = state.clone();
    match refused {
        Response::Rejected(Rejection::Overloaded(why)) => {
            assert!(why.contains("max_pending_shards_per_client"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(state, before, "a refusal changes nothing");
    assert!(matches!(
        submit_as(&mut state, 3, "b", 5),
        Response::JobSubmitted { .. }
    ));
    // The cluster holds 10 now.
    match submit_as(&mut state, 4, "c", 1) {
        Response::Rejected(Rejection::Overloaded(why)) => {
            assert!(why.contains("limits.max_pending_shards "), "{why}")
        }
        other => panic!("{other:?}"),
    }
    // A job that ends gives its shards back.
    assert!(matches!(
        apply(
            &mut state,
            5,
            Command::CancelJob {
                job_id: JobId(1),
                now_ms: 2_000
            }
        ),
        Response::JobCancelled { .. }
    ));
    assert_eq!(state.pending_shards, 5);
    assert!(!state.pending_shards_by_owner.contains_key("a"));
    assert!(matches!(
        submit_as(&mut state, 6, "c", 5),
        Response::JobSubmitted { .. }
    ));
}

#[test]
fn another_incarnation_takes_an_id_only_as_the_leader_fenced_it() {
    let as_incarnation =
        |incarnation: u64, successor_of: Option<u64>, replaces: Option<u64>| match register_cmd(
            "tm-a",
            "127.0.0.1:7001",
            4,
            &[],
        ) {
            Command::RegisterTaskManager {
                id,
                addr,
                slots,
                labels,
                now_ms,
                ..
            } => Command::RegisterTaskManager {
                incarnation,
                successor_of,
                replaces,
                id,
                addr,
                slots,
                labels,
                now_ms,
            },
            other => other,
        };
    let mut state = ClusterState::default();
    assert!(matches!(
        apply(&mut state, 1, as_incarnation(11, None, None)),
        Response::TaskManagerRegistered { .. }
    ));
    let job = submit(&mut state, 2, 2, 1);
    place(
        &mut state,
        3,
        vec![placement(job, 0, "tm-a"), placement(job, 1, "tm-a")],
    );

    // Another process, not fenced by the leader: refused, nothing changes.
    let before = state.clone();
    match apply(&mut state, 4, as_incarnation(22, None, None)) {
        Response::Rejected(Rejection::IdInUse { id, .. }) => assert_eq!(id, "tm-a"),
        other => panic!("{other:?}"),
    }
    assert_eq!(state, before);
    // Fenced, but a different holder than the one the leader fenced: refused too.
    assert!(matches!(
        apply(&mut state, 5, as_incarnation(22, None, Some(99))),
        Response::Rejected(Rejection::IdInUse { .. })
    ));

    // The restarted agent on the same work dir takes the id back and keeps its shards.
    assert!(matches!(
        apply(&mut state, 6, as_incarnation(33, Some(11), None)),
        Response::TaskManagerRegistered { .. }
    ));
    assert_eq!(state.assignments("tm-a").count(), 2);
    assert_eq!(state.taskmanagers["tm-a"].incarnation, 33);

    // A takeover of the holder the leader fenced: its shards go back to pending.
    assert!(matches!(
        apply(&mut state, 7, as_incarnation(44, None, Some(33))),
        Response::TaskManagerRegistered { .. }
    ));
    assert_eq!(state.assignments("tm-a").count(), 0);
    assert!(shard(&state, job, 0).state == ShardState::Pending);
    assert_eq!(
        shard(&state, job, 0).failures,
        0,
        "a takeover is not the shard's failure"
    );
    assert_eq!(state.taskmanagers["tm-a"].used_slots, 0);
}

#[test]
fn spec_bytes_held_are_capped_until_ended_jobs_are_forgotten() {
    let mut state = ClusterState::default();
    let one = spec(1, 1).encoded_len_estimate() as u64;
    let limits = crate::domain::Admission {
        max_pending_shards: u64::MAX,
        max_pending_shards_per_client: u64::MAX,
        max_spec_bytes: 2 * one,
    };
    let submit_one = |state: &mut ClusterState, idx: u64| {
        apply(
            state,
            idx,
            Command::SubmitJob {
                name: "job".into(),
                spec: spec(1, 1),
                idempotency_key: None,
                owner: "a".into(),
                admission: limits,
                now_ms: 1_000,
            },
        )
    };
    assert!(matches!(
        submit_one(&mut state, 1),
        Response::JobSubmitted { .. }
    ));
    assert!(matches!(
        submit_one(&mut state, 2),
        Response::JobSubmitted { .. }
    ));
    assert!(matches!(
        submit_one(&mut state, 3),
        Response::Rejected(Rejection::Overloaded(why)) if why.contains("limits.max_spec_bytes")
    ));
    // Cancelled, the job still holds its spec until retention forgets it.
    apply(
        &mut state,
        4,
        Command::CancelJob {
            job_id: JobId(1),
            now_ms: 2_000,
        },
    );
    assert!(matches!(submit_one(&mut state, 5), Response::Rejected(_)));
    apply(
        &mut state,
        6,
        Command::ForgetJobs {
            job_ids: vec![JobId(1)],
            now_ms: 3_000,
        },
    );
    assert_eq!(state.spec_bytes, one);
    assert!(matches!(
        submit_one(&mut state, 7),
        Response::JobSubmitted { .. }
    ));
}

#[test]
fn retention_forgets_only_lost_taskmanagers_that_hold_nothing() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 2, &[]);
    register(&mut state, 2, "tm-b", 2, &[]);
    let lost = Command::MarkTaskManagerLost {
        id: "tm-a".into(),
        registration_epoch: 1,
        now_ms: 5_000,
    };
    assert!(matches!(
        apply(&mut state, 3, lost),
        Response::TaskManagerLost { .. }
    ));
    assert_eq!(state.taskmanagers["tm-a"].lost_at_ms, Some(5_000));
    let forget = Command::ForgetTaskManagers {
        ids: vec!["tm-a".into(), "tm-b".into(), "tm-nope".into()],
        now_ms: 9_000,
    };
    assert_eq!(
        apply(&mut state, 4, forget),
        Response::TaskManagersForgotten { count: 1 }
    );
    assert!(!state.taskmanagers.contains_key("tm-a"));
    assert!(state.taskmanagers.contains_key("tm-b"), "alive: kept");
}

#[test]
fn a_submitter_cancels_only_its_own_jobs() {
    let mut state = ClusterState::default();
    let job = submit(&mut state, 1, 2, 1);
    let as_owner = |owner: &str| Command::CancelOwnJob {
        job_id: job,
        owner: owner.to_string(),
        now_ms: 3_000,
    };
    assert_rejected(
        &state,
        2,
        as_owner("client-b"),
        |r| matches!(r, Rejection::NotOwner(id) if *id == job),
    );
    assert!(matches!(
        apply(&mut state, 3, as_owner("client-a")),
        Response::JobCancelled {
            shards_cancelled: 2,
            ..
        }
    ));
}

#[test]
fn a_tenants_priority_ceiling_holds_in_apply_for_every_token_but_an_admins() {
    let mut state = ClusterState::default();
    use crate::domain::Role;
    for (name, role) in [("ci", Role::Submit), ("root", Role::Admin)] {
        state.tokens.insert(
            name.to_string(),
            crate::domain::Token {
                role,
                hash: crate::domain::TokenHash::of(name),
                created_ms: 0,
            },
        );
    }
    let with = |owner: &str, priority: u32| {
        let Command::SubmitJob {
            name,
            spec,
            idempotency_key,
            admission,
            now_ms,
            ..
        } = submit_cmd(spec(1, 1), None)
        else {
            unreachable!("submit_cmd makes a SubmitJob")
        };
        Command::SubmitJobWithOptions {
            name,
            spec,
            idempotency_key,
            owner: owner.to_string(),
            admission,
            options: crate::domain::JobScheduling {
                priority,
                tenant: "team-a".into(),
                ..Default::default()
            },
            now_ms,
        }
    };
    // Checked when the submission came in, lowered since: apply refuses it, unchanged.
    let before = state.digest();
    let refused = apply(&mut state, 10, with("token:ci", 600));
    assert!(
        matches!(
            refused,
            Response::Rejected(Rejection::AboveCeiling { ceiling: 500, .. })
        ),
        "{refused:?}"
    );
    assert_eq!(state.digest(), before);
    assert!(matches!(
        apply(&mut state, 11, with("token:ci", 500)),
        Response::JobSubmitted { created: true, .. }
    ));
    assert!(matches!(
        apply(&mut state, 12, with("token:root", 1000)),
        Response::JobSubmitted { created: true, .. }
    ));
    // Without a token (--insecure), nobody is capped.
    assert!(matches!(
        apply(&mut state, 13, with("127.0.0.1", 1000)),
        Response::JobSubmitted { created: true, .. }
    ));
    state.max_priorities.insert("team-a".into(), 700);
    assert!(matches!(
        apply(&mut state, 14, with("token:ci", 700)),
        Response::JobSubmitted { created: true, .. }
    ));
}

mod cron;
mod versions;

/// What a TaskManager registered with is checked against its pin as it is now: a pin narrowed
/// (or taken back) after the registration is found, and a pin that still covers it is not.
#[test]
fn a_registration_beyond_a_narrowed_pin_is_found() {
    use crate::domain::registered_claims_refusal;
    let mut state = ClusterState::default();
    let pin = |labels: &[(&str, &str)], slots| Command::PinTaskManager {
        id: "a".into(),
        labels: self::labels(labels),
        slots,
        now_ms: 1_000,
    };
    apply(&mut state, 1, pin(&[("pool", "trusted")], Some(2)));
    apply(
        &mut state,
        2,
        register_cmd("a", "h:1", 2, &[("pool", "trusted")]),
    );
    let tm = |state: &ClusterState| state.taskmanager("a").expect("registered").clone();
    assert_eq!(registered_claims_refusal(&state, &tm(&state)), None);

    apply(&mut state, 3, pin(&[("pool", "trusted")], Some(1)));
    let why = registered_claims_refusal(&state, &tm(&state)).expect("2 slots over a pin of 1");
    assert!(why.contains("at most 1"), "{why}");

    apply(&mut state, 4, pin(&[], None));
    let why = registered_claims_refusal(&state, &tm(&state)).expect("a label nobody pins");
    assert!(why.contains("pool=trusted"), "{why}");

    // A GPU declared before any resource pin (an agent registered before the cluster reached
    // version 4) is let be until the agent registers again; once an admin pins its
    // resources, the pin holds.
    use crate::domain::{Isolation, ResourcePin, Resources, TaskManagerResources};
    state.cluster_version = crate::domain::ClusterVersion(4);
    let gpu = Resources {
        cpu_millis: 1_000,
        memory_bytes: 1 << 30,
        named: [("gpu".to_string(), 1)].into(),
    };
    apply(
        &mut state,
        5,
        Command::RegisterTaskManagerWithResources {
            incarnation: 0,
            successor_of: None,
            replaces: None,
            id: "g".into(),
            addr: "h:2".into(),
            slots: 1,
            labels: Labels::new(),
            resources: TaskManagerResources {
                capacity: gpu,
                isolation: Isolation::None,
                isolation_missing: String::new(),
            },
            now_ms: 1_000,
        },
    );
    let g = state.taskmanager("g").expect("registered").clone();
    assert_eq!(registered_claims_refusal(&state, &g), None);
    apply(
        &mut state,
        6,
        Command::PinTaskManagerWithResources {
            id: "g".into(),
            labels: Labels::new(),
            slots: None,
            resources: ResourcePin {
                cpu_millis: Some(500),
                memory_bytes: None,
                named: [("gpu".to_string(), 1)].into(),
            },
            now_ms: 1_000,
        },
    );
    let why = registered_claims_refusal(&state, &g).expect("1 CPU over a pin of half");
    assert!(why.contains("CPU"), "{why}");
}

/// What the copy of the state costs that a snapshot takes on the apply task (applying waits
/// for it): 100,000 jobs of 4 shards, each submitted with an idempotency key. A figure, not a
/// check: `cargo test --release --lib snapshot_copy_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn snapshot_copy_cost() {
    let mut state = ClusterState::default();
    let jobs = 100_000u64;
    for idx in 1..=jobs {
        let key = format!("client-17-{idx}");
        apply(&mut state, idx, submit_cmd(spec(4, 1), Some(&key)));
    }
    assert_eq!(state.idempotency_keys.len() as u64, jobs);
    let mut copies = Vec::new();
    for _ in 0..7 {
        let started = std::time::Instant::now();
        let copy = state.clone();
        copies.push(started.elapsed());
        // The next write after a copy pays for what the copy still shares.
        let started = std::time::Instant::now();
        let key = format!("client-18-{}", copies.len());
        apply(
            &mut state,
            jobs + copies.len() as u64,
            submit_cmd(spec(4, 1), Some(&key)),
        );
        let write = started.elapsed();
        drop(copy);
        println!("copy {:?}, the write after it {write:?}", copies.last());
    }
    copies.sort();
    println!("median copy of the state: {:?}", copies[copies.len() / 2]);
    let mut encodes = Vec::new();
    let mut bytes = 0;
    for _ in 0..5 {
        let started = std::time::Instant::now();
        bytes = state.encode().len();
        encodes.push(started.elapsed());
    }
    encodes.sort();
    println!(
        "median encode of the state: {:?} ({bytes} bytes)",
        encodes[encodes.len() / 2]
    );
}
