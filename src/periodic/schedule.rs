//! A cron schedule in a time zone: parsed once, asked for the scheduled times after a moment.
//!
//! Five fields (minute, hour, day of month, month, day of week) or six with seconds first;
//! the `@hourly`-style nicknames too. Parsing is croner's (the Open Cron Pattern
//! Specification), time zones are the tz database's (chrono-tz). Across daylight-saving
//! changes a schedule behaves as Vixie cron and croner document:
//! - a time that does not exist (the hour skipped in spring) fires once, at the first moment
//!   after the gap, when its seconds, minutes and hours are fixed numbers (`30 2 * * *`);
//!   an interval schedule (`*/15 * * * *`) skips what falls in the gap;
//! - a time that exists twice (the hour repeated in autumn) fires once, at its first
//!   occurrence, when fixed; an interval schedule fires at each occurrence, in time order.
//!
//! Pure: no clock (every question names its moment, in ms since the epoch), no I/O.

use chrono::{DateTime, LocalResult, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::{Cron, JobType};
use std::fmt;

/// Longest expression accepted (bytes).
pub const MAX_EXPRESSION_BYTES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("the schedule {0:?} is not a cron expression: {1}; write 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, e.g. \"*/5 * * * *\"")]
    Expression(String, String),
    #[error("the schedule has {0} fields; write 5 (minute hour day-of-month month day-of-week) or 6 with seconds first")]
    FieldCount(usize),
    #[error("the schedule is longer than {MAX_EXPRESSION_BYTES} bytes")]
    TooLong,
    #[error("unknown time zone {0:?}: use an IANA name such as \"Europe/Berlin\" or \"UTC\"")]
    TimeZone(String),
    #[error("the schedule {0:?} never fires")]
    Never(String),
}

/// A parsed schedule. Two schedules are equal when their texts are.
#[derive(Clone)]
pub struct Schedule {
    expression: String,
    zone: Tz,
    cron: Cron,
    /// Seconds, minutes and hours are single numbers (croner's fixed-time job): in a
    /// repeated hour it fires in the first pass only.
    fixed_time: bool,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?} in {})", self.expression, self.zone.name())
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression && self.zone == other.zone
    }
}

impl Eq for Schedule {}

impl Schedule {
    /// Parse `expression` in `timezone` (an IANA name; `None` is UTC), checking at `now_ms`
    /// that it fires at all. None fires more than once a second: a second is cron's finest
    /// unit.
    pub fn parse(
        expression: &str,
        timezone: Option<&str>,
        now_ms: u64,
    ) -> Result<Schedule, ScheduleError> {
        let schedule = Schedule::read(expression, timezone)?;
        schedule
            .next_after(now_ms)
            .ok_or_else(|| ScheduleError::Never(expression.to_string()))?;
        Ok(schedule)
    }

    /// Parse without the checks that need a moment: for a schedule already accepted (read
    /// back from the replicated state).
    pub fn read(expression: &str, timezone: Option<&str>) -> Result<Schedule, ScheduleError> {
        if expression.len() > MAX_EXPRESSION_BYTES {
            return Err(ScheduleError::TooLong);
        }
        let expression = expression.trim();
        let fields = expression.split_whitespace().count();
        let nickname = expression.starts_with('@');
        if !nickname && !(5..=6).contains(&fields) {
            return Err(ScheduleError::FieldCount(fields));
        }
        let zone = match timezone {
            None => Tz::UTC,
            Some(name) => name
                .parse::<Tz>()
                .map_err(|_| ScheduleError::TimeZone(name.to_string()))?,
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|e| ScheduleError::Expression(expression.to_string(), e.to_string()))?;
        Ok(Schedule {
            expression: expression.to_string(),
            zone,
            fixed_time: cron.determine_job_type() == JobType::FixedTime,
            cron,
        })
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The IANA name of the schedule's time zone.
    pub fn timezone(&self) -> &str {
        self.zone.name()
    }

    /// The first scheduled time strictly after `ms`, if there is one.
    pub fn next_after(&self, ms: u64) -> Option<u64> {
        let mut at = self.at(ms)?;
        // Inside an hour that repeats, croner's search is not in time order (it gives a
        // time's second pass right after its first): step through the fold second by second.
        for _ in 0..MAX_FOLD_SECONDS {
            if !self.in_fold(&at) {
                break;
            }
            at += chrono::TimeDelta::seconds(1);
            if self.fires_at(&at) {
                return to_ms(&at);
            }
        }
        if self.in_fold(&at) {
            return None;
        }
        // Past any fold: croner's forward search is in order (a fold ahead starts with a
        // first pass, which is the earliest).
        let next = self.cron.find_next_occurrence(&at, false).ok()?;
        to_ms(&next)
    }

    /// The scheduled times after `after_ms`, oldest first.
    pub fn times_after(&self, after_ms: u64) -> impl Iterator<Item = u64> + '_ {
        std::iter::successors(self.next_after(after_ms), |t| self.next_after(*t))
    }

    /// The scheduled times at or before `ms`, newest first.
    pub fn times_back_from(&self, ms: u64) -> impl Iterator<Item = u64> + '_ {
        std::iter::successors(self.last_at_or_before(ms), |t| {
            t.checked_sub(1)
                .and_then(|before| self.last_at_or_before(before))
        })
    }

    /// The scheduled times in `(after_ms, until_ms]`, oldest first, at most `max` of them.
    pub fn times_between(&self, after_ms: u64, until_ms: u64, max: usize) -> Vec<u64> {
        self.times_after(after_ms)
            .take_while(|t| *t <= until_ms)
            .take(max)
            .collect()
    }

    /// The last scheduled time at or before `ms`, if any: found with croner's backward
    /// search as a first guess (which, at a daylight-saving change, may be a moment that
    /// does not fire, or a time's first pass where its second also fires), then settled by
    /// walking forward with `next_after`, so both directions agree.
    pub fn last_at_or_before(&self, ms: u64) -> Option<u64> {
        let mut from = self.at(ms)?;
        for _ in 0..MAX_BACKWARD_GUESSES {
            let guess = self.cron.find_previous_occurrence(&from, true).ok()?;
            let last = self
                .times_after(to_ms(&guess)?.saturating_sub(1))
                .take_while(|t| *t <= ms)
                .last();
            if last.is_some() {
                return last;
            }
            // The guess fired after `ms` (a moment snapped into a gap): look before it.
            from = guess - chrono::TimeDelta::seconds(1);
        }
        None
    }

    /// Whether the schedule fires at `at` (whole seconds): its fields match the wall clock,
    /// and, in a repeated hour, a fixed-time schedule fires only in the first pass.
    fn fires_at(&self, at: &DateTime<Tz>) -> bool {
        if !self.cron.is_time_matching(at).unwrap_or(false) {
            return false;
        }
        match self.zone.from_local_datetime(&at.naive_local()) {
            LocalResult::Ambiguous(first, second) => !self.fixed_time || *at == first.min(second),
            _ => true,
        }
    }

    /// `ms` in the schedule's zone, to the whole second below (cron's finest unit).
    fn at(&self, ms: u64) -> Option<DateTime<Tz>> {
        let second = i64::try_from(ms / 1_000).ok()?;
        Some(
            Utc.timestamp_opt(second, 0)
                .single()?
                .with_timezone(&self.zone),
        )
    }

    /// Whether `at`'s wall-clock time happens twice (an hour that repeats in autumn).
    fn in_fold(&self, at: &DateTime<Tz>) -> bool {
        matches!(
            self.zone.from_local_datetime(&at.naive_local()),
            LocalResult::Ambiguous(..)
        )
    }
}

/// Longer than any repeated stretch of wall-clock time in the tz database (most are an
/// hour; Antarctica/Troll repeats two).
const MAX_FOLD_SECONDS: u32 = 4 * 3600;
/// Backward guesses tried before giving up on finding an earlier time.
const MAX_BACKWARD_GUESSES: usize = 4;

fn to_ms(at: &DateTime<Tz>) -> Option<u64> {
    u64::try_from(at.timestamp_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Milliseconds of a UTC date and time.
    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> u64 {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .map(|t| t.timestamp_millis() as u64)
            .expect("a valid date")
    }

    fn schedule(expression: &str, zone: &str) -> Schedule {
        Schedule::parse(expression, Some(zone), utc(2026, 1, 1, 0, 0, 0)).expect("parses")
    }

    #[test]
    fn five_fields_fire_on_the_minute_and_six_on_the_second() {
        let every_five = schedule("*/5 * * * *", "UTC");
        let t = utc(2026, 3, 1, 10, 2, 30);
        assert_eq!(every_five.next_after(t), Some(utc(2026, 3, 1, 10, 5, 0)));
        let every_two_seconds = schedule("*/2 * * * * *", "UTC");
        assert_eq!(
            every_two_seconds.times_between(t, t + 5_000, 10),
            vec![t + 2_000, t + 4_000]
        );
        // Strictly after: a time that is itself scheduled is not its own next.
        assert_eq!(
            every_five.next_after(utc(2026, 3, 1, 10, 5, 0)),
            Some(utc(2026, 3, 1, 10, 10, 0))
        );
    }

    #[test]
    fn a_zone_moves_the_fires_with_its_offset() {
        // 09:00 in Tokyo (UTC+9, no daylight saving) is 00:00 UTC.
        let nine = schedule("0 9 * * *", "Asia/Tokyo");
        assert_eq!(
            nine.next_after(utc(2026, 6, 1, 1, 0, 0)),
            Some(utc(2026, 6, 2, 0, 0, 0))
        );
        assert_eq!(nine.timezone(), "Asia/Tokyo");
    }

    #[test]
    fn a_fixed_time_in_the_spring_gap_fires_once_right_after_it_in_two_zones() {
        // Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC). 02:30 does not exist.
        let berlin = schedule("30 2 * * *", "Europe/Berlin");
        let fires = berlin.times_between(utc(2026, 3, 28, 0, 0, 0), utc(2026, 3, 31, 0, 0, 0), 10);
        assert_eq!(
            fires,
            vec![
                utc(2026, 3, 28, 1, 30, 0), // 02:30 CET
                utc(2026, 3, 29, 1, 0, 0),  // 03:00 CEST, the first moment after the gap
                utc(2026, 3, 30, 0, 30, 0), // 02:30 CEST
            ]
        );
        // New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT (07:00 UTC).
        let new_york = schedule("30 2 * * *", "America/New_York");
        let fires =
            new_york.times_between(utc(2026, 3, 7, 12, 0, 0), utc(2026, 3, 9, 12, 0, 0), 10);
        assert_eq!(
            fires,
            vec![
                utc(2026, 3, 8, 7, 0, 0),  // 03:00 EDT
                utc(2026, 3, 9, 6, 30, 0), // 02:30 EDT
            ]
        );
    }

    #[test]
    fn an_interval_schedule_skips_the_spring_gap() {
        // Every 30 minutes in Berlin across the gap: 01:30 CET is followed by 03:00 CEST,
        // one hour of real time later, since 02:00 and 02:30 do not exist.
        let half_hourly = schedule("*/30 * * * *", "Europe/Berlin");
        let fires =
            half_hourly.times_between(utc(2026, 3, 29, 0, 15, 0), utc(2026, 3, 29, 1, 45, 0), 10);
        assert_eq!(
            fires,
            vec![
                utc(2026, 3, 29, 0, 30, 0),
                utc(2026, 3, 29, 1, 0, 0),
                utc(2026, 3, 29, 1, 30, 0)
            ]
        );
    }

    #[test]
    fn a_fixed_time_in_the_autumn_repeat_fires_once_and_an_interval_one_twice() {
        // Berlin, 2026-10-25: 03:00 CEST falls back to 02:00 CET (01:00 UTC); 02:30 happens
        // at 00:30 UTC and again at 01:30 UTC.
        let fixed = schedule("30 2 * * *", "Europe/Berlin");
        let fires =
            fixed.times_between(utc(2026, 10, 24, 12, 0, 0), utc(2026, 10, 26, 0, 0, 0), 10);
        assert_eq!(fires, vec![utc(2026, 10, 25, 0, 30, 0)]);
        let interval = schedule("30 * * * *", "Europe/Berlin");
        let fires =
            interval.times_between(utc(2026, 10, 25, 0, 0, 0), utc(2026, 10, 25, 2, 0, 0), 10);
        assert_eq!(
            fires,
            vec![utc(2026, 10, 25, 0, 30, 0), utc(2026, 10, 25, 1, 30, 0)]
        );
        // New York, 2026-11-01: 02:00 EDT falls back to 01:00 EST (06:00 UTC).
        let fixed = schedule("30 1 * * *", "America/New_York");
        let fires = fixed.times_between(utc(2026, 11, 1, 0, 0, 0), utc(2026, 11, 2, 0, 0, 0), 10);
        assert_eq!(fires, vec![utc(2026, 11, 1, 5, 30, 0)]);
    }

    #[test]
    fn in_the_repeated_hour_every_pass_comes_in_time_order() {
        // Every 15 minutes of wall-clock time in Berlin is every 15 minutes of real time,
        // through both passes of 02:00-03:00 on 2026-10-25 (00:00-02:00 UTC).
        let quarterly = schedule("*/15 * * * *", "Europe/Berlin");
        let from = utc(2026, 10, 24, 23, 30, 0);
        let fires = quarterly.times_between(from, utc(2026, 10, 25, 2, 0, 0), 20);
        let every_quarter: Vec<u64> = (1..=10).map(|q| from + q * 900_000).collect();
        assert_eq!(fires, every_quarter);
        for (i, t) in every_quarter.iter().enumerate().skip(1) {
            // Both directions agree, from anywhere in the fold.
            assert_eq!(quarterly.next_after(t - 1), Some(*t));
            assert_eq!(quarterly.last_at_or_before(t + 400), Some(*t));
            assert_eq!(
                quarterly.last_at_or_before(t - 1),
                Some(every_quarter[i - 1])
            );
        }
        // Every second: each second of real time fires exactly once across the fold.
        let every_second = schedule("* * * * * *", "Europe/Berlin");
        let from = utc(2026, 10, 24, 23, 59, 0);
        let fires = every_second.times_between(from, utc(2026, 10, 25, 2, 1, 0), 10_000);
        assert_eq!(fires.len(), 2 * 3600 + 2 * 60);
        assert!(fires.windows(2).all(|w| w[1] - w[0] == 1_000));
    }

    #[test]
    fn the_last_time_agrees_with_the_next_at_daylight_saving_changes() {
        // Spring: 02:30 does not exist in Berlin on 2026-03-29 and fires at 03:00 CEST.
        let fixed = schedule("30 2 * * *", "Europe/Berlin");
        let after_gap = utc(2026, 3, 29, 1, 0, 0);
        assert_eq!(fixed.last_at_or_before(after_gap + 500), Some(after_gap));
        assert_eq!(
            fixed.last_at_or_before(after_gap - 500),
            Some(utc(2026, 3, 28, 1, 30, 0))
        );
        // Autumn, after the fold: the last :30 was the second pass's, 01:30 UTC.
        let half_past = schedule("30 * * * *", "Europe/Berlin");
        assert_eq!(
            half_past.last_at_or_before(utc(2026, 10, 25, 2, 10, 0)),
            Some(utc(2026, 10, 25, 1, 30, 0))
        );
    }

    #[test]
    fn a_two_hour_repeat_fires_a_fixed_time_once() {
        // Antarctica/Troll goes from +02 back to +00 at 01:00 UTC on 2026-10-25: local
        // 01:00-03:00 happens twice, and 01:30 first at 23:30 UTC the day before.
        let fixed = schedule("30 1 * * *", "Antarctica/Troll");
        let fires =
            fixed.times_between(utc(2026, 10, 24, 12, 0, 0), utc(2026, 10, 25, 12, 0, 0), 10);
        assert_eq!(fires, vec![utc(2026, 10, 24, 23, 30, 0)]);
    }

    #[test]
    fn bad_schedules_are_refused_with_what_to_write() {
        let now = utc(2026, 1, 1, 0, 0, 0);
        for (expression, zone, wanted) in [
            ("* * * *", None, "has 4 fields"),
            ("* * * * * * *", None, "has 7 fields"),
            ("61 * * * *", None, "not a cron expression"),
            ("*/5 * * * *", Some("Mars/Olympus"), "unknown time zone"),
            ("0 0 30 2 *", None, "never fires"),
        ] {
            let refused = Schedule::parse(expression, zone, now).expect_err(expression);
            assert!(
                refused.to_string().contains(wanted),
                "{expression}: {refused}"
            );
        }
        let long = "1,".repeat(200) + "1 * * * *";
        assert_eq!(
            Schedule::parse(&long, None, now).expect_err("too long"),
            ScheduleError::TooLong
        );
        // Once a second is the most a schedule may fire: allowed.
        assert!(Schedule::parse("* * * * * *", None, now).is_ok());
        assert!(Schedule::parse("@hourly", Some("UTC"), now).is_ok());
    }

    #[test]
    fn the_last_time_at_or_before_a_moment() {
        let hourly = schedule("0 * * * *", "UTC");
        assert_eq!(
            hourly.last_at_or_before(utc(2026, 5, 1, 10, 59, 59)),
            Some(utc(2026, 5, 1, 10, 0, 0))
        );
        assert_eq!(
            hourly.last_at_or_before(utc(2026, 5, 1, 10, 0, 0)),
            Some(utc(2026, 5, 1, 10, 0, 0))
        );
    }
}
