//! A userspace TCP fault proxy. Every replica is reached through its own proxy (the address
//! the cluster knows it by), and every process dials from its own loopback address
//! (127.0.0.x), so the proxy knows which node calls which and can cut any directed link:
//! new connections over a cut link are refused and live ones are torn down at once.
//!
//! A cut `a → b` stops `a` from reaching `b` (requests and their replies), while `b` can
//! still reach `a`: the one-way partition. Cutting both directions isolates a pair.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The directed links currently cut, as (source address, destination node id).
#[derive(Debug, Default)]
pub struct Cuts {
    cut: Mutex<HashSet<(IpAddr, u64)>>,
    version: watch::Sender<u64>,
}

impl Cuts {
    pub fn new() -> Arc<Self> {
        Arc::new(Cuts {
            cut: Mutex::new(HashSet::new()),
            version: watch::Sender::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<(IpAddr, u64)>> {
        self.cut.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_cut(&self, from: IpAddr, to: u64) -> bool {
        self.lock().contains(&(from, to))
    }

    /// Cut `from → to`.
    pub fn cut(&self, from: IpAddr, to: u64) {
        self.lock().insert((from, to));
        self.version.send_modify(|v| *v += 1);
    }

    /// Heal every link.
    pub fn heal_all(&self) {
        self.lock().clear();
        self.version.send_modify(|v| *v += 1);
    }

    pub fn active(&self) -> usize {
        self.lock().len()
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

/// The proxy in front of one node.
pub struct Proxy {
    pub listen: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Listen on `listen` and forward to `target`, the real address of node `node`.
    pub async fn start(
        listen: SocketAddr,
        target: SocketAddr,
        node: u64,
        cuts: Arc<Cuts>,
    ) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(listen).await?;
        let listen = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((inbound, peer)) = listener.accept().await else {
                    continue;
                };
                if cuts.is_cut(peer.ip(), node) {
                    drop(inbound);
                    continue;
                }
                connections.spawn(forward(inbound, peer.ip(), target, node, cuts.clone()));
                // Reap finished connections so the set does not grow without bound.
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Proxy { listen, task })
    }
}

async fn forward(
    mut inbound: TcpStream,
    from: IpAddr,
    target: SocketAddr,
    node: u64,
    cuts: Arc<Cuts>,
) {
    let _ = inbound.set_nodelay(true);
    let Ok(mut outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = outbound.set_nodelay(true);
    let mut changes = cuts.subscribe();
    let cut_now = async {
        loop {
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            if cuts.is_cut(from, node) {
                return;
            }
        }
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = cut_now => {}
    }
}
