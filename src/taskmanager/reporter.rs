//! Sends shard reports to the leader in order, retrying until each is accepted or refused
//! as stale. Whatever has queued up while a batch was on its way goes in the next one
//! (`TaskManagers.ReportShards`), so a burst of short shards costs a few round trips, not one
//! per report. Reports survive leader changes; they do not survive the agent (a restarted
//! agent re-derives them from its work directory).

use crate::client::{Client, ClientError};
use crate::pb::api::task_managers_client::TaskManagersClient;
use crate::pb::api::{ShardReport, ShardReportBatch};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Code;

const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Most reports sent in one call (the leader accepts up to 1,024).
const BATCH: usize = 256;

pub type ReportSender = mpsc::UnboundedSender<ShardReport>;

/// Codes after which resending the same report cannot succeed.
fn is_final(code: Code) -> bool {
    matches!(
        code,
        Code::FailedPrecondition | Code::NotFound | Code::InvalidArgument | Code::PermissionDenied
    )
}

pub fn start(client: Arc<Client>) -> (ReportSender, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<ShardReport>();
    let task = tokio::spawn(async move {
        let mut pending: Vec<ShardReport> = Vec::new();
        loop {
            if pending.is_empty() {
                match rx.recv().await {
                    Some(report) => pending.push(report),
                    None => return,
                }
            }
            while pending.len() < BATCH {
                match rx.try_recv() {
                    Ok(report) => pending.push(report),
                    Err(_) => break,
                }
            }
            let batch = ShardReportBatch {
                reports: pending.clone(),
            };
            let result = client
                .call(|ch| {
                    let b = batch.clone();
                    async move { TaskManagersClient::new(ch).report_shards(b).await }
                })
                .await;
            match result {
                Ok(reply) => {
                    // Keep, in order, what may still succeed; drop what was taken or refused.
                    let sent = std::mem::take(&mut pending);
                    for (report, outcome) in sent.into_iter().zip(
                        reply
                            .outcomes
                            .into_iter()
                            .map(Some)
                            .chain(std::iter::repeat(None)),
                    ) {
                        let code = outcome
                            .as_ref()
                            .map(|o| Code::from(o.code as i32))
                            .unwrap_or(Code::Unknown);
                        if code == Code::Ok {
                            continue;
                        }
                        if is_final(code) {
                            let message = outcome.map(|o| o.message).unwrap_or_default();
                            tracing::info!(job = %report.job_id, shard = report.index, epoch = report.epoch, "report refused: {message}");
                            continue;
                        }
                        pending.push(report);
                    }
                    if !pending.is_empty() {
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
                Err(ClientError::Rejected(status)) if is_final(status.code()) => {
                    tracing::warn!(
                        reports = pending.len(),
                        "reports refused: {}",
                        status.message()
                    );
                    pending.clear();
                }
                Err(e) => {
                    tracing::warn!(reports = pending.len(), "reports not delivered yet: {e}");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    });
    (tx, task)
}
