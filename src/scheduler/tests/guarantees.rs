//! Preemption across tenants keeps every tenant's guaranteed share: states built from real
//! commands, preemptions applied back through apply.

use super::*;
use crate::domain::JobScheduling;
use crate::scheduler::preemption::{plan_preemption, spare_above_shares};

fn at(tenant: &str, priority: u32) -> JobScheduling {
    JobScheduling {
        tenant: tenant.into(),
        priority,
        ..Default::default()
    }
}

fn submitted(state: &mut ClusterState, idx: u64, shards: u32, options: JobScheduling) -> JobId {
    let resp = submit_options(state, idx, shards, 1, options);
    assert!(
        matches!(resp, Response::JobSubmitted { .. }),
        "submitting {idx}: {resp:?}"
    );
    JobId(idx)
}

/// Apply what `plan_preemption` chose, as the leader would; the victims' tenants.
fn preempt_once(state: &mut ClusterState, idx: u64) -> Option<Vec<String>> {
    let (for_job, taskmanager, shards) = plan_preemption(state, NOW_MS)?;
    let tenants = shards
        .iter()
        .map(|(job, _, _)| state.tenant(*job).to_string())
        .collect();
    let resp = apply(
        state,
        idx,
        Command::PreemptShards {
            taskmanager,
            shards,
            for_job,
            not_before_ms: 0,
            now_ms: NOW_MS,
        },
    );
    assert!(!matches!(resp, Response::Rejected(_)), "{resp:?}");
    Some(tenants)
}

/// One TaskManager of 4 slots, all of them held by tenant a at priority 100.
fn a_holds_everything() -> (ClusterState, JobId) {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm", 4, &[]);
    let low = submitted(&mut state, 2, 4, at("a", 100));
    let placements = plan_default(&state);
    apply_plan(&mut state, 3, &placements);
    assert!(!is_pending(&state, low));
    (state, low)
}

#[test]
fn another_tenant_preempts_only_down_to_the_victims_share() {
    let (mut state, _) = a_holds_everything();
    // b waits with 4 shards at 900: a and b have equal weights, so each is guaranteed 2.
    submitted(&mut state, 4, 4, at("b", 900));
    assert_eq!(spare_above_shares(&state, NOW_MS).get("a"), Some(&2));
    let mut taken_from_a = 0;
    let mut idx = 10;
    while let Some(tenants) = preempt_once(&mut state, idx) {
        assert!(tenants.iter().all(|t| t == "a"), "{tenants:?}");
        taken_from_a += tenants.len();
        idx += 1;
        let placements = plan_default(&state);
        apply_plan(&mut state, idx, &placements);
        idx += 1;
        assert!(idx < 100, "preemption does not stop");
    }
    assert_eq!(taken_from_a, 2, "a keeps its share of 2");
    assert_eq!(state.slots_held_by_tenant().get("a"), Some(&2));
}

#[test]
fn a_heavier_weight_guarantees_more() {
    let (mut state, _) = a_holds_everything();
    let resp = apply(
        &mut state,
        4,
        Command::SetQuota {
            tenant: "a".into(),
            slots: crate::fsm::SlotLimit::Unlimited,
            weight: Some(3),
            now_ms: 4,
        },
    );
    assert!(matches!(resp, Response::QuotaSet { .. }), "{resp:?}");
    submitted(&mut state, 5, 4, at("b", 900));
    // a is guaranteed 3 of 4: one slot may go.
    assert_eq!(spare_above_shares(&state, NOW_MS).get("a"), Some(&1));
}

#[test]
fn a_tenants_own_high_priority_work_may_stop_its_own_low_priority_work() {
    let (mut state, low) = a_holds_everything();
    submitted(&mut state, 4, 1, at("a", 900));
    // a holds everything and is the only tenant with work: nothing spare, but its own.
    let (_, _, shards) = plan_preemption(&state, NOW_MS).expect("a preempts itself");
    assert_eq!(shards.len(), 1);
    assert_eq!(shards[0].0, low);
}

#[test]
fn a_blocked_asker_lets_the_next_one_preempt() {
    let (mut state, _) = a_holds_everything();
    // The highest priority asks for a label no agent has: it can never get room.
    let blocked = {
        let spec = JobSpec {
            command: "/bin/true".to_string(),
            args: Vec::new(),
            env: Default::default(),
            shard_count: 1,
            slots_per_shard: 1,
            max_attempts: 3,
            selector: labels(&[("gpu", "yes")]),
        };
        let resp = apply(
            &mut state,
            4,
            Command::SubmitJobWithOptions {
                name: "blocked".into(),
                spec,
                idempotency_key: None,
                owner: "test".to_string(),
                admission: crate::domain::Admission::DEFAULT,
                options: at("b", 1000),
                now_ms: 4,
            },
        );
        assert!(matches!(resp, Response::JobSubmitted { .. }), "{resp:?}");
        JobId(4)
    };
    let next = submitted(&mut state, 5, 1, at("b", 900));
    let (for_job, _, _) = plan_preemption(&state, NOW_MS).expect("the next one preempts");
    assert_ne!(for_job, blocked);
    assert_eq!(for_job, next);
}
