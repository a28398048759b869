//! Entry points for the fuzz targets (`tests/fuzz`): every decoder of bytes a replica takes
//! from the network or its disk, called exactly as production calls it. They must never
//! panic, whatever the bytes.

use super::network::decode;
use super::snapshot_store::{decode_snapshot_file, decode_state};
use super::types::{SnapshotMeta, TypeConfig, Vote};
use super::wal::record::{decode_frame, Frame};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};

/// Raft RPC requests as the Raft service decodes them, and replies as the network client does.
pub fn decode_raft_payloads(data: &[u8]) {
    let _ = decode::<AppendEntriesRequest<TypeConfig>>(data);
    let _ = decode::<VoteRequest<TypeConfig>>(data);
    let _ = decode::<TransferLeaderRequest<TypeConfig>>(data);
    let _ = decode::<(Vote, SnapshotMeta)>(data);
    let _ = decode::<Result<AppendEntriesResponse<TypeConfig>, String>>(data);
    let _ = decode::<Result<VoteResponse<TypeConfig>, String>>(data);
    let _ = decode::<Result<SnapshotResponse<TypeConfig>, String>>(data);
    let _ = decode::<Result<TransferLeaderResponse<TypeConfig>, String>>(data);
}

/// A segment of the write-ahead log, read frame by frame as replay does.
pub fn decode_log_records(data: &[u8]) {
    let mut at = 0;
    while let Frame::Record(_, used) = decode_frame(&data[at..]) {
        at += used;
    }
}

/// Snapshot files and snapshot data, down to the state and its digest.
pub fn decode_snapshots(data: &[u8]) {
    if let Ok(file) = decode_snapshot_file(data) {
        if let Ok(state) = decode_state(&file.data) {
            let _ = state.digest();
        }
    }
    if let Ok(state) = decode_state(data) {
        let _ = state.digest();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same inputs the fuzzers start from, so a regression shows up in `cargo test` too.
    #[test]
    fn decoders_survive_garbage() {
        let mut inputs: Vec<Vec<u8>> =
            vec![vec![], vec![0xff; 64], b"DSNP\0\0\0\x01garbage".to_vec()];
        for len in 0..64u8 {
            inputs.push(
                (0..len)
                    .map(|i| i.wrapping_mul(37).wrapping_add(len))
                    .collect(),
            );
        }
        for input in &inputs {
            decode_raft_payloads(input);
            decode_log_records(input);
            decode_snapshots(input);
        }
    }
}
