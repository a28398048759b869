//! Log entries, votes and log ids as the log store reads them from disk.
#![no_main]
use dispatcher::raft::fuzzing::decode_log_records;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| decode_log_records(data));
