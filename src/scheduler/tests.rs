//! Unit tests of the placement policy. States are built by applying real commands, and every
//! plan is applied back with `PlaceShards` to check that apply accepts all of it.

use super::*;
use crate::domain::{ClusterState, JobId, JobSpec, JobState, Labels, RunStats};
use crate::fsm::{apply, Command, Placement, PlacementOutcome, Response};
use std::collections::HashSet;
use std::time::Instant;

/// Planning time in these tests: after every command they stamp.
const NOW_MS: u64 = 1_000_000;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn register(
    state: &mut ClusterState,
    idx: u64,
    id: &str,
    slots: u32,
    label_pairs: &[(&str, &str)],
) {
    let resp = apply(
        state,
        idx,
        Command::RegisterTaskManager {
            incarnation: 0,
            successor_of: None,
            replaces: None,
            id: id.to_string(),
            addr: "127.0.0.1:7001".to_string(),
            slots,
            labels: labels(label_pairs),
            now_ms: idx,
        },
    );
    assert!(
        matches!(resp, Response::TaskManagerRegistered { .. }),
        "registering {id}: {resp:?}"
    );
}

fn submit_with(
    state: &mut ClusterState,
    idx: u64,
    shards: u32,
    slots: u32,
    selector: &[(&str, &str)],
) -> JobId {
    let spec = JobSpec {
        command: "/bin/true".to_string(),
        args: Vec::new(),
        env: Default::default(),
        shard_count: shards,
        slots_per_shard: slots,
        max_attempts: 3,
        selector: labels(selector),
    };
    let resp = apply(
        state,
        idx,
        Command::SubmitJob {
            name: format!("job-{idx}"),
            spec,
            idempotency_key: None,
            owner: "test".to_string(),
            admission: crate::domain::Admission::DEFAULT,
            now_ms: idx,
        },
    );
    assert_eq!(
        resp,
        Response::JobSubmitted {
            job_id: JobId(idx),
            created: true
        }
    );
    JobId(idx)
}

fn submit(state: &mut ClusterState, idx: u64, shards: u32, slots: u32) -> JobId {
    submit_with(state, idx, shards, slots, &[])
}

fn plan_default(state: &ClusterState) -> Vec<Placement> {
    plan(
        state,
        NOW_MS,
        ScoreWeights::default(),
        PlanLimits::default(),
    )
}

/// Applies `placements` as one PlaceShards command and asserts apply accepted every one.
fn apply_plan(state: &mut ClusterState, idx: u64, placements: &[Placement]) {
    let resp = apply(
        state,
        idx,
        Command::PlaceShards {
            placements: placements.to_vec(),
            now_ms: idx,
        },
    );
    assert_eq!(
        resp,
        Response::ShardsPlaced(PlacementOutcome {
            placed: placements.len() as u32,
            stale: 0
        }),
        "apply did not accept the whole plan {placements:?}"
    );
}

fn tms(placements: &[Placement]) -> Vec<&str> {
    placements.iter().map(|p| p.taskmanager.as_str()).collect()
}

fn set_stats(state: &mut ClusterState, tm: &str, runs: u64, run_time_ms: u64, failures: u64) {
    state
        .taskmanagers
        .get_mut(tm)
        .expect("known TaskManager")
        .stats = RunStats {
        runs,
        run_time_ms,
        failures,
    };
}

fn is_pending(state: &ClusterState, job: JobId) -> bool {
    state.jobs_with_pending_shards.contains(&job)
}

/// Where a 1-shard, 1-slot job submitted now would go.
fn choice_for_one_shard(state: &ClusterState) -> String {
    let mut state = state.clone();
    submit(&mut state, 1_000_000, 1, 1);
    let placements = plan_default(&state);
    assert_eq!(placements.len(), 1, "{placements:?}");
    placements[0].taskmanager.clone()
}

// ---------------------------------------------------------------------------------------
// Fit
// ---------------------------------------------------------------------------------------

#[test]
fn fits_every_shard_that_has_room() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 4, &[]);
    register(&mut state, 2, "tm-b", 4, &[]);
    let job = submit(&mut state, 3, 4, 2);

    let placements = plan_default(&state);
    assert_eq!(placements.len(), 4);
    let shards: Vec<u32> = placements.iter().map(|p| p.shard).collect();
    assert_eq!(shards, vec![0, 1, 2, 3]);
    assert!(placements.iter().all(|p| p.job_id == job));
    let on_a = tms(&placements).iter().filter(|t| **t == "tm-a").count();
    assert_eq!(on_a, 2);

    apply_plan(&mut state, 4, &placements);
    assert!(!is_pending(&state, job));
    assert_eq!(state.job(job).unwrap().state, JobState::Running);
    assert_eq!(state.taskmanager("tm-a").unwrap().free_slots(), 0);
    assert_eq!(state.taskmanager("tm-b").unwrap().free_slots(), 0);
    assert!(plan_default(&state).is_empty());
}

#[test]
fn shard_that_does_not_fit_waits_for_capacity() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 4, &[]);
    register(&mut state, 2, "tm-b", 4, &[]);
    let job = submit(&mut state, 3, 5, 2);

    let first = plan_default(&state);
    assert_eq!(first.len(), 4);
    apply_plan(&mut state, 4, &first);
    assert!(is_pending(&state, job));
    assert_eq!(state.job(job).unwrap().pending_shards().count(), 1);

    // No capacity: nothing to plan, however often the leader asks.
    assert!(plan_default(&state).is_empty());

    // A TaskManager too small for a shard does not help either.
    register(&mut state, 5, "tm-c", 1, &[]);
    assert!(plan_default(&state).is_empty());

    register(&mut state, 6, "tm-d", 4, &[]);
    let second = plan_default(&state);
    assert_eq!(
        second,
        vec![Placement {
            job_id: job,
            shard: first.len() as u32,
            taskmanager: "tm-d".to_string()
        }]
    );
    apply_plan(&mut state, 7, &second);
    assert!(!is_pending(&state, job));
}

/// The leader plans into the room a batch of reports gives back before the batch applies,
/// and proposes the plan right behind it: applied after the end, it fits whole; applied
/// without it, apply skips it and the shard stays pending.
#[test]
fn a_plan_into_room_an_ending_shard_frees_fits_right_behind_its_report() {
    use crate::fsm::{Report, ShardOutcome};
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 2, &[]);
    let job = submit(&mut state, 3, 3, 1);
    let first = plan_default(&state);
    assert_eq!(tms(&first), vec!["tm-a", "tm-a"]);
    apply_plan(&mut state, 5, &first);
    assert!(plan_default(&state).is_empty(), "tm-a is full");
    // Room the state already shows free is the placement loop's, not the plan behind.
    register(&mut state, 6, "tm-b", 1, &[]);

    let mut freed = Freed::default();
    freed.add("tm-a", crate::domain::DEFAULT_TENANT, 1, None);
    let planned = plan_into(
        &state,
        NOW_MS,
        ScoreWeights::default(),
        PlanLimits::default(),
        &freed,
    );
    assert_eq!(
        planned,
        vec![Placement {
            job_id: job,
            shard: 2,
            taskmanager: "tm-a".to_string()
        }]
    );

    let mut without_the_end = state.clone();
    let skipped = apply(
        &mut without_the_end,
        7,
        Command::PlaceShards {
            placements: planned.clone(),
            now_ms: 7,
        },
    );
    assert_eq!(
        skipped,
        Response::ShardsPlaced(PlacementOutcome {
            placed: 0,
            stale: 1
        })
    );
    assert_eq!(
        without_the_end.job(job).unwrap().pending_shards().count(),
        1
    );

    let ended = apply(
        &mut state,
        7,
        Command::Batch(vec![Report::Ended {
            taskmanager: "tm-a".to_string(),
            job_id: job,
            shard: first[0].shard,
            epoch: 5,
            outcome: ShardOutcome::Finished,
            run_ms: 1,
            retry_at_ms: 0,
            now_ms: 7,
        }]),
    );
    assert!(matches!(ended, Response::Batch(_)), "{ended:?}");
    apply_plan(&mut state, 8, &planned);
    assert_eq!(state.taskmanager("tm-a").unwrap().free_slots(), 0);
}

#[test]
fn capacity_is_shared_between_jobs_of_one_plan() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 4, &[]);
    let older = submit(&mut state, 2, 2, 2);
    let newer = submit(&mut state, 3, 2, 2);

    let placements = plan_default(&state);
    // Oldest job first; the newer one must not be planned onto slots the older one took.
    assert_eq!(placements.len(), 2);
    assert!(placements.iter().all(|p| p.job_id == older));
    apply_plan(&mut state, 4, &placements);
    assert!(is_pending(&state, newer));
}

#[test]
fn draining_and_full_taskmanagers_get_nothing() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 8, &[]);
    register(&mut state, 2, "tm-b", 2, &[]);
    register(&mut state, 3, "tm-c", 8, &[]);
    let filler = submit(&mut state, 4, 1, 2);
    apply_plan(
        &mut state,
        5,
        &[Placement {
            job_id: filler,
            shard: 0,
            taskmanager: "tm-b".to_string(),
        }],
    );
    apply(
        &mut state,
        6,
        Command::DrainTaskManager {
            deadline_ms: u64::MAX,
            id: "tm-a".to_string(),
            now_ms: 6,
        },
    );
    submit(&mut state, 7, 3, 1);

    let placements = plan_default(&state);
    assert_eq!(tms(&placements), vec!["tm-c"; 3]);
    apply_plan(&mut state, 8, &placements);
}

// ---------------------------------------------------------------------------------------
// Spread
// ---------------------------------------------------------------------------------------

#[test]
fn spreads_a_job_over_idle_taskmanagers() {
    let mut state = ClusterState::default();
    for (i, id) in ["tm-a", "tm-b", "tm-c"].into_iter().enumerate() {
        register(&mut state, i as u64 + 1, id, 8, &[]);
    }
    submit(&mut state, 4, 3, 1);

    let placements = plan_default(&state);
    assert_eq!(placements.len(), 3);
    let distinct: HashSet<&str> = tms(&placements).into_iter().collect();
    assert_eq!(distinct.len(), 3, "{placements:?}");
    apply_plan(&mut state, 5, &placements);
}

#[test]
fn spread_outweighs_capacity() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 16, &[]);
    register(&mut state, 2, "tm-b", 4, &[]);
    register(&mut state, 3, "tm-c", 4, &[]);
    submit(&mut state, 4, 3, 1);

    // tm-a has by far the most room, yet each TaskManager takes one shard first.
    let placements = plan_default(&state);
    assert_eq!(tms(&placements), vec!["tm-a", "tm-b", "tm-c"]);
    apply_plan(&mut state, 5, &placements);
}

#[test]
fn spread_counts_shards_already_placed() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 16, &[]);
    register(&mut state, 2, "tm-b", 4, &[]);
    let job = submit(&mut state, 3, 2, 1);
    apply_plan(
        &mut state,
        4,
        &[Placement {
            job_id: job,
            shard: 0,
            taskmanager: "tm-a".to_string(),
        }],
    );
    // tm-a has more room, but already runs a shard of this job.
    let placements = plan_default(&state);
    assert_eq!(tms(&placements), vec!["tm-b"]);
    assert_eq!(placements[0].shard, 1);
    apply_plan(&mut state, 5, &placements);
}

// ---------------------------------------------------------------------------------------
// Labels
// ---------------------------------------------------------------------------------------

#[test]
fn only_taskmanagers_with_all_selector_labels_get_shards() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 8, &[("zone", "a"), ("gpu", "yes")]);
    register(&mut state, 2, "tm-b", 8, &[("zone", "a")]);
    register(&mut state, 3, "tm-c", 8, &[("gpu", "yes")]);
    register(
        &mut state,
        4,
        "tm-d",
        8,
        &[("zone", "a"), ("gpu", "yes"), ("extra", "1")],
    );
    register(&mut state, 5, "tm-e", 8, &[("zone", "b"), ("gpu", "yes")]);
    let job = submit_with(&mut state, 6, 4, 1, &[("zone", "a"), ("gpu", "yes")]);

    let placements = plan_default(&state);
    assert_eq!(placements.len(), 4);
    let mut chosen = tms(&placements);
    chosen.sort();
    assert_eq!(chosen, vec!["tm-a", "tm-a", "tm-d", "tm-d"]);
    apply_plan(&mut state, 7, &placements);
    assert!(!is_pending(&state, job));
}

#[test]
fn selector_matching_nothing_gives_empty_plan() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 8, &[("zone", "a")]);
    register(&mut state, 2, "tm-b", 8, &[("gpu", "yes")]);
    let job = submit_with(&mut state, 3, 2, 1, &[("zone", "a"), ("gpu", "yes")]);
    assert!(plan_default(&state).is_empty());
    assert!(is_pending(&state, job));

    // It does not hold up a later job that can run.
    submit(&mut state, 4, 1, 1);
    let placements = plan_default(&state);
    assert_eq!(placements.len(), 1);
    assert_eq!(placements[0].job_id, JobId(4));
}

// ---------------------------------------------------------------------------------------
// Score terms
// ---------------------------------------------------------------------------------------

#[test]
fn failure_rate_penalty_steers_away_from_failing_taskmanager() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 4, &[]);
    register(&mut state, 2, "tm-b", 4, &[]);
    // Control: with equal history the tie goes to tm-a.
    set_stats(&mut state, "tm-a", 10, 600_000, 0);
    set_stats(&mut state, "tm-b", 10, 600_000, 0);
    assert_eq!(choice_for_one_shard(&state), "tm-a");

    // Same runs and run time, but half of tm-a's runs failed.
    set_stats(&mut state, "tm-a", 10, 600_000, 5);
    assert_eq!(choice_for_one_shard(&state), "tm-b");

    // Also against a TaskManager with no history at all.
    set_stats(&mut state, "tm-b", 0, 0, 0);
    assert_eq!(choice_for_one_shard(&state), "tm-b");

    submit(&mut state, 3, 1, 1);
    let placements = plan_default(&state);
    assert_eq!(tms(&placements), vec!["tm-b"]);
    apply_plan(&mut state, 4, &placements);
}

#[test]
fn run_time_penalty_prefers_faster_taskmanager() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 4, &[]);
    register(&mut state, 2, "tm-b", 4, &[]);
    // Mean run time: tm-a 120 s, tm-b 60 s; no failures anywhere.
    set_stats(&mut state, "tm-a", 10, 1_200_000, 0);
    set_stats(&mut state, "tm-b", 10, 600_000, 0);
    assert_eq!(choice_for_one_shard(&state), "tm-b");

    // The other way round, tm-a wins: it is the speed, not the id.
    set_stats(&mut state, "tm-a", 10, 600_000, 0);
    set_stats(&mut state, "tm-b", 10, 1_200_000, 0);
    assert_eq!(choice_for_one_shard(&state), "tm-a");
}

#[test]
fn prefers_more_free_capacity_after_placement() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 8, &[]);
    register(&mut state, 2, "tm-b", 8, &[]);
    let big = submit(&mut state, 3, 1, 6);
    apply_plan(
        &mut state,
        4,
        &[Placement {
            job_id: big,
            shard: 0,
            taskmanager: "tm-a".to_string(),
        }],
    );
    assert_eq!(choice_for_one_shard(&state), "tm-b");

    // Capacity is relative to the TaskManager's size: 15/16 free beats 3/4 free.
    let mut sized = ClusterState::default();
    register(&mut sized, 1, "tm-a", 4, &[]);
    register(&mut sized, 2, "tm-b", 16, &[]);
    assert_eq!(choice_for_one_shard(&sized), "tm-b");
}

#[test]
fn ties_go_to_smallest_id_and_plans_are_deterministic() {
    let mut state = ClusterState::default();
    // Registered out of order; equal in every respect.
    register(&mut state, 1, "tm-c", 4, &[]);
    register(&mut state, 2, "tm-a", 4, &[]);
    register(&mut state, 3, "tm-b", 4, &[]);
    assert_eq!(choice_for_one_shard(&state), "tm-a");

    submit(&mut state, 4, 5, 1);
    let first = plan_default(&state);
    let second = plan_default(&state);
    assert_eq!(first, second);
    assert_eq!(tms(&first), vec!["tm-a", "tm-b", "tm-c", "tm-a", "tm-b"]);
    // A replica with the same state computes the same plan.
    let decoded = ClusterState::decode(&state.encode()).unwrap();
    assert_eq!(plan_default(&decoded), first);
    apply_plan(&mut state, 5, &first);
}

// ---------------------------------------------------------------------------------------
// Limits and scale
// ---------------------------------------------------------------------------------------

#[test]
fn max_placements_caps_the_plan() {
    let mut state = ClusterState::default();
    for i in 0..10u64 {
        register(&mut state, i + 1, &format!("tm-{i:02}"), 8, &[]);
    }
    let first = submit(&mut state, 20, 8, 1);
    let second = submit(&mut state, 21, 8, 1);
    let limits = PlanLimits {
        max_placements: 10,
        ..PlanLimits::default()
    };

    let placements = plan(&state, NOW_MS, ScoreWeights::default(), limits);
    assert_eq!(placements.len(), 10);
    assert_eq!(placements.iter().filter(|p| p.job_id == first).count(), 8);
    assert_eq!(placements.iter().filter(|p| p.job_id == second).count(), 2);
    apply_plan(&mut state, 22, &placements);

    let rest = plan(&state, NOW_MS, ScoreWeights::default(), limits);
    assert_eq!(rest.len(), 6);
    assert!(rest.iter().all(|p| p.job_id == second));
    apply_plan(&mut state, 23, &rest);
    assert!(state.jobs_with_pending_shards.is_empty());

    let none = PlanLimits {
        max_placements: 0,
        ..PlanLimits::default()
    };
    submit(&mut state, 24, 1, 1);
    assert!(plan(&state, NOW_MS, ScoreWeights::default(), none).is_empty());
}

#[test]
fn plans_a_thousand_shards_over_ten_thousand_taskmanagers() {
    let mut state = ClusterState::default();
    for i in 0..10_000u64 {
        register(&mut state, i + 1, &format!("tm-{i:05}"), 8, &[]);
    }
    let job = submit(&mut state, 20_000, 1_000, 1);

    let start = Instant::now();
    let placements = plan_default(&state);
    let elapsed = start.elapsed();
    eprintln!("plan: 1000 shards over 10000 TaskManagers in {elapsed:?}");

    assert_eq!(placements.len(), 1_000);
    let distinct: HashSet<&str> = tms(&placements).into_iter().collect();
    assert_eq!(distinct.len(), 1_000);
    // All TaskManagers are equal, so the ties go to the 1000 smallest ids.
    assert!(tms(&placements)
        .iter()
        .all(|t| t.as_bytes()[3..].starts_with(b"00")));
    assert!(elapsed.as_secs_f64() < 2.0, "plan took {elapsed:?}");

    apply_plan(&mut state, 20_001, &placements);
    assert!(!is_pending(&state, job));
}

#[test]
fn replacements_are_capped_but_first_placements_are_not() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 8, &[]);
    let job = submit(&mut state, 2, 4, 1);
    // Two shards ran before (attempt 1) and wait to be placed again.
    for index in 0..2 {
        let shard = &mut state
            .jobs
            .get_mut(&job)
            .map(std::sync::Arc::make_mut)
            .expect("job")
            .shards[index];
        shard.attempt = 1;
    }
    let limits = PlanLimits {
        max_replacements: 1,
        ..PlanLimits::default()
    };
    let placements = plan(&state, NOW_MS, ScoreWeights::default(), limits);
    let placed: Vec<u32> = placements.iter().map(|p| p.shard).collect();
    assert_eq!(
        placed,
        vec![0, 2, 3],
        "one re-placement and both first placements"
    );
}

// ---------------------------------------------------------------------------------------
// Priorities (dependencies, gangs and tenants are in `rules`)
// ---------------------------------------------------------------------------------------

mod contention;
mod guarantees;
mod resources;
mod rules;
mod simulation;

/// Submit like `submit_with`, with scheduling options.
fn submit_options(
    state: &mut ClusterState,
    idx: u64,
    shards: u32,
    slots: u32,
    options: crate::domain::JobScheduling,
) -> Response {
    apply(
        state,
        idx,
        Command::SubmitJobWithOptions {
            name: format!("job-{idx}"),
            spec: JobSpec {
                command: "/bin/true".to_string(),
                args: Vec::new(),
                env: Default::default(),
                shard_count: shards,
                slots_per_shard: slots,
                max_attempts: 3,
                selector: Labels::new(),
            },
            idempotency_key: None,
            owner: "test".to_string(),
            admission: crate::domain::Admission::DEFAULT,
            options,
            now_ms: idx,
        },
    )
}

/// Submit `shards` one-slot shards with scheduling options and a request (resources,
/// isolation, time limit), asserting it was accepted.
fn submit_with_request(
    state: &mut ClusterState,
    idx: u64,
    shards: u32,
    options: crate::domain::JobScheduling,
    request: crate::domain::ResourceRequest,
) -> JobId {
    let resp = apply(
        state,
        idx,
        Command::SubmitJobWithResources {
            name: format!("job-{idx}"),
            spec: JobSpec {
                command: "/bin/true".to_string(),
                args: Vec::new(),
                env: Default::default(),
                shard_count: shards,
                slots_per_shard: 1,
                max_attempts: 3,
                selector: Labels::new(),
            },
            idempotency_key: None,
            owner: "test".to_string(),
            admission: crate::domain::Admission::DEFAULT,
            options,
            request,
            now_ms: idx,
        },
    );
    assert_eq!(
        resp,
        Response::JobSubmitted {
            job_id: JobId(idx),
            created: true
        }
    );
    JobId(idx)
}

/// Submit like `submit`, at `priority`.
fn submit_at_priority(state: &mut ClusterState, idx: u64, shards: u32, priority: u32) -> JobId {
    let options = crate::domain::JobScheduling {
        priority,
        ..Default::default()
    };
    assert_eq!(
        submit_options(state, idx, shards, 1, options),
        Response::JobSubmitted {
            job_id: JobId(idx),
            created: true
        }
    );
    JobId(idx)
}

#[test]
fn higher_priority_jobs_take_scarce_slots_first_then_the_older_job() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm", 3, &[]);
    let old_low = submit_at_priority(&mut state, 2, 2, 100);
    let default = submit(&mut state, 3, 2, 1);
    let new_high = submit_at_priority(&mut state, 4, 2, 900);
    assert_eq!(state.priority(default), crate::domain::DEFAULT_PRIORITY);
    let placements = plan_default(&state);
    let mut by_job: Vec<JobId> = placements.iter().map(|p| p.job_id).collect();
    by_job.dedup();
    assert_eq!(
        by_job,
        vec![new_high, default],
        "priority 900, then 500; 100 waits"
    );
    apply_plan(&mut state, 5, &placements);
    assert!(is_pending(&state, old_low));
}

#[test]
fn a_priority_out_of_range_is_refused_and_changes_nothing_in_the_old_command_too() {
    let mut state = ClusterState::default();
    let before = state.digest();
    let resp = apply(
        &mut state,
        1,
        Command::SubmitScheduledJob {
            name: "too-high".into(),
            spec: JobSpec {
                command: "/bin/true".to_string(),
                args: Vec::new(),
                env: Default::default(),
                shard_count: 1,
                slots_per_shard: 1,
                max_attempts: 1,
                selector: Labels::new(),
            },
            idempotency_key: None,
            owner: "test".into(),
            admission: crate::domain::Admission::DEFAULT,
            scheduling: crate::domain::PriorityOnly { priority: 1001 },
            now_ms: 1,
        },
    );
    assert!(matches!(resp, Response::Rejected(_)), "{resp:?}");
    let options = crate::domain::JobScheduling {
        priority: 1001,
        ..Default::default()
    };
    let resp = submit_options(&mut state, 2, 1, 1, options);
    assert!(matches!(resp, Response::Rejected(_)), "{resp:?}");
    assert_eq!(state.digest(), before);
}

#[test]
fn a_waiting_higher_priority_shard_preempts_only_lower_priorities() {
    use crate::scheduler::preemption::plan_preemption;
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm", 1, &[]);
    let low = submit_at_priority(&mut state, 2, 1, 100);
    let placements = plan_default(&state);
    apply_plan(&mut state, 3, &placements);
    assert!(!is_pending(&state, low));
    // Equal priority waits: nobody is stopped.
    submit_at_priority(&mut state, 4, 1, 100);
    assert_eq!(plan_preemption(&state, NOW_MS), None);
    // A higher one stops the low shard, in the epoch it runs in.
    submit_at_priority(&mut state, 5, 1, 700);
    assert_eq!(
        plan_preemption(&state, NOW_MS),
        Some((JobId(5), "tm".to_string(), vec![(low, 0, 3)]))
    );
}
