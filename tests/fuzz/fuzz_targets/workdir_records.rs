//! A TaskManager's run journal, read back from its work directory after a restart.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dispatcher::taskmanager::journal::replay(data);
    let _ = serde_json::from_slice::<dispatcher::taskmanager::workdir::RunResult>(data);
});
