//! One shard run: a `shard-exec` supervisor child whose stdin carries keep-alive bytes while
//! the agent holds its lease, and a task that waits for it, records the result durably and
//! reports it.

use super::lease::Lease;
use super::reporter::ReportSender;
use super::specs::SpecCache;
use super::workdir::{tail, RunResult, WorkDir};
use crate::pb::api::{Assignment, ReportKind, ShardReport};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

/// Keep-alive bytes go to the supervisor this often ...
const KEEPALIVE_EVERY: Duration = Duration::from_millis(100);
/// ... and it kills the shard after this long without one.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_millis(1000);
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
    pub executable: PathBuf,
    pub workdir: WorkDir,
    pub lease: Arc<Lease>,
    pub reports: ReportSender,
    pub specs: SpecCache,
    /// Called with the run's key when it is over, whatever the reason, and whether its
    /// outcome was reported.
    pub on_exit: OnExit,
}

impl RunContext {
    pub fn report(&self, a: &Assignment, kind: ReportKind, result: Option<&RunResult>) {
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
        });
    }

    /// Report a result (also a stored one again, when the agent restarted before the
    /// report got through).
    pub fn report_result(&self, a: &Assignment, result: &RunResult) {
        self.report(a, classify(result), Some(result));
    }
}

/// Why a shard could not be started when its arguments and environment exceed exec's limits.
const TOO_LARGE_FOR_EXEC: &str =
    "cannot start the shard (its arguments and environment are too large for exec)";

/// Whose fault a run's end was: a command that could not be started at all is the job's,
/// any other non-zero exit is a failure of the shard.
fn classify(result: &RunResult) -> ReportKind {
    match result.exit_code {
        Some(0) => ReportKind::Finished,
        Some(super::supervisor::EXIT_CANNOT_START)
            if result
                .error
                .contains(super::supervisor::CANNOT_START_MESSAGE) =>
        {
            ReportKind::CannotStart
        }
        None if result.error.starts_with(TOO_LARGE_FOR_EXEC) => ReportKind::CannotStart,
        _ => ReportKind::Failed,
    }
}

/// Start a run; the returned handle stops it when dropped.
pub fn start(ctx: RunContext, a: Assignment) -> RunHandle {
    let (stop_tx, stop_rx) = oneshot::channel();
    tokio::spawn(async move {
        let key = (a.job_id.clone(), a.index, a.epoch);
        let reported = run(&ctx, &a, stop_rx).await;
        (ctx.on_exit)(&key, reported);
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
    // The marker's fsyncs run off the async threads, so that many runs starting at once
    // wait for the disk side by side (the file system groups their commits) instead of
    // one after another on the runtime's few threads.
    let prepared = {
        let workdir = ctx.workdir.clone();
        let (job_id, index, epoch) = (a.job_id.clone(), a.index, a.epoch);
        tokio::task::spawn_blocking(move || {
            let dir = workdir.mark_started(&job_id, index, epoch)?;
            let stdout = std::fs::File::create(dir.join("stdout"))?;
            let stderr = std::fs::File::create(dir.join("stderr"))?;
            Ok::<_, std::io::Error>((dir, stdout, stderr))
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    };
    let (dir, stdout, stderr) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            let result = RunResult {
                exit_code: None,
                run_ms: 0,
                error: format!("cannot prepare the run directory and its output files: {e}"),
            };
            let _ = ctx
                .workdir
                .save_result(&a.job_id, a.index, a.epoch, &result);
            ctx.report(a, ReportKind::Failed, Some(&result));
            return true;
        }
    };
    let started = Instant::now();
    let mut command = tokio::process::Command::new(&ctx.executable);
    command
        .arg("shard-exec")
        .arg("--keepalive-timeout-ms")
        .arg(KEEPALIVE_TIMEOUT.as_millis().to_string())
        .arg("--")
        .arg(&spec.command)
        .args(&spec.args)
        .envs(&spec.env)
        .env("DISPATCHER_JOB_ID", &a.job_id)
        .env("DISPATCHER_SHARD_INDEX", a.index.to_string())
        .env("DISPATCHER_SHARD_COUNT", a.shard_count.to_string())
        .env("DISPATCHER_ATTEMPT", a.attempt.to_string())
        .env("DISPATCHER_EPOCH", a.epoch.to_string())
        .env("DISPATCHER_TASKMANAGER", &ctx.taskmanager_id)
        .current_dir(&dir)
        // Its own process group: signals for the agent's terminal do not reach it.
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            // Arguments or environment too large for exec are the job's doing; anything
            // else (this executable gone, out of processes) is the TaskManager's.
            let (kind, what) = if e.raw_os_error() == Some(libc::E2BIG) {
                (ReportKind::CannotStart, TOO_LARGE_FOR_EXEC)
            } else {
                (ReportKind::Failed, "cannot start the shard supervisor")
            };
            let result = RunResult {
                exit_code: None,
                run_ms: 0,
                error: format!("{what}: {e}"),
            };
            let _ = ctx
                .workdir
                .save_result(&a.job_id, a.index, a.epoch, &result);
            ctx.report(a, kind, Some(&result));
            return true;
        }
    };
    ctx.report(a, ReportKind::Started, None);

    // Keep-alives while the lease holds and nobody asked to stop; closing stdin stops it.
    let stopped = Arc::new(AtomicBool::new(false));
    if let Some(mut stdin) = child.stdin.take() {
        let lease = ctx.lease.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move {
            let mut stop_rx = stop_rx;
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = tokio::time::sleep(KEEPALIVE_EVERY) => {}
                }
                if !lease.is_valid() {
                    break;
                }
                if stdin.write_all(b"k").await.is_err() {
                    return; // the supervisor is gone: the run is over
                }
            }
            stopped.store(true, Ordering::SeqCst);
            drop(stdin);
        });
    }

    let status = child.wait().await;
    let run_ms = started.elapsed().as_millis() as u64;
    if stopped.load(Ordering::SeqCst) {
        // Stopped by us (moved away, cancelled, or lease lost): not this run's outcome to report.
        tracing::info!(job = %a.job_id, shard = a.index, epoch = a.epoch, "run stopped");
        return false;
    }
    let exit_code = status.ok().and_then(|s| s.code());
    let error = if exit_code == Some(0) {
        String::new()
    } else {
        let tail = tail(&dir.join("stderr"), ERROR_TAIL_BYTES);
        match exit_code {
            Some(code) => format!("exit code {code}: {tail}"),
            None => format!("killed by a signal: {tail}"),
        }
    };
    let result = RunResult {
        exit_code,
        run_ms,
        error,
    };
    if exit_code == Some(super::supervisor::EXIT_STOPPED)
        && result.error.contains(super::supervisor::STOPPED_MESSAGE)
    {
        // The supervisor lost its keep-alives (the agent stalled): not the shard's fault.
        ctx.report(a, ReportKind::Interrupted, Some(&result));
        return true;
    }
    let saved = {
        let workdir = ctx.workdir.clone();
        let (job_id, index, epoch, result) = (a.job_id.clone(), a.index, a.epoch, result.clone());
        tokio::task::spawn_blocking(move || workdir.save_result(&job_id, index, epoch, &result))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    };
    if let Err(e) = saved {
        tracing::warn!(job = %a.job_id, shard = a.index, "cannot record the result durably: {e}");
    }
    ctx.report_result(a, &result);
    true
}
