//! Keeps a `WatchAssignments` stream open to the leader and hands every pushed list to the
//! agent's loop. A stream that ends, fails or falls silent (no keep-alive for three seconds)
//! is opened again, to whichever replica leads by then. If no stream can be had, heartbeat
//! replies still bring the assignments, only later.

use crate::client::Client;
use crate::pb::api::task_managers_client::TaskManagersClient;
use crate::pb::api::{AssignmentsUpdate, WatchAssignmentsRequest};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// A stream that sends nothing for this long (the leader sends a keep-alive every second)
/// is given up and opened again.
const SILENCE: Duration = Duration::from_secs(3);
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(1);

pub struct Watch {
    pub client: Arc<Client>,
    pub taskmanager_id: String,
    pub incarnation: u64,
    /// The agent's current registration epoch (0 until it is registered).
    pub registration: watch::Receiver<u64>,
    pub max_message_bytes: usize,
}

/// A pushed list and the registration epoch of the stream it came on: the agent drops lists
/// of an earlier registration that were still queued (or delayed in the network) when it
/// registered again, since they may name shards already moved elsewhere.
pub type Pushed = (u64, AssignmentsUpdate);

/// Runs until `updates` is closed.
pub async fn run(mut w: Watch, updates: mpsc::Sender<Pushed>) {
    let mut pause = FIRST_PAUSE;
    loop {
        let registration_epoch = *w.registration.borrow_and_update();
        if registration_epoch == 0 {
            if w.registration.changed().await.is_err() {
                return;
            }
            continue;
        }
        let request = WatchAssignmentsRequest {
            taskmanager_id: w.taskmanager_id.clone(),
            registration_epoch,
            incarnation: w.incarnation,
        };
        let max = w.max_message_bytes;
        let opened = w
            .client
            .call(|ch| {
                let r = request.clone();
                async move {
                    TaskManagersClient::new(ch)
                        .max_decoding_message_size(max)
                        .watch_assignments(r)
                        .await
                }
            })
            .await;
        match opened {
            Ok(mut stream) => {
                pause = FIRST_PAUSE;
                loop {
                    tokio::select! {
                        // Registered again: the stream of the old registration is over.
                        _ = w.registration.changed() => break,
                        message = tokio::time::timeout(SILENCE, stream.message()) => {
                            match message {
                                Ok(Ok(Some(update))) => {
                                    if updates.send((registration_epoch, update)).await.is_err() {
                                        return;
                                    }
                                }
                                Ok(Ok(None)) => break,
                                Ok(Err(status)) => {
                                    tracing::debug!("assignment stream ended: {}", status.message());
                                    break;
                                }
                                Err(_) => {
                                    tracing::debug!("assignment stream silent; opening another");
                                    break;
                                }
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::debug!("cannot open the assignment stream: {e}"),
        }
        if updates.is_closed() {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}
