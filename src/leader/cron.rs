//! The periodic-jobs loop: the leader sleeps until the earliest next time of any schedule
//! (or a change to the schedules), decides each due schedule's turn with `periodic::due`,
//! and proposes it as `CronFired` entries. Apply moves a schedule's mark only from where
//! the state holds it, so a turn this leader decides that a deposed leader also decided
//! (or that is proposed twice) applies once; the loop never needs to know who fired last.
//!
//! After a failover the new leader's first turn finds the marks where the log left them:
//! the times that came during the election are late, not lost, and fire then (on time up
//! to `periodic::ON_TIME_MS`, then per `--catch-up`).

use crate::clock::now_ms;
use crate::domain::{Admission, ClusterState, CronKey};
use crate::fsm::{Command, CronTurn, Response};
use crate::periodic::{due, Schedule};
use crate::raft::{Raft, SharedState};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Look again at least this often, whatever the schedules say (a clock that jumped, a
/// schedule whose expression this release cannot read).
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// After a change to the applied state, wait this long before looking: under load entries
/// apply thousands of times a second, and the schedules change far more rarely.
const SETTLE_AFTER_CHANGE: Duration = Duration::from_millis(20);
/// Pause after a failed proposal before deciding again.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

pub async fn run(raft: Raft, shared: Arc<SharedState>, admission: Admission) {
    let mut applied = shared.subscribe();
    let mut parsed = ParsedSchedules::default();
    loop {
        let now = now_ms();
        // Copied out under the lock, decided after it: a search through a long outage must
        // not hold up apply (the mark check makes a decision from a stale copy harmless).
        let schedules = active(&shared.read().state);
        parsed.keep_only(&schedules);
        let turns = turns(&schedules, now, &mut parsed, admission);
        let wake_at = next_wake(&schedules, &mut parsed);
        let mut failed = false;
        for turn in turns {
            match shared
                .metrics()
                .time_proposal(raft.client_write(turn.command))
                .await
            {
                Ok(written) => match written.data {
                    Response::CronFired { job, skipped } => {
                        tracing::info!(schedule = %turn.name, ?job, ?skipped, "schedule fired")
                    }
                    // Another turn for the same time applied first (this replica had not
                    // applied it when it decided): decide again from the state after it.
                    Response::Rejected(why) => {
                        tracing::debug!(schedule = %turn.name, "turn not applied: {why}");
                        failed = true;
                        break;
                    }
                    _ => {}
                },
                Err(e) => {
                    tracing::warn!(schedule = %turn.name, "proposing a schedule's turn failed: {e}");
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            tokio::time::sleep(RETRY_BACKOFF).await;
            continue;
        }
        let sleep = wake_at
            .map(|at| Duration::from_millis(at.saturating_sub(now_ms())))
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        wait(&mut applied, &shared, sleep).await;
    }
}

/// Sleep for `sleep`, or until the schedules change (a new one may be due sooner).
async fn wait(
    applied: &mut tokio::sync::watch::Receiver<u64>,
    shared: &SharedState,
    sleep: Duration,
) {
    let deadline = tokio::time::Instant::now() + sleep;
    let seen = fingerprint(&shared.read().state);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return,
            changed = applied.changed() => {
                if changed.is_err() {
                    tokio::time::sleep_until(deadline).await;
                    return;
                }
                tokio::time::sleep(SETTLE_AFTER_CHANGE).await;
                if fingerprint(&shared.read().state) != seen {
                    return;
                }
            }
        }
    }
}

/// What changes whenever a schedule is added, changed, suspended, resumed, deleted or
/// fired.
fn fingerprint(state: &ClusterState) -> (usize, u64) {
    let sum = state.cron.schedules.values().fold(0u64, |sum, s| {
        sum.wrapping_add(s.generation)
            .wrapping_add(s.settled_until_ms)
            .wrapping_add(u64::from(s.suspended))
    });
    (state.cron.schedules.len(), sum)
}

/// What the loop needs of an active (not suspended) schedule, copied out of the state.
#[derive(Debug, Clone)]
struct Active {
    key: CronKey,
    generation: u64,
    settled_until_ms: u64,
    expression: String,
    timezone: Option<String>,
    catch_up: crate::periodic::CatchUp,
    starting_deadline_ms: Option<u64>,
}

fn active(state: &ClusterState) -> Vec<Active> {
    state
        .cron
        .schedules
        .iter()
        .filter(|(_, s)| !s.suspended)
        .map(|(key, s)| Active {
            key: key.clone(),
            generation: s.generation,
            settled_until_ms: s.settled_until_ms,
            expression: s.definition.expression.clone(),
            timezone: s.definition.timezone.clone(),
            catch_up: s.definition.catch_up,
            starting_deadline_ms: s.definition.starting_deadline_ms,
        })
        .collect()
}

/// Parsed expressions by schedule, kept while its generation stays (parsing walks croner's
/// grammar; the loop looks many times a minute).
#[derive(Default)]
struct ParsedSchedules(HashMap<CronKey, (u64, Option<Schedule>)>);

impl ParsedSchedules {
    fn get(&mut self, schedule: &Active) -> Option<&Schedule> {
        let key = &schedule.key;
        let fresh = self
            .0
            .get(key)
            .is_some_and(|(generation, _)| *generation == schedule.generation);
        if !fresh {
            let parsed = Schedule::read(&schedule.expression, schedule.timezone.as_deref())
                .inspect_err(|e| {
                    tracing::error!(
                        schedule = %key.1,
                        "a schedule accepted by the cluster does not parse in this release: {e}"
                    )
                })
                .ok();
            self.0.insert(key.clone(), (schedule.generation, parsed));
        }
        self.0.get(key).and_then(|(_, parsed)| parsed.as_ref())
    }

    /// Forget the schedules no longer active (deleted, suspended), so schedules that come
    /// and go do not pile up here.
    fn keep_only(&mut self, schedules: &[Active]) {
        if self.0.len() > schedules.len() {
            let live: std::collections::HashSet<&CronKey> =
                schedules.iter().map(|s| &s.key).collect();
            self.0.retain(|key, _| live.contains(key));
        }
    }
}

/// A proposal, with the schedule it is for (for the log lines).
struct Turn {
    name: String,
    command: Command,
}

/// The entries that settle every due schedule at `now`: per schedule, one entry per fire
/// (each settling up to its time, the last up to where `due` settles) or one that only
/// lets times go. A schedule with nothing due gets none.
fn turns(
    schedules: &[Active],
    now: u64,
    parsed: &mut ParsedSchedules,
    admission: Admission,
) -> Vec<Turn> {
    let mut out = Vec::new();
    for schedule in schedules {
        let Some(parsed) = parsed.get(schedule) else {
            continue;
        };
        let decided = due(
            parsed,
            schedule.settled_until_ms,
            now,
            schedule.catch_up,
            schedule.starting_deadline_ms,
        );
        if decided.fire.is_empty() && decided.skipped.count == 0 {
            // No scheduled time passed: the mark stays, and nothing reaches the log.
            continue;
        }
        let (tenant, name) = &schedule.key;
        let mut from = schedule.settled_until_ms;
        let mut skipped = decided.skipped;
        let fires: Vec<Option<u64>> = if decided.fire.is_empty() {
            vec![None]
        } else {
            decided.fire.iter().copied().map(Some).collect()
        };
        let last = fires.len() - 1;
        for (i, fire) in fires.into_iter().enumerate() {
            let until = match fire {
                Some(time) if i < last => time,
                _ => decided.settled_until_ms,
            };
            out.push(Turn {
                name: name.clone(),
                command: Command::CronFired(CronTurn {
                    tenant: tenant.clone(),
                    name: name.clone(),
                    generation: schedule.generation,
                    from_ms: from,
                    until_ms: until,
                    fire,
                    skipped: std::mem::take(&mut skipped),
                    admission,
                    now_ms: now,
                }),
            });
            from = until;
        }
    }
    out
}

/// When the next scheduled time of any active schedule comes.
fn next_wake(schedules: &[Active], parsed: &mut ParsedSchedules) -> Option<u64> {
    schedules
        .iter()
        .filter_map(|s| parsed.get(s)?.next_after(s.settled_until_ms))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{test_definition, ClusterVersion};
    use crate::fsm::apply;
    use crate::periodic::{CatchUp, Concurrency};

    const SECOND: u64 = 1_000;

    fn state_with(expression: &str, catch_up: CatchUp) -> ClusterState {
        let mut state = ClusterState {
            cluster_version: ClusterVersion(3),
            ..ClusterState::default()
        };
        let mut definition = test_definition("default", Concurrency::Allow);
        definition.expression = expression.into();
        definition.catch_up = catch_up;
        let added = apply(
            &mut state,
            1,
            Command::CronPut {
                tenant: "default".into(),
                name: "every-2s".into(),
                definition,
                now_ms: 0,
            },
        );
        assert_eq!(added, Response::CronPut { created: true });
        state
    }

    /// Decide at `now` and apply what was decided; answers how many jobs it made.
    fn step(state: &mut ClusterState, index: &mut u64, now: u64) -> usize {
        let mut parsed = ParsedSchedules::default();
        let before = state.jobs.len();
        for turn in turns(&active(state), now, &mut parsed, Admission::DEFAULT) {
            *index += 1;
            let response = apply(state, *index, turn.command);
            assert!(
                matches!(response, Response::CronFired { .. }),
                "{response:?}"
            );
        }
        state.jobs.len() - before
    }

    #[test]
    fn one_job_per_time_however_often_the_leader_looks() {
        let mut state = state_with("*/2 * * * * *", CatchUp::Last);
        let mut index = 1;
        let mut made = 0;
        // Looking every 300 ms for 10 s: the five times at 2, 4, 6, 8 and 10 s fire once.
        for now in (0..=10 * SECOND).step_by(300) {
            made += step(&mut state, &mut index, now);
        }
        made += step(&mut state, &mut index, 10 * SECOND + 1);
        assert_eq!(made, 5);
        let mut parsed = ParsedSchedules::default();
        assert_eq!(next_wake(&active(&state), &mut parsed), Some(12 * SECOND));
        let mut times: Vec<u64> = state
            .cron
            .origins
            .values()
            .map(|o| o.scheduled_ms)
            .collect();
        times.sort();
        assert_eq!(times, vec![2_000, 4_000, 6_000, 8_000, 10_000]);
    }

    #[test]
    fn a_turn_decided_twice_applies_once() {
        let mut state = state_with("*/2 * * * * *", CatchUp::Last);
        let mut parsed = ParsedSchedules::default();
        // The deposed leader and the new one decide the same turn from the same mark.
        let first = turns(&active(&state), 2_500, &mut parsed, Admission::DEFAULT);
        let second = turns(&active(&state), 2_700, &mut parsed, Admission::DEFAULT);
        for (i, turn) in first.into_iter().chain(second).enumerate() {
            apply(&mut state, 10 + i as u64, turn.command);
        }
        assert_eq!(state.jobs.len(), 1);
    }

    #[test]
    fn catch_up_all_chains_its_fires_and_nothing_is_left_due() {
        let mut state = state_with("*/2 * * * * *", CatchUp::All);
        let mut index = 1;
        // Down for 20 s: ten missed times, all fired oldest first, in one look.
        assert_eq!(step(&mut state, &mut index, 20 * SECOND + 100), 10);
        assert_eq!(step(&mut state, &mut index, 20 * SECOND + 200), 0);
        let mut state = state_with("*/2 * * * * *", CatchUp::Last);
        let mut index = 1;
        assert_eq!(step(&mut state, &mut index, 20 * SECOND + 100), 1);
        let schedule = state.cron.schedules.values().next().expect("the schedule");
        assert_eq!(schedule.skipped_total, 9);
    }
}
