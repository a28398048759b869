//! Sends shard reports to the leader in order, retrying until each is accepted or refused
//! as stale. Reports survive leader changes; they do not survive the agent (a restarted agent
//! re-derives them from its work directory).

use crate::client::{Client, ClientError};
use crate::pb::api::task_managers_client::TaskManagersClient;
use crate::pb::api::ShardReport;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Code;

const RETRY_PAUSE: Duration = Duration::from_millis(200);

pub type ReportSender = mpsc::UnboundedSender<ShardReport>;

pub fn start(client: Arc<Client>) -> (ReportSender, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<ShardReport>();
    let task = tokio::spawn(async move {
        while let Some(report) = rx.recv().await {
            loop {
                let result = client
                    .call(|ch| {
                        let r = report.clone();
                        async move { TaskManagersClient::new(ch).report_shard(r).await }
                    })
                    .await;
                match result {
                    Ok(_) => break,
                    Err(ClientError::Rejected(status))
                        if matches!(
                            status.code(),
                            Code::FailedPrecondition | Code::NotFound | Code::InvalidArgument
                        ) =>
                    {
                        tracing::info!(job = %report.job_id, shard = report.index, epoch = report.epoch, "report refused: {}", status.message());
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(job = %report.job_id, shard = report.index, "report not delivered yet: {e}");
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
            }
        }
    });
    (tx, task)
}
