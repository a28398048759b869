//! Periodic jobs in apply: a turn applies once, fires under the concurrency rule, notes
//! what it let go, and bad input changes nothing.

use super::*;
use crate::domain::Admission;
use crate::fsm::CronTurn;
use crate::periodic::{Concurrency, Skipped};

const MINUTE: u64 = 60_000;

/// A state at cluster version 3 with schedule "tick" (every minute, `concurrency`) added
/// at index 2 and time 0; answers its generation.
fn with_schedule(concurrency: Concurrency) -> (ClusterState, u64) {
    let mut state = ClusterState::default();
    let raised = apply(
        &mut state,
        1,
        Command::SetClusterVersion {
            version: 3,
            now_ms: 0,
        },
    );
    assert_eq!(raised, Response::ClusterVersionSet { version: 3 });
    let added = apply(&mut state, 2, put_cmd("tick", "* * * * *", concurrency));
    assert_eq!(added, Response::CronPut { created: true });
    (state, 2)
}

fn put_cmd(name: &str, expression: &str, concurrency: Concurrency) -> Command {
    let mut definition = crate::domain::test_definition("default", concurrency);
    definition.expression = expression.into();
    definition.template.spec = spec(2, 1);
    definition.template.owner = "client".into();
    Command::CronPut {
        tenant: "default".into(),
        name: name.into(),
        definition,
        now_ms: 0,
    }
}

/// The turn that settles `(from, until]` and fires `fire`.
fn turn(generation: u64, from: u64, until: u64, fire: Option<u64>) -> Command {
    Command::CronFired(CronTurn {
        tenant: "default".into(),
        name: "tick".into(),
        generation,
        from_ms: from,
        until_ms: until,
        fire,
        skipped: Skipped::default(),
        admission: Admission::DEFAULT,
        now_ms: until,
    })
}

fn fired_job(response: Response) -> JobId {
    match response {
        Response::CronFired {
            job: Some(job),
            skipped: None,
        } => job,
        other => panic!("the turn made no job: {other:?}"),
    }
}

fn tick(state: &ClusterState) -> &crate::domain::CronSchedule {
    &state.cron.schedules[&("default".to_string(), "tick".to_string())]
}

#[test]
fn a_turn_fires_once_and_a_second_decision_of_it_changes_nothing() {
    let (mut state, generation) = with_schedule(Concurrency::Allow);
    let job = fired_job(apply(
        &mut state,
        3,
        turn(generation, 0, MINUTE, Some(MINUTE)),
    ));
    assert_eq!(job, JobId(3));
    let made = state.job(job).expect("the fired job");
    assert_eq!(made.spec.env["DISPATCHER_SCHEDULE"], "tick");
    assert_eq!(
        made.spec.env["DISPATCHER_SCHEDULED_TIME"],
        "1970-01-01T00:01:00Z"
    );
    assert_eq!(state.cron.origins[&job].scheduled_ms, MINUTE);
    assert_eq!(tick(&state).settled_until_ms, MINUTE);
    // The deposed leader's copy of the same turn, committed after.
    assert_rejected(&state, 4, turn(generation, 0, MINUTE, Some(MINUTE)), |r| {
        matches!(r, Rejection::StaleCronTurn { .. })
    });
    // A turn for a definition since replaced.
    assert_rejected(
        &state,
        4,
        turn(1, MINUTE, 2 * MINUTE, Some(2 * MINUTE)),
        |r| matches!(r, Rejection::StaleCronTurn { .. }),
    );
}

#[test]
fn forbid_skips_while_the_previous_job_runs_and_says_why() {
    let (mut state, generation) = with_schedule(Concurrency::Forbid);
    let first = fired_job(apply(
        &mut state,
        3,
        turn(generation, 0, MINUTE, Some(MINUTE)),
    ));
    let second = apply(
        &mut state,
        4,
        turn(generation, MINUTE, 2 * MINUTE, Some(2 * MINUTE)),
    );
    let Response::CronFired {
        job: None,
        skipped: Some(why),
    } = second
    else {
        panic!("forbid fired anyway: {second:?}");
    };
    assert!(why.contains(&first.to_string()), "{why}");
    let schedule = tick(&state);
    assert_eq!(schedule.settled_until_ms, 2 * MINUTE, "the time is settled");
    assert_eq!(schedule.skipped_total, 1);
    assert_eq!(state.jobs.len(), 1);
    // `cron run` under forbid is refused, with the job to wait for.
    assert_rejected(
        &state,
        5,
        Command::CronRun {
            tenant: "default".into(),
            name: "tick".into(),
            request_key: "k".into(),
            admission: Admission::DEFAULT,
            now_ms: 2 * MINUTE,
        },
        |r| matches!(r, Rejection::CronStillRunning { job, .. } if *job == first),
    );
    // Once it ended, the next time fires.
    apply(&mut state, 6, cancel_cmd(first));
    fired_job(apply(
        &mut state,
        7,
        turn(generation, 2 * MINUTE, 3 * MINUTE, Some(3 * MINUTE)),
    ));
}

#[test]
fn replace_cancels_the_previous_job_and_allow_runs_both() {
    let (mut state, generation) = with_schedule(Concurrency::Replace);
    let first = fired_job(apply(
        &mut state,
        3,
        turn(generation, 0, MINUTE, Some(MINUTE)),
    ));
    let second = fired_job(apply(
        &mut state,
        4,
        turn(generation, MINUTE, 2 * MINUTE, Some(2 * MINUTE)),
    ));
    assert_eq!(state.job(first).map(|j| j.state), Some(JobState::Cancelled));
    assert_eq!(state.job(second).map(|j| j.state), Some(JobState::Pending));

    let (mut state, generation) = with_schedule(Concurrency::Allow);
    let first = fired_job(apply(
        &mut state,
        3,
        turn(generation, 0, MINUTE, Some(MINUTE)),
    ));
    fired_job(apply(
        &mut state,
        4,
        turn(generation, MINUTE, 2 * MINUTE, Some(2 * MINUTE)),
    ));
    assert_eq!(state.job(first).map(|j| j.state), Some(JobState::Pending));
}

#[test]
fn missed_times_are_noted_and_a_refused_job_still_settles_its_time() {
    let (mut state, generation) = with_schedule(Concurrency::Allow);
    let mut missed = turn(generation, 0, 10 * MINUTE, Some(10 * MINUTE));
    if let Command::CronFired(CronTurn {
        skipped, admission, ..
    }) = &mut missed
    {
        *skipped = Skipped {
            count: 9,
            at_least: false,
            first_ms: Some(MINUTE),
            last_ms: Some(9 * MINUTE),
        };
        // No room for two more shards: the job is refused, the time settled all the same.
        admission.max_pending_shards = 1;
    }
    let response = apply(&mut state, 3, missed);
    assert!(
        matches!(&response, Response::CronFired { job: None, skipped: Some(why) } if why.contains("refused")),
        "{response:?}"
    );
    let schedule = tick(&state);
    assert_eq!(schedule.settled_until_ms, 10 * MINUTE);
    assert_eq!(schedule.skipped_total, 10);
    assert!(state.jobs.is_empty());
}

#[test]
fn cron_run_is_idempotent_by_its_request_key() {
    let (mut state, _) = with_schedule(Concurrency::Allow);
    let run = || Command::CronRun {
        tenant: "default".into(),
        name: "tick".into(),
        request_key: "req-1".into(),
        admission: Admission::DEFAULT,
        now_ms: 5_000,
    };
    let first = apply(&mut state, 3, run());
    assert_eq!(
        first,
        Response::JobSubmitted {
            job_id: JobId(3),
            created: true
        }
    );
    assert_eq!(
        apply(&mut state, 4, run()),
        Response::JobSubmitted {
            job_id: JobId(3),
            created: false
        }
    );
    assert_eq!(tick(&state).settled_until_ms, 0, "a run moves no mark");
}

#[test]
fn bad_schedules_and_turns_change_nothing() {
    let (state, generation) = with_schedule(Concurrency::Allow);
    assert_rejected(
        &state,
        3,
        turn(generation, 0, MINUTE, Some(2 * MINUTE)),
        |r| matches!(r, Rejection::Invalid(_)),
    );
    let mut unknown = turn(generation, 0, MINUTE, None);
    if let Command::CronFired(CronTurn { name, .. }) = &mut unknown {
        *name = "nope".into();
    }
    assert_rejected(&state, 3, unknown, |r| {
        matches!(r, Rejection::UnknownSchedule { .. })
    });
    let mut too_long = put_cmd("other", "* * * * *", Concurrency::Allow);
    if let Command::CronPut { definition, .. } = &mut too_long {
        definition.expression = "*".repeat(300);
    }
    assert_rejected(&state, 3, too_long, |r| matches!(r, Rejection::Invalid(_)));
    let mut elsewhere = put_cmd("other", "* * * * *", Concurrency::Allow);
    if let Command::CronPut { tenant, .. } = &mut elsewhere {
        *tenant = "team".into();
    }
    assert_rejected(&state, 3, elsewhere, |r| matches!(r, Rejection::Invalid(_)));
    let mut below = ClusterState::default();
    assert_rejected(
        &below,
        1,
        put_cmd("tick", "* * * * *", Concurrency::Allow),
        |r| matches!(r, Rejection::NeedsClusterVersion { needed: 3, .. }),
    );
    below.cluster_version = crate::domain::ClusterVersion(3);
    let mut full = below.clone();
    for i in 0..crate::domain::MAX_SCHEDULES_PER_TENANT {
        let added = apply(
            &mut full,
            i as u64 + 1,
            put_cmd(&format!("s{i}"), "* * * * *", Concurrency::Allow),
        );
        assert_eq!(added, Response::CronPut { created: true });
    }
    assert_rejected(
        &full,
        1_000,
        put_cmd("one-more", "* * * * *", Concurrency::Allow),
        |r| matches!(r, Rejection::TooManySchedules(_)),
    );
}

#[test]
fn suspended_schedules_take_no_turn_and_resume_from_now() {
    let (mut state, generation) = with_schedule(Concurrency::Allow);
    let suspend = |suspended: bool, now_ms: u64| Command::CronSetSuspended {
        tenant: "default".into(),
        name: "tick".into(),
        suspended,
        now_ms,
    };
    apply(&mut state, 3, suspend(true, MINUTE));
    assert_rejected(&state, 4, turn(generation, 0, MINUTE, Some(MINUTE)), |r| {
        matches!(r, Rejection::StaleCronTurn { .. })
    });
    apply(&mut state, 4, suspend(false, 10 * MINUTE));
    assert_eq!(tick(&state).settled_until_ms, 10 * MINUTE);
}

#[test]
fn a_new_definition_never_moves_the_mark_back() {
    let (mut state, generation) = with_schedule(Concurrency::Allow);
    fired_job(apply(
        &mut state,
        3,
        turn(generation, 0, 2 * MINUTE, Some(2 * MINUTE)),
    ));
    // Stamped before the leader fired that time, applied after it.
    let mut late = put_cmd("tick", "*/2 * * * *", Concurrency::Allow);
    if let Command::CronPut { now_ms, .. } = &mut late {
        *now_ms = MINUTE;
    }
    assert_eq!(
        apply(&mut state, 4, late),
        Response::CronPut { created: false }
    );
    let schedule = tick(&state);
    assert_eq!(schedule.generation, 4);
    assert_eq!(
        schedule.settled_until_ms,
        2 * MINUTE,
        "the fired time stays settled"
    );
}
