//! `dispatcher job logs`, the real binary against real replicas and agents: a running shard's
//! output followed live, every line once and in order; an ended shard's output from the
//! cluster after its TaskManager is gone; stderr; control bytes escaped unless `--raw` asks
//! for the bytes as they are, in `job logs` and in `job status`'s errors alike; long output
//! cut to the kept tail.

mod common;

use common::*;
use std::process::{Command, Output};

fn job_logs(cluster: &TestCluster, args: &[&str]) -> anyhow::Result<Output> {
    let output = Command::new(BINARY)
        .args(["job", "logs"])
        .args(args)
        .arg("--endpoints")
        .arg(cluster.endpoints().join(","))
        .args(cluster.client_flags())
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "job logs {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output)
}

fn shell(name: &str, script: &str) -> dispatcher::pb::api::SubmitRequest {
    job_request(
        name,
        1,
        1,
        1,
        (
            "/bin/sh".to_string(),
            vec!["-c".to_string(), script.to_string()],
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_logs_follows_a_running_shard_and_answers_after_its_agent_is_gone() -> anyhow::Result<()>
{
    let mut cluster = start_cluster(3, test_config()).await?;
    cluster.start_taskmanager("printer", 2, &[])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 1).await?;

    log_phase("a shard prints a line every 300 ms; `job logs --follow` shows each once");
    let job = client
        .submit(shell(
            "talker",
            "for i in 1 2 3 4 5 6 7 8; do echo line $i; sleep 0.3; done; echo done >&2",
        ))
        .await?
        .job_id;
    wait_all_running(&client, &job).await?;
    let mut follower = Command::new(BINARY)
        .args(["job", "logs", &job, "--follow", "--endpoints"])
        .arg(cluster.endpoints().join(","))
        .args(cluster.client_flags())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut lines = std::io::BufReader::new(follower.stdout.take().expect("piped"));
    let mut first = String::new();
    tokio::task::block_in_place(|| std::io::BufRead::read_line(&mut lines, &mut first))?;
    assert_eq!(first, "line 1\n");
    // Live: the first line came while the shard still runs (it prints for 2.4 s).
    assert_eq!(client.job_status(&job).await?.state, "running");
    let mut rest = String::new();
    tokio::task::block_in_place(|| std::io::Read::read_to_string(&mut lines, &mut rest))?;
    assert!(follower.wait()?.success());
    let expected: String = (1..=8).map(|i| format!("line {i}\n")).collect();
    assert_eq!(
        first + &rest,
        expected,
        "followed output, each line once and in order"
    );
    wait_job_state(&client, &job, &["finished"], DEADLINE).await?;

    log_phase("output that is binary, and output longer than the kept tail");
    let binary = client
        .submit(shell("binary", r"printf '\033[2Jcolour\377\n'"))
        .await?
        .job_id;
    let long = client
        .submit(shell(
            "long",
            "i=0; while [ $i -lt 3000 ]; do echo \"line $i of a long output\"; i=$((i+1)); done",
        ))
        .await?
        .job_id;
    for job in [&binary, &long] {
        wait_job_state(&client, job, &["finished"], DEADLINE).await?;
    }
    let hostile = client
        .submit(shell(
            "hostile",
            r"printf '\033]0;pwned\007\033[2J' >&2; exit 1",
        ))
        .await?
        .job_id;
    wait_job_state(&client, &hostile, &["failed"], DEADLINE).await?;
    let status = cli(&cluster, &["job", "status", &hostile])?;
    assert!(status.status.success());
    assert!(
        !status.stdout.contains(&0x1b) && !status.stdout.contains(&0x07),
        "job status wrote a job's control bytes: {:?}",
        String::from_utf8_lossy(&status.stdout)
    );
    assert!(String::from_utf8_lossy(&status.stdout).contains("\\x1b]0;pwned"));

    log_phase("the agent is gone; the cluster still answers");
    cluster.kill_taskmanager("printer")?;
    let kept = job_logs(&cluster, &[&job])?;
    assert_eq!(String::from_utf8(kept.stdout)?, expected);
    let errors = job_logs(&cluster, &[&job, "--stderr"])?;
    assert_eq!(String::from_utf8(errors.stdout)?, "done\n");

    let escaped = job_logs(&cluster, &[&binary])?;
    assert_eq!(
        String::from_utf8(escaped.stdout)?,
        "\\x1b[2Jcolour\u{fffd}\n",
        "a shard may not drive the operator's terminal"
    );
    let raw = job_logs(&cluster, &[&binary, "--raw"])?;
    assert_eq!(
        raw.stdout, b"\x1b[2Jcolour\xff\n",
        "--raw gets the bytes as they are"
    );
    let json = job_logs(&cluster, &[&binary, "--output", "json"])?;
    let line: serde_json::Value = serde_json::from_slice(&json.stdout)?;
    assert_eq!(line["source"], "state");
    assert!(line["text"].as_str().is_some_and(|t| t.contains("colour")));

    let tail = job_logs(&cluster, &[&long])?;
    let limit = dispatcher::config::DEFAULT_OUTPUT_TAIL_BYTES;
    assert_eq!(tail.stdout.len(), limit, "only the kept tail");
    assert!(String::from_utf8(tail.stdout)?.ends_with("line 2999 of a long output\n"));
    assert!(
        String::from_utf8_lossy(&tail.stderr).contains("only the last"),
        "says that the output was cut"
    );
    Ok(())
}
