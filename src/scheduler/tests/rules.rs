//! Dependencies, gangs, tenants' quotas and fair share: states built from real commands,
//! plans applied back through apply.

use super::*;
use crate::domain::{JobScheduling, Quota, ShardState};
use crate::fsm::{ShardOutcome, SlotLimit};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn options() -> JobScheduling {
    JobScheduling::default()
}

fn submitted(state: &mut ClusterState, idx: u64, shards: u32, options: JobScheduling) -> JobId {
    let resp = submit_options(state, idx, shards, 1, options);
    assert_eq!(
        resp,
        Response::JobSubmitted {
            job_id: JobId(idx),
            created: true
        }
    );
    JobId(idx)
}

fn after(jobs: &[JobId]) -> JobScheduling {
    JobScheduling {
        after: jobs.to_vec(),
        ..options()
    }
}

fn gang() -> JobScheduling {
    JobScheduling {
        gang: true,
        ..options()
    }
}

fn tenant(name: &str) -> JobScheduling {
    JobScheduling {
        tenant: name.into(),
        ..options()
    }
}

fn set_quota(state: &mut ClusterState, idx: u64, tenant: &str, slots: Option<u64>, weight: u32) {
    let slots = slots.map_or(SlotLimit::Unlimited, SlotLimit::Set);
    let resp = apply(
        state,
        idx,
        Command::SetQuota {
            tenant: tenant.into(),
            slots,
            weight: Some(weight),
            now_ms: idx,
        },
    );
    assert!(matches!(resp, Response::QuotaSet { .. }), "{resp:?}");
}

/// Report the end of a shard's current run.
fn end(state: &mut ClusterState, idx: u64, job: JobId, shard: u32, outcome: ShardOutcome) {
    let s = &state.job(job).expect("job").shards[shard as usize];
    let command = Command::ReportShardEnded {
        taskmanager: s.taskmanager.clone().expect("placed"),
        job_id: job,
        shard,
        epoch: s.epoch,
        outcome,
        run_ms: 1,
        retry_at_ms: 0,
        now_ms: idx,
    };
    assert_eq!(apply(state, idx, command), Response::ShardReported);
}

fn failed() -> ShardOutcome {
    ShardOutcome::Failed {
        exit_code: Some(1),
        error: "boom".into(),
    }
}

fn shard_states(state: &ClusterState, job: JobId) -> Vec<ShardState> {
    state
        .job(job)
        .expect("job")
        .shards
        .iter()
        .map(|s| s.state)
        .collect()
}

fn placed_jobs(placements: &[Placement]) -> Vec<JobId> {
    let mut jobs: Vec<JobId> = placements.iter().map(|p| p.job_id).collect();
    jobs.dedup();
    jobs
}

// ---------------------------------------------------------------------------------------
// Dependencies
// ---------------------------------------------------------------------------------------

#[test]
fn a_dependent_job_waits_until_its_dependency_finished() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm", 4, &[]);
    let first = submit(&mut state, 2, 1, 1);
    let second = submitted(&mut state, 3, 2, after(&[first]));
    let placements = plan_default(&state);
    assert_eq!(placed_jobs(&placements), vec![first], "the dependent waits");
    apply_plan(&mut state, 4, &placements);
    let reason = waiting_reason(&state, state.job(second).expect("job"), NOW_MS).expect("a reason");
    assert!(reason.contains("waiting for job"), "{reason}");
    end(&mut state, 5, first, 0, ShardOutcome::Finished);
    assert_eq!(placed_jobs(&plan_default(&state)), vec![second]);
}

#[test]
fn a_failed_dependency_fails_its_dependents_down_the_chain_without_running_them() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm", 4, &[]);
    let first = submit(&mut state, 2, 1, 1);
    let second = submitted(&mut state, 3, 1, after(&[first]));
    let third = submitted(&mut state, 4, 1, after(&[second]));
    let placements = plan_default(&state);
    apply_plan(&mut state, 5, &placements);
    // max_attempts 3: three failures end it.
    for idx in [6, 8, 10] {
        end(&mut state, idx, first, 0, failed());
        let placements = plan_default(&state);
        if !placements.is_empty() {
            apply_plan(&mut state, idx + 1, &placements);
        }
    }
    assert_eq!(state.job(first).expect("job").state, JobState::Failed);
    for job in [second, third] {
        assert_eq!(state.job(job).expect("job").state, JobState::Failed);
        assert_eq!(shard_states(&state, job), vec![ShardState::Cancelled]);
        assert!(!is_pending(&state, job));
    }
    assert_eq!(state.dependency_failures.get(&second), Some(&first));
    assert_eq!(state.dependency_failures.get(&third), Some(&second));
    assert_eq!(state.pending_shards, 0, "admission counts released");
}

#[test]
fn a_dependency_on_an_unknown_job_is_refused_and_one_on_a_cancelled_job_fails_at_once() {
    let mut state = ClusterState::default();
    let before = state.digest();
    let resp = submit_options(&mut state, 1, 1, 1, after(&[JobId(99)]));
    assert_eq!(
        resp,
        Response::Rejected(crate::fsm::Rejection::UnknownDependency(JobId(99)))
    );
    assert_eq!(state.digest(), before, "a refusal changes nothing");

    let first = submit(&mut state, 2, 1, 1);
    let resp = apply(
        &mut state,
        3,
        Command::CancelJob {
            job_id: first,
            now_ms: 3,
        },
    );
    assert!(matches!(resp, Response::JobCancelled { .. }));
    let late = submitted(&mut state, 4, 1, after(&[first]));
    assert_eq!(state.job(late).expect("job").state, JobState::Failed);
    assert_eq!(state.dependency_failures.get(&late), Some(&first));
}

#[test]
fn forgetting_a_finished_dependency_leaves_its_dependent_runnable() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm", 1, &[]);
    let first = submit(&mut state, 2, 1, 1);
    let busy = submit(&mut state, 3, 1, 1);
    let second = submitted(&mut state, 4, 1, after(&[first]));
    let placements = plan_default(&state);
    apply_plan(&mut state, 5, &placements);
    end(&mut state, 6, first, 0, ShardOutcome::Finished);
    let placements = plan_default(&state);
    assert_eq!(placed_jobs(&placements), vec![busy], "oldest first");
    apply_plan(&mut state, 7, &placements);
    apply(
        &mut state,
        8,
        Command::ForgetJobs {
            job_ids: vec![first],
            now_ms: 8,
        },
    );
    assert!(state.job(first).is_none());
    end(&mut state, 9, busy, 0, ShardOutcome::Finished);
    assert_eq!(placed_jobs(&plan_default(&state)), vec![second]);
}

// ---------------------------------------------------------------------------------------
// Gangs
// ---------------------------------------------------------------------------------------

#[test]
fn a_gang_is_placed_whole_or_not_at_all_and_holds_nothing_while_it_waits() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "a", 1, &[]);
    register(&mut state, 2, "b", 1, &[]);
    let big = submitted(&mut state, 3, 3, gang());
    let small = submit(&mut state, 4, 2, 1);
    let placements = plan_default(&state);
    assert_eq!(
        placed_jobs(&placements),
        vec![small],
        "the gang does not fit"
    );
    apply_plan(&mut state, 5, &placements);
    assert!(shard_states(&state, big)
        .iter()
        .all(|s| *s == ShardState::Pending));
    register(&mut state, 6, "c", 3, &[]);
    let placements = plan_default(&state);
    assert_eq!(placements.len(), 3);
    assert_eq!(placed_jobs(&placements), vec![big]);
    apply_plan(&mut state, 7, &placements);
    assert!(shard_states(&state, big)
        .iter()
        .all(|s| *s == ShardState::Assigned));
}

#[test]
fn apply_refuses_a_plan_that_would_place_part_of_a_gang() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "a", 4, &[]);
    let job = submitted(&mut state, 2, 3, gang());
    let partial: Vec<Placement> = (0..2)
        .map(|shard| Placement {
            job_id: job,
            shard,
            taskmanager: "a".into(),
        })
        .collect();
    let resp = apply(
        &mut state,
        3,
        Command::PlaceShards {
            placements: partial,
            now_ms: 3,
        },
    );
    assert_eq!(
        resp,
        Response::ShardsPlaced(PlacementOutcome {
            placed: 0,
            stale: 2
        })
    );
    assert!(shard_states(&state, job)
        .iter()
        .all(|s| *s == ShardState::Pending));
}

#[test]
fn a_failed_member_splits_the_gang_and_the_restart_takes_all_back_counting_one_failure() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "a", 4, &[]);
    let job = submitted(&mut state, 2, 3, gang());
    let placements = plan_default(&state);
    apply_plan(&mut state, 3, &placements);
    end(&mut state, 4, job, 0, ShardOutcome::Finished);
    assert!(!crate::fsm::gang_is_split(&state, job));
    end(&mut state, 5, job, 1, failed());
    assert!(crate::fsm::gang_is_split(&state, job));
    assert!(
        plan_default(&state).is_empty(),
        "a split gang is not placed"
    );
    let resp = apply(
        &mut state,
        6,
        Command::RestartGang {
            job_id: job,
            not_before_ms: 100,
            now_ms: 6,
        },
    );
    assert_eq!(resp, Response::ShardsRequeued { count: 2 });
    let shards = &state.job(job).expect("job").shards;
    assert!(shards.iter().all(|s| s.state == ShardState::Pending));
    assert!(shards
        .iter()
        .all(|s| s.failures == 1 && s.not_before_ms >= 100));
    assert_eq!(state.taskmanager("a").expect("tm").used_slots, 0);
    assert!(state.tenant_slots.is_empty(), "{:?}", state.tenant_slots);
    // A second restart of a gang that is whole again changes nothing.
    let digest = state.digest();
    let again = apply(
        &mut state,
        7,
        Command::RestartGang {
            job_id: job,
            not_before_ms: 100,
            now_ms: 7,
        },
    );
    assert_eq!(again, Response::ShardsRequeued { count: 0 });
    assert_eq!(state.digest(), digest);
    assert_eq!(plan_default(&state).len(), 3, "placed whole again");
}

// ---------------------------------------------------------------------------------------
// Tenants: quotas and fair share
// ---------------------------------------------------------------------------------------

fn held_by(state: &ClusterState, placements: &[Placement], tenant: &str) -> usize {
    placements
        .iter()
        .filter(|p| state.tenant(p.job_id) == tenant)
        .count()
}

#[test]
fn a_tenant_never_holds_more_than_its_quota() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm", 10, &[]);
    set_quota(&mut state, 2, "alice", Some(3), 1);
    let job = submitted(&mut state, 3, 8, tenant("alice"));
    let placements = plan_default(&state);
    assert_eq!(placements.len(), 3);
    apply_plan(&mut state, 4, &placements);
    assert!(plan_default(&state).is_empty(), "at its quota");
    let reason = waiting_reason(&state, state.job(job).expect("job"), NOW_MS).expect("a reason");
    assert!(reason.contains("quota of 3"), "{reason}");
    assert_eq!(state.tenant_slots.get("alice"), Some(&3));
    end(&mut state, 5, job, 0, ShardOutcome::Finished);
    assert_eq!(state.tenant_slots.get("alice"), Some(&2));
    assert_eq!(plan_default(&state).len(), 1, "one ended, one more may run");
}

#[test]
fn equal_weights_share_the_slots_whatever_each_tenant_submitted() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm", 10, &[]);
    submitted(&mut state, 2, 1000, tenant("big"));
    submitted(&mut state, 3, 10, tenant("small"));
    let placements = plan_default(&state);
    assert_eq!(placements.len(), 10);
    assert_eq!(held_by(&state, &placements, "big"), 5);
    assert_eq!(held_by(&state, &placements, "small"), 5);
}

#[test]
fn weights_split_free_slots_in_proportion_counting_what_runs() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm", 8, &[]);
    set_quota(&mut state, 2, "heavy", None, 3);
    submitted(&mut state, 3, 100, tenant("heavy"));
    submitted(&mut state, 4, 100, tenant("light"));
    let placements = plan_default(&state);
    assert_eq!(held_by(&state, &placements, "heavy"), 6);
    assert_eq!(held_by(&state, &placements, "light"), 2);
}

#[test]
fn quota_changes_keep_what_is_not_given_and_defaults_remove_the_entry() {
    let mut state = ClusterState::default();
    set_quota(&mut state, 1, "alice", Some(4), 2);
    let resp = apply(
        &mut state,
        2,
        Command::SetQuota {
            tenant: "alice".into(),
            slots: SlotLimit::Keep,
            weight: Some(5),
            now_ms: 2,
        },
    );
    assert!(matches!(resp, Response::QuotaSet { .. }));
    assert_eq!(
        state.quota("alice"),
        Quota {
            slots: Some(4),
            weight: 5
        }
    );
    set_quota(&mut state, 3, "alice", None, 1);
    assert!(state.quotas.is_empty());
    let before = state.digest();
    let resp = apply(
        &mut state,
        4,
        Command::SetQuota {
            tenant: "alice".into(),
            slots: SlotLimit::Keep,
            weight: Some(0),
            now_ms: 4,
        },
    );
    assert!(matches!(resp, Response::Rejected(_)), "weight 0 is refused");
    assert_eq!(state.digest(), before);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever tenants submit, with whatever quotas and weights, a plan applied in full
    /// keeps every tenant within its quota, never places part of a gang, and places no job
    /// whose dependency has not finished.
    #[test]
    fn plans_keep_quotas_gangs_and_dependencies(
        capacity in proptest::collection::vec(1u32..6, 1..4),
        quotas in proptest::collection::vec(proptest::option::of(0u64..8), 3),
        weights in proptest::collection::vec(1u32..4, 3),
        jobs in proptest::collection::vec((0usize..3, 1u32..5, any::<bool>(), any::<bool>()), 1..10),
    ) {
        let tenants = ["t0", "t1", "t2"];
        let mut state = ClusterState::default();
        let mut idx = 1;
        for (i, slots) in capacity.iter().enumerate() {
            register(&mut state, idx, &format!("tm{i}"), *slots, &[]);
            idx += 1;
        }
        for (i, tenant) in tenants.iter().enumerate() {
            set_quota(&mut state, idx, tenant, quotas[i], weights[i]);
            idx += 1;
        }
        let mut submitted_jobs: Vec<JobId> = Vec::new();
        for (tenant, shards, is_gang, depends) in jobs {
            let options = JobScheduling {
                tenant: tenants[tenant].into(),
                gang: is_gang,
                after: submitted_jobs.last().filter(|_| depends).copied().into_iter().collect(),
                ..JobScheduling::default()
            };
            submitted_jobs.push(submitted(&mut state, idx, shards, options));
            idx += 1;
        }
        let placements = plan_default(&state);
        apply_plan(&mut state, idx, &placements);
        // The derived counts apply keeps are what a decode recomputes.
        let decoded = ClusterState::decode(&state.encode()).expect("decodes");
        prop_assert_eq!(&decoded.tenant_slots, &state.tenant_slots);
        prop_assert_eq!(&decoded.dependents, &state.dependents);
        let held = state.slots_held_by_tenant();
        for (i, tenant) in tenants.iter().enumerate() {
            if let Some(limit) = quotas[i] {
                prop_assert!(held.get(*tenant).copied().unwrap_or(0) <= limit);
            }
        }
        let mut per_job: BTreeMap<JobId, usize> = BTreeMap::new();
        for p in &placements {
            *per_job.entry(p.job_id).or_default() += 1;
        }
        for (job, count) in per_job {
            if state.is_gang(job) {
                prop_assert_eq!(count, state.job(job).expect("job").shards.len());
            }
            for dependency in state.after(job) {
                prop_assert_eq!(
                    state.job(*dependency).map(|d| d.state),
                    Some(JobState::Finished)
                );
            }
        }
    }
}

/// Not a speed assertion (timed figures belong to the bench): a plan over four tenants with
/// quotas, weights, priorities and gangs stays the same order of work as a plain one, and
/// places everything that fits.
#[test]
fn a_fair_share_plan_over_many_taskmanagers_places_everything_that_fits() {
    let mut state = ClusterState::default();
    let mut idx = 1;
    for i in 0..1000 {
        register(&mut state, idx, &format!("tm{i:04}"), 40, &[]);
        idx += 1;
    }
    let tenants = [("a", 1), ("b", 2), ("c", 3), ("d", 1)];
    for (name, weight) in tenants {
        set_quota(&mut state, idx, name, Some(1_000_000), weight);
        idx += 1;
    }
    for i in 0..20u64 {
        let options = JobScheduling {
            tenant: tenants[i as usize % 4].0.into(),
            priority: 100 + (i as u32 * 200) % 900,
            gang: i % 4 == 3,
            ..JobScheduling::default()
        };
        submitted(&mut state, idx, 1000, options);
        idx += 1;
    }
    let started = Instant::now();
    let placements = plan_default(&state);
    eprintln!(
        "fair-share plan of {} shards: {:?}",
        placements.len(),
        started.elapsed()
    );
    assert_eq!(placements.len(), 20_000);
    apply_plan(&mut state, idx, &placements);
}
