//! Simulated TaskManagers for the scale figures: registered and heartbeating over the real
//! API (the same RPCs an agent sends), but running nothing. They never report shards
//! started, so their shards stay assigned; that is all placement and memory need.

use super::BenchError;
use crate::client::{Client, ClientError};
use crate::pb::api::task_managers_client::TaskManagersClient;
use crate::pb::api::{HeartbeatRequest, RegisterTaskManagerRequest};
use crate::security::Credentials;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Registrations in flight at once.
const REGISTER_CONCURRENCY: usize = 64;

/// (id, registration epoch) of each simulated TaskManager.
pub type Registrations = Vec<(String, u64)>;

/// Register `count` TaskManagers `<prefix>-<i>` with `slots` each; returns them and the time
/// it took.
pub async fn register(
    endpoints: &[String],
    prefix: &str,
    count: usize,
    slots: u32,
) -> Result<(Registrations, Duration), BenchError> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..REGISTER_CONCURRENCY.min(count.max(1)) {
        let client = Client::new(endpoints.to_vec(), Credentials::insecure())?;
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in (worker..count).step_by(REGISTER_CONCURRENCY) {
                let id = format!("{prefix}-{i}");
                let reply = client
                    .register_taskmanager(RegisterTaskManagerRequest {
                        id: id.clone(),
                        addr: "127.0.0.1:0".into(),
                        slots,
                        labels: Default::default(),
                        // Simulated: no agent process behind it.
                        ..Default::default()
                    })
                    .await?;
                mine.push((id, reply.registration_epoch));
            }
            Ok::<_, ClientError>(mine)
        }));
    }
    let mut all = Vec::with_capacity(count);
    for task in tasks {
        all.extend(
            task.await
                .map_err(|e| BenchError::Failed(format!("register task: {e}")))??,
        );
    }
    Ok((all, started.elapsed()))
}

/// One heartbeat, sending the version of the assignment list held (as an agent does);
/// returns the version the reply stands for, or `None` when the registration was refused.
async fn heartbeat(
    client: &Client,
    id: &str,
    epoch: u64,
    held: (u64, u64),
) -> Result<Option<(u64, u64)>, ClientError> {
    let request = HeartbeatRequest {
        taskmanager_id: id.to_string(),
        registration_epoch: epoch,
        running: Vec::new(),
        assignments_max_epoch: held.0,
        assignments_count: held.1,
        ..Default::default()
    };
    let reply = client
        .call(|ch| {
            let r = request.clone();
            async move {
                TaskManagersClient::new(ch)
                    .max_decoding_message_size(usize::MAX)
                    .heartbeat(r)
                    .await
            }
        })
        .await?;
    Ok(reply
        .registered
        .then_some((reply.assignments_max_epoch, reply.assignments_count)))
}

/// Background heartbeats for registered TaskManagers, every TaskManager once per `interval`
/// (or as fast as the leader answers, with `interval` zero).
pub struct Heartbeaters {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Heartbeaters {
    pub fn start(
        endpoints: &[String],
        fleet: Arc<Registrations>,
        workers: usize,
        interval: Duration,
    ) -> Result<Heartbeaters, BenchError> {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        let workers = workers.clamp(1, fleet.len().max(1));
        for worker in 0..workers {
            let client = Client::new(endpoints.to_vec(), Credentials::insecure())?;
            let (fleet, stop, sent, refused) =
                (fleet.clone(), stop.clone(), sent.clone(), refused.clone());
            tasks.push(tokio::spawn(async move {
                let mine: Vec<&(String, u64)> =
                    fleet.iter().skip(worker).step_by(workers).collect();
                let mut held = vec![(0, 0); mine.len()];
                while !stop.load(Ordering::Relaxed) {
                    let round = Instant::now();
                    for ((id, epoch), version) in mine.iter().zip(held.iter_mut()) {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        match heartbeat(&client, id, *epoch, *version).await {
                            Ok(Some(now)) => {
                                *version = now;
                                sent.fetch_add(1, Ordering::Relaxed)
                            }
                            _ => refused.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                    if let Some(rest) = interval.checked_sub(round.elapsed()) {
                        tokio::time::sleep(rest).await;
                    }
                }
            }));
        }
        Ok(Heartbeaters {
            stop,
            sent,
            refused,
            tasks,
        })
    }

    /// Heartbeats answered as registered so far.
    pub fn answered(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Heartbeats refused or failed so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for Heartbeaters {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
