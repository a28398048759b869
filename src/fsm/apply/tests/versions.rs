//! The cluster version: kinds above it refused at apply, raising and lowering, undrain.

use super::*;
use crate::domain::ClusterVersion;

fn set_version(version: u32) -> Command {
    Command::SetClusterVersion {
        version,
        now_ms: 5_000,
    }
}

fn undrain_cmd(id: &str) -> Command {
    Command::UndrainTaskManager {
        id: id.to_string(),
        now_ms: 6_000,
    }
}

#[test]
fn a_kind_above_the_cluster_version_changes_nothing() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 4, &[]);
    apply(&mut state, 2, drain_cmd("tm-a"));
    assert_eq!(state.cluster_version, ClusterVersion::FIRST);
    assert_rejected(&state, 3, undrain_cmd("tm-a"), |r| {
        *r == Rejection::NeedsClusterVersion {
            needed: 2,
            current: 1,
        }
    });
}

#[test]
fn raising_the_version_lets_its_kinds_in_and_undrain_takes_placements_again() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 4, &[]);
    apply(&mut state, 2, drain_cmd("tm-a"));
    assert_eq!(
        apply(&mut state, 3, set_version(2)),
        Response::ClusterVersionSet { version: 2 }
    );
    assert_eq!(state.cluster_version, ClusterVersion(2));
    assert_eq!(
        apply(&mut state, 4, undrain_cmd("tm-a")),
        Response::TaskManagerUndrained {
            id: "tm-a".to_string()
        }
    );
    let tm = state.taskmanager("tm-a").expect("known");
    assert_eq!(tm.state, TaskManagerState::Alive);
    assert_eq!(tm.drain_deadline_ms, None);
    assert!(tm.accepts_placements(7_000));
    let job = submit(&mut state, 5, 1, 1);
    assert_eq!(
        place(&mut state, 6, vec![placement(job, 0, "tm-a")]),
        outcome(1, 0)
    );
    // Undrain is idempotent, and an unknown id is named.
    assert_eq!(
        apply(&mut state, 7, undrain_cmd("tm-a")),
        Response::TaskManagerUndrained {
            id: "tm-a".to_string()
        }
    );
    assert_rejected(&state, 8, undrain_cmd("nope"), |r| {
        *r == Rejection::UnknownTaskManager("nope".to_string())
    });
}

#[test]
fn a_lost_taskmanager_undrained_comes_back_alive() {
    let mut state = ClusterState::default();
    let epoch = register(&mut state, 1, "tm-a", 4, &[]);
    apply(&mut state, 2, drain_cmd("tm-a"));
    apply(
        &mut state,
        3,
        Command::MarkTaskManagerLost {
            id: "tm-a".into(),
            registration_epoch: epoch,
            now_ms: 5_000,
        },
    );
    apply(&mut state, 4, set_version(2));
    apply(&mut state, 5, undrain_cmd("tm-a"));
    assert_eq!(
        state.taskmanager("tm-a").expect("known").state,
        TaskManagerState::Lost
    );
    register(&mut state, 6, "tm-a", 4, &[]);
    assert_eq!(
        state.taskmanager("tm-a").expect("known").state,
        TaskManagerState::Alive
    );
}

#[test]
fn lowering_the_version_takes_the_newer_kinds_away_again() {
    let mut state = ClusterState::default();
    register(&mut state, 1, "tm-a", 4, &[]);
    apply(&mut state, 2, set_version(2));
    assert_eq!(
        apply(&mut state, 3, set_version(1)),
        Response::ClusterVersionSet { version: 1 }
    );
    assert_eq!(state.cluster_version, ClusterVersion::FIRST);
    assert_rejected(&state, 4, undrain_cmd("tm-a"), |r| {
        matches!(r, Rejection::NeedsClusterVersion { needed: 2, .. })
    });
    assert_rejected(&state, 5, set_version(0), |r| {
        matches!(r, Rejection::Invalid(_))
    });
}

fn pin_resources(id: &str, named: &[(&str, u64)], cpu_millis: Option<u64>) -> Command {
    Command::PinTaskManagerWithResources {
        id: id.to_string(),
        labels: Labels::new(),
        slots: Some(2),
        resources: crate::domain::ResourcePin {
            cpu_millis,
            memory_bytes: None,
            named: named.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        },
        now_ms: 7_000,
    }
}

#[test]
fn a_resource_pin_needs_version_4_replaces_the_whole_pin_and_holds_a_downgrade_back() {
    let mut state = ClusterState::default();
    apply(&mut state, 1, set_version(3));
    assert_rejected(&state, 2, pin_resources("tm-a", &[("gpu", 2)], None), |r| {
        *r == Rejection::NeedsClusterVersion {
            needed: 4,
            current: 3,
        }
    });
    apply(&mut state, 2, set_version(4));
    apply(
        &mut state,
        3,
        pin_resources("tm-a", &[("gpu", 2)], Some(8_000)),
    );
    assert_eq!(state.resource_pins["tm-a"].named["gpu"], 2);
    assert_eq!(state.pins["tm-a"].slots, Some(2));
    // Out of bounds or badly named: refused, nothing changes.
    let before = state.clone();
    assert_rejected(
        &state,
        4,
        pin_resources("tm-a", &[("GPU!", 1)], None),
        |r| matches!(r, Rejection::Invalid(_)),
    );
    assert_rejected(&state, 4, pin_resources("tm-a", &[("gpu", 0)], None), |r| {
        matches!(r, Rejection::Invalid(_))
    });
    assert_eq!(state, before);
    // A downgrade waits until the resource pin is taken back, by a pin without resources.
    let refused = apply(&mut state, 4, set_version(3));
    assert!(
        matches!(&refused, Response::Rejected(r) if r.to_string().contains("resource pins")),
        "{refused:?}"
    );
    apply(&mut state, 5, pin_resources("tm-a", &[], None));
    assert!(state.resource_pins.is_empty());
    assert_eq!(
        state.pins["tm-a"].slots,
        Some(2),
        "labels and slots stay pinned"
    );
    assert_eq!(
        apply(&mut state, 6, set_version(3)),
        Response::ClusterVersionSet { version: 3 }
    );
}
