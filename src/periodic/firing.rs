//! Which of a schedule's times to fire now, which to let go, and what to do with a previous
//! job still running: the rules the leader applies on each turn, from the schedule's mark in
//! the replicated state (every time up to it is settled: fired or skipped) and a time it
//! stamps. Each fire becomes a job keyed by (schedule, scheduled time), so deciding twice
//! never makes two jobs; this module only decides.
//!
//! - A time is **on time** when it is at most `ON_TIME_MS` old; older, it was **missed** (the
//!   cluster was down or had no leader when it came).
//! - `--starting-deadline`: a time older than that is never fired, on time or not.
//! - `--catch-up none` fires on-time times only; `last` (the default) fires the newest due
//!   time only, so an outage costs at most one job; `all` fires every due time, oldest first,
//!   at most `MAX_CATCH_UP_ALL` of the newest missed (Kubernetes stops at 100 too), and at most
//!   `MAX_FIRES_PER_TURN` a turn (the rest stay due for the next turn).
//!
//! Pure: no clock, no I/O.

use super::schedule::Schedule;
use serde::{Deserialize, Serialize};

/// A scheduled time at most this old when the leader looks is on time, not missed: a
/// leader change or a busy turn makes it late, not lost.
pub const ON_TIME_MS: u64 = 5_000;
/// Most jobs one schedule makes in one turn.
pub const MAX_FIRES_PER_TURN: usize = 16;
/// Most missed times `--catch-up all` fires after an outage (the newest ones).
pub const MAX_CATCH_UP_ALL: usize = 100;
/// Skipped times are counted up to this many ("at least" beyond).
pub const MAX_COUNTED_SKIPS: usize = 10_000;

/// What to do about times missed while the cluster could not fire them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CatchUp {
    None,
    #[default]
    Last,
    All,
}

/// What to do when a time comes while the schedule's previous job still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Concurrency {
    #[default]
    Allow,
    Forbid,
    Replace,
}

/// Times let go in one turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Skipped {
    /// How many (at most `MAX_COUNTED_SKIPS`; see `at_least`).
    pub count: u64,
    /// The count stopped at `MAX_COUNTED_SKIPS`: there were at least that many.
    pub at_least: bool,
    pub first_ms: Option<u64>,
    pub last_ms: Option<u64>,
}

/// One turn's decision for one schedule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Due {
    /// Scheduled times to fire, oldest first.
    pub fire: Vec<u64>,
    /// Times up to `settled_until_ms` that were not fired.
    pub skipped: Skipped,
    /// The schedule's new mark: every time up to it is fired or skipped.
    pub settled_until_ms: u64,
}

/// Decide a turn at `now_ms` for a schedule settled up to `settled_ms`.
pub fn due(
    schedule: &Schedule,
    settled_ms: u64,
    now_ms: u64,
    catch_up: CatchUp,
    starting_deadline_ms: Option<u64>,
) -> Due {
    if now_ms <= settled_ms {
        return Due {
            settled_until_ms: settled_ms,
            ..Due::default()
        };
    }
    // Nothing at or before `lower` may fire (a time exactly `ON_TIME_MS` old, or exactly
    // at the deadline, still may).
    let mut lower = settled_ms;
    if catch_up == CatchUp::None {
        lower = lower.max(now_ms.saturating_sub(ON_TIME_MS + 1));
    }
    if let Some(deadline) = starting_deadline_ms {
        lower = lower.max(now_ms.saturating_sub(deadline.saturating_add(1)));
    }
    let candidates = match catch_up {
        CatchUp::Last => newest_times(schedule, lower, now_ms, 1),
        CatchUp::None => schedule.times_between(lower, now_ms, MAX_FIRES_PER_TURN + 1),
        CatchUp::All => newest_times(schedule, lower, now_ms, MAX_CATCH_UP_ALL),
    };
    let more_than_a_turn = candidates.len() > MAX_FIRES_PER_TURN;
    let fire: Vec<u64> = candidates.into_iter().take(MAX_FIRES_PER_TURN).collect();
    // With more due than a turn fires, the rest stay due: the mark stops at the last fired.
    let settled_until_ms = match fire.last() {
        Some(last) if more_than_a_turn => *last,
        _ => now_ms,
    };
    let skipped = count_skipped(schedule, settled_ms, settled_until_ms, &fire);
    Due {
        fire,
        skipped,
        settled_until_ms,
    }
}

/// The newest `most` scheduled times in `(lower, upper]`, oldest first.
fn newest_times(schedule: &Schedule, lower: u64, upper: u64, most: usize) -> Vec<u64> {
    let mut times: Vec<u64> = schedule
        .times_back_from(upper)
        .take_while(|t| *t > lower)
        .take(most)
        .collect();
    times.reverse();
    times
}

/// The scheduled times in `(from, until]` that are not in `fired`.
fn count_skipped(schedule: &Schedule, from: u64, until: u64, fired: &[u64]) -> Skipped {
    let mut skipped = Skipped::default();
    let unfired = schedule
        .times_after(from)
        .take_while(|t| *t <= until)
        .filter(|t| !fired.contains(t));
    for t in unfired {
        if skipped.count == MAX_COUNTED_SKIPS as u64 {
            skipped.at_least = true;
            // The newest skipped time is the one just before the first fired, or `until`'s.
            skipped.last_ms = newest_unfired(schedule, from, until, fired).or(skipped.last_ms);
            break;
        }
        skipped.count += 1;
        skipped.first_ms.get_or_insert(t);
        skipped.last_ms = Some(t);
    }
    skipped
}

fn newest_unfired(schedule: &Schedule, from: u64, until: u64, fired: &[u64]) -> Option<u64> {
    schedule
        .times_back_from(until)
        .take_while(|t| *t > from)
        .find(|t| !fired.contains(t))
}

/// What a fire does, given whether the schedule's previous job still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireAction {
    /// Submit the new job.
    Submit,
    /// Skip this time: the previous job still runs (`forbid`).
    SkipWhileRunning,
    /// Cancel the previous job, then submit the new one (`replace`).
    ReplacePrevious,
}

pub fn on_fire(concurrency: Concurrency, previous_running: bool) -> FireAction {
    match (concurrency, previous_running) {
        (_, false) | (Concurrency::Allow, true) => FireAction::Submit,
        (Concurrency::Forbid, true) => FireAction::SkipWhileRunning,
        (Concurrency::Replace, true) => FireAction::ReplacePrevious,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000;
    /// 2026-01-01T00:00:00Z.
    const T0: u64 = 1_767_225_600_000;

    fn every_minute() -> Schedule {
        Schedule::parse("* * * * *", None, T0).expect("parses")
    }

    #[test]
    fn an_on_time_turn_fires_the_time_that_came_under_every_policy() {
        for catch_up in [CatchUp::None, CatchUp::Last, CatchUp::All] {
            let d = due(&every_minute(), T0, T0 + MINUTE + 300, catch_up, None);
            assert_eq!(d.fire, vec![T0 + MINUTE], "{catch_up:?}");
            assert_eq!(d.skipped.count, 0);
            assert_eq!(d.settled_until_ms, T0 + MINUTE + 300);
        }
        // Nothing new: nothing to do, and asking again changes nothing.
        let d = due(
            &every_minute(),
            T0 + MINUTE + 300,
            T0 + MINUTE + 900,
            CatchUp::Last,
            None,
        );
        assert!(d.fire.is_empty());
        assert_eq!(d.skipped, Skipped::default());
        let d = due(
            &every_minute(),
            T0 + 5 * MINUTE,
            T0 + MINUTE,
            CatchUp::All,
            None,
        );
        assert_eq!(d.settled_until_ms, T0 + 5 * MINUTE);
    }

    #[test]
    fn after_an_outage_last_fires_one_none_fires_none_all_fires_each() {
        // Down from T0 to T0 + 10 min + 30 s: the times at +1 .. +10 min were missed.
        let now = T0 + 10 * MINUTE + 30_000;
        let last = due(&every_minute(), T0, now, CatchUp::Last, None);
        assert_eq!(last.fire, vec![T0 + 10 * MINUTE]);
        assert_eq!(last.skipped.count, 9);
        assert_eq!(last.skipped.first_ms, Some(T0 + MINUTE));
        assert_eq!(last.skipped.last_ms, Some(T0 + 9 * MINUTE));

        let none = due(&every_minute(), T0, now, CatchUp::None, None);
        assert!(none.fire.is_empty());
        assert_eq!(none.skipped.count, 10);
        assert_eq!(none.settled_until_ms, now);

        let all = due(&every_minute(), T0, now, CatchUp::All, None);
        assert_eq!(
            all.fire,
            (1..=10).map(|m| T0 + m * MINUTE).collect::<Vec<_>>()
        );
        assert_eq!(all.skipped.count, 0);
    }

    #[test]
    fn the_starting_deadline_lets_older_times_go_under_every_policy() {
        let now = T0 + 10 * MINUTE + 30_000;
        let deadline = Some(3 * MINUTE);
        let all = due(&every_minute(), T0, now, CatchUp::All, deadline);
        assert_eq!(
            all.fire,
            vec![T0 + 8 * MINUTE, T0 + 9 * MINUTE, T0 + 10 * MINUTE]
        );
        assert_eq!(all.skipped.count, 7);
        // The newest time is 30 s old: a 10 s deadline lets even that one go.
        let last = due(&every_minute(), T0, now, CatchUp::Last, Some(10_000));
        assert!(last.fire.is_empty());
        assert_eq!(last.skipped.count, 10);
    }

    #[test]
    fn catch_up_all_fires_a_turns_worth_and_leaves_the_rest_due() {
        let every_second = Schedule::parse("* * * * * *", None, T0).expect("parses");
        let now = T0 + 40_000;
        let first = due(&every_second, T0, now, CatchUp::All, None);
        assert_eq!(first.fire.len(), MAX_FIRES_PER_TURN);
        assert_eq!(first.fire[0], T0 + 1_000);
        assert_eq!(first.settled_until_ms, T0 + 16_000);
        assert_eq!(first.skipped.count, 0);
        let second = due(
            &every_second,
            first.settled_until_ms,
            now,
            CatchUp::All,
            None,
        );
        assert_eq!(second.fire[0], T0 + 17_000);
        // No time is ever fired twice, and none is lost, over as many turns as it takes.
        let mut fired = first.fire.clone();
        let mut mark = first.settled_until_ms;
        while mark < now {
            let d = due(&every_second, mark, now, CatchUp::All, None);
            fired.extend(&d.fire);
            mark = d.settled_until_ms;
        }
        assert_eq!(fired, (1..=40).map(|s| T0 + s * 1_000).collect::<Vec<_>>());
    }

    #[test]
    fn catch_up_all_stops_at_the_newest_hundred_and_counts_the_rest() {
        let now = T0 + 150 * MINUTE;
        let all = due(&every_minute(), T0, now, CatchUp::All, None);
        assert_eq!(all.fire[0], T0 + 51 * MINUTE);
        assert_eq!(all.skipped.count, 50);
        assert_eq!(all.skipped.last_ms, Some(T0 + 50 * MINUTE));
    }

    #[test]
    fn a_long_outage_counts_its_skips_up_to_a_bound() {
        let every_second = Schedule::parse("* * * * * *", None, T0).expect("parses");
        let now = T0 + 86_400_000;
        let last = due(&every_second, T0, now, CatchUp::Last, None);
        assert_eq!(last.fire, vec![now]);
        assert!(last.skipped.at_least);
        assert_eq!(last.skipped.count, MAX_COUNTED_SKIPS as u64);
        assert_eq!(last.skipped.first_ms, Some(T0 + 1_000));
        assert_eq!(last.skipped.last_ms, Some(now - 1_000));
    }

    #[test]
    fn a_time_exactly_on_the_bounds_still_fires() {
        let now = T0 + MINUTE + ON_TIME_MS;
        let none = due(&every_minute(), T0, now, CatchUp::None, None);
        assert_eq!(none.fire, vec![T0 + MINUTE]);
        let deadline = due(
            &every_minute(),
            T0,
            T0 + MINUTE + 7_000,
            CatchUp::Last,
            Some(7_000),
        );
        assert_eq!(deadline.fire, vec![T0 + MINUTE]);
    }

    #[test]
    fn concurrency_decides_what_a_fire_does_while_the_previous_job_runs() {
        assert_eq!(on_fire(Concurrency::Allow, true), FireAction::Submit);
        assert_eq!(
            on_fire(Concurrency::Forbid, true),
            FireAction::SkipWhileRunning
        );
        assert_eq!(
            on_fire(Concurrency::Replace, true),
            FireAction::ReplacePrevious
        );
        for c in [
            Concurrency::Allow,
            Concurrency::Forbid,
            Concurrency::Replace,
        ] {
            assert_eq!(on_fire(c, false), FireAction::Submit);
        }
    }
}
