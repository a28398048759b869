//! Group commit: one thread makes the log durable with `fdatasync` and only then tells the
//! waiters. Every write that reached the file before a sync began is covered by that sync,
//! so one `fdatasync` acknowledges every append that arrived while the previous one ran.

use crate::raft::types::TypeConfig;
use openraft::storage::IOFlushed;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

/// Who waits for a sync.
pub enum Waiter {
    /// openraft's append callback.
    Append(IOFlushed<TypeConfig>),
    /// A vote, truncation or purge awaiting its own durability.
    Await(tokio::sync::oneshot::Sender<io::Result<()>>),
}

struct Request {
    file: Arc<File>,
    waiter: Waiter,
}

/// Counters for tests, the benchmark and `/metrics`.
#[derive(Debug)]
pub struct SyncStats {
    /// `fdatasync` calls made.
    pub syncs: AtomicU64,
    /// Append callbacks fired after a successful sync.
    pub appends_acknowledged: AtomicU64,
    /// How long each `fdatasync` took.
    pub fsync_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Default for SyncStats {
    fn default() -> Self {
        SyncStats {
            syncs: AtomicU64::new(0),
            appends_acknowledged: AtomicU64::new(0),
            fsync_seconds: crate::metrics::latency_histogram(),
        }
    }
}

#[derive(Clone)]
pub struct Syncer {
    requests: mpsc::Sender<Request>,
    pub stats: Arc<SyncStats>,
}

impl Syncer {
    pub fn start() -> io::Result<Self> {
        let (requests, incoming) = mpsc::channel();
        let stats = Arc::new(SyncStats::default());
        let counters = stats.clone();
        std::thread::Builder::new()
            .name("wal-sync".into())
            .spawn(move || run(incoming, &counters))?;
        Ok(Syncer { requests, stats })
    }

    /// Sync `file` (everything written to it so far), then release `waiter`.
    pub fn request(&self, file: Arc<File>, waiter: Waiter) {
        if let Err(mpsc::SendError(request)) = self.requests.send(Request { file, waiter }) {
            complete(
                request.waiter,
                Err(io::Error::other("the log's sync thread has stopped")),
            );
        }
    }

    /// Sync `file` and wait for it.
    pub async fn sync(&self, file: Arc<File>) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.request(file, Waiter::Await(tx));
        rx.await
            .map_err(|_| io::Error::other("the log's sync thread has stopped"))?
    }
}

fn complete(waiter: Waiter, result: io::Result<()>) {
    match waiter {
        Waiter::Append(callback) => callback.io_completed(result),
        Waiter::Await(tx) => {
            let _ = tx.send(result);
        }
    }
}

fn clone_result(result: &io::Result<()>) -> io::Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
    }
}

fn run(incoming: mpsc::Receiver<Request>, stats: &SyncStats) {
    while let Ok(first) = incoming.recv() {
        let mut batch = vec![first];
        while let Ok(more) = incoming.try_recv() {
            batch.push(more);
        }
        // Usually one file; after a segment rotation, the old one was synced already but
        // syncing it again is harmless.
        let mut files: Vec<Arc<File>> = Vec::new();
        for request in &batch {
            if !files.iter().any(|f| Arc::ptr_eq(f, &request.file)) {
                files.push(request.file.clone());
            }
        }
        let mut result = Ok(());
        for file in files {
            stats.syncs.fetch_add(1, Ordering::Relaxed);
            let started = std::time::Instant::now();
            let synced = file.sync_data();
            stats.fsync_seconds.observe(started.elapsed().as_secs_f64());
            if let Err(e) = synced {
                result = Err(e);
                break;
            }
        }
        for request in batch {
            if result.is_ok() && matches!(request.waiter, Waiter::Append(_)) {
                stats.appends_acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            complete(request.waiter, clone_result(&result));
        }
        if result.is_ok() {
            // Durable and acknowledged to Raft, not yet applied anywhere.
            crate::crash_point!("log-after-flush");
        }
    }
}
