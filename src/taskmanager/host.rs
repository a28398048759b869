//! The agent's side of its shard host (`shard_host`): starts `dispatcher shard-host` when a
//! run first needs it (and again after it died), writes it requests and, while the agent holds
//! its lease, a keep-alive every 100 ms, and hands each run the events the host sends about it.
//!
//! Pipes are read and written asynchronously by two tasks, so a slow or paused host never
//! blocks the agent's threads, and a request or an event costs no hand-off to a thread of
//! its own. If the host dies, every run it held hears `HostGone` (its shards
//! died with it: `PR_SET_PDEATHSIG`).

use super::host_protocol::{Event, Request, RunId, SpawnRequest, MAX_MESSAGE_BYTES};
use super::lease::Lease;
use crate::framing::{decode_message, encode_frame, frame_len, HEADER_BYTES};
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc as tokio_mpsc;

/// Keep-alives go to the host this often ...
const KEEPALIVE_EVERY: Duration = Duration::from_millis(100);
/// ... unless this many requests are still waiting to be written (the host is not reading).
const MAX_QUEUED_KEEPALIVES: usize = 8;

/// What a run hears from the host.
#[derive(Debug)]
pub enum RunEvent {
    Host(Event),
    /// The host exited or its pipes broke: the run is over, its outcome unknown.
    HostGone,
}

/// What to run; the host makes `dir` and puts `stdout` and `stderr` files in it.
pub struct Launch {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub dir: PathBuf,
    pub limits: super::sandbox::cgroup::RunLimits,
}

type Listeners = HashMap<RunId, tokio_mpsc::UnboundedSender<RunEvent>>;

/// One running host process and its pipes.
struct Connection {
    requests: tokio_mpsc::UnboundedSender<Request>,
    queued: Arc<AtomicUsize>,
    /// `None` once the host is gone: nobody may wait on it any more.
    listeners: Mutex<Option<Listeners>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Connection {
    fn send(&self, request: Request) -> bool {
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.requests.send(request).is_ok()
    }

    fn is_alive(&self) -> bool {
        lock(&self.listeners).is_some()
    }
}

/// A started run: stop it through this.
pub struct RunTicket {
    connection: Arc<Connection>,
    run: RunId,
}

impl RunTicket {
    /// Ask the host to kill the run's process group; its `Exited` follows.
    pub fn stop(&self) {
        self.connection.send(Request::Stop(self.run));
    }
}

pub struct ShardHost {
    executable: PathBuf,
    /// The work dir: run directories live under it, and the host's pool of them.
    work_dir: PathBuf,
    keepalive_timeout: Duration,
    lease: Arc<Lease>,
    next_run: AtomicU64,
    current: Mutex<Option<Arc<Connection>>>,
    /// What the host enforces on every run.
    sandbox: super::sandbox::SandboxConfig,
}

impl ShardHost {
    pub fn new(
        executable: PathBuf,
        work_dir: PathBuf,
        keepalive_timeout: Duration,
        lease: Arc<Lease>,
        sandbox: super::sandbox::SandboxConfig,
    ) -> Self {
        ShardHost {
            executable,
            work_dir,
            keepalive_timeout,
            lease,
            next_run: AtomicU64::new(1),
            current: Mutex::new(None),
            sandbox,
        }
    }

    /// Start a run. Its events come on the returned receiver: `Started` or `CannotStart`,
    /// then `Exited` (or `HostGone`). Errs only when no host can be started.
    pub fn launch(
        &self,
        launch: Launch,
    ) -> io::Result<(RunTicket, tokio_mpsc::UnboundedReceiver<RunEvent>)> {
        let run = self.next_run.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio_mpsc::unbounded_channel();
        let mut tx = Some(tx);
        // Two tries: the host we had may have died a moment ago.
        for _ in 0..2 {
            let connection = self.connection()?;
            {
                let mut listeners = lock(&connection.listeners);
                match listeners.as_mut() {
                    Some(listeners) => {
                        if let Some(tx) = tx.take() {
                            listeners.insert(run, tx);
                        }
                    }
                    None => continue,
                }
            }
            connection.send(Request::Spawn(SpawnRequest {
                run,
                program: launch.program,
                args: launch.args,
                env: launch.env,
                dir: launch.dir,
                limits: launch.limits,
            }));
            return Ok((RunTicket { connection, run }, rx));
        }
        Err(io::Error::other(
            "the shard host exits as soon as it starts",
        ))
    }

    /// Nothing will read these run directories again: the host pools them (after their
    /// runs exit). With no host running, they are removed here.
    pub fn recycle(&self, dirs: Vec<PathBuf>) {
        if dirs.is_empty() {
            return;
        }
        let connection = lock(&self.current).clone().filter(|c| c.is_alive());
        match connection {
            Some(connection) => {
                for dir in dirs {
                    connection.send(Request::Recycle(dir));
                }
            }
            None => {
                let root = self.work_dir.clone();
                std::thread::spawn(move || {
                    for dir in dirs {
                        super::sweeper::remove_run_dir(&root, &dir);
                    }
                });
            }
        }
    }

    /// The live host, started now if there is none.
    fn connection(&self) -> io::Result<Arc<Connection>> {
        let mut current = lock(&self.current);
        if let Some(connection) = current.as_ref().filter(|c| c.is_alive()) {
            return Ok(connection.clone());
        }
        let connection = self.start_host()?;
        *current = Some(connection.clone());
        Ok(connection)
    }

    fn start_host(&self) -> io::Result<Arc<Connection>> {
        let mut child = tokio::process::Command::new(&self.executable)
            .arg("shard-host")
            .arg("--keepalive-timeout-ms")
            .arg(self.keepalive_timeout.as_millis().to_string())
            .arg("--run-dir-pool")
            .arg(self.work_dir.join(super::run_dir_pool::POOL_DIR_NAME))
            .arg("--sandbox")
            .arg(serde_json::to_string(&self.sandbox).map_err(io::Error::other)?)
            // Nothing of the agent's environment reaches the host (and so no run).
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own process group: a Ctrl-C meant for the agent's terminal does not reach it.
            .process_group(0)
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.start_kill();
            return Err(io::Error::other("the shard host has no pipes"));
        };
        tracing::info!(pid = child.id(), "shard host started");
        let (requests, queue) = tokio_mpsc::unbounded_channel::<Request>();
        let queued = Arc::new(AtomicUsize::new(0));
        let connection = Arc::new(Connection {
            requests,
            queued: queued.clone(),
            listeners: Mutex::new(Some(HashMap::new())),
        });
        tokio::spawn(write_requests(queue, queued, stdin));
        tokio::spawn(read_events(Arc::downgrade(&connection), stdout, child));
        tokio::spawn(keep_alive(Arc::downgrade(&connection), self.lease.clone()));
        Ok(connection)
    }
}

/// Requests out, several per write when they queue up. It ends when the connection is
/// dropped (closing stdin tells the host to stop everything). The pipe is written
/// asynchronously: a host that stops reading holds this task, never a thread.
async fn write_requests(
    mut queue: tokio_mpsc::UnboundedReceiver<Request>,
    queued: Arc<AtomicUsize>,
    mut stdin: tokio::process::ChildStdin,
) {
    let mut bytes = Vec::new();
    while let Some(first) = queue.recv().await {
        bytes.clear();
        let mut count = 0;
        let mut next = Some(first);
        while let Some(request) = next {
            count += 1;
            if let Err(e) = encode_frame(&request, MAX_MESSAGE_BYTES, &mut bytes) {
                tracing::warn!("a request for the shard host cannot be sent: {e}");
            }
            next = queue.try_recv().ok();
        }
        queued.fetch_sub(count, Ordering::Relaxed);
        if stdin.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

/// Events in, each to its run; when the host is gone, every run hears it.
async fn read_events(
    connection: Weak<Connection>,
    stdout: tokio::process::ChildStdout,
    mut child: tokio::process::Child,
) {
    let mut stdout = tokio::io::BufReader::with_capacity(64 * 1024, stdout);
    loop {
        match read_event(&mut stdout).await {
            Ok(Some(event)) => deliver(&connection, event),
            Ok(None) => break,
            Err(e) => {
                tracing::warn!("the shard host sent something unreadable: {e}");
                let _ = child.start_kill();
                break;
            }
        }
    }
    let status = child.wait().await;
    tracing::warn!(?status, "the shard host exited; its runs are over");
    if let Some(connection) = connection.upgrade() {
        let gone = lock(&connection.listeners).take().unwrap_or_default();
        for (_, listener) in gone {
            let _ = listener.send(RunEvent::HostGone);
        }
    }
}

/// One event frame; `Ok(None)` at a clean end of the pipe.
async fn read_event(reader: &mut (impl AsyncRead + Unpin)) -> io::Result<Option<Event>> {
    let mut header = [0u8; HEADER_BYTES];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = frame_len(&header, MAX_MESSAGE_BYTES)?.unwrap_or(HEADER_BYTES);
    let mut frame = vec![0u8; len];
    frame[..HEADER_BYTES].copy_from_slice(&header);
    reader.read_exact(&mut frame[HEADER_BYTES..]).await?;
    decode_message(&frame, MAX_MESSAGE_BYTES)
}

fn deliver(connection: &Weak<Connection>, event: Event) {
    let Some(connection) = connection.upgrade() else {
        return;
    };
    let (run, last) = match &event {
        Event::Started { run, .. } => (*run, false),
        Event::CannotStart { run, .. } | Event::Exited { run, .. } => (*run, true),
    };
    let mut listeners = lock(&connection.listeners);
    let Some(listeners) = listeners.as_mut() else {
        return;
    };
    let listener = if last {
        listeners.remove(&run)
    } else {
        listeners.get(&run).cloned()
    };
    if let Some(listener) = listener {
        let _ = listener.send(RunEvent::Host(event));
    }
}

/// Keep-alives while the agent holds its lease; they stop when the host is gone.
async fn keep_alive(connection: Weak<Connection>, lease: Arc<Lease>) {
    let mut tick = tokio::time::interval(KEEPALIVE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(connection) = connection.upgrade() else {
            return;
        };
        if !connection.is_alive() {
            return;
        }
        if lease.is_valid() && connection.queued.load(Ordering::Relaxed) < MAX_QUEUED_KEEPALIVES {
            connection.send(Request::Keepalive);
        }
    }
}
