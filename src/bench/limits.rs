//! The floors beside the figures: how long one durable write takes on this disk (no commit
//! can be faster than the leader's flush; batching spreads it over many commits), and what
//! a bare gRPC round trip to a replica costs on loopback (no Raft, no disk).

use super::process::cpu_time;
use super::stats::Summary;
use super::BenchError;
use crate::client::Client;
use crate::security::Credentials;
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize)]
pub struct FsyncResult {
    pub bytes_per_write: usize,
    pub latency: Option<Summary>,
}

/// Append `bytes` and `fdatasync`, `rounds` times, in a file under `dir`.
pub fn measure_fsync(dir: &Path, rounds: usize, bytes: usize) -> Result<FsyncResult, BenchError> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("fsync-probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    let block = vec![0x5a_u8; bytes];
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        samples.push(t.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(FsyncResult {
        bytes_per_write: bytes,
        latency: Summary::of(&samples),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct PingResult {
    /// One client, one call at a time.
    pub latency: Option<Summary>,
    /// `clients` concurrent clients calling back to back.
    pub clients: usize,
    pub per_second: f64,
    /// CPU the answering replica spent per round trip, over both phases.
    pub server_cpu_us_per_call: Option<f64>,
}

/// Round trips of the `Ping` RPC, which the replica `server_pid` at `endpoint` answers
/// without Raft or disk.
pub async fn measure_ping(
    endpoint: &str,
    server_pid: u32,
    rounds: usize,
    clients: usize,
    duration: Duration,
) -> Result<PingResult, BenchError> {
    let client = Client::new(vec![endpoint.to_string()], Credentials::insecure())?;
    client.ping(None).await?; // connect first
    let cpu_before = cpu_time(server_pid);
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        client.ping(None).await?;
        samples.push(t.elapsed());
    }
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let client = Client::new(vec![endpoint.to_string()], Credentials::insecure())?;
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                client.ping(None).await?;
                n += 1;
            }
            Ok::<_, BenchError>(n)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task
            .await
            .map_err(|e| BenchError::Failed(format!("ping task: {e}")))??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let calls = total + rounds as u64;
    let server_cpu_us_per_call = match (cpu_before, cpu_time(server_pid)) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64() * 1e6 / calls.max(1) as f64),
        _ => None,
    };
    Ok(PingResult {
        latency: Summary::of(&samples),
        clients,
        per_second: total as f64 / seconds,
        server_cpu_us_per_call,
    })
}
