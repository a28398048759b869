//! The agent's side of live output (`job logs` on a running shard): the leader lists the
//! runs someone follows in its heartbeat replies; the agent sends their new output with its
//! next heartbeats, read from the run directories, a bounded amount per beat. A run it stops
//! being asked about is dropped; a run that is over is sent to its end, then marked ended.

use super::runner::RunKey;
use super::workdir::WorkDir;
use crate::pb::api::{OutputChunk, ShardKey};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// A newly followed run starts this far back from what it has printed so far.
const FIRST_LOOK_BYTES: u64 = 64 * 1024;
/// Most bytes of one stream of one run per heartbeat.
const PER_STREAM_BYTES: u64 = 64 * 1024;
/// Most bytes of output per heartbeat in all.
const PER_BEAT_BYTES: u64 = 256 * 1024;

#[derive(Debug, Clone, Copy)]
struct Sent {
    stdout: u64,
    stderr: u64,
}

#[derive(Default)]
pub struct OutputTaps {
    runs: HashMap<RunKey, Sent>,
}

fn len_of(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Up to `most` bytes of `path` from `from`.
fn read_from(path: &Path, from: u64, most: u64) -> Vec<u8> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    if file.seek(SeekFrom::Start(from)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    let _ = file.take(most).read_to_end(&mut buf);
    buf
}

impl OutputTaps {
    /// The leader's list of followed runs (in every heartbeat reply).
    pub fn update(&mut self, workdir: &WorkDir, wanted: &[ShardKey]) {
        let wanted: HashMap<RunKey, ()> = wanted
            .iter()
            .map(|k| ((k.job_id.clone(), k.index, k.epoch), ()))
            .collect();
        self.runs.retain(|key, _| wanted.contains_key(key));
        for key in wanted.into_keys() {
            self.runs.entry(key.clone()).or_insert_with(|| {
                let dir = workdir.run_dir(&key.0, key.1, key.2);
                Sent {
                    stdout: len_of(&dir.join("stdout")).saturating_sub(FIRST_LOOK_BYTES),
                    stderr: len_of(&dir.join("stderr")).saturating_sub(FIRST_LOOK_BYTES),
                }
            });
        }
    }

    /// New output of the followed runs, for the next heartbeat; `running` says whether a run
    /// is still going here.
    pub fn collect(
        &mut self,
        workdir: &WorkDir,
        running: impl Fn(&RunKey) -> bool,
    ) -> Vec<OutputChunk> {
        let mut budget = PER_BEAT_BYTES;
        let mut chunks = Vec::new();
        let mut finished = Vec::new();
        for (key, sent) in self.runs.iter_mut() {
            // Read "running" before the files: output written before a run ended is in
            // them by the time it is seen to have ended.
            let live = running(key);
            let dir = workdir.run_dir(&key.0, key.1, key.2);
            let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
            let stdout = read_from(&out_path, sent.stdout, PER_STREAM_BYTES.min(budget));
            budget -= stdout.len() as u64;
            let stderr = read_from(&err_path, sent.stderr, PER_STREAM_BYTES.min(budget));
            budget -= stderr.len() as u64;
            let chunk_from = *sent;
            sent.stdout += stdout.len() as u64;
            sent.stderr += stderr.len() as u64;
            let ended =
                !live && sent.stdout >= len_of(&out_path) && sent.stderr >= len_of(&err_path);
            if ended {
                finished.push(key.clone());
            }
            if stdout.is_empty() && stderr.is_empty() && !ended {
                continue;
            }
            chunks.push(OutputChunk {
                job_id: key.0.clone(),
                index: key.1,
                epoch: key.2,
                stdout_offset: chunk_from.stdout,
                stdout,
                stderr_offset: chunk_from.stderr,
                stderr,
                ended,
            });
            if budget == 0 {
                break;
            }
        }
        for key in finished {
            self.runs.remove(&key);
        }
        chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn followed_output_comes_in_order_bounded_and_ends_with_the_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let workdir = WorkDir::open(dir.path()).expect("work dir");
        let run = workdir.run_dir("j-3", 0, 7);
        std::fs::create_dir_all(&run).expect("run dir");
        let printed = vec![b'a'; 100 * 1024];
        std::fs::write(run.join("stdout"), &printed).expect("stdout");
        std::fs::write(run.join("stderr"), b"oops\n").expect("stderr");
        let mut taps = OutputTaps::default();
        let wanted = [ShardKey {
            job_id: "j-3".into(),
            index: 0,
            epoch: 7,
        }];
        taps.update(&workdir, &wanted);

        // The first look starts 64 KiB back; the rest follows beat by beat.
        let first = taps.collect(&workdir, |_| true);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].stdout_offset, 36 * 1024);
        assert_eq!(first[0].stdout.len(), 64 * 1024);
        assert_eq!(first[0].stderr, b"oops\n");
        assert!(!first[0].ended);
        assert!(
            taps.collect(&workdir, |_| true).is_empty(),
            "nothing new yet"
        );

        std::fs::write(run.join("stdout"), [printed.as_slice(), b"bye\n"].concat()).expect("more");
        let last = taps.collect(&workdir, |_| false);
        assert_eq!(last[0].stdout, b"bye\n");
        assert_eq!(last[0].stdout_offset, 100 * 1024);
        assert!(last[0].ended, "the run is over and everything was sent");
        assert!(
            taps.collect(&workdir, |_| false).is_empty(),
            "an ended run is dropped"
        );
    }
}
