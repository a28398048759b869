//! `dispatcher job logs <job> [--shard i] [--stderr] [--follow]`: what a shard printed.
//!
//! A running shard's output comes live from its agent through the leader (the leader asks
//! the agent for it only while someone follows); an ended shard's is the tail kept in the
//! replicated state, so it is there after the agent is gone. Control bytes are shown
//! escaped (a shard cannot drive the operator's terminal); with `--raw` the bytes go out as
//! they were printed.

use super::terminal::printable;
use super::{CliError, ExitCode};
use crate::cli::OutputFormat;
use crate::client::Client;
use crate::pb::api::{OutputChunk, ShardOutputReply};
use serde_json::json;
use std::io::Write;
use std::time::Duration;

/// Without --follow, how long to wait for a running shard's agent to send what it has.
const FIRST_LOOK: Duration = Duration::from_secs(3);

/// Which stream, and how to show it.
struct Printer {
    stderr: bool,
    format: OutputFormat,
    /// Write the bytes as printed (`--raw`), not escaped.
    raw: bool,
    /// The run being shown and the offset printed up to.
    seen: Option<(u64, u64)>,
}

impl Printer {
    fn name(&self) -> &'static str {
        if self.stderr {
            "stderr"
        } else {
            "stdout"
        }
    }

    fn write(&self, bytes: &[u8]) {
        let mut out = std::io::stdout().lock();
        let written = if self.raw {
            out.write_all(bytes)
        } else {
            out.write_all(printable(bytes).as_bytes())
        };
        // A closed pipe (`| head`) ends the output quietly.
        let _ = written.and_then(|()| out.flush());
    }

    /// Print `bytes` found at `offset` of run `epoch`'s stream, skipping what was printed
    /// and saying when some were missed.
    fn show(&mut self, epoch: u64, offset: u64, bytes: &[u8], source: &str) {
        let from = match self.seen {
            Some((e, at)) if e == epoch => at,
            _ => offset,
        };
        let end = offset + bytes.len() as u64;
        if end <= from {
            return;
        }
        if offset > from && self.format == OutputFormat::Text {
            eprintln!("[{} bytes of {} not shown]", offset - from, self.name());
        }
        let skip = from.saturating_sub(offset) as usize;
        let new = &bytes[skip..];
        match self.format {
            OutputFormat::Json => println!(
                "{}",
                json!({
                    "stream": self.name(),
                    "epoch": epoch,
                    "offset": offset + skip as u64,
                    "source": source,
                    "text": String::from_utf8_lossy(new),
                })
            ),
            OutputFormat::Text => self.write(new),
        }
        self.seen = Some((epoch, end));
    }

    fn chunk(&mut self, chunk: &OutputChunk) {
        let (offset, bytes) = if self.stderr {
            (chunk.stderr_offset, &chunk.stderr)
        } else {
            (chunk.stdout_offset, &chunk.stdout)
        };
        if !bytes.is_empty() {
            self.show(chunk.epoch, offset, bytes, "taskmanager");
        }
    }

    /// The kept tail of an ended run.
    fn kept(&mut self, reply: &ShardOutputReply) {
        let (bytes, len, cut) = if self.stderr {
            (&reply.stderr, reply.stderr_len, reply.stderr_cut)
        } else {
            (&reply.stdout, reply.stdout_len, reply.stdout_cut)
        };
        let len = len.max(bytes.len() as u64);
        if cut && self.seen.is_none() && self.format == OutputFormat::Text {
            eprintln!(
                "[only the last {} of {len} bytes of {} are kept]",
                bytes.len(),
                self.name()
            );
        }
        self.show(reply.kept_epoch, len - bytes.len() as u64, bytes, "state");
    }
}

fn holds_slots(state: &str) -> bool {
    matches!(state, "assigned" | "running")
}

pub async fn logs(
    client: &Client,
    job_id: &str,
    shard: u32,
    stderr: bool,
    follow: bool,
    raw: bool,
    format: OutputFormat,
) -> Result<ExitCode, CliError> {
    let mut printer = Printer {
        stderr,
        format,
        raw,
        seen: None,
    };
    let mut reply = client.shard_output(job_id, shard).await?;
    if holds_slots(&reply.state) {
        let epoch = reply.epoch;
        let live = client.follow_shard_output(job_id, shard, |chunk| {
            if chunk.epoch == epoch {
                printer.chunk(chunk);
            }
            // Without --follow, what the agent had is enough.
            follow
        });
        if follow {
            live.await?;
        } else if tokio::time::timeout(FIRST_LOOK, live).await.is_err() && printer.seen.is_none() {
            eprintln!(
                "{job_id} shard {shard} runs on {} and has printed nothing on {} yet",
                reply.taskmanager,
                printer.name()
            );
        }
        if !follow {
            return Ok(0);
        }
        // What it printed after the last chunk is in the tail kept when it ended.
        reply = client.shard_output(job_id, shard).await?;
        if reply.kept && reply.kept_epoch == epoch {
            printer.kept(&reply);
        }
        return Ok(0);
    }
    if reply.kept {
        printer.kept(&reply);
    } else {
        eprintln!(
            "no output is kept for {job_id} shard {shard} ({}): it has not run, printed \
             nothing, or its output was dropped to keep the cluster's limit",
            reply.state
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_chunks_print_each_byte_once() {
        let mut p = Printer {
            stderr: false,
            format: OutputFormat::Text,
            raw: true,
            seen: None,
        };
        p.show(5, 10, b"abcdef", "taskmanager");
        assert_eq!(p.seen, Some((5, 16)));
        p.show(5, 12, b"cdefgh", "taskmanager");
        assert_eq!(p.seen, Some((5, 18)));
        p.show(5, 0, b"old", "state");
        assert_eq!(p.seen, Some((5, 18)), "nothing before what was shown");
    }
}
