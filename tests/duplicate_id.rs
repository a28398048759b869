//! One TaskManager id on two agent processes never runs a shard twice at once.
//!
//! - Two agents with one id on one machine: the second is refused with `ALREADY_EXISTS`,
//!   naming the id and the holder's address, and exits non-zero; the holder goes on.
//! - A real partition: the first agent runs in its own Linux network namespace, reaching the
//!   replicas over a veth pair, and its link is cut with `ip link set down` while it runs
//!   shards. A second agent with the same id, started outside, is refused until the first
//!   must have fenced itself, then takes the id over and runs the shards again. When the link
//!   comes back the first learns it lost the id and exits. Every shard process records its
//!   start, ticks and end with its pid; no two executions of a shard may overlap.

mod common;

use common::records::*;
use common::*;
use dispatcher::local_cluster::{free_port, LocalCluster};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An agent process this test started; killed (by pid) when dropped.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn spawn(
        prefix: &[&str],
        id: &str,
        work_dir: &Path,
        endpoints: &[String],
        log: PathBuf,
    ) -> anyhow::Result<Agent> {
        std::fs::create_dir_all(work_dir)?;
        let (program, before) = match prefix.split_first() {
            Some((p, rest)) => (p.to_string(), rest.to_vec()),
            None => (BINARY.to_string(), Vec::new()),
        };
        let mut command = Command::new(program);
        command.args(before);
        if !prefix.is_empty() {
            command.arg(BINARY);
        }
        let out = std::fs::File::create(&log)?;
        let child = command
            // The cluster of this test runs with --insecure (`start_cluster`, `start_proxied`).
            .args([
                "taskmanager",
                "--insecure",
                // The recording shards append to the test's own (root-only) files.
                "--sandbox",
                "off",
                "--id",
                id,
                "--slots",
                "4",
                "--work-dir",
            ])
            .arg(work_dir)
            .arg("--endpoints")
            .arg(endpoints.join(","))
            .env("DISPATCHER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        Ok(Agent { child, log })
    }

    /// Its exit status once it has exited within `within`, or `None` if it still runs.
    fn exited_within(
        &mut self,
        within: Duration,
    ) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(None)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn recording_job(rec: &Recorder, shards: u32, run_ms: u64) -> dispatcher::pb::api::SubmitRequest {
    job_request("recorded", shards, 1, 1, rec.command(run_ms, "ok"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_with_a_live_id_is_refused_and_exits() -> anyhow::Result<()> {
    let cluster = start_cluster(3, test_config()).await?;
    let root = cluster.dir.path().to_path_buf();
    let rec = Recorder::new(&root)?;
    let client = cluster.client()?;
    let endpoints = cluster.endpoints();

    log_phase("agent A holds tm-dup and runs shards");
    let mut a = Agent::spawn(
        &[],
        "tm-dup",
        &root.join("wd-a"),
        &endpoints,
        root.join("a.log"),
    )?;
    wait_taskmanagers_alive(&client, 1).await?;
    let job = client.submit(recording_job(&rec, 4, 4_000)).await?;
    wait_all_running(&client, &job.job_id).await?;

    log_phase("agent B starts with the same id: refused, exits non-zero");
    let mut b = Agent::spawn(
        &[],
        "tm-dup",
        &root.join("wd-b"),
        &endpoints,
        root.join("b.log"),
    )?;
    let status = b.exited_within(DEADLINE)?.expect("B exits");
    assert!(!status.success(), "B exited with {status}");
    let said = b.log_text();
    assert!(
        said.contains("'tm-dup' is held by another agent"),
        "B's last words: {said}"
    );

    log_phase("A keeps the id and finishes the job, each shard once");
    let done = wait_job_state(&client, &job.job_id, &["finished", "failed"], DEADLINE).await?;
    assert_eq!(done.state, "finished");
    assert!(a.exited_within(Duration::ZERO)?.is_none(), "A still runs");
    let all = rec.executions();
    assert_no_overlap(&all);
    assert_each_finished_once(&all, &job.job_id, 4);

    log_phase("a second agent on A's own work dir is refused by the work dir's lock");
    let mut c = Agent::spawn(
        &[],
        "tm-dup",
        &root.join("wd-a"),
        &endpoints,
        root.join("c.log"),
    )?;
    let status = c.exited_within(DEADLINE)?.expect("C exits");
    assert!(!status.success());
    assert!(
        c.log_text().contains("in use by another agent process"),
        "{}",
        c.log_text()
    );
    Ok(())
}

/// A network namespace with a veth pair to the host, and an address on the host's loopback
/// that the replicas listen on: reachable from the namespace only over the veth link.
struct Netns {
    name: String,
    inside_if: String,
    subnet: String,
    service_ip: String,
}

impl Netns {
    fn create() -> anyhow::Result<Netns> {
        let pid = std::process::id();
        let octet = 64 + pid % 128;
        let ns = Netns {
            name: format!("dispatcher-test-{pid}"),
            inside_if: format!("dv{pid}n"),
            subnet: format!("10.{octet}.1"),
            service_ip: format!("10.{octet}.2.1"),
        };
        let host_if = format!("dv{pid}h");
        ip(&["netns", "add", &ns.name])?;
        ip(&[
            "link",
            "add",
            &host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns.inside_if,
        ])?;
        ip(&["link", "set", &ns.inside_if, "netns", &ns.name])?;
        ip(&[
            "addr",
            "add",
            &format!("{}.1/24", ns.subnet),
            "dev",
            &host_if,
        ])?;
        ip(&["link", "set", &host_if, "up"])?;
        ip(&["addr", "add", &format!("{}/32", ns.service_ip), "dev", "lo"])?;
        ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{}.2/24", ns.subnet),
            "dev",
            &ns.inside_if,
        ])?;
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        ns.heal()?;
        Ok(ns)
    }

    fn exec(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// The prefix that runs a command inside the namespace.
    fn prefix(&self) -> Vec<&str> {
        vec!["ip", "netns", "exec", &self.name]
    }

    fn cut(&self) -> anyhow::Result<()> {
        self.exec(&["ip", "link", "set", &self.inside_if, "down"])
    }

    /// Link up, and the route to the replicas' address (taking the link down drops it).
    fn heal(&self) -> anyhow::Result<()> {
        self.exec(&["ip", "link", "set", &self.inside_if, "up"])?;
        let gateway = format!("{}.1", self.subnet);
        let target = format!("{}/32", self.service_ip);
        self.exec(&["ip", "route", "replace", &target, "via", &gateway])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&[
            "addr",
            "del",
            &format!("{}/32", self.service_ip),
            "dev",
            "lo",
        ]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_agent_is_fenced_before_another_takes_its_id() -> anyhow::Result<()> {
    if !is_root() {
        eprintln!("SKIPPED: network namespaces need root (CI runs this as root)");
        return Ok(());
    }
    let ns = Netns::create()?;
    let dir = tempfile::Builder::new()
        .prefix("dispatcher-netns-")
        .tempdir()?;
    let root = dir.path().to_path_buf();
    let mut replicas = Vec::new();
    for id in 1..=3u64 {
        let addr = format!("{}:{}", ns.service_ip, free_port()?);
        replicas.push((id, addr.clone(), addr));
    }
    let cluster = LocalCluster::start_proxied(BINARY, &root, &replicas, &test_config())?;
    cluster.wait_for_leader(&cluster.ids(), DEADLINE).await?;
    let client = cluster.client()?;
    let endpoints = cluster.endpoints();
    let rec = Recorder::new(&root)?;

    log_phase("agent A, in its own network namespace, holds tm-x and runs shards");
    let mut a = Agent::spawn(
        &ns.prefix(),
        "tm-x",
        &root.join("wd-a"),
        &endpoints,
        root.join("a.log"),
    )?;
    wait_taskmanagers_alive(&client, 1).await?;
    let job = client.submit(recording_job(&rec, 4, 8_000)).await?;
    wait_all_running(&client, &job.job_id).await?;

    log_phase("cut A's link; start agent B with the same id outside until it is admitted");
    ns.cut()?;
    let cut_at = Instant::now();
    let mut refusals = 0;
    let b = loop {
        anyhow::ensure!(cut_at.elapsed() < DEADLINE, "B was never admitted");
        let log = root.join(format!("b-{refusals}.log"));
        let mut b = Agent::spawn(&[], "tm-x", &root.join("wd-b"), &endpoints, log)?;
        match b.exited_within(Duration::from_secs(2))? {
            None => break b,
            Some(status) => {
                assert!(!status.success());
                let said = b.log_text();
                assert!(said.contains("is held by another agent"), "{said}");
                refusals += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    assert!(
        refusals >= 1,
        "B was admitted while A's lease could still be live"
    );
    eprintln!(
        "B admitted {:.1} s after the cut, after {refusals} refusals",
        cut_at.elapsed().as_secs_f64()
    );

    log_phase("B runs the shards again; the job finishes");
    let done = wait_job_state(
        &client,
        &job.job_id,
        &["finished", "failed"],
        Duration::from_secs(60),
    )
    .await?;
    assert_eq!(done.state, "finished");

    log_phase("heal: A learns it lost the id and exits");
    ns.heal()?;
    let status = a
        .exited_within(DEADLINE)?
        .expect("A exits once it reaches the cluster");
    assert!(!status.success(), "A exited with {status}");
    assert!(
        a.log_text().contains("is held by another agent"),
        "{}",
        a.log_text()
    );

    let all = rec.executions();
    assert_no_overlap(&all);
    assert_each_finished_once(&all, &job.job_id, 4);
    let pids_a: std::collections::BTreeSet<u32> =
        all.iter().filter(|e| !e.ended).map(|e| e.pid).collect();
    assert!(
        !pids_a.is_empty(),
        "A's cut-off runs were recorded: {all:#?}"
    );
    drop(b);
    Ok(())
}
