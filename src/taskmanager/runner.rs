//! One shard run: record its start durably, have the shard host start it, wait for its end,
//! record the result durably and report it.

use super::host::{Launch, RunEvent, ShardHost};
use super::host_protocol::{Event, Stopped};
use super::lease::Lease;
use super::reporter::ReportSender;
use super::sandbox::cgroup::RunLimits;
use super::specs::SpecCache;
use super::workdir::{tail, tail_bytes, RunResult, WorkDir};
use crate::pb::api::{Assignment, ReportKind, ShardReport};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// The shard host kills every shard after this long without a keep-alive from the agent.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_millis(500);
/// Bytes of stderr kept as the failure message.
const ERROR_TAIL_BYTES: u64 = 4_096;

/// Identifies a run: (job id, shard index, epoch).
pub type RunKey = (String, u32, u64);

/// What the agent keeps of a running shard. Dropping it stops the run.
pub struct RunHandle {
    _stop: oneshot::Sender<()>,
}

/// Called when a run is over: its key, and whether its outcome was reported.
pub type OnExit = Arc<dyn Fn(&RunKey, bool) + Send + Sync>;

/// Everything a run needs from its agent.
#[derive(Clone)]
pub struct RunContext {
    pub taskmanager_id: String,
    /// This agent process's incarnation, sent with every report.
    pub incarnation: u64,
    pub host: Arc<ShardHost>,
    pub workdir: WorkDir,
    pub lease: Arc<Lease>,
    pub reports: ReportSender,
    /// How many runs are in flight here: counted up as a run starts, down once its task is
    /// over (its end reported). The reporter holds an end back for more only while some are.
    pub in_flight: Arc<tokio::sync::watch::Sender<usize>>,
    pub specs: SpecCache,
    /// Called with the run's key when it is over, whatever the reason, and whether its
    /// outcome was reported.
    pub on_exit: OnExit,
    pub metrics: Arc<crate::metrics::AgentMetrics>,
    /// What may run at once here (slots, resources, device indices).
    pub capacity: Arc<super::local_capacity::LocalCapacity>,
    /// How much of each output stream a final report carries (the leader says, in every
    /// heartbeat reply).
    pub output_tail_bytes: Arc<std::sync::atomic::AtomicU64>,
}

impl RunContext {
    pub fn report(&self, a: &Assignment, kind: ReportKind, result: Option<&RunResult>) {
        let ((stdout_tail, stdout_len), (stderr_tail, stderr_len)) = if matches!(
            kind,
            ReportKind::Finished | ReportKind::Failed | ReportKind::OverLimit
        ) {
            let most = self
                .output_tail_bytes
                .load(std::sync::atomic::Ordering::Relaxed);
            let dir = self.workdir.run_dir(&a.job_id, a.index, a.epoch);
            (
                tail_bytes(&dir.join("stdout"), most),
                tail_bytes(&dir.join("stderr"), most),
            )
        } else {
            Default::default()
        };
        let _ = self.reports.send(ShardReport {
            taskmanager_id: self.taskmanager_id.clone(),
            job_id: a.job_id.clone(),
            index: a.index,
            epoch: a.epoch,
            kind: kind as i32,
            exit_code: result.and_then(|r| r.exit_code),
            error: result.map(|r| r.error.clone()).unwrap_or_default(),
            run_ms: result.map(|r| r.run_ms).unwrap_or(0),
            incarnation: self.incarnation,
            stdout_cut: stdout_len > stdout_tail.len() as u64,
            stderr_cut: stderr_len > stderr_tail.len() as u64,
            stdout_tail,
            stderr_tail,
            stdout_len,
            stderr_len,
        });
    }

    /// Report a result (also a stored one again, when the agent restarted before the
    /// report got through).
    pub fn report_result(&self, a: &Assignment, result: &RunResult) {
        self.report(a, classify(result), Some(result));
    }
}

/// Whose fault a run's end was: a command that could not be started at all is the job's,
/// any other non-zero exit is a failure of the shard.
fn classify(result: &RunResult) -> ReportKind {
    if result.cannot_start {
        ReportKind::CannotStart
    } else if result.over_limit {
        ReportKind::OverLimit
    } else if result.exit_code == Some(0) {
        ReportKind::Finished
    } else {
        ReportKind::Failed
    }
}

/// Sleep until `at`, or for ever when there is no `at`.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Start a run; the returned handle stops it when dropped.
pub fn start(ctx: RunContext, a: Assignment) -> RunHandle {
    let (stop_tx, stop_rx) = oneshot::channel();
    ctx.in_flight.send_modify(|n| *n += 1);
    tokio::spawn(async move {
        let key = (a.job_id.clone(), a.index, a.epoch);
        let reported = run(&ctx, &a, stop_rx).await;
        (ctx.on_exit)(&key, reported);
        ctx.in_flight.send_modify(|n| *n = n.saturating_sub(1));
    });
    RunHandle { _stop: stop_tx }
}

/// Returns whether the run's outcome was reported (and so needs no report from the work
/// directory later).
async fn run(ctx: &RunContext, a: &Assignment, mut stop_rx: oneshot::Receiver<()>) -> bool {
    // What to run comes once per job; if it cannot be had now, the next heartbeat retries.
    let spec = tokio::select! {
        spec = ctx.specs.get(&a.job_id) => match spec {
            Ok(spec) => spec,
            Err(e) => {
                tracing::warn!(job = %a.job_id, shard = a.index, "cannot fetch the job's spec: {e}");
                return false;
            }
        },
        _ = &mut stop_rx => return false,
    };
    let asked = spec.resources.clone().unwrap_or_default();
    let asked_here = crate::domain::Resources::from(&asked);
    // Held until the run is over (this function returns once its process is gone): a run
    // placed into the room of one still stopping waits for it here.
    let devices = tokio::select! {
        holding = ctx.capacity.take(u64::from(spec.slots_per_shard), &asked_here) => holding,
        _ = &mut stop_rx => return false,
    };
    let devices = match devices {
        Ok(devices) => devices,
        Err(error) => {
            let result = RunResult {
                exit_code: None,
                run_ms: 0,
                error,
                cannot_start: true,
                over_limit: false,
            };
            return end(ctx, a, result).await;
        }
    };
    // Lost the lease, or told to stop, between the heartbeat reply and now: the assignment
    // may be stale, so do not start it.
    let stop_requested = matches!(
        stop_rx.try_recv(),
        Err(oneshot::error::TryRecvError::Closed)
    );
    if !ctx.lease.is_valid() || stop_requested {
        tracing::info!(job = %a.job_id, shard = a.index, epoch = a.epoch, "not starting: lease lapsed or stopped");
        return false;
    }
    // Durable before the process can start: a restarted agent must know it may have run.
    if let Err(e) = ctx.workdir.mark_started(&a.job_id, a.index, a.epoch).await {
        let result = RunResult {
            exit_code: None,
            run_ms: 0,
            error: format!("cannot record the run's start in the work dir's journal: {e}"),
            cannot_start: false,
            over_limit: false,
        };
        ctx.report(a, ReportKind::Failed, Some(&result));
        return true;
    }
    let mut env: Vec<(String, String)> = spec.env.clone().into_iter().collect();
    env.extend(devices.env());
    env.extend([
        ("DISPATCHER_JOB_ID".to_string(), a.job_id.clone()),
        ("DISPATCHER_SHARD_INDEX".to_string(), a.index.to_string()),
        (
            "DISPATCHER_SHARD_COUNT".to_string(),
            a.shard_count.to_string(),
        ),
        ("DISPATCHER_ATTEMPT".to_string(), a.attempt.to_string()),
        ("DISPATCHER_EPOCH".to_string(), a.epoch.to_string()),
        (
            "DISPATCHER_TASKMANAGER".to_string(),
            ctx.taskmanager_id.clone(),
        ),
    ]);
    let dir = ctx.workdir.run_dir(&a.job_id, a.index, a.epoch);
    let launched = ctx.host.launch(Launch {
        program: spec.command.clone(),
        args: spec.args.clone(),
        env,
        dir: dir.clone(),
        limits: RunLimits {
            pids: Some(super::sandbox::DEFAULT_PIDS_MAX),
            memory_bytes: (asked.memory_bytes > 0).then_some(asked.memory_bytes),
            cpu_millis: u32::try_from(asked.cpu_millis).ok().filter(|m| *m > 0),
        },
    });
    let (ticket, mut events) = match launched {
        Ok(launched) => launched,
        Err(e) => {
            let result = RunResult {
                exit_code: None,
                run_ms: 0,
                error: format!("cannot start the shard host: {e}"),
                cannot_start: false,
                over_limit: false,
            };
            return end(ctx, a, result).await;
        }
    };
    let mut stop_sent = false;
    let mut group: Option<u32> = None;
    // The job's wall-clock limit, counted from the process's start.
    let timeout = spec.timeout_ms.map(Duration::from_millis);
    let mut timeout_at: Option<tokio::time::Instant> = None;
    let mut timed_out = false;
    loop {
        let event = tokio::select! {
            _ = &mut stop_rx, if !stop_sent => {
                // Moved away, cancelled, or the lease was lost: the host kills it and says so.
                ticket.stop();
                stop_sent = true;
                continue;
            }
            _ = sleep_until(timeout_at), if timeout_at.is_some() && !stop_sent => {
                // Past its time limit: stopped like a cancel, then reported failed.
                ticket.stop();
                stop_sent = true;
                timed_out = true;
                continue;
            }
            event = events.recv() => event,
        };
        match event {
            Some(RunEvent::Host(Event::Started { pgid, .. })) => {
                group = Some(pgid);
                timeout_at = timeout.map(|limit| tokio::time::Instant::now() + limit);
                ctx.report(a, ReportKind::Started, None);
            }
            Some(RunEvent::Host(Event::CannotStart {
                error, job_fault, ..
            })) => {
                let result = RunResult {
                    exit_code: None,
                    run_ms: 0,
                    error,
                    cannot_start: job_fault,
                    over_limit: false,
                };
                return end(ctx, a, result).await;
            }
            Some(RunEvent::Host(Event::Exited {
                code,
                signal,
                run_ms,
                stopped,
                reason,
                ..
            })) => {
                match stopped {
                    Some(Stopped::Requested) if timed_out => {
                        let limit = timeout.map_or(0, |t| t.as_millis() as u64);
                        let result = RunResult {
                            exit_code: None,
                            run_ms,
                            error: format!(
                                "timed out after {}: {}",
                                crate::domain::format_duration(limit),
                                tail(&dir.join("stderr"), ERROR_TAIL_BYTES)
                            ),
                            cannot_start: false,
                            over_limit: true,
                        };
                        return end(ctx, a, result).await;
                    }
                    Some(Stopped::Requested) => {
                        tracing::info!(job = %a.job_id, shard = a.index, epoch = a.epoch, "run stopped");
                        return false;
                    }
                    Some(Stopped::Silence) => {
                        // The agent went silent (paused, stuck): not the shard's fault.
                        let result = RunResult {
                            exit_code: None,
                            run_ms,
                            error: "the shard host stopped the shard: its TaskManager agent \
                                    went silent (paused, stuck or without a lease)"
                                .into(),
                            cannot_start: false,
                            over_limit: false,
                        };
                        ctx.report(a, ReportKind::Interrupted, Some(&result));
                        return true;
                    }
                    None => {}
                }
                // The sandbox's reason is its memory limit: the job's own limit, passed.
                let over_limit = reason.is_some();
                let error = match (code, signal, reason) {
                    // The sandbox knows better than the exit status (its memory limit).
                    (_, _, Some(reason)) => {
                        format!("{reason}: {}", tail(&dir.join("stderr"), ERROR_TAIL_BYTES))
                    }
                    (Some(0), _, _) => String::new(),
                    (Some(code), _, None) => {
                        format!(
                            "exit code {code}: {}",
                            tail(&dir.join("stderr"), ERROR_TAIL_BYTES)
                        )
                    }
                    (None, signal, None) => format!(
                        "killed by signal {}: {}",
                        signal.unwrap_or(0),
                        tail(&dir.join("stderr"), ERROR_TAIL_BYTES)
                    ),
                };
                let result = RunResult {
                    exit_code: code,
                    run_ms,
                    error,
                    cannot_start: false,
                    over_limit,
                };
                return end(ctx, a, result).await;
            }
            Some(RunEvent::HostGone) | None => {
                // The shard died with its host (PR_SET_PDEATHSIG), but what it started in its
                // process group did not: take them too.
                if let Some(pgid) = group {
                    // SAFETY: kill(2) on the process group the host made for this run; no
                    // memory is involved.
                    unsafe {
                        libc::kill(-(pgid as i32), libc::SIGKILL);
                    }
                }
                let result = RunResult {
                    exit_code: None,
                    run_ms: 0,
                    error: "the shard host exited while the shard ran".into(),
                    cannot_start: false,
                    over_limit: false,
                };
                ctx.report(a, ReportKind::Interrupted, Some(&result));
                return true;
            }
        }
    }
}

/// Record the result durably, then report it.
async fn end(ctx: &RunContext, a: &Assignment, result: RunResult) -> bool {
    if let Err(e) = ctx
        .workdir
        .save_result(&a.job_id, a.index, a.epoch, &result)
        .await
    {
        tracing::warn!(job = %a.job_id, shard = a.index, "cannot record the result durably: {e}");
    }
    ctx.report_result(a, &result);
    true
}
