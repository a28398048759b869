//! Raft RPC payloads as a replica receives them from the network.
#![no_main]
use dispatcher::raft::fuzzing::decode_raft_payloads;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| decode_raft_payloads(data));
