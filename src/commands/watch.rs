//! `job wait`, `job watch` and `events`: following the cluster's event stream. A job is read
//! once (its state and the log index it was read at), then followed from the next index, so
//! its end is seen the moment a replica applies it, and nothing between is missed.

use super::{connect, output, CliError, ExitCode};
use crate::cli::{ClientArgs, OutputFormat};
use crate::client::{Client, ClientError};
use crate::pb::api::{Event, JobStatus};
use serde_json::json;
use std::io::IsTerminal;
use std::time::Duration;
use tonic::Code;

fn exit_code(state: &str) -> Option<ExitCode> {
    match state {
        "finished" => Some(0),
        "failed" | "cancelled" => Some(1),
        _ => None,
    }
}

fn job_end_code(kind: &str) -> Option<ExitCode> {
    match kind {
        "job_finished" => Some(0),
        "job_failed" | "job_cancelled" => Some(1),
        _ => None,
    }
}

fn event_json(e: &Event) -> serde_json::Value {
    let mut v = json!({"index": e.index, "seq": e.seq, "kind": e.kind});
    if !e.job_id.is_empty() {
        v["job_id"] = json!(e.job_id);
    }
    if let Some(shard) = e.shard {
        v["shard"] = json!(shard);
    }
    if !e.taskmanager.is_empty() {
        v["taskmanager"] = json!(e.taskmanager);
    }
    if !e.detail.is_empty() {
        v["detail"] = json!(e.detail);
    }
    v
}

fn print_event(format: OutputFormat, e: &Event) {
    match format {
        OutputFormat::Json => println!("{}", event_json(e)),
        OutputFormat::Text => {
            let mut line = format!("{:>8}.{} {}", e.index, e.seq, e.kind);
            if !e.job_id.is_empty() {
                line.push_str(&format!(" {}", e.job_id));
            }
            if let Some(shard) = e.shard {
                line.push_str(&format!(" shard {shard}"));
            }
            if !e.taskmanager.is_empty() {
                line.push_str(&format!(" on {}", e.taskmanager));
            }
            if !e.detail.is_empty() {
                line.push_str(&format!(" ({})", e.detail));
            }
            println!("{}", super::terminal::line(&line));
        }
    }
}

fn shards_done(status: &JobStatus) -> u64 {
    status
        .shards
        .iter()
        .filter(|s| matches!(s.state.as_str(), "finished" | "failed" | "cancelled"))
        .count() as u64
}

/// Follow `job_id` until it ends; `on_event` sees each of its events (only its end unless
/// `every_event`). Returns the job's end state. Re-reads the job when the replica no longer
/// holds the events it needs.
async fn follow_job(
    client: &Client,
    job_id: &str,
    every_event: bool,
    mut on_status: impl FnMut(&JobStatus),
    mut on_event: impl FnMut(&Event),
) -> Result<String, CliError> {
    loop {
        let status = client.job_status(job_id).await?;
        on_status(&status);
        if exit_code(&status.state).is_some() {
            return Ok(status.state);
        }
        let mut ended = None;
        let on_each = |event: &Event| {
            on_event(event);
            if job_end_code(&event.kind).is_some() {
                ended = Some(event.kind.trim_start_matches("job_").to_string());
                return false;
            }
            true
        };
        let from = status.applied_index + 1;
        let followed = if every_event {
            client.follow_events(from, 0, Some(job_id), on_each).await
        } else {
            client.follow_job_end(from, job_id, on_each).await
        };
        match followed {
            Ok(()) => {
                if let Some(state) = ended {
                    return Ok(state);
                }
            }
            // The replica restarted or fell far behind: read the job again.
            Err(ClientError::Rejected(status)) if status.code() == Code::OutOfRange => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// `job wait`: 0 finished, 1 failed or cancelled, 2 timed out. A progress bar on a terminal.
pub async fn wait(
    client: &Client,
    job_id: &str,
    timeout: Option<f64>,
    format: OutputFormat,
) -> Result<ExitCode, CliError> {
    if let Some(t) = timeout {
        if !(t.is_finite() && t >= 0.0) {
            return Err(CliError::Usage(format!(
                "--timeout {t} is not a number of seconds"
            )));
        }
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} shards")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(job_id.to_string());
        bar
    });
    // Without a progress bar nothing before the end is shown: ask for the end alone.
    let every_event = bar.is_some();
    let followed = follow_job(
        client,
        job_id,
        every_event,
        |status| {
            if let Some(bar) = &bar {
                bar.set_length(status.shards.len() as u64);
                bar.set_position(shards_done(status));
            }
        },
        |event| {
            if let Some(bar) = &bar {
                if matches!(event.kind.as_str(), "shard_finished" | "shard_cannot_start") {
                    bar.inc(1);
                }
            }
        },
    );
    let outcome = match timeout {
        Some(t) => tokio::time::timeout(Duration::from_secs_f64(t), followed)
            .await
            .ok(),
        None => Some(followed.await),
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    match outcome {
        Some(state) => {
            let state = state?;
            let code = exit_code(&state).unwrap_or(1);
            output::message(
                format,
                json!({"job_id": job_id, "state": state, "timed_out": false}),
                &format!("{job_id} {state}"),
            );
            Ok(code)
        }
        None => {
            let status = client.job_status(job_id).await?;
            output::message(
                format,
                json!({"job_id": job_id, "state": status.state, "timed_out": true}),
                &format!("{job_id} is still {} (timed out)", status.state),
            );
            Ok(2)
        }
    }
}

/// `job watch`: one line per event of the job until it ends; exits as `job wait`.
pub async fn watch(
    client: &Client,
    job_id: &str,
    format: OutputFormat,
) -> Result<ExitCode, CliError> {
    let mut first = true;
    let state = follow_job(
        client,
        job_id,
        true,
        |status| {
            if std::mem::take(&mut first) && format == OutputFormat::Text {
                println!(
                    "{} ({}): {}, {}/{} shards ended, as of log index {}",
                    status.job_id,
                    super::terminal::line(&status.name),
                    status.state,
                    shards_done(status),
                    status.shards.len(),
                    status.applied_index
                );
            }
        },
        |event| print_event(format, event),
    )
    .await?;
    Ok(exit_code(&state).unwrap_or(1))
}

/// `events [--from-index N]`: the cluster's events, then live, until interrupted.
pub async fn events(from_index: u64, args: ClientArgs) -> Result<ExitCode, CliError> {
    let client = connect(&args)?;
    client
        .follow_events(from_index, 0, None, |event| {
            print_event(args.output, event);
            true
        })
        .await?;
    Ok(0)
}
