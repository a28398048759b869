//! Bad input changes nothing and gets the right code with a clear message.

mod common;

use common::*;
use dispatcher::client::{Client, ClientError};
use dispatcher::pb::api::{RegisterTaskManagerRequest, SubmitRequest};
use dispatcher::security::Credentials;
use std::process::Command;
use tonic::Code;

async fn digest(cluster: &TestCluster) -> String {
    let ids = cluster.ids();
    cluster
        .wait_converged(&ids, DEADLINE)
        .await
        .expect("converged")
        .1
}

fn expect_code<T: std::fmt::Debug>(result: Result<T, ClientError>, code: Code, words: &str) {
    match result {
        Err(e) => {
            assert_eq!(e.code(), Some(code), "wrong code for {e}");
            assert!(
                e.to_string().contains(words),
                "message '{e}' should mention '{words}'"
            );
        }
        Ok(v) => panic!("expected {code:?}, got {v:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() -> anyhow::Result<()> {
    let cluster = start_cluster(3, test_config()).await?;
    let client = cluster.client()?;
    register_taskmanagers(&client, 1, 2).await?;
    let job = client.submit(submit_request("good", 1, "")).await?;
    // Let the leader's placement land first: it is a legitimate change of its own.
    wait_placed(&client, &job.job_id).await?;
    let before = digest(&cluster).await;

    log_phase("job specs");
    let mut zero = submit_request("zero", 0, "");
    expect_code(
        client.submit(zero.clone()).await,
        Code::InvalidArgument,
        "at least 1 shard",
    );
    zero.spec.as_mut().expect("spec").shard_count = 100_001;
    expect_code(
        client.submit(zero.clone()).await,
        Code::InvalidArgument,
        "100000",
    );
    let mut empty = submit_request("empty", 1, "");
    empty.spec.as_mut().expect("spec").command = "  ".into();
    expect_code(
        client.submit(empty).await,
        Code::InvalidArgument,
        "command is empty",
    );
    let no_spec = SubmitRequest {
        name: "nospec".into(),
        spec: None,
        idempotency_key: String::new(),
        priority: None,
        ..Default::default()
    };
    expect_code(
        client.submit(no_spec).await,
        Code::InvalidArgument,
        "no job spec",
    );
    let mut big = submit_request("big", 1, "");
    big.spec.as_mut().expect("spec").args = vec!["x".repeat(1100 * 1024)];
    expect_code(client.submit(big).await, Code::InvalidArgument, "limit");

    log_phase("a request over the transport size limit");
    let mut huge = submit_request("huge", 1, "");
    huge.spec.as_mut().expect("spec").args = vec!["x".repeat(6 * 1024 * 1024)];
    let result = client.submit(huge).await;
    let code = result.as_ref().err().and_then(|e| e.code());
    assert!(
        matches!(code, Some(Code::OutOfRange) | Some(Code::ResourceExhausted)),
        "oversized request: {result:?}"
    );

    log_phase("unknown ids");
    expect_code(
        client.job_status("j-999999").await,
        Code::NotFound,
        "not found",
    );
    expect_code(
        client.job_status("banana").await,
        Code::InvalidArgument,
        "j-42",
    );
    expect_code(
        client.cancel_job("j-999999").await,
        Code::NotFound,
        "not found",
    );
    expect_code(
        client.drain_taskmanager("tm-nope", None).await,
        Code::NotFound,
        "tm-nope",
    );
    expect_code(
        client.remove_member(42).await,
        Code::NotFound,
        "not a member",
    );
    expect_code(
        client.transfer_leader(42).await,
        Code::NotFound,
        "not a voter",
    );

    log_phase("malformed addresses and slots");
    for (addr, slots, words) in [
        ("nohost", 4, "host:port"),
        ("h:99999", 4, "host:port"),
        ("h:1", 0, "slots"),
    ] {
        let req = RegisterTaskManagerRequest {
            id: "tm-bad".into(),
            addr: addr.into(),
            slots,
            labels: Default::default(),
            ..Default::default()
        };
        expect_code(
            client.register_taskmanager(req).await,
            Code::InvalidArgument,
            words,
        );
    }
    expect_code(
        client.add_member(9, "not an address").await,
        Code::InvalidArgument,
        "host:port",
    );
    assert!(matches!(
        Client::new(vec!["nohost".into()], Credentials::insecure()),
        Err(ClientError::BadEndpoint(_))
    ));

    log_phase("the CLI reports one clear line and a non-zero exit");
    let out = Command::new(BINARY)
        .args(["job", "status", "j-999999", "--endpoints"])
        .arg(cluster.endpoints().join(","))
        .args(cluster.client_flags())
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "error: job 'j-999999' not found; list jobs with `dispatcher job list`"
    );
    assert!(out.stdout.is_empty());
    let out = Command::new(BINARY)
        .args(["submit", "--name", "x", "--shards", "1", "--endpoints"])
        .arg(cluster.endpoints().join(","))
        .args(cluster.client_flags())
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("after `--`"));

    log_phase("nothing changed");
    assert_eq!(digest(&cluster).await, before);
    let jobs = client.list_jobs().await?;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].job_id, job.job_id);
    let tms = client.list_taskmanagers().await?;
    assert_eq!(tms.len(), 1);
    Ok(())
}
