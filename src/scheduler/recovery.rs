//! Recovery policy: retry back-off for failed shards. Pure: the caller supplies the random
//! number, so the leader can stamp the resulting deadline into a command.

/// Delay before retry number `failures` (1 for the first failure): `base · 2^(failures−1)`
/// capped at `max`, then spread by ±25 % with `unit_random` in [0, 1).
pub fn retry_delay_ms(failures: u32, base_ms: u64, max_ms: u64, unit_random: f64) -> u64 {
    let exponent = failures.saturating_sub(1).min(32);
    let raw = base_ms.saturating_mul(1u64 << exponent).min(max_ms);
    let jitter = 0.75 + 0.5 * unit_random.clamp(0.0, 1.0);
    (raw as f64 * jitter) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_base_up_to_max_with_bounded_jitter() {
        assert_eq!(retry_delay_ms(1, 1_000, 60_000, 0.5), 1_000);
        assert_eq!(retry_delay_ms(2, 1_000, 60_000, 0.5), 2_000);
        assert_eq!(retry_delay_ms(3, 1_000, 60_000, 0.5), 4_000);
        assert_eq!(retry_delay_ms(10, 1_000, 60_000, 0.5), 60_000);
        assert_eq!(retry_delay_ms(100, 1_000, 60_000, 0.5), 60_000);
        assert_eq!(retry_delay_ms(1, 1_000, 60_000, 0.0), 750);
        assert_eq!(retry_delay_ms(1, 1_000, 60_000, 0.999_999), 1_249);
    }
}
