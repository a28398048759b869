//! Replicas as child processes on loopback: start, kill -9, restart on the same data dir,
//! and wait for conditions with deadlines. Used by the integration tests, and meant for the
//! benchmarks and the demo, so all of them drive the real binary the same way.
//!
//! Only processes this harness started are ever signalled, and only by their pid; dropping
//! the harness kills what is still running.

use crate::client::{Client, ClientError};
use crate::config::ServeConfig;
use crate::pb::api::ClusterStatusReply;
use crate::security::{Credentials, Secret, TlsConfig, TlsFiles};
use std::collections::BTreeMap;
use std::fs;
use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum LocalClusterError {
    #[error("io: {0}")]
    Io(#[from] io::Error),
    #[error("no replica with id {0}")]
    UnknownReplica(u64),
    #[error("no TaskManager agent with id {0}")]
    UnknownTaskManager(String),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Certs(#[from] crate::security::certs::CertsError),
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
}

/// How the harness's replicas and agents secure their connections.
#[derive(Debug, Clone)]
pub enum HarnessSecurity {
    /// `--insecure` on every process.
    Insecure,
    /// Mutual TLS with certificates under `dir` (issued as parties appear) and tokens; the
    /// harness's clients present `client-admin` and the bootstrap admin token.
    Tls { dir: PathBuf, admin: Secret },
}

impl HarnessSecurity {
    /// A cluster CA under `root/certs`, the harness's client certificate and a bootstrap
    /// admin token.
    pub fn tls_under(root: &Path) -> Result<HarnessSecurity> {
        let dir = root.join("certs");
        crate::security::certs::init(
            &dir,
            &crate::security::certs::CertsPlan {
                clients: vec![ADMIN_CLIENT.to_string()],
                ..Default::default()
            },
        )?;
        let admin = Secret::generate()?;
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(dir.join("admin.token"))?;
            file.write_all(admin.expose().as_bytes())?;
        }
        Ok(HarnessSecurity::Tls { dir, admin })
    }
}

/// Issue `party`'s certificate under the harness's CA unless it exists; a replica's also
/// names `hosts` (the address it listens on, when that is not 127.0.0.1).
fn ensure_certificate(dir: &Path, party: &str, hosts: &[String]) -> Result<()> {
    if dir.join(format!("{party}.pem")).exists() {
        return Ok(());
    }
    let mut plan = crate::security::certs::CertsPlan {
        hosts: hosts.to_vec(),
        ..Default::default()
    };
    match crate::security::Party::parse(party) {
        crate::security::Party::Replica(id) => plan.replicas.push(id),
        crate::security::Party::TaskManager(name) => plan.taskmanagers.push(name),
        crate::security::Party::Client(name) => plan.clients.push(name),
        crate::security::Party::Other(name) => {
            return Err(crate::security::SecurityError::Material(format!(
                "'{name}' is not a party name (replica-<id>, tm-<name>, client-<name>)"
            ))
            .into())
        }
    }
    crate::security::certs::add(dir, &plan)?;
    Ok(())
}

/// The name of the harness's client certificate.
const ADMIN_CLIENT: &str = "admin";

type Result<T> = std::result::Result<T, LocalClusterError>;

/// Ports handed out are picked below Linux's ephemeral range (32768–60999 by default):
/// a port the OS chose for `bind(0)` and that was let go again is the very kind it hands
/// to the next outgoing connection, so a replica started on it a moment later could find
/// it taken by some client's socket.
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;

/// A free TCP port on 127.0.0.1 (free when asked), never the same twice in one process.
pub fn free_port() -> io::Result<u16> {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let seed = RandomState::new();
    let span = u64::from(PORT_RANGE.end - PORT_RANGE.start);
    for _ in 0..1_000 {
        let draw = seed.hash_one(DRAWS.fetch_add(1, Ordering::Relaxed));
        let port = PORT_RANGE.start + (draw % span) as u16;
        let mut taken = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if taken.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.insert(port);
            return Ok(port);
        }
    }
    // The range is crowded: let the OS choose.
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One replica process and where it keeps its data.
pub struct ReplicaProcess {
    pub id: u64,
    /// The address the cluster knows this replica by (its proxy, when there is one).
    pub addr: String,
    /// The address the replica listens on.
    pub listen: String,
    /// Its HTTP side (`--http-listen`): metrics, health, readiness, dashboard.
    pub http: String,
    pub data_dir: PathBuf,
    pub log_file: PathBuf,
    /// Extra environment for its next start (failpoints in tests).
    pub env: Vec<(String, String)>,
    /// The binary it runs from its next start, when not the cluster's (a mixed-version
    /// cluster).
    pub binary: Option<PathBuf>,
    child: Option<Child>,
}

impl ReplicaProcess {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }
}

/// One TaskManager agent process.
pub struct AgentProcess {
    pub id: String,
    /// The agent dials the replicas from this address, when set.
    pub source_ip: Option<std::net::IpAddr>,
    pub slots: u32,
    pub labels: Vec<(String, String)>,
    pub work_dir: PathBuf,
    pub log_file: PathBuf,
    /// Its HTTP side (`--http-listen`): metrics, health, readiness.
    pub http: String,
    /// More flags for its command line (`--cpus 4`, `--resources gpu=2`).
    pub extra_args: Vec<String>,
    child: Option<Child>,
}

impl AgentProcess {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

pub struct LocalCluster {
    binary: PathBuf,
    root: PathBuf,
    config_file: PathBuf,
    /// The initial members, passed to every replica as `--peers`.
    peers: BTreeMap<u64, String>,
    replicas: BTreeMap<u64, ReplicaProcess>,
    agents: BTreeMap<String, AgentProcess>,
    security: HarnessSecurity,
    /// Agents started from now on sandbox their shards (`--sandbox auto`); off by default,
    /// since most tests' shards write into the test's own (root-only) directories.
    sandbox: bool,
    /// A cgroup (v2 directory) agents started from now on begin in, as a service manager
    /// that delegates one would start them.
    agent_cgroup: Option<PathBuf>,
}

fn signal(pid: u32, sig: i32) -> io::Result<()> {
    // SAFETY: kill(2) on a pid of a child this harness started; no memory is involved.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Serialize the settings as the TOML `serve --config` reads.
fn config_toml(config: &ServeConfig) -> io::Result<String> {
    toml::to_string(config).map_err(io::Error::other)
}

impl LocalCluster {
    /// Start `count` replicas (ids 1..=count) of `binary` under `root`, with `--insecure`.
    pub fn start(
        binary: impl AsRef<Path>,
        root: impl AsRef<Path>,
        count: u64,
        config: &ServeConfig,
    ) -> Result<Self> {
        Self::start_with(binary, root, count, config, false)
    }

    /// Like `start`, but with mutual TLS and tokens: a cluster CA and certificates under
    /// `root/certs`, and a bootstrap admin token the harness's clients use.
    pub fn start_secure(
        binary: impl AsRef<Path>,
        root: impl AsRef<Path>,
        count: u64,
        config: &ServeConfig,
    ) -> Result<Self> {
        Self::start_with(binary, root, count, config, true)
    }

    pub fn start_with(
        binary: impl AsRef<Path>,
        root: impl AsRef<Path>,
        count: u64,
        config: &ServeConfig,
        secure: bool,
    ) -> Result<Self> {
        let mut cluster = Self::prepare_with(binary, root, count, config, secure)?;
        for id in cluster.ids() {
            cluster.restart(id)?;
        }
        Ok(cluster)
    }

    /// Like `start_with`, but no replica is started yet: the caller starts each with
    /// `restart`, in the order and at the moments it wants (a staggered first start).
    pub fn prepare_with(
        binary: impl AsRef<Path>,
        root: impl AsRef<Path>,
        count: u64,
        config: &ServeConfig,
        secure: bool,
    ) -> Result<Self> {
        let mut replicas = Vec::new();
        for id in 1..=count {
            let addr = format!("127.0.0.1:{}", free_port()?);
            replicas.push((id, addr.clone(), addr));
        }
        let security = if secure {
            HarnessSecurity::tls_under(root.as_ref())?
        } else {
            HarnessSecurity::Insecure
        };
        Self::prepare_proxied_with(binary, root, &replicas, config, security)
    }

    /// Start replicas that listen on one address and are known to the cluster by another
    /// (a fault proxy in front of each): `replicas` is (id, listen, advertised). `--insecure`.
    pub fn start_proxied(
        binary: impl AsRef<Path>,
        root: impl AsRef<Path>,
        replicas: &[(u64, String, String)],
        config: &ServeConfig,
    ) -> Result<Self> {
        Self::start_proxied_with(binary, root, replicas, config, HarnessSecurity::Insecure)
    }

    pub fn start_proxied_with(
        binary: impl AsRef<Path>,
        root: impl AsRef<Path>,
        replicas: &[(u64, String, String)],
        config: &ServeConfig,
        security: HarnessSecurity,
    ) -> Result<Self> {
        let mut cluster = Self::prepare_proxied_with(binary, root, replicas, config, security)?;
        for (id, _, _) in replicas {
            cluster.restart(*id)?;
        }
        Ok(cluster)
    }

    fn prepare_proxied_with(
        binary: impl AsRef<Path>,
        root: impl AsRef<Path>,
        replicas: &[(u64, String, String)],
        config: &ServeConfig,
        security: HarnessSecurity,
    ) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        fs::create_dir_all(&root)?;
        let config_file = root.join("dispatcher.toml");
        fs::write(&config_file, config_toml(config)?)?;
        let mut cluster = LocalCluster {
            binary: binary.as_ref().to_path_buf(),
            root,
            config_file,
            peers: replicas
                .iter()
                .map(|(id, _, adv)| (*id, adv.clone()))
                .collect(),
            replicas: BTreeMap::new(),
            agents: BTreeMap::new(),
            security,
            sandbox: false,
            agent_cgroup: None,
        };
        for (id, listen, advertised) in replicas {
            cluster.register_at(*id, listen.clone(), advertised.clone())?;
        }
        Ok(cluster)
    }

    fn add_process(&mut self, id: u64, addr: String) -> Result<()> {
        self.register_at(id, addr.clone(), addr)?;
        self.restart(id)
    }

    /// Name a replica's addresses, data dir and log; `restart` starts it.
    fn register_at(&mut self, id: u64, listen: String, addr: String) -> Result<()> {
        let data_dir = self.root.join(format!("replica-{id}"));
        let log_file = self.root.join(format!("replica-{id}.log"));
        self.replicas.insert(
            id,
            ReplicaProcess {
                id,
                addr,
                listen,
                http: format!("127.0.0.1:{}", free_port()?),
                data_dir,
                log_file,
                env: Vec::new(),
                binary: None,
                child: None,
            },
        );
        Ok(())
    }

    /// The binary that replicas and agents (re)started from now on run (a rolling upgrade
    /// or downgrade swaps it between restarts).
    pub fn set_binary(&mut self, binary: impl AsRef<Path>) {
        self.binary = binary.as_ref().to_path_buf();
    }

    /// The binary replica `id` runs from its next start (`None`: the cluster's).
    pub fn set_replica_binary(&mut self, id: u64, binary: Option<PathBuf>) -> Result<()> {
        self.replicas
            .get_mut(&id)
            .ok_or(LocalClusterError::UnknownReplica(id))?
            .binary = binary;
        Ok(())
    }

    /// The binary replica `id` runs (from its last start).
    pub fn replica_binary(&self, id: u64) -> Result<&Path> {
        let replica = self.replica(id)?;
        Ok(replica.binary.as_deref().unwrap_or(&self.binary))
    }

    /// Start a replica that is not an initial member (for `cluster add`); returns its address.
    pub fn start_extra_replica(&mut self, id: u64) -> Result<String> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        self.add_process(id, addr.clone())?;
        Ok(addr)
    }

    /// (Re)start a replica on its data dir.
    pub fn restart(&mut self, id: u64) -> Result<()> {
        let peers: Vec<String> = self
            .peers
            .iter()
            .map(|(id, a)| format!("{id}={a}"))
            .collect();
        let replica = self
            .replicas
            .get_mut(&id)
            .ok_or(LocalClusterError::UnknownReplica(id))?;
        if replica.is_running() {
            return Ok(());
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&replica.log_file)?;
        let listen_host = replica
            .listen
            .rsplit_once(':')
            .map(|(host, _)| host.trim_matches(['[', ']']).to_string())
            .filter(|host| host != "127.0.0.1")
            .into_iter()
            .collect::<Vec<_>>();
        let security_args = Self::process_security_args(
            &self.security,
            &format!("replica-{id}"),
            true,
            &listen_host,
        )?;
        let binary = replica.binary.as_ref().unwrap_or(&self.binary);
        let child = Command::new(binary)
            .arg("serve")
            .args(security_args)
            .arg("--id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(&replica.listen)
            .arg("--http-listen")
            .arg(&replica.http)
            .arg("--data-dir")
            .arg(&replica.data_dir)
            .arg("--peers")
            .arg(peers.join(","))
            .arg("--config")
            .arg(&self.config_file)
            .env("DISPATCHER_LOG", "info,openraft=warn")
            .envs(replica.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        replica.child = Some(child);
        Ok(())
    }

    /// The flags that secure a process of `party` (its certificate issued on first use).
    fn process_security_args(
        security: &HarnessSecurity,
        party: &str,
        replica: bool,
        hosts: &[String],
    ) -> Result<Vec<String>> {
        let HarnessSecurity::Tls { dir, .. } = security else {
            return Ok(vec!["--insecure".to_string()]);
        };
        ensure_certificate(dir, party, hosts)?;
        let mut args = vec![
            "--tls-dir".to_string(),
            dir.display().to_string(),
            "--tls-name".to_string(),
            party.to_string(),
        ];
        if replica {
            args.push("--bootstrap-token-file".to_string());
            args.push(dir.join("admin.token").display().to_string());
        }
        Ok(args)
    }

    /// What `party` presents (its certificate, issued on first use; no token), for tests and
    /// benchmarks that act as a TaskManager or a replica.
    pub fn credentials_as(&self, party: &str) -> Result<Credentials> {
        Ok(match &self.security {
            HarnessSecurity::Insecure => Credentials::insecure(),
            HarnessSecurity::Tls { dir, .. } => {
                ensure_certificate(dir, party, &[])?;
                Credentials::tls(TlsConfig::load(&TlsFiles::new(dir, party))?, None)
            }
        })
    }

    /// What the harness's clients present: `--insecure`, or `client-admin` and the admin token.
    pub fn credentials(&self) -> Result<Credentials> {
        Ok(match &self.security {
            HarnessSecurity::Insecure => Credentials::insecure(),
            HarnessSecurity::Tls { dir, admin } => Credentials::tls(
                TlsConfig::load(&TlsFiles::new(dir, format!("client-{ADMIN_CLIENT}")))?,
                Some(admin.clone()),
            ),
        })
    }

    pub fn security(&self) -> &HarnessSecurity {
        &self.security
    }

    /// The flags a CLI client of this harness passes (for tests that run the binary).
    pub fn client_flags(&self) -> Vec<String> {
        match &self.security {
            HarnessSecurity::Insecure => vec!["--insecure".to_string()],
            HarnessSecurity::Tls { dir, admin } => vec![
                "--tls-dir".to_string(),
                dir.display().to_string(),
                "--tls-name".to_string(),
                format!("client-{ADMIN_CLIENT}"),
                "--token".to_string(),
                admin.expose().to_string(),
            ],
        }
    }

    /// kill -9 a replica and reap it.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        let replica = self
            .replicas
            .get_mut(&id)
            .ok_or(LocalClusterError::UnknownReplica(id))?;
        if let Some(mut child) = replica.child.take() {
            // std's kill is SIGKILL on Unix.
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }

    /// Environment for a replica's next (re)start, replacing what was set before.
    pub fn set_env(&mut self, id: u64, env: Vec<(String, String)>) -> Result<()> {
        self.replicas
            .get_mut(&id)
            .ok_or(LocalClusterError::UnknownReplica(id))?
            .env = env;
        Ok(())
    }

    /// Whether the replica's process is alive (false once it exited or was killed).
    pub fn is_running(&mut self, id: u64) -> bool {
        self.replicas.get_mut(&id).is_some_and(|r| r.is_running())
    }

    pub fn ids(&self) -> Vec<u64> {
        self.replicas.keys().copied().collect()
    }

    pub fn addr(&self, id: u64) -> Result<String> {
        Ok(self.replica(id)?.addr.clone())
    }

    pub fn replica(&self, id: u64) -> Result<&ReplicaProcess> {
        self.replicas
            .get(&id)
            .ok_or(LocalClusterError::UnknownReplica(id))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every replica's address.
    pub fn endpoints(&self) -> Vec<String> {
        self.replicas.values().map(|r| r.addr.clone()).collect()
    }

    /// A client that knows every replica.
    pub fn client(&self) -> Result<Client> {
        Ok(Client::new(self.endpoints(), self.credentials()?)?)
    }

    /// A client that knows only one replica (to show any replica leads the way).
    pub fn client_via(&self, id: u64) -> Result<Client> {
        Ok(Client::new(vec![self.addr(id)?], self.credentials()?)?)
    }

    /// One replica's own view, with a short deadline; `None` if it does not answer.
    pub async fn local_status(&self, id: u64) -> Option<ClusterStatusReply> {
        // Straight to the replica, past any proxy: this is the observer's view.
        let addr = self.replica(id).ok()?.listen.clone();
        let client = Client::with_options(
            vec![addr.clone()],
            crate::client::ClientOptions {
                rpc_timeout: Duration::from_millis(500),
                call_timeout: Duration::from_millis(500),
                source_ip: None,
                credentials: self.credentials().ok()?,
            },
        )
        .ok()?;
        client.local_status(Some(&addr)).await.ok()
    }

    /// Wait until some replica among `among` reports itself leader; return its id.
    pub async fn wait_for_leader(&self, among: &[u64], timeout: Duration) -> Result<u64> {
        wait_for(timeout, "a leader", || async {
            for id in among {
                if let Some(s) = self.local_status(*id).await {
                    if s.server_state == "leader" && s.leader_id == Some(*id) {
                        return Some(*id);
                    }
                }
            }
            None
        })
        .await
    }

    /// Wait until every replica in `ids` has applied the same index with the same digest.
    pub async fn wait_converged(&self, ids: &[u64], timeout: Duration) -> Result<(u64, String)> {
        wait_for(
            timeout,
            "replicas to converge on one state digest",
            || async {
                let mut seen: Option<(u64, String)> = None;
                for id in ids {
                    let s = self.local_status(*id).await?;
                    let here = (s.last_applied, s.state_digest.clone());
                    match &seen {
                        None => seen = Some(here),
                        Some(first) if *first == here => {}
                        Some(_) => return None,
                    }
                }
                seen
            },
        )
        .await
    }
}

impl LocalCluster {
    /// Start a TaskManager agent with its work dir under the cluster's root.
    pub fn start_taskmanager(
        &mut self,
        id: &str,
        slots: u32,
        labels: &[(&str, &str)],
    ) -> Result<()> {
        self.start_taskmanager_from(id, slots, labels, None)
    }

    /// Start an agent that dials the replicas from `source_ip`.
    pub fn start_taskmanager_from(
        &mut self,
        id: &str,
        slots: u32,
        labels: &[(&str, &str)],
        source_ip: Option<std::net::IpAddr>,
    ) -> Result<()> {
        self.start_taskmanager_with(id, slots, labels, source_ip, &[])
    }

    /// Start an agent with more flags on its command line.
    pub fn start_taskmanager_with(
        &mut self,
        id: &str,
        slots: u32,
        labels: &[(&str, &str)],
        source_ip: Option<std::net::IpAddr>,
        extra_args: &[&str],
    ) -> Result<()> {
        let agent = AgentProcess {
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            id: id.to_string(),
            source_ip,
            slots,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            work_dir: self.root.join(format!("tm-{id}")),
            log_file: self.root.join(format!("tm-{id}.log")),
            http: format!("127.0.0.1:{}", free_port()?),
            child: None,
        };
        self.agents.insert(id.to_string(), agent);
        self.restart_taskmanager(id)
    }

    /// Whether agents (re)started from now on sandbox their shards.
    pub fn set_sandbox(&mut self, on: bool) {
        self.sandbox = on;
    }

    /// Start agents from now on in this cgroup (a cgroup v2 directory), as systemd starts a
    /// service with `Delegate=yes` in one of its own.
    pub fn set_agent_cgroup(&mut self, cgroup: Option<PathBuf>) {
        self.agent_cgroup = cgroup;
    }

    /// (Re)start an agent with the same id and work dir.
    pub fn restart_taskmanager(&mut self, id: &str) -> Result<()> {
        let endpoints = self.endpoints().join(",");
        let agent = self
            .agents
            .get_mut(id)
            .ok_or_else(|| LocalClusterError::UnknownTaskManager(id.to_string()))?;
        if agent
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
        {
            return Ok(());
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&agent.log_file)?;
        let party = format!("tm-{}", agent.id);
        let mut command = Command::new(&self.binary);
        command
            .arg("taskmanager")
            .args(Self::process_security_args(
                &self.security,
                &party,
                false,
                &[],
            )?)
            .arg("--id")
            .arg(&agent.id)
            .arg("--slots")
            .arg(agent.slots.to_string())
            .arg("--work-dir")
            .arg(&agent.work_dir)
            .arg("--endpoints")
            .arg(endpoints)
            .arg("--http-listen")
            .arg(&agent.http);
        if let Some(ip) = agent.source_ip {
            command.arg("--source-ip").arg(ip.to_string());
        }
        command
            .arg("--sandbox")
            .arg(if self.sandbox { "auto" } else { "off" })
            .args(&agent.extra_args);
        if !agent.labels.is_empty() {
            let labels: Vec<String> = agent
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            command.arg("--labels").arg(labels.join(","));
        }
        // Open until the spawn below is done: the child writes to it before exec.
        let mut cgroup_procs = None;
        if let Some(cgroup) = &self.agent_cgroup {
            let procs = fs::OpenOptions::new()
                .write(true)
                .open(cgroup.join("cgroup.procs"))?;
            let fd = std::os::fd::AsRawFd::as_raw_fd(&procs);
            // SAFETY: between fork and exec only write(2) on a descriptor opened above, which
            // is async-signal-safe; "0" moves the writing process.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                    if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                        Ok(())
                    } else {
                        Err(io::Error::last_os_error())
                    }
                });
            }
            cgroup_procs = Some(procs);
        }
        let child = command
            .env("DISPATCHER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        drop(cgroup_procs);
        agent.child = Some(child);
        Ok(())
    }

    /// An agent this harness started.
    pub fn agent(&self, id: &str) -> Result<&AgentProcess> {
        self.agents
            .get(id)
            .ok_or_else(|| LocalClusterError::UnknownTaskManager(id.to_string()))
    }

    fn agent_pid(&self, id: &str) -> Result<u32> {
        self.agents
            .get(id)
            .and_then(|a| a.pid())
            .ok_or_else(|| LocalClusterError::UnknownTaskManager(id.to_string()))
    }

    /// kill -9 an agent (its shards die with it) and reap it.
    pub fn kill_taskmanager(&mut self, id: &str) -> Result<()> {
        let agent = self
            .agents
            .get_mut(id)
            .ok_or_else(|| LocalClusterError::UnknownTaskManager(id.to_string()))?;
        if let Some(mut child) = agent.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }

    /// SIGSTOP an agent process (not its shards).
    pub fn pause_taskmanager(&self, id: &str) -> Result<()> {
        Ok(signal(self.agent_pid(id)?, libc::SIGSTOP)?)
    }

    /// SIGCONT a paused agent.
    pub fn resume_taskmanager(&self, id: &str) -> Result<()> {
        Ok(signal(self.agent_pid(id)?, libc::SIGCONT)?)
    }

    /// SIGSTOP a replica.
    pub fn pause(&self, id: u64) -> Result<()> {
        let pid = self
            .replica(id)?
            .pid()
            .ok_or(LocalClusterError::UnknownReplica(id))?;
        Ok(signal(pid, libc::SIGSTOP)?)
    }

    /// SIGCONT a paused replica.
    pub fn resume(&self, id: u64) -> Result<()> {
        let pid = self
            .replica(id)?
            .pid()
            .ok_or(LocalClusterError::UnknownReplica(id))?;
        Ok(signal(pid, libc::SIGCONT)?)
    }

    pub fn taskmanager_ids(&self) -> Vec<String> {
        self.agents.keys().cloned().collect()
    }

    pub fn taskmanager(&self, id: &str) -> Result<&AgentProcess> {
        self.agents
            .get(id)
            .ok_or_else(|| LocalClusterError::UnknownTaskManager(id.to_string()))
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let agents: Vec<String> = self.agents.keys().cloned().collect();
        for id in agents {
            // A paused process cannot die until it is continued.
            let _ = self.resume_taskmanager(&id);
            let _ = self.kill_taskmanager(&id);
        }
        let ids: Vec<u64> = self.replicas.keys().copied().collect();
        for id in ids {
            let _ = self.resume(id);
            let _ = self.kill(id);
        }
    }
}

/// Poll `check` every 50 ms until it yields a value or `timeout` passes.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if started.elapsed() >= timeout {
            return Err(LocalClusterError::Timeout(timeout, what.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
