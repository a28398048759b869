//! Scheduling under contention (issue 24): rules that must hold when a plan is stale or
//! several rules meet. States are built from real commands.

use super::*;
use crate::domain::{JobScheduling, ShardState};
use crate::fsm::SlotLimit;

fn submitted(state: &mut ClusterState, idx: u64, shards: u32, options: JobScheduling) -> JobId {
    let resp = submit_options(state, idx, shards, 1, options);
    assert!(matches!(resp, Response::JobSubmitted { .. }), "{resp:?}");
    JobId(idx)
}

fn tenant_job(state: &mut ClusterState, idx: u64, shards: u32, tenant: &str, gang: bool) -> JobId {
    submitted(
        state,
        idx,
        shards,
        JobScheduling {
            tenant: tenant.into(),
            gang,
            ..Default::default()
        },
    )
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
    let reason = crate::scheduler::waiting_reason(&state, state.job(gang).expect("gang"), NOW_MS)
        .expect("a reason");
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

fn at_priority(
    state: &mut ClusterState,
    idx: u64,
    shards: u32,
    tenant: &str,
    priority: u32,
) -> JobId {
    submitted(
        state,
        idx,
        shards,
        JobScheduling {
            tenant: tenant.into(),
            priority,
            ..Default::default()
        },
    )
}

/// What the leader does when a plan places nothing: one `PreemptForShard`. Whether it did.
fn preempt_for(state: &mut ClusterState, idx: u64) -> Option<Response> {
    let (for_job, taskmanager, victims) =
        crate::scheduler::preemption::plan_preemption(state, NOW_MS)?;
    let shard = state
        .job(for_job)?
        .pending_shards()
        .find(|s| s.not_before_ms <= NOW_MS)?
        .index;
    Some(apply(
        state,
        idx,
        Command::PreemptForShard {
            taskmanager,
            victims,
            for_job,
            shard,
            not_before_ms: NOW_MS + 10_000,
            now_ms: NOW_MS,
        },
    ))
}

#[test]
fn a_preemption_places_its_preemptor_at_once_and_nothing_preempts_in_circles() {
    // Two tenants of equal weight on 4 slots: "low" fills them at priority 100, then "high"
    // asks for 4 at priority 900. Its guaranteed share is 2: two preemptions, each placing
    // one of its shards in the room it made, then nothing more however long the leader goes on.
    let mut state = ClusterState::default();
    register(&mut state, 1, "a", 2, &[]);
    register(&mut state, 2, "b", 2, &[]);
    let low = at_priority(&mut state, 3, 10, "low", 100);
    let first = plan_default(&state);
    apply_plan(&mut state, 4, &first);
    let high = at_priority(&mut state, 5, 4, "high", 900);
    let mut idx = 6;
    let mut preemptions = 0;
    for _round in 0..50 {
        let placements = plan_default(&state);
        if !placements.is_empty() {
            apply_plan(&mut state, idx, &placements);
            idx += 1;
            continue;
        }
        match preempt_for(&mut state, idx) {
            Some(Response::ShardsRequeued { count }) => {
                assert_eq!(count, 1);
                preemptions += 1;
            }
            Some(other) => panic!("{other:?}"),
            None => {}
        }
        idx += 1;
    }
    assert_eq!(
        preemptions, 2,
        "each preemption placed one shard, and no more came"
    );
    let held = state.slots_held_by_tenant();
    assert_eq!((held.get("high"), held.get("low")), (Some(&2), Some(&2)));
    let placed_high = state
        .job(high)
        .expect("high")
        .shards
        .iter()
        .filter(|s| s.state.holds_slots())
        .count();
    assert_eq!(placed_high, 2);
    let preempted_low: u32 = state
        .preemptions
        .iter()
        .filter(|((job, _), _)| *job == low)
        .map(|(_, n)| *n)
        .sum();
    assert_eq!(preempted_low, 2, "one victim per preemptor placed");
}

#[test]
fn a_stale_preemption_changes_nothing() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "a", 1, &[]);
    let low = at_priority(&mut state, 2, 1, "default", 100);
    let first = plan_default(&state);
    apply_plan(&mut state, 3, &first);
    let high = at_priority(&mut state, 4, 1, "default", 900);
    let epoch = state.job(low).expect("low").shards[0].epoch;
    let before = state.digest();
    let try_with = |state: &mut ClusterState, victims: Vec<(JobId, u32, u64)>, for_job: JobId| {
        apply(
            state,
            5,
            Command::PreemptForShard {
                taskmanager: "a".into(),
                victims,
                for_job,
                shard: 0,
                not_before_ms: NOW_MS,
                now_ms: NOW_MS,
            },
        )
    };
    // The victim's run is no longer the one named; a victim at the preemptor's priority; no
    // victim at all.
    for (victims, for_job) in [
        (vec![(low, 0, epoch + 1)], high),
        (vec![(low, 0, epoch)], low),
        (vec![], high),
    ] {
        let resp = try_with(&mut state, victims, for_job);
        assert!(
            matches!(resp, Response::Rejected(crate::fsm::Rejection::Invalid(ref why)) if why.starts_with("stale preemption")),
            "{resp:?}"
        );
        assert_eq!(state.digest(), before);
    }
    let resp = try_with(&mut state, vec![(low, 0, epoch)], high);
    assert_eq!(resp, Response::ShardsRequeued { count: 1 });
    assert_eq!(
        state.job(high).expect("high").shards[0]
            .taskmanager
            .as_deref(),
        Some("a")
    );
}

/// A one-slot-a-shard job whose runs have a time limit.
fn timed(state: &mut ClusterState, idx: u64, shards: u32, timeout_ms: u64) -> JobId {
    submit_with_request(
        state,
        idx,
        shards,
        JobScheduling::default(),
        crate::domain::ResourceRequest {
            timeout_ms: Some(timeout_ms),
            ..Default::default()
        },
    )
}

/// Report every placed shard of `job` started at `NOW_MS`.
fn start_all(state: &mut ClusterState, idx: &mut u64, job: JobId) {
    let held: Vec<(u32, u64, String)> = state
        .job(job)
        .expect("job")
        .shards
        .iter()
        .filter(|s| s.state == ShardState::Assigned)
        .map(|s| (s.index, s.epoch, s.taskmanager.clone().unwrap_or_default()))
        .collect();
    for (shard, epoch, taskmanager) in held {
        *idx += 1;
        apply(
            state,
            *idx,
            Command::ReportShardStarted {
                taskmanager,
                job_id: job,
                shard,
                epoch,
                now_ms: NOW_MS,
            },
        );
    }
}

/// End shard `shard` of `job` (finished).
fn finish(state: &mut ClusterState, idx: &mut u64, job: JobId, shard: u32) {
    let s = &state.job(job).expect("job").shards[shard as usize];
    let (epoch, taskmanager) = (s.epoch, s.taskmanager.clone().unwrap_or_default());
    *idx += 1;
    let resp = apply(
        state,
        *idx,
        Command::ReportShardEnded {
            taskmanager,
            job_id: job,
            shard,
            epoch,
            outcome: crate::fsm::ShardOutcome::Finished,
            run_ms: 1,
            retry_at_ms: 0,
            now_ms: NOW_MS,
        },
    );
    assert_eq!(resp, Response::ShardReported);
}

#[test]
fn a_gang_holds_the_room_that_frees_against_younger_small_jobs() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm", 4, &[]);
    let busy = submit(&mut state, 2, 4, 1);
    let first = plan_default(&state);
    apply_plan(&mut state, 3, &first);
    let gang = tenant_job(&mut state, 4, 4, "default", true);
    let stream = submit(&mut state, 5, 8, 1);
    let mut idx = 10;
    start_all(&mut state, &mut idx, busy);
    let reservation = crate::scheduler::current_reservation(&state, NOW_MS).expect("reserved");
    assert_eq!(reservation.job, gang);
    assert_eq!(reservation.slots.get("tm"), Some(&4));
    assert_eq!(
        reservation.expected_start_ms, None,
        "the busy runs have no time limit"
    );
    for shard in 0..4 {
        finish(&mut state, &mut idx, busy, shard);
        let placements = plan_default(&state);
        if shard < 3 {
            assert!(
                placements.is_empty(),
                "the younger job took the gang's room: {placements:?}"
            );
        } else {
            assert_eq!(placements.len(), 4, "{placements:?}");
            assert!(placements.iter().all(|p| p.job_id == gang));
        }
    }
    let _ = stream;
}

#[test]
fn a_wide_shard_at_the_head_holds_the_room_that_frees_against_narrower_jobs() {
    // A shard of 2 slots waits first in line on a full 4-slot agent; 1-slot jobs behind it
    // would take each slot as it frees, and it would never find 2 free at once.
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm", 4, &[]);
    let busy = submit(&mut state, 2, 4, 1);
    let first = plan_default(&state);
    apply_plan(&mut state, 3, &first);
    let wide = submit(&mut state, 4, 1, 2);
    let narrow = submit(&mut state, 5, 8, 1);
    let mut idx = 10;
    start_all(&mut state, &mut idx, busy);
    let reservation = crate::scheduler::current_reservation(&state, NOW_MS).expect("reserved");
    assert_eq!(reservation.job, wide);
    assert_eq!(reservation.slots.get("tm"), Some(&2));
    finish(&mut state, &mut idx, busy, 0);
    let placements = plan_default(&state);
    assert!(
        placements.is_empty(),
        "the narrow job took the wide one's room: {placements:?}"
    );
    finish(&mut state, &mut idx, busy, 1);
    let placements = plan_default(&state);
    assert_eq!(placements.len(), 1, "{placements:?}");
    assert_eq!(placements[0].job_id, wide);
    let _ = narrow;
}

#[test]
fn a_job_sure_to_end_before_the_gang_is_due_may_backfill() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm", 4, &[]);
    // Runs of ten minutes at most: the gang is due at NOW + 10 min.
    let busy = timed(&mut state, 2, 4, 600_000);
    let first = plan_default(&state);
    apply_plan(&mut state, 3, &first);
    let gang = tenant_job(&mut state, 4, 4, "default", true);
    let quick = timed(&mut state, 5, 1, 60_000);
    let open_ended = submit(&mut state, 6, 1, 1);
    let mut idx = 10;
    start_all(&mut state, &mut idx, busy);
    let reservation = crate::scheduler::current_reservation(&state, NOW_MS).expect("reserved");
    assert_eq!(reservation.job, gang);
    assert_eq!(reservation.expected_start_ms, Some(NOW_MS + 600_000));
    finish(&mut state, &mut idx, busy, 0);
    let placements = plan_default(&state);
    assert_eq!(placements.len(), 1, "{placements:?}");
    assert_eq!(
        placements[0].job_id, quick,
        "a one-minute job fits before the gang is due"
    );
    let _ = open_ended;
}

#[test]
fn a_preempted_shard_stays_in_its_tenants_count_until_surely_stopped() {
    // "low" may hold one slot and runs one shard on "a"; "high" takes that room by a
    // preemption. Until the victim's agent has surely stopped it, "low" still counts it:
    // its other shard may not start on the free "b" meanwhile, by plan or by stale plan.
    let mut state = ClusterState::default();
    register(&mut state, 1, "a", 1, &[]);
    register(&mut state, 2, "b", 1, &[]);
    set_slots(&mut state, 3, "low", 1);
    let low = at_priority(&mut state, 4, 2, "low", 100);
    let outcome = place(
        &mut state,
        5,
        vec![Placement {
            job_id: low,
            shard: 0,
            taskmanager: "a".into(),
        }],
    );
    assert_eq!(outcome.placed, 1);
    let high = at_priority(&mut state, 6, 1, "high", 900);
    let epoch = state.job(low).expect("low").shards[0].epoch;
    let stopped_by = NOW_MS + 10_000;
    let resp = apply(
        &mut state,
        7,
        Command::PreemptForShard {
            taskmanager: "a".into(),
            victims: vec![(low, 0, epoch)],
            for_job: high,
            shard: 0,
            not_before_ms: stopped_by,
            now_ms: NOW_MS,
        },
    );
    assert_eq!(resp, Response::ShardsRequeued { count: 1 });
    assert_eq!(
        state.tenant_held("low", NOW_MS).0,
        1,
        "the victim still counts"
    );
    let during = plan(
        &state,
        NOW_MS + 1,
        ScoreWeights::default(),
        PlanLimits::default(),
    );
    assert!(during.is_empty(), "low is at its quota: {during:?}");
    let on_b = vec![Placement {
        job_id: low,
        shard: 1,
        taskmanager: "b".into(),
    }];
    let stale = apply(
        &mut state,
        8,
        Command::PlaceShards {
            placements: on_b.clone(),
            now_ms: NOW_MS + 1,
        },
    );
    assert_eq!(
        stale,
        Response::ShardsPlaced(PlacementOutcome {
            placed: 0,
            stale: 1
        })
    );
    // Once it is surely stopped, the count gives it back and one shard of low goes (the
    // victim itself first: it is ready again too, and older by index).
    let after = plan(
        &state,
        stopped_by,
        ScoreWeights::default(),
        PlanLimits::default(),
    );
    assert_eq!(after.len(), 1);
    assert_eq!((after[0].job_id, after[0].taskmanager.as_str()), (low, "b"));
    let placed = apply(
        &mut state,
        9,
        Command::PlaceShards {
            placements: after,
            now_ms: stopped_by,
        },
    );
    assert_eq!(
        placed,
        Response::ShardsPlaced(PlacementOutcome {
            placed: 1,
            stale: 0
        })
    );
    assert!(state.stopping.is_empty(), "the expired hold was pruned");
}

#[test]
fn the_search_takes_the_lowest_priority_victim_even_on_a_later_taskmanager() {
    // "a" comes first by id but runs a priority-200 shard; "b" runs one at 100, the lowest
    // running anywhere. The search may stop early only at a victim of that lowest priority.
    let mut state = ClusterState::default();
    register(&mut state, 1, "a", 1, &[]);
    register(&mut state, 2, "b", 1, &[]);
    let middle = at_priority(&mut state, 3, 1, "default", 200);
    let low = at_priority(&mut state, 4, 1, "default", 100);
    let on = |job: JobId, tm: &str| Placement {
        job_id: job,
        shard: 0,
        taskmanager: tm.into(),
    };
    let outcome = place(&mut state, 5, vec![on(middle, "a"), on(low, "b")]);
    assert_eq!(outcome.placed, 2);
    let high = at_priority(&mut state, 6, 1, "default", 900);
    let (for_job, taskmanager, victims) =
        crate::scheduler::preemption::plan_preemption(&state, NOW_MS).expect("a preemption");
    assert_eq!((for_job, taskmanager.as_str()), (high, "b"));
    assert_eq!(victims.len(), 1);
    assert_eq!(victims[0].0, low);
}

/// A plan into the room ending shards give back: with several tenants waiting, they take
/// turns and quotas bound them as in the loop, with what their ending shards hold left out;
/// a waiting gang's reservation holds as in the loop.
#[test]
fn a_plan_into_freed_room_counts_turns_and_quotas_without_the_ending_shards() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 2, &[]);
    let bob = tenant_job(&mut state, 2, 4, "bob", false);
    let first = plan_default(&state);
    apply_plan(&mut state, 3, &first);
    let mut freed = Freed::default();
    freed.add("tm-a", "bob", 1, None);
    let into = |state: &ClusterState, freed: &Freed| {
        plan_into(
            state,
            NOW_MS,
            ScoreWeights::default(),
            PlanLimits::default(),
            freed,
        )
    };
    assert_eq!(
        into(&state, &freed).len(),
        1,
        "bob alone waits: his next shard"
    );
    assert!(into(&state, &freed).iter().all(|p| p.job_id == bob));

    // Bob holds 3 slots on tm-c, two of them ending; Carol holds 2 on tm-b. Counted as held,
    // Bob's share (3) is above Carol's (2) and the first freed slot would go to her; without
    // his ending shards it is 1, and it goes to him.
    let mut two_tenants = ClusterState::default();
    register(&mut two_tenants, 1, "tm-c", 3, &[]);
    let bob = tenant_job(&mut two_tenants, 2, 5, "bob", false);
    let first = plan_default(&two_tenants);
    apply_plan(&mut two_tenants, 3, &first);
    register(&mut two_tenants, 4, "tm-b", 2, &[]);
    let carol = tenant_job(&mut two_tenants, 5, 4, "carol", false);
    let second = plan_default(&two_tenants);
    assert!(second.iter().all(|p| p.job_id == carol), "{second:?}");
    apply_plan(&mut two_tenants, 6, &second);
    let mut freed_by_bob = Freed::default();
    freed_by_bob.add("tm-c", "bob", 1, None);
    freed_by_bob.add("tm-c", "bob", 1, None);
    let planned = into(&two_tenants, &freed_by_bob);
    assert_eq!(planned.len(), 2, "{planned:?}");
    assert_eq!(planned[0].job_id, bob, "{planned:?}");
    assert!(
        planned.iter().all(|p| p.taskmanager == "tm-c"),
        "{planned:?}"
    );

    // Quotas bound the plan as in the loop, the ending shards left out of what bob holds:
    // at a quota of 2 (he holds 2, one ending) his next shard fits; at 1 it does not. Apply
    // checks the quota again.
    let mut with_a_quota = state.clone();
    set_slots(&mut with_a_quota, 4, "bob", 2);
    let planned = into(&with_a_quota, &freed);
    assert_eq!(planned.len(), 1, "within his quota once his end applies");
    let mut lowered = with_a_quota.clone();
    set_slots(&mut lowered, 5, "bob", 1);
    assert!(
        into(&lowered, &freed).is_empty(),
        "at his quota even after the end"
    );
    // Had the end not applied as counted, apply refuses the placement the quota no longer
    // allows: the shard stays pending for the loop.
    let outcome = place(&mut with_a_quota, 6, planned);
    assert_eq!((outcome.placed, outcome.stale), (0, 1));

    // A waiting gang's reservation holds as in the loop: a job behind the gang does not
    // take the room its first end gives back, and the gang starts whole once both end.
    let mut with_a_gang = ClusterState::default();
    register(&mut with_a_gang, 1, "tm-a", 2, &[]);
    tenant_job(&mut with_a_gang, 2, 2, "bob", false);
    let first = plan_default(&with_a_gang);
    apply_plan(&mut with_a_gang, 3, &first);
    let gang = tenant_job(&mut with_a_gang, 4, 2, "bob", true);
    let behind = tenant_job(&mut with_a_gang, 5, 1, "bob", false);
    assert!(plan_default(&with_a_gang).is_empty(), "tm-a is full");
    let planned = into(&with_a_gang, &freed);
    assert!(
        planned.is_empty(),
        "{behind} is behind the gang: {planned:?}"
    );
    let mut both_end = Freed::default();
    both_end.add("tm-a", "bob", 1, None);
    both_end.add("tm-a", "bob", 1, None);
    let planned = into(&with_a_gang, &both_end);
    assert_eq!(planned.len(), 2, "{planned:?}");
    assert!(planned.iter().all(|p| p.job_id == gang), "{planned:?}");
}
