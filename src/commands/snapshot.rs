//! `cluster snapshot save <file>` (a backup, streamed from a replica and checked before it
//! is kept) and `cluster snapshot restore <file>` (a new replica's data dir made from one,
//! offline).

use super::{output, CliError, ExitCode};
use crate::cli::{OutputFormat, RestoreArgs};
use crate::client::Client;
use crate::raft::backup::{decode_backup, restore};
use serde_json::json;
use std::path::Path;

pub async fn save(
    client: &Client,
    file: &Path,
    format: OutputFormat,
) -> Result<ExitCode, CliError> {
    if file.exists() {
        return Err(CliError::Usage(format!(
            "{} exists; give a new file name (a backup is never overwritten)",
            file.display()
        )));
    }
    let bytes = client.backup().await?;
    // Checked as a restore would read it, before it is called a backup.
    let backup = decode_backup(&bytes).map_err(|e| {
        CliError::Usage(format!(
            "the replica sent a backup that does not check out: {e}"
        ))
    })?;
    crate::durable::replace_file(file, &bytes)
        .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", file.display())))?;
    let index = backup.last_log_id().map(|l| l.index()).unwrap_or(0);
    let term = backup
        .last_log_id()
        .map(|l| l.committed_leader_id().term)
        .unwrap_or(0);
    output::message(
        format,
        json!({
            "file": file.display().to_string(),
            "bytes": bytes.len(),
            "index": index,
            "term": term,
            "jobs": backup.state.jobs.len(),
            "taskmanagers": backup.state.taskmanagers.len(),
        }),
        &format!(
            "saved {} ({} bytes): the state at log index {index} (term {term}), {} jobs, {} \
             TaskManagers",
            file.display(),
            bytes.len(),
            backup.state.jobs.len(),
            backup.state.taskmanagers.len()
        ),
    );
    Ok(0)
}

pub async fn restore_into(args: RestoreArgs, format: OutputFormat) -> Result<ExitCode, CliError> {
    let bytes = std::fs::read(&args.file)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", args.file.display())))?;
    let backup = decode_backup(&bytes)
        .map_err(|e| CliError::Usage(format!("{}: {e}", args.file.display())))?;
    let peers = args.peers.into_iter().collect();
    restore(&backup, &args.data_dir, args.id, &peers)
        .await
        .map_err(|e| CliError::Usage(format!("cannot restore: {e}")))?;
    let index = backup.last_log_id().map(|l| l.index()).unwrap_or(0);
    output::message(
        format,
        json!({
            "data_dir": args.data_dir.display().to_string(),
            "id": args.id,
            "index": index,
            "jobs": backup.state.jobs.len(),
        }),
        &format!(
            "restored the state at log index {index} into {} for replica {}; start it with \
             `dispatcher serve --id {} --data-dir {} --peers ...` (the same --peers on every \
             restored replica)",
            args.data_dir.display(),
            args.id,
            args.id,
            args.data_dir.display()
        ),
    );
    Ok(0)
}
