//! Wall-clock time as the leader stamps it into commands. Apply never reads the clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Time since boot, *including* time the machine spent suspended (CLOCK_BOOTTIME). Leases
/// and keep-alive timeouts are measured with it: `Instant` (CLOCK_MONOTONIC) stops while a
/// machine or VM is suspended, so a lease measured with it would seem still valid on resume,
/// long after the cluster has moved its shards elsewhere.
pub fn boottime() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes into the timespec we own; CLOCK_BOOTTIME exists on
    // every Linux this runs on.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
