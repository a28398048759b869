//! Test helpers over the executions shard commands record (see
//! `dispatcher::chaos::executions`).

pub use dispatcher::chaos::executions::{of_job, Execution, Recorder};

/// Every shard of `job` (0..shards) finished exactly once.
pub fn assert_each_finished_once(all: &[Execution], job: &str, shards: u32) {
    for shard in 0..shards {
        let finished = all
            .iter()
            .filter(|e| e.job == job && e.shard == shard && e.ended)
            .count();
        assert_eq!(
            finished, 1,
            "shard {shard} of {job} finished {finished} times: {all:#?}"
        );
    }
}

/// No two executions of one shard overlapped in time.
pub fn assert_no_overlap(all: &[Execution]) {
    let found = dispatcher::chaos::executions::overlaps(all);
    assert!(
        found.is_empty(),
        "executions of one shard overlapped: {found:#?}"
    );
}
