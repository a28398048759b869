//! Apply of a run's output: kept with the shard if the report is about its current run.

use super::shards::check_report;
use crate::domain::{ClusterState, ShardOutput};
use crate::fsm::command::{OutputReport, Rejection, Response};

pub(super) fn record_output(
    state: &mut ClusterState,
    log_index: u64,
    report: OutputReport,
) -> Result<Response, Rejection> {
    check_report(
        state,
        &report.taskmanager,
        report.job_id,
        report.shard,
        report.epoch,
    )?;
    let output = ShardOutput {
        epoch: report.epoch,
        recorded_at: log_index,
        printed: report.printed,
    };
    state
        .outputs
        .record(report.job_id, report.shard, output, report.keep_bytes);
    Ok(Response::ShardReported)
}
