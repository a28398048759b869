//! How much an agent may report: each TaskManager has a budget of reports and of bytes per
//! second (a token bucket, refilled continuously, with room for a burst such as a gang's
//! thousand starts). A call over budget is refused whole with `RESOURCE_EXHAUSTED` before it
//! is looked at; an agent's reporter retries it later, so a busy honest agent is slowed,
//! never loses a report, and a compromised one cannot flood the leader with work.
//!
//! Kept in the leader's memory only, with the monotonic clock; nothing here reaches the log.

use super::error::ApiError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Reports per second an agent may send, sustained (1,000 shards/s is 2,000 reports).
pub const REPORTS_PER_SECOND: f64 = 4_000.0;
/// Reports an agent may send at once (a gang of a thousand starting and ending together).
pub const REPORT_BURST: f64 = 8_000.0;
/// Bytes of reports per second an agent may send, sustained (output tails included).
pub const REPORT_BYTES_PER_SECOND: f64 = 16.0 * 1024.0 * 1024.0;
/// Bytes an agent may send at once.
pub const REPORT_BYTES_BURST: f64 = 32.0 * 1024.0 * 1024.0;
/// Agents tracked at most; past it the budgets start over (ids come only from certificates).
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    reports: f64,
    bytes: f64,
    at: Instant,
}

/// Every agent's budget.
#[derive(Debug, Default)]
pub struct ReportBudget {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl ReportBudget {
    /// Take `reports` reports of `bytes` bytes from `taskmanager`'s budget, or refuse them all.
    pub fn take(&self, taskmanager: &str, reports: usize, bytes: usize) -> Result<(), ApiError> {
        self.take_at(taskmanager, reports, bytes, Instant::now())
    }

    fn take_at(
        &self,
        taskmanager: &str,
        reports: usize,
        bytes: usize,
        now: Instant,
    ) -> Result<(), ApiError> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(taskmanager) {
            buckets.clear();
        }
        let bucket = buckets.entry(taskmanager.to_string()).or_insert(Bucket {
            reports: REPORT_BURST,
            bytes: REPORT_BYTES_BURST,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.reports = (bucket.reports + elapsed * REPORTS_PER_SECOND).min(REPORT_BURST);
        bucket.bytes = (bucket.bytes + elapsed * REPORT_BYTES_PER_SECOND).min(REPORT_BYTES_BURST);
        bucket.at = now;
        let (reports, bytes) = (reports as f64, bytes as f64);
        if reports > bucket.reports || bytes > bucket.bytes {
            return Err(ApiError::Exhausted(format!(
                "TaskManager '{taskmanager}' reports more than {REPORTS_PER_SECOND} reports or \
                 {} MiB a second; send again shortly",
                REPORT_BYTES_PER_SECOND / (1024.0 * 1024.0)
            )));
        }
        bucket.reports -= reports;
        bucket.bytes -= bytes;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_is_let_through_a_flood_is_refused_and_the_budget_refills() {
        let budget = ReportBudget::default();
        let start = Instant::now();
        budget.take_at("a", 8_000, 1_000, start).expect("a burst");
        assert!(matches!(
            budget.take_at("a", 1, 10, start),
            Err(ApiError::Exhausted(_))
        ));
        // Another agent has its own budget.
        budget.take_at("b", 1, 10, start).expect("b");
        // Half a second later, half the sustained rate is back.
        let later = start + Duration::from_millis(500);
        budget.take_at("a", 2_000, 10, later).expect("refilled");
        assert!(budget.take_at("a", 100, 10, later).is_err());
        // Bytes count too.
        let much_later = later + Duration::from_secs(10);
        assert!(budget
            .take_at("a", 1, 64 * 1024 * 1024, much_later)
            .is_err());
    }
}
