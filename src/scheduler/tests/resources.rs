//! Placement by resources: every dimension fits on every TaskManager (in the plan and again
//! in apply), R follows the tightest dimension, isolation is honoured, tenants' resource
//! limits hold, and fair share evens out dominant shares. States are built from real
//! commands; plans are applied back.

use super::*;
use crate::domain::{Isolation, JobScheduling, ResourceRequest, Resources, TaskManagerResources};
use crate::fsm::{ResourceLimits, SlotLimit};
use proptest::prelude::*;

const GIB_FOR_TESTS: u64 = 1 << 30;

fn amounts(cpu_millis: u64, memory_bytes: u64, named: &[(&str, u64)]) -> Resources {
    Resources {
        cpu_millis,
        memory_bytes,
        named: named.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
    }
}

fn register_with(
    state: &mut ClusterState,
    idx: u64,
    id: &str,
    slots: u32,
    capacity: Resources,
    isolation: Isolation,
) {
    let resp = apply(
        state,
        idx,
        Command::RegisterTaskManagerWithResources {
            incarnation: 0,
            successor_of: None,
            replaces: None,
            id: id.to_string(),
            addr: "127.0.0.1:7001".to_string(),
            slots,
            labels: Labels::new(),
            resources: TaskManagerResources {
                capacity,
                isolation,
                isolation_missing: String::new(),
            },
            now_ms: idx,
        },
    );
    assert!(
        matches!(resp, Response::TaskManagerRegistered { .. }),
        "{resp:?}"
    );
}

fn submit_asking(
    state: &mut ClusterState,
    idx: u64,
    shards: u32,
    tenant: &str,
    per_shard: Resources,
    isolation_full: bool,
) -> JobId {
    submit_with_request(
        state,
        idx,
        shards,
        JobScheduling {
            tenant: tenant.to_string(),
            ..Default::default()
        },
        ResourceRequest {
            per_shard,
            isolation_full,
            timeout_ms: None,
        },
    )
}

/// Every TaskManager's held resources within its capacity, and equal to what its shards ask.
fn assert_within_capacity(state: &ClusterState) {
    for tm in state.taskmanagers.values() {
        let mut held = Resources::default();
        for (job, _) in state.assignments(&tm.id) {
            if let Some(asked) = state.asked_resources(job.id) {
                held.add_times(asked, 1);
            }
        }
        let used = state.tm_used.get(&tm.id).cloned().unwrap_or_default();
        assert_eq!(used, held, "{}'s counted use", tm.id);
        let capacity = state.capacity(&tm.id);
        assert!(
            held.over(&Resources::default(), &capacity).is_empty(),
            "{} holds {held} of {capacity}",
            tm.id
        );
        assert!(tm.used_slots <= tm.slots);
    }
}

#[test]
fn shards_fit_every_dimension_and_wait_when_one_is_full() {
    let mut state = ClusterState::default();
    // Many slots, little memory, two GPUs.
    register_with(
        &mut state,
        1,
        "gpu-box",
        16,
        amounts(8000, 4 * GIB_FOR_TESTS, &[("gpu", 2)]),
        Isolation::Full,
    );
    let gpu_job = submit_asking(
        &mut state,
        2,
        3,
        "default",
        amounts(1000, 0, &[("gpu", 1)]),
        false,
    );
    let memory_job = submit_asking(
        &mut state,
        3,
        6,
        "default",
        amounts(0, GIB_FOR_TESTS, &[]),
        false,
    );
    let placements = plan_default(&state);
    let count = |job: JobId| placements.iter().filter(|p| p.job_id == job).count();
    assert_eq!(count(gpu_job), 2, "two GPUs: two shards");
    assert_eq!(count(memory_job), 4, "4 GiB: four shards of 1 GiB");
    apply_plan(&mut state, 10, &placements);
    assert_within_capacity(&state);
    assert!(plan_default(&state).is_empty(), "nothing more fits");
    let reason = crate::scheduler::waiting_reason(&state, state.job(gpu_job).expect("job"), NOW_MS)
        .expect("a reason");
    assert!(reason.contains("needs cpu=1,gpu=1 per shard"), "{reason}");
    // Apply refuses a stale plan that would go over: a third GPU shard.
    let over = Placement {
        job_id: gpu_job,
        shard: 2,
        taskmanager: "gpu-box".into(),
    };
    let resp = apply(
        &mut state,
        11,
        Command::PlaceShards {
            placements: vec![over],
            now_ms: 11,
        },
    );
    assert_eq!(
        resp,
        Response::ShardsPlaced(PlacementOutcome {
            placed: 0,
            stale: 1
        })
    );
    assert_within_capacity(&state);
}

#[test]
fn a_job_that_asks_full_isolation_goes_only_where_it_is_full() {
    let mut state = ClusterState::default();
    register_with(
        &mut state,
        1,
        "a-open",
        8,
        amounts(8000, 8 * GIB_FOR_TESTS, &[]),
        Isolation::None,
    );
    register_with(
        &mut state,
        2,
        "b-part",
        8,
        amounts(8000, 8 * GIB_FOR_TESTS, &[]),
        Isolation::Partial,
    );
    let job = submit_asking(&mut state, 3, 2, "default", Resources::default(), true);
    assert!(plan_default(&state).is_empty());
    let reason = crate::scheduler::waiting_reason(&state, state.job(job).expect("job"), NOW_MS)
        .expect("a reason");
    assert!(
        reason.contains("needs full isolation") && reason.contains("a-open: none"),
        "{reason}"
    );
    register_with(
        &mut state,
        4,
        "c-full",
        8,
        amounts(8000, 8 * GIB_FOR_TESTS, &[]),
        Isolation::Full,
    );
    let placements = plan_default(&state);
    assert_eq!(tms(&placements), vec!["c-full", "c-full"]);
    apply_plan(&mut state, 5, &placements);
    // An old agent re-registering without resources loses its declared level.
    register(&mut state, 6, "c-full", 8, &[]);
    assert_eq!(state.isolation("c-full"), Isolation::None);
}

#[test]
fn r_follows_the_tightest_dimension() {
    let mut state = ClusterState::default();
    // Same slots; "a" has little memory left after a shard, "b" plenty.
    register_with(
        &mut state,
        1,
        "a",
        8,
        amounts(8000, 2 * GIB_FOR_TESTS, &[]),
        Isolation::Full,
    );
    register_with(
        &mut state,
        2,
        "b",
        8,
        amounts(8000, 16 * GIB_FOR_TESTS, &[]),
        Isolation::Full,
    );
    submit_asking(
        &mut state,
        3,
        1,
        "default",
        amounts(0, GIB_FOR_TESTS, &[]),
        false,
    );
    assert_eq!(tms(&plan_default(&state)), vec!["b"]);
}

#[test]
fn a_tenants_resource_limit_holds() {
    let mut state = ClusterState::default();
    register_with(
        &mut state,
        1,
        "tm",
        32,
        amounts(32_000, 64 * GIB_FOR_TESTS, &[("gpu", 8)]),
        Isolation::Full,
    );
    let resp = apply(
        &mut state,
        2,
        Command::SetQuotaWithResources {
            tenant: "team".into(),
            slots: SlotLimit::Keep,
            weight: None,
            max_priority: None,
            resources: ResourceLimits {
                clear: false,
                set: amounts(3000, 0, &[("gpu", 2)]),
            },
            now_ms: 2,
        },
    );
    assert!(matches!(resp, Response::QuotaSet { .. }), "{resp:?}");
    let job = submit_asking(&mut state, 3, 10, "team", amounts(1000, 0, &[]), false);
    let gpu = submit_asking(
        &mut state,
        4,
        10,
        "team",
        amounts(0, 0, &[("gpu", 1)]),
        false,
    );
    let placements = plan_default(&state);
    let count = |j: JobId| placements.iter().filter(|p| p.job_id == j).count();
    assert_eq!(count(job), 3, "3 cores of limit, 1 per shard");
    assert_eq!(count(gpu), 2, "2 GPUs of limit");
    apply_plan(&mut state, 5, &placements);
    assert!(plan_default(&state).is_empty());
    let reason = crate::scheduler::waiting_reason(&state, state.job(job).expect("job"), NOW_MS)
        .expect("reason");
    assert!(
        reason.contains("tenant 'team'") && reason.contains("cpu"),
        "{reason}"
    );
    // Clearing the limits lets the rest in.
    apply(
        &mut state,
        6,
        Command::SetQuotaWithResources {
            tenant: "team".into(),
            slots: SlotLimit::Unlimited,
            weight: None,
            max_priority: None,
            resources: ResourceLimits {
                clear: true,
                set: Resources::default(),
            },
            now_ms: 6,
        },
    );
    assert!(state.resource_quotas.is_empty());
    assert_eq!(
        plan_default(&state).len(),
        7 + 6,
        "7 CPU shards, 6 more GPUs"
    );
}

#[test]
fn dominant_shares_even_out_between_a_cpu_tenant_and_a_memory_tenant() {
    // The example of the DRF paper: 9 cores and 18 GiB; "a" asks <1 core, 4 GiB> per shard
    // (memory-heavy), "b" <3 cores, 1 GiB> (CPU-heavy). DRF gives a 3 shards and b 2, both
    // at a dominant share of 2/3. Slots are plentiful.
    let mut state = ClusterState::default();
    register_with(
        &mut state,
        1,
        "tm",
        100,
        amounts(9_000, 18 * GIB_FOR_TESTS, &[]),
        Isolation::Full,
    );
    let a = submit_asking(
        &mut state,
        2,
        50,
        "a",
        amounts(1000, 4 * GIB_FOR_TESTS, &[]),
        false,
    );
    let b = submit_asking(
        &mut state,
        3,
        50,
        "b",
        amounts(3000, GIB_FOR_TESTS, &[]),
        false,
    );
    let placements = plan_default(&state);
    let count = |j: JobId| placements.iter().filter(|p| p.job_id == j).count();
    assert_eq!((count(a), count(b)), (3, 2), "{placements:?}");
    apply_plan(&mut state, 4, &placements);
    assert_within_capacity(&state);
    // Slots alone would have given the first tenant in turn order more: by count, b's
    // shards cost as much as a's.
}

#[test]
fn resources_survive_a_snapshot_and_a_format_8_state_still_reads() {
    let mut state = ClusterState::default();
    register_with(
        &mut state,
        1,
        "tm",
        4,
        amounts(4000, GIB_FOR_TESTS, &[("gpu", 1)]),
        Isolation::Full,
    );
    submit_asking(&mut state, 2, 2, "t", amounts(500, 0, &[("gpu", 1)]), true);
    let placements = plan_default(&state);
    apply_plan(&mut state, 3, &placements);
    let back = ClusterState::decode(&state.encode()).expect("decodes");
    assert_eq!(back, state);
    assert_eq!(back.tm_used, state.tm_used);
    assert_eq!(back.tenant_resources, state.tenant_resources);
    assert!(!back.tm_used.is_empty());
    // Format 8 wrote the same sections without the three resource maps and the stopping
    // holds at the end, format 9 without the holds (each empty map is one zero byte): a
    // state without resources or holds reads back from both.
    let mut plain = ClusterState::default();
    register(&mut plain, 1, "tm", 4, &[]);
    submit(&mut plain, 2, 2, 1);
    let bytes = plain.encode();
    assert_eq!(&bytes[bytes.len() - 4..], &[0, 0, 0, 0]);
    let v8 = ClusterState::decode_v8(&bytes[..bytes.len() - 4]).expect("format 8 reads");
    assert_eq!(v8, plain);
    let v9 = ClusterState::decode_v9(&bytes[..bytes.len() - 1]).expect("format 9 reads");
    assert_eq!(v9, plain);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever TaskManagers and requests, no plan (applied round after round, with shards
    /// ending between) takes any TaskManager over any dimension.
    #[test]
    fn no_plan_ever_goes_over_any_dimension(
        hosts in proptest::collection::vec((1u32..8, 1u64..8, 1u64..8, 0u64..3), 1..5),
        jobs in proptest::collection::vec((1u32..6, 0u64..3, 0u64..3, 0u64..2, any::<bool>()), 1..6),
    ) {
        let mut state = ClusterState::default();
        let mut idx = 1;
        for (i, (slots, cores, gib, gpus)) in hosts.iter().enumerate() {
            let named: Vec<(&str, u64)> = if *gpus > 0 { vec![("gpu", *gpus)] } else { vec![] };
            register_with(&mut state, idx, &format!("tm-{i}"), *slots, amounts(cores * 1000, gib * GIB_FOR_TESTS, &named),
                if i % 2 == 0 { Isolation::Full } else { Isolation::None });
            idx += 1;
        }
        for (shards, cores, gib, gpus, full) in &jobs {
            let named: Vec<(&str, u64)> = if *gpus > 0 { vec![("gpu", *gpus)] } else { vec![] };
            let tenant = if *full { "a" } else { "b" };
            submit_asking(&mut state, idx, *shards, tenant, amounts(cores * 500, gib * GIB_FOR_TESTS / 2, &named), *full);
            idx += 1;
        }
        for _round in 0..4 {
            let placements = plan_default(&state);
            for p in &placements {
                if state.needs_full_isolation(p.job_id) {
                    prop_assert_eq!(state.isolation(&p.taskmanager), Isolation::Full);
                }
            }
            apply_plan(&mut state, idx, &placements);
            idx += 1;
            assert_within_capacity(&state);
            // The first running shard of each job ends, freeing its share.
            let held: Vec<(JobId, u32, u64, String)> = state
                .taskmanagers
                .keys()
                .flat_map(|tm| state.assignments(tm).map(move |(job, shard)| (job.id, shard.index, shard.epoch, tm.clone())))
                .take(2)
                .collect();
            for (job_id, shard, epoch, tm) in held {
                apply(&mut state, idx, Command::ReportShardEnded {
                    taskmanager: tm, job_id, shard, epoch,
                    outcome: crate::fsm::ShardOutcome::Finished, run_ms: 1, retry_at_ms: 0, now_ms: idx,
                });
                idx += 1;
            }
            assert_within_capacity(&state);
        }
    }
}
