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
//!   occurrence, when fixed; an interval schedule fires at each occurrence.
//!
//! Pure: no clock (every question names its moment, in ms since the epoch), no I/O.

use chrono::{DateTime, LocalResult, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::{Cron, Direction};
use std::fmt;

/// Longest expression accepted (bytes).
pub const MAX_EXPRESSION_BYTES: usize = 256;
/// Fewest milliseconds between two fires; a schedule that would fire more often is refused.
pub const MIN_INTERVAL_MS: u64 = 1_000;
/// How many of a schedule's next fires are checked against `MIN_INTERVAL_MS`.
const INTERVAL_PROBES: usize = 64;

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
    #[error("the schedule {0:?} fires more than once a second; a schedule may fire at most once a second")]
    TooOften(String),
}

/// A parsed schedule. Two schedules are equal when their texts are.
#[derive(Clone)]
pub struct Schedule {
    expression: String,
    zone: Tz,
    cron: Cron,
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
    /// that it fires at all and not more than once a second.
    pub fn parse(
        expression: &str,
        timezone: Option<&str>,
        now_ms: u64,
    ) -> Result<Schedule, ScheduleError> {
        let schedule = Schedule::read(expression, timezone)?;
        let mut previous = schedule
            .next_after(now_ms)
            .ok_or_else(|| ScheduleError::Never(expression.to_string()))?;
        for _ in 0..INTERVAL_PROBES {
            let Some(next) = schedule.next_after(previous) else {
                break;
            };
            if next - previous < MIN_INTERVAL_MS {
                return Err(ScheduleError::TooOften(expression.to_string()));
            }
            previous = next;
        }
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
        let start = self.at(ms)?;
        if self.in_fold(&start) {
            // Inside an hour that repeats, a stateless search from here would miss the
            // repeat of a time already passed once: walk from before the fold instead.
            return self
                .cron
                .iter_from(start - FOLD, Direction::Forward)
                .filter_map(|t| to_ms(&t))
                .find(|t| *t > ms);
        }
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        to_ms(&next)
    }

    /// The scheduled times in `(after_ms, until_ms]`, oldest first, at most `max` of them.
    pub fn times_between(&self, after_ms: u64, until_ms: u64, max: usize) -> Vec<u64> {
        let mut times = Vec::new();
        let mut at = after_ms;
        while times.len() < max {
            match self.next_after(at) {
                Some(next) if next <= until_ms => {
                    times.push(next);
                    at = next;
                }
                _ => break,
            }
        }
        times
    }

    /// The last scheduled time at or before `ms`, if any.
    pub fn last_at_or_before(&self, ms: u64) -> Option<u64> {
        let start = self.at(ms)?;
        if self.in_fold(&start) {
            let first = self
                .cron
                .iter_from(start - FOLD, Direction::Forward)
                .filter_map(|t| to_ms(&t))
                .take_while(|t| *t <= ms)
                .last();
            if first.is_some() {
                return first;
            }
            return self
                .cron
                .find_previous_occurrence(&(start - FOLD), true)
                .ok()
                .and_then(|t| to_ms(&t));
        }
        let previous = self.cron.find_previous_occurrence(&start, true).ok()?;
        to_ms(&previous)
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

/// Longer than any daylight-saving shift in the tz database (most are an hour).
const FOLD: chrono::TimeDelta = chrono::TimeDelta::hours(2);

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
