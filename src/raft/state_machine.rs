//! The state machine openraft drives: the in-memory `ClusterState`, applied entry by entry
//! through `fsm::apply`, and persisted only as snapshots (see `snapshot_store`). On restart
//! the newest snapshot is loaded and openraft replays the log after it.
//!
//! The state is shared with the API services behind a std `RwLock` (held only for short,
//! non-async sections); every apply publishes the new applied index on a watch channel so
//! that leader loops can react to changes without polling.

use super::event_ring::{EventRing, EVENT_RING_CAPACITY};
use super::snapshot_store::{decode_state, encode_state, SnapshotStore};
use super::types::{LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::domain::ClusterState;
use crate::fsm::events::Event;
use crate::fsm::{self, Command, Response};
use crate::metrics::Metrics;
use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use std::io;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use tokio::sync::watch;

/// What has been applied: the state and the Raft bookkeeping that goes with it.
#[derive(Debug, Clone, Default)]
pub struct AppliedState {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub state: ClusterState,
}

/// What `SharedState::next_events` found.
pub enum NextEvents {
    Batch(Vec<Event>),
    /// The position asked for is no longer held; this is the oldest index that is.
    Gone {
        oldest: u64,
    },
    /// The state machine is gone (the replica is shutting down).
    Stopped,
}

/// The applied state, shared between the state machine (writer) and the API (readers).
#[derive(Debug)]
pub struct SharedState {
    applied: RwLock<AppliedState>,
    applied_index: watch::Sender<u64>,
    /// Counts the applied batches that may have changed the access tokens (and installed
    /// snapshots): what a stream opened with a token waits on, rather than on every entry.
    tokens_changed: watch::Sender<u64>,
    /// What each open assignment stream's TaskManager looks like, woken per TaskManager.
    assignment_watches: super::assignment_watch::AssignmentWatches,
    /// Recent events, for streams (not part of the replicated state).
    events: std::sync::Mutex<EventRing>,
    /// This replica's metrics, counted as entries apply and read by everyone who shares
    /// the state.
    metrics: Arc<Metrics>,
}

impl SharedState {
    fn new(initial: AppliedState, metrics: Arc<Metrics>) -> Arc<Self> {
        let index = initial
            .last_applied
            .as_ref()
            .map(|l| l.index())
            .unwrap_or(0);
        Arc::new(SharedState {
            applied: RwLock::new(initial),
            applied_index: watch::Sender::new(index),
            tokens_changed: watch::Sender::new(0),
            assignment_watches: Default::default(),
            events: std::sync::Mutex::new(EventRing::new(EVENT_RING_CAPACITY, index + 1)),
            metrics,
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Read access. A poisoned lock means an apply panicked; the data is still the last
    /// consistent state we have, so keep serving it.
    pub fn read(&self) -> RwLockReadGuard<'_, AppliedState> {
        self.applied.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write<R>(&self, f: impl FnOnce(&mut AppliedState) -> R) -> R {
        let mut guard = self.applied.write().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// A receiver that changes whenever an entry is applied.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied_index.subscribe()
    }

    /// A receiver that changes when applying may have changed the access tokens.
    pub fn subscribe_tokens(&self) -> watch::Receiver<u64> {
        self.tokens_changed.subscribe()
    }

    /// The index applied last.
    pub fn applied_index(&self) -> u64 {
        *self.applied_index.borrow()
    }

    /// A receiver that changes when `taskmanager`'s assignment list or registration does.
    pub fn watch_assignments(
        &self,
        taskmanager: &str,
    ) -> watch::Receiver<super::assignment_watch::Watched> {
        self.assignment_watches
            .subscribe(&self.read().state, taskmanager)
    }

    /// Entries were applied up to `index`: wake who waits on them.
    fn publish(&self, index: u64, tokens_changed: bool) {
        // The state's lock before the watches', as `watch_assignments` takes them.
        if self.assignment_watches.any() {
            self.assignment_watches.applied(&self.read().state);
        }
        if tokens_changed {
            self.tokens_changed.send_modify(|n| *n += 1);
        }
        self.applied_index.send_replace(index);
    }

    /// Up to `max` events from `(index, seq)` on, or the oldest index still held.
    pub fn events_from(&self, index: u64, seq: u32, max: usize) -> Result<Vec<Event>, u64> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .read(index, seq, max)
    }

    /// The next events from `(index, seq)` on, up to `max`, waiting for entries to apply
    /// while there are none: what every follower of the event stream reads.
    pub async fn next_events(
        &self,
        applied: &mut watch::Receiver<u64>,
        index: u64,
        seq: u32,
        max: usize,
    ) -> NextEvents {
        loop {
            match self.events_from(index, seq, max) {
                Err(oldest) => return NextEvents::Gone { oldest },
                Ok(batch) if !batch.is_empty() => return NextEvents::Batch(batch),
                Ok(_) => {
                    if applied.changed().await.is_err() {
                        return NextEvents::Stopped;
                    }
                }
            }
        }
    }

    fn record(&self, events: Vec<Event>) {
        if !events.is_empty() {
            self.events
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(events);
        }
    }
}

pub struct StateMachineStore {
    shared: Arc<SharedState>,
    snapshots: SnapshotStore,
}

impl StateMachineStore {
    /// Open the state machine, loading the newest snapshot if there is one.
    pub fn open(snapshots: SnapshotStore, metrics: Arc<Metrics>) -> io::Result<Self> {
        let initial = match snapshots.load_latest()? {
            Some(snap) => AppliedState {
                last_applied: snap.meta.last_log_id,
                last_membership: snap.meta.last_membership.clone(),
                state: decode_state(&snap.data)?,
            },
            None => AppliedState::default(),
        };
        Ok(StateMachineStore {
            shared: SharedState::new(initial, metrics),
            snapshots,
        })
    }

    pub fn shared(&self) -> Arc<SharedState> {
        self.shared.clone()
    }
}

/// Builds a snapshot from a copy of the state taken when openraft asked for it, so that
/// applying goes on while the copy is encoded and written: on a thread of its own at a lower
/// CPU priority (`thread_priority`), to the disk a chunk at a time (`replace_large_file`), so
/// the answers to clients and the log's syncs go first.
pub struct SnapshotBuilder {
    copy: AppliedState,
    /// How long taking `copy` held up applying.
    copy_took: std::time::Duration,
    snapshots: SnapshotStore,
    metrics: Arc<Metrics>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let meta = SnapshotMeta {
            last_log_id: self.copy.last_applied,
            last_membership: self.copy.last_membership.clone(),
        };
        let started = std::time::Instant::now();
        let state = std::mem::take(&mut self.copy.state);
        let store = self.snapshots.clone();
        let meta_for_disk = meta.clone();
        let (done, result) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                crate::thread_priority::lower_this_thread();
                let data = encode_state(&state);
                let built = store.save(&meta_for_disk, &data).map(|_| data);
                let _ = done.send(built);
            })?;
        // A panic drops the sender; its message went to the log (stderr) as it happened.
        let data = result
            .await
            .map_err(|_| io::Error::other("the snapshot thread panicked (see the log)"))??;
        self.metrics.snapshot_built(data.len(), started.elapsed());
        tracing::info!(
            index = self.copy.last_applied.map(|l| l.index()),
            bytes = data.len(),
            copy_ms = self.copy_took.as_secs_f64() * 1e3,
            encode_and_save_ms = started.elapsed().as_secs_f64() * 1e3,
            "snapshot built"
        );
        Ok(Snapshot {
            meta,
            snapshot: data,
        })
    }
}

/// A cluster version this build cannot run in stops the replica (before applying anything
/// of it) with what to do: every member said it reads the version when the leader raised
/// it, so this replica was started since on an older release.
fn refuse_unknown_cluster_version(version: u32, index: u64) -> Result<(), io::Error> {
    let max = crate::formats::MAX_CLUSTER_VERSION;
    if version <= max {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "log entry {index} raises the cluster to version {version}, and this release \
             ({}) runs in versions up to {max}: start this replica on the release the rest \
             of the cluster runs (see `dispatcher cluster status`), or downgrade the cluster \
             first (`dispatcher cluster downgrade {max}`)",
            crate::formats::release()
        ),
    ))
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let applied = self.shared.read();
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut last_index = None;
        let mut tokens_changed = false;
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id;
            if let EntryPayload::Normal(Command::SetClusterVersion { version, .. }) = &entry.payload
            {
                refuse_unknown_cluster_version(*version, log_id.index())?;
            }
            tokens_changed |=
                matches!(&entry.payload, EntryPayload::Normal(c) if c.may_change_tokens());
            let started = std::time::Instant::now();
            let mut dispatch_ms = Vec::new();
            let (response, events) = self.shared.write(|applied| {
                applied.last_applied = Some(log_id);
                match entry.payload {
                    EntryPayload::Blank => {
                        let leader = log_id.committed_leader_id();
                        let event = fsm::events::leader_changed(
                            log_id.index(),
                            leader.term,
                            leader.node_id,
                        );
                        (Response::Empty, vec![event])
                    }
                    EntryPayload::Normal(command) => {
                        dispatch_ms =
                            fsm::dispatch::dispatch_latencies_ms(&applied.state, &command);
                        fsm::events::apply_with_events(&mut applied.state, log_id.index(), command)
                    }
                    EntryPayload::Membership(membership) => {
                        applied.last_membership = StoredMembership::new(Some(log_id), membership);
                        (Response::Empty, Vec::new())
                    }
                }
            });
            let metrics = &self.shared.metrics;
            metrics.entry_applied(started.elapsed(), events.iter().map(|e| e.kind));
            metrics.shards_recovered(requeued(&response));
            for ms in dispatch_ms {
                metrics.dispatched_after_ms(ms);
            }
            self.shared.record(events);
            last_index = Some(log_id.index());
            if let Some(responder) = responder {
                // Applied in memory, the client not yet answered.
                crate::crash_point!("apply-before-response");
                responder.send(response);
            }
        }
        if let Some(index) = last_index {
            self.shared.publish(index, tokens_changed);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // The copy is taken while nothing applies; the log line says how long that was.
        let copying = std::time::Instant::now();
        let copy = self.shared.read().clone();
        SnapshotBuilder {
            copy,
            copy_took: copying.elapsed(),
            snapshots: self.snapshots.clone(),
            metrics: self.shared.metrics.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        // Decoding and writing megabytes: off the async workers.
        let store = self.snapshots.clone();
        let meta_for_disk = meta.clone();
        let state = tokio::task::spawn_blocking(move || {
            let state = decode_state(&snapshot)?;
            crate::crash_point!("snapshot-install-before-save");
            store.save(&meta_for_disk, &snapshot)?;
            Ok::<_, io::Error>(state)
        })
        .await
        .map_err(io::Error::other)??;
        // Saved to disk, not yet swapped into memory.
        crate::crash_point!("snapshot-install-after-save");
        self.shared.write(|applied| {
            applied.last_applied = meta.last_log_id;
            applied.last_membership = meta.last_membership.clone();
            applied.state = state;
        });
        let index = meta.last_log_id.as_ref().map(|l| l.index()).unwrap_or(0);
        self.shared
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .restart_at(index + 1);
        self.shared.publish(index, true);
        tracing::info!(index, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self.snapshots.load_latest()?.map(|s| Snapshot {
            meta: s.meta,
            snapshot: s.data,
        }))
    }
}

/// Shards an entry sent back to pending from a lost TaskManager or a requeue.
fn requeued(response: &Response) -> u64 {
    match response {
        Response::TaskManagerLost {
            shards_requeued, ..
        } => u64::from(*shards_requeued),
        Response::ShardsRequeued { count } => u64::from(*count),
        Response::Batch(responses) => responses.iter().map(requeued).sum(),
        _ => 0,
    }
}
