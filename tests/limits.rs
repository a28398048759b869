//! Every input is bounded before it reaches the log or memory, and the cluster admits only so
//! much unfinished work: large specs travel once per job (a TaskManager running thirty
//! shards of a 200 KB spec keeps heartbeating), oversized specs are refused naming the config
//! key, and a client flooding the cluster with shards that can never run is refused with
//! `RESOURCE_EXHAUSTED` while another client's small submissions go on.

mod common;

use common::*;
use dispatcher::client::{Client, ClientOptions};
use dispatcher::pb::api::SubmitRequest;
use std::net::IpAddr;
use tonic::Code;

fn client_from(cluster: &TestCluster, source: &str) -> anyhow::Result<Client> {
    Ok(Client::with_options(
        cluster.endpoints(),
        ClientOptions {
            source_ip: Some(source.parse::<IpAddr>()?),
            ..ClientOptions::new(cluster.credentials()?)
        },
    )?)
}

/// A job no TaskManager can run (its selector matches none).
fn unplaceable(name: &str, shards: u32) -> SubmitRequest {
    let mut req = job_request(name, shards, 1, 1, ("/bin/true".into(), vec![]));
    if let Some(spec) = req.spec.as_mut() {
        spec.selector.insert("zone".into(), "nowhere".into());
    }
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_are_bounded_and_floods_are_refused() -> anyhow::Result<()> {
    let mut config = test_config();
    config.limits.max_pending_shards = 2_000;
    config.limits.max_pending_shards_per_client = 1_200;
    let mut cluster = start_cluster(3, config).await?;
    cluster.start_taskmanager("tm-big", 30, &[])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 1).await?;

    log_phase("thirty shards of a 200 KB spec on one TaskManager");
    // Four arguments of 50 KB (Linux takes at most 128 KiB in one argument).
    let mut args = vec!["-c".to_string(), "exit 0".to_string()];
    args.extend((0..4).map(|i| format!("{i}{}", "x".repeat(50 * 1024))));
    let job = client
        .submit(job_request(
            "large-spec",
            30,
            1,
            1,
            ("/bin/sh".into(), args),
        ))
        .await?;
    let done = wait_job_state(&client, &job.job_id, &["finished", "failed"], DEADLINE).await?;
    let errors: Vec<_> = done.shards.iter().filter_map(|s| s.error.clone()).collect();
    assert_eq!(done.state, "finished", "{errors:?}");
    let tms = client.list_taskmanagers().await?;
    assert_eq!(
        tms[0].state, "alive",
        "the agent kept heartbeating: {tms:?}"
    );

    log_phase("a spec above limits.spec_bytes is refused, naming the key");
    let huge = job_request(
        "huge",
        1,
        1,
        1,
        ("/bin/true".into(), vec!["y".repeat(1_100 * 1024)]),
    );
    let err = client.submit(huge).await.expect_err("refused");
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    assert!(err.to_string().contains("limits.spec_bytes"), "{err}");

    log_phase("client A floods with shards that can never run");
    let a = client_from(&cluster, "127.0.0.2")?;
    let b = client_from(&cluster, "127.0.0.3")?;
    let first = a.submit(unplaceable("flood-0", 600)).await?;
    assert!(
        first
            .warnings
            .iter()
            .any(|w| w.contains("no live TaskManager")),
        "{first:?}"
    );
    a.submit(unplaceable("flood-1", 600)).await?;
    let err = a
        .submit(unplaceable("flood-2", 600))
        .await
        .expect_err("capped");
    assert_eq!(err.code(), Some(Code::ResourceExhausted), "{err}");
    assert!(
        err.to_string()
            .contains("limits.max_pending_shards_per_client"),
        "{err}"
    );

    log_phase("client B's submissions go on until the cluster-wide cap");
    b.submit(unplaceable("b-0", 800)).await?;
    let err = b.submit(unplaceable("b-1", 1)).await.expect_err("full");
    assert_eq!(err.code(), Some(Code::ResourceExhausted), "{err}");
    assert!(
        err.to_string().contains("limits.max_pending_shards "),
        "{err}"
    );

    log_phase("cancelling gives the room back");
    a.cancel_job(&first.job_id).await?;
    b.submit(unplaceable("b-2", 300)).await?;
    let small = b
        .submit(job_request("small", 1, 1, 1, ("/bin/true".into(), vec![])))
        .await?;
    let done = wait_job_state(&client, &small.job_id, &["finished", "failed"], DEADLINE).await?;
    assert_eq!(done.state, "finished");
    Ok(())
}
