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
