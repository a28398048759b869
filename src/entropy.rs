//! Fresh unpredictable bytes (wall-clock nanoseconds, process id and a counter, hashed), for
//! idempotency keys and back-off jitter, without a dependency on `rand`. Never used by apply.

use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// 32 bytes that differ on every call, mixed with `salt`.
pub fn fresh_bytes(salt: &[u8]) -> [u8; 32] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut hasher = blake3::Hasher::new();
    hasher.update(&nanos.to_le_bytes());
    // Asked of the kernel once: a getpid per call showed in the leader's profile.
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    hasher.update(&PID.get_or_init(std::process::id).to_le_bytes());
    hasher.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    hasher.update(salt);
    *hasher.finalize().as_bytes()
}

/// A number in [0, 1).
pub fn unit_random(salt: &[u8]) -> f64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&fresh_bytes(salt)[..8]);
    (u64::from_le_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    #[test]
    fn differs_per_call_and_stays_in_range() {
        assert_ne!(super::fresh_bytes(b"x"), super::fresh_bytes(b"x"));
        for _ in 0..100 {
            let r = super::unit_random(b"y");
            assert!((0.0..1.0).contains(&r));
        }
    }
}
