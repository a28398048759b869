//! Snapshot files (disk) and snapshot data (network and disk), down to the cluster state.
#![no_main]
use dispatcher::raft::fuzzing::decode_snapshots;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| decode_snapshots(data));
