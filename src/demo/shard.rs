//! `dispatcher demo-shard <step>`: what one demo shard process does, reading its index from
//! the variables every shard gets (`DISPATCHER_SHARD_INDEX`, `DISPATCHER_SHARD_COUNT`).
//! Each output is written to a temporary file and renamed into place, so a run killed
//! half-way leaves nothing half-written and a second run of the same shard is harmless.

use super::dataset::{generate_part, Aggregate};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Step {
    /// Write part N of the raw readings.
    Generate,
    /// Clean and aggregate part N.
    Aggregate,
    /// Merge every aggregated part into the result (a one-shard job).
    Merge,
}

pub fn input_part(data: &Path, part: u32) -> PathBuf {
    data.join("input").join(format!("part-{part:03}.csv"))
}

pub fn aggregated_part(data: &Path, part: u32) -> PathBuf {
    data.join("aggregated").join(format!("part-{part:03}.tsv"))
}

pub fn result_file(data: &Path) -> PathBuf {
    data.join("result.tsv")
}

fn env_u32(name: &str) -> Result<u32, String> {
    let raw =
        std::env::var(name).map_err(|_| format!("{name} is not set (run by a TaskManager)"))?;
    raw.parse()
        .map_err(|_| format!("{name}='{raw}' is not a number"))
}

fn write_atomically(path: &Path, contents: &str) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, contents).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Run one step for the shard named by the environment; `parts` is the data set's size
/// (only the merge needs it), `pace` a pause that stands for heavier work.
pub fn run(step: Step, data: &Path, parts: u32, pace: Duration) -> Result<(), String> {
    let index = env_u32("DISPATCHER_SHARD_INDEX")?;
    match step {
        Step::Generate => {
            std::thread::sleep(pace);
            write_atomically(&input_part(data, index), &generate_part(index))
        }
        Step::Aggregate => {
            let agg = Aggregate::of_readings(&read(&input_part(data, index))?);
            std::thread::sleep(pace);
            write_atomically(&aggregated_part(data, index), &agg.to_tsv())
        }
        Step::Merge => {
            let mut total = Aggregate::default();
            for part in 0..parts {
                total.merge(&Aggregate::from_tsv(&read(&aggregated_part(data, part))?)?);
            }
            std::thread::sleep(pace);
            write_atomically(&result_file(data), &total.to_tsv())
        }
    }
}
