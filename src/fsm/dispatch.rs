//! How long after submission the shards a command reports started: the dispatch latency
//! `/metrics` shows. Read from the state *before* the command applies, so that a start
//! folded into the end report of a short shard (the agent waits briefly for the end and
//! sends one report) counts too: such a shard started `run_ms` before its end was stamped.
//!
//! Pure and read-only: it changes nothing, so it cannot make replicas diverge.

use super::command::{Command, Report, ShardOutcome};
use crate::domain::{ClusterState, JobId, ShardState};

/// Milliseconds from submission to start, for each shard `command` reports started for the
/// first time in its current placement.
pub fn dispatch_latencies_ms(state: &ClusterState, command: &Command) -> Vec<u64> {
    let mut out = Vec::new();
    match command {
        Command::Batch(reports) => {
            for report in reports {
                if let Some(ms) = of_report(state, report) {
                    out.push(ms);
                }
            }
        }
        Command::ReportShardStarted {
            taskmanager,
            job_id,
            shard,
            epoch,
            now_ms,
        } => out.extend(first_start(
            state,
            taskmanager,
            *job_id,
            *shard,
            *epoch,
            *now_ms,
        )),
        Command::ReportShardEnded {
            taskmanager,
            job_id,
            shard,
            epoch,
            outcome,
            run_ms,
            now_ms,
            ..
        } if ran(outcome) => out.extend(first_start(
            state,
            taskmanager,
            *job_id,
            *shard,
            *epoch,
            now_ms.saturating_sub(*run_ms),
        )),
        _ => {}
    }
    out
}

fn of_report(state: &ClusterState, report: &Report) -> Option<u64> {
    match report {
        Report::Started {
            taskmanager,
            job_id,
            shard,
            epoch,
            now_ms,
        } => first_start(state, taskmanager, *job_id, *shard, *epoch, *now_ms),
        Report::Ended {
            taskmanager,
            job_id,
            shard,
            epoch,
            outcome,
            run_ms,
            now_ms,
            ..
        } if ran(outcome) => first_start(
            state,
            taskmanager,
            *job_id,
            *shard,
            *epoch,
            now_ms.saturating_sub(*run_ms),
        ),
        Report::Ended { .. } | Report::Output(_) => None,
    }
}

/// A process ran and exited (not a start that failed, nor an interruption).
fn ran(outcome: &ShardOutcome) -> bool {
    matches!(
        outcome,
        ShardOutcome::Finished | ShardOutcome::Failed { .. } | ShardOutcome::OverLimit { .. }
    )
}

/// The shard is placed on `taskmanager` in `epoch` and not yet known started: its start at
/// `started_ms` is news.
fn first_start(
    state: &ClusterState,
    taskmanager: &str,
    job_id: JobId,
    shard: u32,
    epoch: u64,
    started_ms: u64,
) -> Option<u64> {
    let job = state.job(job_id)?;
    let placed = job.shards.get(shard as usize)?;
    let news = placed.state == ShardState::Assigned
        && placed.epoch == epoch
        && placed.taskmanager.as_deref() == Some(taskmanager);
    news.then(|| started_ms.saturating_sub(job.created_at_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Job, JobSpec, JobState, Shard};
    use std::sync::Arc;

    fn state_with(shard_state: ShardState) -> ClusterState {
        let mut shard = Shard::new(0);
        shard.state = shard_state;
        shard.epoch = 7;
        shard.taskmanager = Some("a".into());
        let mut job = Job {
            id: JobId(3),
            name: "j".into(),
            spec: JobSpec {
                command: "/bin/true".into(),
                args: vec![],
                env: Default::default(),
                shard_count: 1,
                slots_per_shard: 1,
                max_attempts: 1,
                selector: Default::default(),
            },
            state: JobState::Running,
            created_at_ms: 1_000,
            ended_at_ms: None,
            idempotency_key: None,
            owner: "o".into(),
            shards: vec![shard],
            counts: Default::default(),
        };
        job.recount();
        let mut state = ClusterState::default();
        state.jobs.insert(JobId(3), Arc::new(job));
        state
    }

    fn ended(outcome: ShardOutcome, epoch: u64) -> Report {
        Report::Ended {
            taskmanager: "a".into(),
            job_id: JobId(3),
            shard: 0,
            epoch,
            outcome,
            run_ms: 40,
            retry_at_ms: 0,
            now_ms: 1_100,
        }
    }

    #[test]
    fn a_start_counts_from_submission() {
        let state = state_with(ShardState::Assigned);
        let started = Command::ReportShardStarted {
            taskmanager: "a".into(),
            job_id: JobId(3),
            shard: 0,
            epoch: 7,
            now_ms: 1_012,
        };
        assert_eq!(dispatch_latencies_ms(&state, &started), vec![12]);
    }

    #[test]
    fn a_start_folded_into_the_end_counts_once_from_the_run_time() {
        let assigned = state_with(ShardState::Assigned);
        let batch = Command::Batch(vec![ended(ShardOutcome::Finished, 7)]);
        assert_eq!(dispatch_latencies_ms(&assigned, &batch), vec![60]);
        // Its start was reported already: the end is not a start.
        let running = state_with(ShardState::Running);
        assert!(dispatch_latencies_ms(&running, &batch).is_empty());
    }

    #[test]
    fn stale_reports_and_failed_starts_are_not_starts() {
        let state = state_with(ShardState::Assigned);
        let stale = Command::Batch(vec![ended(ShardOutcome::Finished, 6)]);
        assert!(dispatch_latencies_ms(&state, &stale).is_empty());
        let cannot = Command::Batch(vec![ended(
            ShardOutcome::CannotStart {
                error: "no such file".into(),
            },
            7,
        )]);
        assert!(dispatch_latencies_ms(&state, &cannot).is_empty());
    }
}
