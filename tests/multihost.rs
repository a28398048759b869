//! A cluster across "machines": every replica and every agent in its own Linux network
//! namespace with its own address on one bridge, all on the same port, with mutual TLS and
//! tokens. The leader's link is cut with `ip link set down`: the others elect a leader, the
//! work goes on and finishes, and when the link returns the old leader catches up.
//!
//! Replica 3 and agent b are set up the way an operator would on a real host: from a config
//! file, with an environment variable overriding one of its settings.
//!
//! Needs root (CI runs as root); skipped otherwise. Every namespace is removed at the end.

mod common;

use common::*;
use dispatcher::client::{Client, ClientOptions};
use dispatcher::local_cluster::wait_for;
use dispatcher::security::{certs, Credentials, Secret, TlsConfig, TlsFiles};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const PORT: u16 = 7001;

/// A bridge in a switch namespace, and hosts (namespaces) plugged into it by veth pairs.
/// The test process itself is plugged in too, as the operator's machine.
struct Network {
    prefix: String,
    subnet: String,
    hosts: Vec<String>,
}

impl Network {
    fn create() -> anyhow::Result<Network> {
        let pid = std::process::id();
        let net = Network {
            prefix: format!("dsp{pid}"),
            subnet: format!("10.{}.0", 192 + pid % 60),
            hosts: Vec::new(),
        };
        ip(&["netns", "add", &net.switch()])?;
        ip(&["-n", &net.switch(), "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &net.switch(), "link", "set", "br0", "up"])?;
        // The operator's end, in this (the test's) namespace.
        let (mine, port) = (format!("{}op", net.prefix), format!("{}sop", net.prefix));
        net.plug(&mine, &port)?;
        ip(&[
            "addr",
            "add",
            &format!("{}.250/24", net.subnet),
            "dev",
            &mine,
        ])?;
        ip(&["link", "set", &mine, "up"])?;
        Ok(net)
    }

    fn switch(&self) -> String {
        format!("{}-switch", self.prefix)
    }

    /// A veth pair `inside`–`port` with `port` on the bridge.
    fn plug(&self, inside: &str, port: &str) -> anyhow::Result<()> {
        ip(&["link", "add", inside, "type", "veth", "peer", "name", port])?;
        ip(&["link", "set", port, "netns", &self.switch()])?;
        ip(&["-n", &self.switch(), "link", "set", port, "master", "br0"])?;
        ip(&["-n", &self.switch(), "link", "set", port, "up"])
    }

    /// A host `name` with address `<subnet>.<octet>`.
    fn add_host(&mut self, name: &str, octet: u8) -> anyhow::Result<String> {
        let ns = self.namespace(name);
        let nic = self.nic(name);
        ip(&["netns", "add", &ns])?;
        self.hosts.push(ns.clone());
        self.plug(&nic, &format!("{}s{name}", self.prefix))?;
        ip(&["link", "set", &nic, "netns", &ns])?;
        let addr = format!("{}.{octet}", self.subnet);
        ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", &nic])?;
        ip(&["-n", &ns, "link", "set", &nic, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(addr)
    }

    fn namespace(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    fn nic(&self, host: &str) -> String {
        format!("{}{host}", self.prefix)
    }

    fn set_link(&self, host: &str, state: &str) -> anyhow::Result<()> {
        ip(&[
            "-n",
            &self.namespace(host),
            "link",
            "set",
            &self.nic(host),
            state,
        ])
    }

    /// `command` run inside `host`'s namespace.
    fn command(&self, host: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.namespace(host), BINARY]);
        command
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends in it, and with them their peers.
        for ns in &self.hosts {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["netns", "del", &self.switch()]);
    }
}

/// A process this test started (`ip netns exec` execs the binary, so the pid is its own);
/// killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(mut command: Command, log: &Path) -> anyhow::Result<Process> {
    let out = std::fs::File::create(log)?;
    Ok(Process(
        command
            .env(
                "DISPATCHER_LOG",
                std::env::var("MULTIHOST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?,
    ))
}

struct Site {
    root: PathBuf,
    certs: PathBuf,
    token_file: PathBuf,
    config_file: PathBuf,
    peers: String,
}

fn start_replica(net: &Network, site: &Site, id: u64, addr: &str) -> anyhow::Result<Process> {
    let host = format!("r{id}");
    let mut command = net.command(&host);
    command.arg("serve");
    if id == 3 {
        // The way an operator sets up a host: everything in one file ...
        let file = site.root.join("r3.toml");
        let cluster_settings = std::fs::read_to_string(&site.config_file)?;
        let peers: Vec<String> = site.peers.split(',').map(|p| format!("\"{p}\"")).collect();
        std::fs::write(
            &file,
            format!(
                "[serve]\nid = 3\nlisten = \"0.0.0.0:{PORT}\"\nadvertise = \"{addr}:{PORT}\"\n\
                 data_dir = \"/nonexistent\"\npeers = [{}]\ntls_dir = \"{}\"\n\
                 bootstrap_token_file = \"{}\"\n\n{cluster_settings}",
                peers.join(", "),
                site.certs.display(),
                site.token_file.display()
            ),
        )?;
        command.arg("--config").arg(&file);
        // ... and an environment variable that wins over it.
        command.env("DISPATCHER_DATA_DIR", site.root.join("r3-data"));
    } else {
        command
            .args(["--id", &id.to_string(), "--listen"])
            .arg(format!("{addr}:{PORT}"))
            .arg("--data-dir")
            .arg(site.root.join(format!("r{id}-data")))
            .args(["--peers", &site.peers, "--config"])
            .arg(&site.config_file)
            .arg("--tls-dir")
            .arg(&site.certs)
            .arg("--bootstrap-token-file")
            .arg(&site.token_file);
    }
    spawn(command, &site.root.join(format!("r{id}.log")))
}

fn start_agent(net: &Network, site: &Site, name: &str, endpoints: &str) -> anyhow::Result<Process> {
    let mut command = net.command(name);
    command.arg("taskmanager");
    let work_dir = site.root.join(format!("{name}-work"));
    if name == "b" {
        let file = site.root.join("b.toml");
        std::fs::write(
            &file,
            format!(
                "[taskmanager]\nid = \"b\"\nslots = 1\nwork_dir = \"{}\"\nendpoints = [{}]\n\
                 tls_dir = \"{}\"\nlabels = {{ site = \"lab\" }}\n",
                work_dir.display(),
                endpoints
                    .split(',')
                    .map(|e| format!("\"{e}\""))
                    .collect::<Vec<_>>()
                    .join(", "),
                site.certs.display()
            ),
        )?;
        command
            .arg("--config")
            .arg(&file)
            .env("DISPATCHER_SLOTS", "2");
    } else {
        command
            .args(["--id", name, "--slots", "2", "--endpoints", endpoints])
            .arg("--work-dir")
            .arg(&work_dir)
            .arg("--tls-dir")
            .arg(&site.certs);
    }
    spawn(command, &site.root.join(format!("{name}.log")))
}

/// Median time of five fresh `job list` CLI calls from the operator's machine, with
/// `endpoints` in that order.
fn fresh_cli_calls(
    certs: &Path,
    token_file: &Path,
    endpoints: &[String],
) -> anyhow::Result<Duration> {
    let token = std::fs::read_to_string(token_file)?;
    let took = five_timed_calls(|| {
        let mut command = Command::new(BINARY);
        command
            .args(["job", "list", "--endpoints", &endpoints.join(",")])
            .arg("--tls-dir")
            .arg(certs)
            .args(["--tls-name", "client-ops"])
            .env("DISPATCHER_TOKEN", token.trim());
        command
    })?;
    eprintln!(
        "fresh CLI calls with {} cut and listed first: {took:?}",
        endpoints[0]
    );
    Ok(took[2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_across_namespaces_survives_a_cut_leader_link() -> anyhow::Result<()> {
    if !is_root() {
        eprintln!("SKIPPED: network namespaces need root (CI runs this as root)");
        return Ok(());
    }
    // DISPATCHER_TEST_KEEP=1 keeps the hosts' data and logs for a post-mortem.
    let dir = tempfile::Builder::new()
        .prefix("dispatcher-multihost-")
        .disable_cleanup(std::env::var_os("DISPATCHER_TEST_KEEP").is_some())
        .tempdir()?;
    let root = dir.path().to_path_buf();
    let mut net = Network::create()?;

    log_phase("three replica hosts and two agent hosts on one bridge");
    let mut replica_addrs = Vec::new();
    for id in 1..=3u8 {
        replica_addrs.push(net.add_host(&format!("r{id}"), id)?);
    }
    for (i, name) in ["a", "b"].iter().enumerate() {
        net.add_host(name, 10 + i as u8)?;
    }

    log_phase("certificates for every party, with each replica's address");
    let certs_dir = root.join("tls");
    certs::init(
        &certs_dir,
        &certs::CertsPlan {
            replicas: vec![1, 2, 3],
            taskmanagers: vec!["a".into(), "b".into()],
            clients: vec!["ops".into()],
            hosts: replica_addrs.clone(),
        },
    )?;
    let admin = Secret::generate()?;
    let token_file = root.join("admin.token");
    std::fs::write(&token_file, admin.expose())?;
    let config_file = root.join("cluster.toml");
    std::fs::write(&config_file, toml::to_string(&test_config())?)?;
    let endpoints: Vec<String> = replica_addrs
        .iter()
        .map(|a| format!("{a}:{PORT}"))
        .collect();
    let site = Site {
        root: root.clone(),
        certs: certs_dir.clone(),
        token_file,
        config_file,
        peers: endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| format!("{}={e}", i + 1))
            .collect::<Vec<_>>()
            .join(","),
    };
    let mut replicas = Vec::new();
    for (i, addr) in replica_addrs.iter().enumerate() {
        replicas.push(start_replica(&net, &site, i as u64 + 1, addr)?);
    }
    let credentials = Credentials::tls(
        TlsConfig::load(&TlsFiles::new(&certs_dir, "client-ops"))?,
        Some(admin),
    );
    let client = Client::new(endpoints.clone(), credentials.clone())?;
    // With TLS an agent registers only the labels an admin pinned to it.
    wait_for(DEADLINE, "agent b's label to be pinned", || async {
        client
            .pin_taskmanager("b", [("site".into(), "lab".into())].into(), None)
            .await
            .ok()
    })
    .await?;
    let joined = endpoints.join(",");
    let _agents = [
        start_agent(&net, &site, "a", &joined)?,
        start_agent(&net, &site, "b", &joined)?,
    ];
    let per_replica: Vec<Client> = endpoints
        .iter()
        .map(|e| {
            Client::with_options(
                vec![e.clone()],
                ClientOptions {
                    rpc_timeout: Duration::from_millis(500),
                    call_timeout: Duration::from_millis(500),
                    ..ClientOptions::new(credentials.clone())
                },
            )
        })
        .collect::<Result<_, _>>()?;

    log_phase("the cluster forms over TLS and both agents register from their hosts");
    let leader = wait_for(DEADLINE, "a leader", || async {
        client.cluster_status().await.ok()?.leader_id
    })
    .await?;
    wait_taskmanagers_alive(&client, 2).await?;
    let tms = client.list_taskmanagers().await?;
    let b = tms.iter().find(|t| t.id == "b").expect("agent b");
    assert_eq!(
        b.slots, 2,
        "DISPATCHER_SLOTS wins over the file's slots = 1"
    );
    assert_eq!(b.labels.get("site").map(String::as_str), Some("lab"));
    assert!(
        root.join("r3-data").exists(),
        "DISPATCHER_DATA_DIR wins over the file's data_dir"
    );

    log_phase("work runs on both agents; then the leader's link is cut");
    let job = client
        .submit(job_request(
            "across",
            8,
            1,
            3,
            ("/bin/sleep".into(), vec!["1".into()]),
        ))
        .await?;
    wait_for(DEADLINE, "shards to run", || async {
        let status = client.job_status(&job.job_id).await.ok()?;
        status
            .shards
            .iter()
            .any(|s| s.state == "running")
            .then_some(())
    })
    .await?;
    let cut = format!("r{leader}");
    net.set_link(&cut, "down")?;

    log_phase("the other two elect a leader and the job finishes");
    let new_leader = wait_for(DEADLINE, "a new leader", || async {
        let status = client.cluster_status().await.ok()?;
        status.leader_id.filter(|l| *l != leader)
    })
    .await?;
    log_phase("fresh CLI calls with the cut replica listed first answer without waiting on it");
    // Its packets are dropped, not refused: a connect to it hangs, as to a powered-off host.
    let mut cut_first = vec![endpoints[leader as usize - 1].clone()];
    cut_first.extend(
        endpoints
            .iter()
            .filter(|e| **e != endpoints[leader as usize - 1])
            .cloned(),
    );
    let median = fresh_cli_calls(&certs_dir, &site.token_file, &cut_first)?;
    // A generous bound; the figure is printed (it was the 5 s attempt deadline before).
    assert!(median < Duration::from_secs(2), "median {median:?}");
    let done = wait_job_state(&client, &job.job_id, &["finished", "failed"], DEADLINE).await?;
    assert_eq!(done.state, "finished");
    assert!(done.shards.iter().all(|s| s.state == "finished"));

    log_phase("the link returns: the old leader follows and every replica converges");
    net.set_link(&cut, "up")?;
    wait_for(
        DEADLINE,
        "all three replicas to hold the same state",
        || async {
            let mut seen = Vec::new();
            for (i, c) in per_replica.iter().enumerate() {
                let status = c.local_status(Some(&endpoints[i])).await.ok()?;
                seen.push((status.state_digest, status.last_applied));
            }
            seen.windows(2).all(|w| w[0] == w[1]).then_some(())
        },
    )
    .await?;
    let status = client.cluster_status().await?;
    assert_eq!(status.leader_id, Some(new_leader));
    drop(replicas);
    Ok(())
}
