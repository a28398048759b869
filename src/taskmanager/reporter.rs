//! Sends shard reports to the leader in order, retrying until each is accepted or refused
//! as stale. Whatever has queued up while a batch was on its way goes in the next one
//! (`TaskManagers.ReportShards`), so a burst of short shards costs a few round trips, not one
//! per report; an end also waits a few milliseconds for the ends of the other runs in
//! flight. Reports survive leader changes; they do not survive the agent (a restarted agent
//! re-derives them from its work directory).

use crate::client::{Client, ClientError};
use crate::pb::api::task_managers_client::TaskManagersClient;
use crate::pb::api::{ReportKind, ShardReport, ShardReportBatch};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tonic::Code;

const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Most reports sent in one call (the leader accepts up to 1,024).
const BATCH: usize = 256;
/// Most bytes of shard output sent in one call: well under the API's message limit, however
/// much each report carries.
const BATCH_OUTPUT_BYTES: usize = 2 * 1024 * 1024;

fn output_bytes(report: &ShardReport) -> usize {
    report.stdout_tail.len() + report.stderr_tail.len()
}

/// How many of the first reports go in the next call: up to `BATCH`, and up to
/// `BATCH_OUTPUT_BYTES` of output (at least one report).
fn next_batch_len(pending: &[ShardReport]) -> usize {
    let mut bytes = 0;
    let mut count = 0;
    for report in pending.iter().take(BATCH) {
        bytes += output_bytes(report);
        if count > 0 && bytes > BATCH_OUTPUT_BYTES {
            break;
        }
        count += 1;
    }
    count
}

/// How long starts alone wait before they are sent. A shard that ends within it is reported
/// by its end only (see `coalesce`), so a burst of short shards costs one log entry per
/// shard instead of two; a longer shard is shown running this much later. Ends wait far less
/// (`END_LINGER`), and only while other runs may end with them.
const START_LINGER: Duration = Duration::from_millis(20);

pub type ReportSender = mpsc::UnboundedSender<ShardReport>;

fn is_start(report: &ShardReport) -> bool {
    report.kind == ReportKind::Started as i32
}

/// Take what has queued, up to a batch.
fn drain(rx: &mut mpsc::UnboundedReceiver<ShardReport>, pending: &mut Vec<ShardReport>) {
    while pending.len() < BATCH {
        match rx.try_recv() {
            Ok(report) => pending.push(report),
            Err(_) => break,
        }
    }
}

/// Gather reports for up to `START_LINGER`, until an end (or a full batch) arrives.
async fn linger_for_an_end(
    rx: &mut mpsc::UnboundedReceiver<ShardReport>,
    pending: &mut Vec<ShardReport>,
) {
    let deadline = tokio::time::sleep(START_LINGER);
    tokio::pin!(deadline);
    while pending.len() < BATCH {
        tokio::select! {
            _ = &mut deadline => return,
            report = rx.recv() => match report {
                Some(report) => {
                    let end = !is_start(&report);
                    pending.push(report);
                    if end {
                        drain(rx, pending);
                        return;
                    }
                }
                None => return,
            },
        }
    }
}

/// How long an end waits for more reports before it is sent, while other runs are in flight
/// here (none: it goes at once). Every report batch costs each replica a log append, an
/// `fdatasync` and a message, and the leader a plan behind it; with many short shards ending
/// one by one, gathering the ends of 3 ms into one batch cut the log entries per shard from
/// 0.8 to 0.3 and the dispatcher's CPU per shard by about a third, and raised the rate (the slot
/// waits those milliseconds, where the CPU saved is what the whole machine was short of;
/// BENCHMARKS.md, issue 26). Longer (8 ms) saved little more and cost rate.
const END_LINGER: Duration = Duration::from_millis(3);

/// After an end: gather what else is reported for up to `END_LINGER`, while any run is still
/// in flight here (`in_flight`, which counts the ended runs until their tasks are over), and
/// no longer once none is, so that a lone shard's end is not held back.
async fn linger_after_an_end(
    rx: &mut mpsc::UnboundedReceiver<ShardReport>,
    pending: &mut Vec<ShardReport>,
    in_flight: &mut watch::Receiver<usize>,
) {
    let deadline = tokio::time::sleep(END_LINGER);
    tokio::pin!(deadline);
    while pending.len() < BATCH && *in_flight.borrow_and_update() > 0 {
        tokio::select! {
            _ = &mut deadline => break,
            report = rx.recv() => match report {
                Some(report) => pending.push(report),
                None => break,
            },
            changed = in_flight.changed() => if changed.is_err() {
                break;
            },
        }
    }
    // A run's end is queued before its task counts it over: take what came with the last.
    drain(rx, pending);
}

/// Codes after which resending the same report cannot succeed.
fn is_final(code: Code) -> bool {
    matches!(
        code,
        Code::FailedPrecondition | Code::NotFound | Code::InvalidArgument | Code::PermissionDenied
    )
}

/// A run that started and ended before its start was sent needs only its end: the leader
/// takes an end for an assignment whether or not it heard of the start.
fn coalesce(pending: &mut Vec<ShardReport>) {
    let started = ReportKind::Started as i32;
    let ended: HashSet<(String, u32, u64)> = pending
        .iter()
        .filter(|r| r.kind != started)
        .map(|r| (r.job_id.clone(), r.index, r.epoch))
        .collect();
    pending.retain(|r| r.kind != started || !ended.contains(&(r.job_id.clone(), r.index, r.epoch)));
}

/// Start the reporter; `in_flight` counts the runs in flight on this agent (see
/// [`linger_after_an_end`]).
pub fn start(
    client: Arc<Client>,
    mut in_flight: watch::Receiver<usize>,
) -> (ReportSender, tokio::task::JoinHandle<()>) {
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
            drain(&mut rx, &mut pending);
            if pending.iter().all(is_start) {
                linger_for_an_end(&mut rx, &mut pending).await;
            }
            if !pending.iter().all(is_start) {
                linger_after_an_end(&mut rx, &mut pending, &mut in_flight).await;
            }
            coalesce(&mut pending);
            let take = next_batch_len(&pending);
            let batch = ShardReportBatch {
                reports: pending[..take].to_vec(),
            };
            tracing::debug!(reports = batch.reports.len(), "sending reports");
            let result = client
                .call(|ch| {
                    let b = batch.clone();
                    async move { TaskManagersClient::new(ch).report_shards(b).await }
                })
                .await;
            match result {
                Ok(reply) => {
                    // Keep, in order, what may still succeed; drop what was taken or refused.
                    let sent: Vec<ShardReport> = pending.drain(..take).collect();
                    let unsent = std::mem::take(&mut pending);
                    let mut retry_reason = String::new();
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
                        let message = outcome.map(|o| o.message).unwrap_or_default();
                        if is_final(code) {
                            tracing::info!(job = %report.job_id, shard = report.index, epoch = report.epoch, "report refused: {message}");
                            continue;
                        }
                        retry_reason = message;
                        pending.push(report);
                    }
                    let retry = !pending.is_empty();
                    pending.extend(unsent);
                    if retry {
                        tracing::debug!(
                            left = pending.len(),
                            "reports to send again: {retry_reason}"
                        );
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
                Err(ClientError::Rejected(status)) if is_final(status.code()) => {
                    tracing::warn!(reports = take, "reports refused: {}", status.message());
                    pending.drain(..take);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn report(job: &str, index: u32, kind: ReportKind) -> ShardReport {
        ShardReport {
            job_id: job.into(),
            index,
            epoch: 7,
            kind: kind as i32,
            ..ShardReport::default()
        }
    }

    #[tokio::test]
    async fn an_end_waits_for_more_only_while_runs_are_in_flight() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (count, mut in_flight) = watch::channel(0usize);
        let count = Arc::new(count);
        // Nothing else in flight: the end goes alone, at once.
        let mut pending = vec![report("j-1", 0, ReportKind::Finished)];
        let late = tx.clone();
        tokio::spawn(async move {
            let _ = late.send(report("j-1", 1, ReportKind::Finished));
        });
        linger_after_an_end(&mut rx, &mut pending, &mut in_flight).await;
        assert_eq!(pending.len(), 1, "held back with nothing in flight");
        let _ = rx.recv().await;

        // Two in flight: what they report is gathered until neither is left.
        count.send_replace(2);
        let mut pending = vec![report("j-1", 2, ReportKind::Finished)];
        let ends = tx.clone();
        let counter = count.clone();
        tokio::spawn(async move {
            for index in [3, 4] {
                let _ = ends.send(report("j-1", index, ReportKind::Finished));
                counter.send_modify(|n| *n -= 1);
            }
        });
        tokio::time::timeout(
            Duration::from_secs(5),
            linger_after_an_end(&mut rx, &mut pending, &mut in_flight),
        )
        .await
        .expect("returns once nothing is in flight");
        assert_eq!(pending.len(), 3, "{pending:?}");

        // A run that stays in flight holds the end back no longer than the linger.
        count.send_replace(1);
        let mut pending = vec![report("j-1", 5, ReportKind::Finished)];
        tokio::time::timeout(
            Duration::from_secs(5),
            linger_after_an_end(&mut rx, &mut pending, &mut in_flight),
        )
        .await
        .expect("returns after END_LINGER");
        assert_eq!(pending.len(), 1);
    }

    #[tokio::test]
    async fn starts_wait_for_an_end_but_not_longer_than_the_linger() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut pending = vec![report("j-1", 0, ReportKind::Started)];
        let sender = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let _ = sender.send(report("j-1", 0, ReportKind::Finished));
        });
        let began = std::time::Instant::now();
        linger_for_an_end(&mut rx, &mut pending).await;
        assert!(began.elapsed() < START_LINGER, "an end cut the wait short");
        coalesce(&mut pending);
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].kind, ReportKind::Finished as i32);

        let mut alone = vec![report("j-1", 1, ReportKind::Started)];
        let began = std::time::Instant::now();
        linger_for_an_end(&mut rx, &mut alone).await;
        assert!(began.elapsed() >= START_LINGER);
        assert_eq!(alone.len(), 1);
        drop(tx);
    }

    #[test]
    fn a_batch_carries_a_bounded_amount_of_output() {
        let big = |index| ShardReport {
            stdout_tail: vec![b'x'; 900 * 1024],
            ..report("j-1", index, ReportKind::Finished)
        };
        let pending: Vec<ShardReport> = (0..5).map(big).collect();
        assert_eq!(next_batch_len(&pending), 2);
        // One report larger than the budget still goes, alone.
        let huge = vec![ShardReport {
            stdout_tail: vec![b'x'; 3 * 1024 * 1024],
            ..report("j-1", 0, ReportKind::Finished)
        }];
        assert_eq!(next_batch_len(&huge), 1);
        let small: Vec<ShardReport> = (0..1000)
            .map(|i| report("j-1", i, ReportKind::Finished))
            .collect();
        assert_eq!(next_batch_len(&small), BATCH);
    }

    #[test]
    fn a_start_is_dropped_only_when_its_end_travels_with_it() {
        let mut pending = vec![
            report("j-1", 0, ReportKind::Started),
            report("j-1", 1, ReportKind::Started),
            report("j-1", 0, ReportKind::Finished),
        ];
        coalesce(&mut pending);
        let kept: Vec<(u32, i32)> = pending.iter().map(|r| (r.index, r.kind)).collect();
        assert_eq!(
            kept,
            vec![
                (1, ReportKind::Started as i32),
                (0, ReportKind::Finished as i32)
            ]
        );
    }
}
