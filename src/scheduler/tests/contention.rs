//! Scheduling under contention (issue 24): rules that must hold when a plan is stale or
//! several rules meet. States are built from real commands.

use super::*;
use crate::domain::JobScheduling;
use crate::fsm::SlotLimit;

fn tenant_job(state: &mut ClusterState, idx: u64, shards: u32, tenant: &str, gang: bool) -> JobId {
    let resp = submit_options(
        state,
        idx,
        shards,
        1,
        JobScheduling {
            tenant: tenant.into(),
            gang,
            ..Default::default()
        },
    );
    assert!(matches!(resp, Response::JobSubmitted { .. }), "{resp:?}");
    JobId(idx)
}

fn set_slots(state: &mut ClusterState, idx: u64, tenant: &str, slots: u64) {
    let resp = apply(
        state,
        idx,
        Command::SetQuota {
            tenant: tenant.into(),
            slots: SlotLimit::Set(slots),
            weight: None,
            now_ms: idx,
        },
    );
    assert!(matches!(resp, Response::QuotaSet { .. }), "{resp:?}");
}

/// Every shard of `job` on `tm`, as a plan that ignores quotas would place them.
fn all_on(state: &ClusterState, job: JobId, tm: &str) -> Vec<Placement> {
    (0..state.job(job).expect("job").shards.len() as u32)
        .map(|shard| Placement {
            job_id: job,
            shard,
            taskmanager: tm.into(),
        })
        .collect()
}

fn place(state: &mut ClusterState, idx: u64, placements: Vec<Placement>) -> PlacementOutcome {
    match apply(
        state,
        idx,
        Command::PlaceShards {
            placements,
            now_ms: idx,
        },
    ) {
        Response::ShardsPlaced(outcome) => outcome,
        other => panic!("{other:?}"),
    }
}

#[test]
fn apply_refuses_a_stale_plan_that_would_pass_a_quota() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm", 16, &[]);
    let job = tenant_job(&mut state, 2, 5, "team", false);
    // The plan was made before `quota set team --slots 2` applied.
    let stale = all_on(&state, job, "tm");
    set_slots(&mut state, 3, "team", 2);
    assert_eq!(
        place(&mut state, 4, stale),
        PlacementOutcome {
            placed: 2,
            stale: 3
        }
    );
    assert_eq!(state.slots_held_by_tenant().get("team"), Some(&2));
    // A gang that would pass the quota is refused whole, never split.
    let gang = tenant_job(&mut state, 5, 3, "crew", true);
    set_slots(&mut state, 6, "crew", 2);
    let whole = all_on(&state, gang, "tm");
    let outcome = place(&mut state, 7, whole);
    assert_eq!(outcome.placed, 0, "{outcome:?}");
    assert!(!state.slots_held_by_tenant().contains_key("crew"));
}

#[test]
fn a_gang_larger_than_its_tenants_quota_holds_nobody_back() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm", 16, &[]);
    // Quota 4; the gang (6) was let in before an admin lowered the quota.
    let gang = tenant_job(&mut state, 2, 6, "team", true);
    set_slots(&mut state, 3, "team", 4);
    let small = tenant_job(&mut state, 4, 2, "team", false);
    let placements = plan_default(&state);
    assert_eq!(tms(&placements).len(), 2, "{placements:?}");
    assert!(placements.iter().all(|p| p.job_id == small));
    let reason =
        crate::scheduler::waiting_reason(&state, state.job(gang).expect("gang")).expect("a reason");
    assert!(
        reason.contains("needs 6 slots at once, above tenant 'team''s quota of 4"),
        "{reason}"
    );
}

#[test]
fn a_restarted_gang_is_not_split_by_the_recovery_throttle() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm", 64, &[]);
    let gang = tenant_job(&mut state, 2, 50, "default", true);
    let first = plan_default(&state);
    apply_plan(&mut state, 3, &first);
    // Every member ran once; one fails, so the gang is split and restarts whole: after the
    // restart each member counts as a re-placement.
    let epoch = state.job(gang).expect("gang").shards[0].epoch;
    apply(
        &mut state,
        4,
        Command::ReportShardEnded {
            taskmanager: "tm".into(),
            job_id: gang,
            shard: 0,
            epoch,
            outcome: crate::fsm::ShardOutcome::Failed {
                exit_code: Some(1),
                error: "boom".into(),
            },
            run_ms: 1,
            retry_at_ms: 0,
            now_ms: 4,
        },
    );
    let resp = apply(
        &mut state,
        5,
        Command::RestartGang {
            job_id: gang,
            not_before_ms: 0,
            now_ms: 5,
        },
    );
    assert!(
        matches!(resp, Response::ShardsRequeued { count: 49 }),
        "{resp:?}"
    );
    let throttled = plan(
        &state,
        NOW_MS,
        ScoreWeights::default(),
        PlanLimits {
            max_replacements: 10,
            ..PlanLimits::default()
        },
    );
    assert_eq!(throttled.len(), 50, "the whole gang, whatever the throttle");
}
