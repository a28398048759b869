//! Periodic jobs (issue 27), the pure part: cron schedules in time zones and the rules that
//! decide, on each of the leader's turns, which scheduled times fire, which are let go after
//! an outage, and what a fire does while the schedule's previous job still runs.
//!
//! No clock, randomness or I/O: the leader stamps the time it decides at, so every replica
//! that replays a decision reaches the same one. Nothing here submits a job; the leader's
//! loop turns a decision into log entries.

pub mod firing;
pub mod schedule;

pub use firing::{due, on_fire, CatchUp, Concurrency, Due, FireAction, Skipped};
pub use schedule::{Schedule, ScheduleError, MAX_EXPRESSION_BYTES};
