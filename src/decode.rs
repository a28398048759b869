//! Decoding bytes that came from the network or the disk with bincode, bounded: a length
//! prefix may claim gigabytes in a six-byte message (the fuzzer found one), and unbounded
//! bincode allocates what it is told before it notices the bytes are not there. The bound
//! scales with the input: decoding may claim up to about 64 times the encoded size (bincode
//! counts in-memory sizes, and small varints expand), at least 4 MiB.

use bincode::config::{self, Configuration};
use bincode::error::DecodeError;
use serde::de::DeserializeOwned;

fn with_limit<T: DeserializeOwned, const LIMIT: usize>(
    bytes: &[u8],
) -> Result<(T, usize), DecodeError> {
    let cfg: Configuration<config::LittleEndian, config::Varint, config::Limit<LIMIT>> =
        config::standard().with_limit::<LIMIT>();
    bincode::serde::decode_from_slice(bytes, cfg)
}

/// Decode `bytes` (bincode, standard config) without letting them claim more memory than
/// about 64 times their length (at least 4 MiB). Bytes after the value are ignored.
pub fn decode_untrusted<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    decode_untrusted_prefix(bytes).map(|(value, _)| value)
}

/// `decode_untrusted`, also answering how many bytes the value took.
pub fn decode_untrusted_prefix<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<(T, usize), DecodeError> {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * KIB;
    match bytes.len() {
        n if n <= 64 * KIB => with_limit::<T, { 4 * MIB }>(bytes),
        n if n <= MIB => with_limit::<T, { 64 * MIB }>(bytes),
        n if n <= 16 * MIB => with_limit::<T, { 1024 * MIB }>(bytes),
        // Inputs this large come only from peers and our own disk; a claim beyond 64 GiB
        // is refused all the same.
        _ => with_limit::<T, { 64 * 1024 * MIB }>(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_message_cannot_claim_a_huge_allocation() {
        // Found by the raft_messages fuzzer: a length prefix of ~4 G in six bytes.
        let input = [1u8, 252, 255, 0, 1, 252];
        assert!(decode_untrusted::<Vec<String>>(&input).is_err());
        assert!(decode_untrusted::<(u8, Vec<u8>)>(&input).is_err());
        let ok: Vec<u32> = decode_untrusted(
            &bincode::serde::encode_to_vec(vec![1u32, 2, 3], config::standard()).expect("encode"),
        )
        .expect("decode");
        assert_eq!(ok, vec![1, 2, 3]);
    }

    #[test]
    fn a_large_real_state_still_decodes() {
        use crate::domain::{ClusterState, Job, JobId, JobSpec, JobState, Shard};
        let mut state = ClusterState::default();
        for j in 0..10u64 {
            let spec = JobSpec {
                command: "/bin/true".into(),
                args: vec![],
                env: Default::default(),
                shard_count: 100_000,
                slots_per_shard: 1,
                max_attempts: 3,
                selector: Default::default(),
            };
            state.jobs.insert(
                JobId(j),
                std::sync::Arc::new(Job {
                    id: JobId(j),
                    name: format!("job-{j}"),
                    owner: "bench".into(),
                    spec,
                    state: JobState::Pending,
                    created_at_ms: 1,
                    ended_at_ms: None,
                    idempotency_key: None,
                    shards: (0..100_000).map(Shard::new).collect(),
                    counts: Default::default(),
                }),
            );
        }
        let bytes = state.encode();
        let back = ClusterState::decode(&bytes).expect("a million shards decode");
        for job in state.jobs.values_mut() {
            std::sync::Arc::make_mut(job).recount();
        }
        assert_eq!(back, state);
    }
}
