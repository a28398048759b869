//! Client and TaskManager API requests as a replica decodes and validates them.
#![no_main]
use dispatcher::rpc::fuzzing::decode_api_requests;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| decode_api_requests(data));
