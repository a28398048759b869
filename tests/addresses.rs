//! Listening and advertised addresses are separate: a replica's `--advertise` must agree with
//! its `--peers` entry (what the others dial), and a TaskManager registers the address it is
//! told to advertise.

mod common;

use common::*;
use dispatcher::local_cluster::{free_port, wait_for};
use std::process::{Command, Stdio};

#[test]
fn a_replica_whose_advertised_address_disagrees_with_peers_refuses_to_start() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let out = Command::new(BINARY)
        .args(["serve", "--insecure", "--id", "1", "--listen"])
        .arg(format!("0.0.0.0:{port}"))
        .args(["--advertise", "10.9.9.9:7001", "--peers"])
        .arg(format!("1=127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.path().join("r1"))
        .stdin(Stdio::null())
        .output()?;
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("differs from replica 1's entry in --peers"),
        "{said}"
    );
    Ok(())
}

/// Kills the agent it holds (by pid) when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taskmanager_registers_its_advertised_address() -> anyhow::Result<()> {
    let cluster = start_cluster(3, test_config()).await?;
    let work_dir = cluster.dir.path().join("wd");
    let log = std::fs::File::create(cluster.dir.path().join("agent.log"))?;
    let _agent = Child(
        Command::new(BINARY)
            .args(["taskmanager", "--id", "tm-adv", "--slots", "2"])
            .args(["--advertise", "worker-7.example:7100", "--work-dir"])
            .arg(&work_dir)
            .arg("--endpoints")
            .arg(cluster.endpoints().join(","))
            .args(cluster.client_flags())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?,
    );
    let client = cluster.client()?;
    let tm = wait_for(DEADLINE, "the agent to register", || async {
        client
            .list_taskmanagers()
            .await
            .ok()?
            .into_iter()
            .find(|t| t.id == "tm-adv")
    })
    .await?;
    assert_eq!(tm.addr, "worker-7.example:7100");
    Ok(())
}
