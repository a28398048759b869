//! etcd's write rate beside ours, on the same machine in the same run: three etcd members on
//! loopback (the `etcd` binary on PATH, e.g. Debian's etcd-server), each with its own data dir
//! and its write-ahead log synced as etcd does by default, and the same number of clients
//! putting 256-byte values back to back over gRPC. Each client has its own connection, to the
//! members in turn, as etcd's own benchmark tool spreads them (followers forward to the leader).
//!
//! Absent etcd, the bench says so and goes on.

use super::throughput::{back_to_back, ThroughputResult};
use super::BenchError;
use crate::local_cluster::free_port;
use crate::pb::etcd::kv_client::KvClient;
use crate::pb::etcd::PutRequest;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const START_DEADLINE: Duration = Duration::from_secs(30);
const VALUE_BYTES: usize = 256;

/// The `etcd` binary on PATH, if any.
pub fn find_etcd() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file())
}

/// Three etcd members this process started; killed (by pid) when dropped.
pub struct EtcdCluster {
    members: Vec<Child>,
    pub endpoints: Vec<String>,
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            let _ = member.kill();
            let _ = member.wait();
        }
    }
}

impl EtcdCluster {
    pub async fn start(etcd: &Path, dir: &Path) -> Result<EtcdCluster, BenchError> {
        std::fs::create_dir_all(dir)?;
        let ports: Vec<(u16, u16)> = (0..3)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<std::io::Result<_>>()?;
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut cluster = EtcdCluster {
            members: Vec::new(),
            endpoints: Vec::new(),
        };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let log = std::fs::File::create(dir.join(format!("e{i}.log")))?;
            let child = Command::new(etcd)
                .arg(format!("--name=e{i}"))
                .arg(format!(
                    "--data-dir={}",
                    dir.join(format!("e{i}")).display()
                ))
                .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
                ))
                .arg(format!("--initial-cluster={}", initial.join(",")))
                .arg("--initial-cluster-state=new")
                .arg("--initial-cluster-token=dispatcher-bench")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?;
            cluster.members.push(child);
            cluster.endpoints.push(format!("http://127.0.0.1:{client}"));
        }
        let started = Instant::now();
        loop {
            if cluster.put_once().await.is_ok() {
                return Ok(cluster);
            }
            if started.elapsed() > START_DEADLINE {
                return Err(BenchError::Failed(format!(
                    "etcd did not take a write within {START_DEADLINE:?} (logs in {})",
                    dir.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn put_once(&self) -> Result<(), BenchError> {
        let mut kv = connect(&self.endpoints[0]).await?;
        kv.put(put_request("bench/ready".into()))
            .await
            .map_err(|e| BenchError::Failed(format!("etcd put: {e}")))?;
        Ok(())
    }

    /// `clients` tasks put back to back for `duration`.
    pub async fn measure_puts(
        &self,
        clients: usize,
        duration: Duration,
    ) -> Result<ThroughputResult, BenchError> {
        let started = Instant::now();
        let deadline = started + duration;
        let mut tasks = Vec::with_capacity(clients);
        for c in 0..clients {
            let kv = connect(&self.endpoints[c % self.endpoints.len()]).await?;
            tasks.push(back_to_back(deadline, move |seq| {
                let mut kv = kv.clone();
                async move {
                    kv.put(put_request(format!("bench/{c}/{seq}")))
                        .await
                        .map_err(|e| BenchError::Failed(format!("etcd put: {e}")))?;
                    Ok(())
                }
            }));
        }
        super::throughput::gather(tasks, started).await
    }

    /// The members' process ids (for their CPU).
    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().map(Child::id).collect()
    }
}

fn put_request(key: String) -> PutRequest {
    PutRequest {
        key: key.into_bytes(),
        value: vec![b'x'; VALUE_BYTES],
    }
}

async fn connect(endpoint: &str) -> Result<KvClient<tonic::transport::Channel>, BenchError> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| BenchError::Failed(format!("etcd endpoint {endpoint}: {e}")))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| BenchError::Failed(format!("etcd at {endpoint}: {e}")))?;
    Ok(KvClient::new(channel))
}
