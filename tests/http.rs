//! The HTTP side (`--http-listen`) of real replicas and agents: `/metrics` parsed with a
//! Prometheus text parser, `/healthz`, `/readyz` (ready with a leader and caught up, not
//! ready without a quorum), the dashboard's data with and without tokens, HTTPS with TLS.

mod common;

use common::http_client::{get, HttpTarget};
use common::*;
use dispatcher::local_cluster::wait_for;
use std::collections::BTreeMap;

/// Every family issue 12 asks for, as exposed (counters with `_total`, histograms by their
/// `_count`).
const REPLICA_FAMILIES: &[&str] = &[
    "dispatcher_raft_term",
    "dispatcher_raft_commit_index",
    "dispatcher_raft_applied_index",
    "dispatcher_raft_leader_changes_total",
    "dispatcher_raft_proposals_total",
    "dispatcher_raft_proposal_duration_seconds_count",
    "dispatcher_raft_apply_duration_seconds_count",
    "dispatcher_snapshot_size_bytes",
    "dispatcher_snapshot_build_duration_seconds_count",
    "dispatcher_wal_fsync_duration_seconds_count",
    "dispatcher_taskmanagers",
    "dispatcher_slots_used",
    "dispatcher_slots_free",
    "dispatcher_cluster_version",
    "dispatcher_shards",
    "dispatcher_placements_total",
    "dispatcher_recoveries_total",
    "dispatcher_dispatch_latency_seconds_count",
    "dispatcher_admission_refusals_total",
    "dispatcher_rpcs_total",
];

/// The samples of a scrape: (name, labels) → value.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn parse_metrics(text: &str) -> anyhow::Result<Samples> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines)?;
    let mut out = Samples::new();
    for sample in scrape.samples {
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(buckets) => {
                // The parser folds `_bucket` series into one; keep the total count.
                buckets.last().map(|b| b.count).unwrap_or(0.0)
            }
            prometheus_parse::Value::Summary(_) => continue,
        };
        let labels: BTreeMap<String, String> = sample
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.insert((sample.metric, labels), value);
    }
    Ok(out)
}

fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples.get(&(name.to_string(), labels)).copied()
}

fn has_family(samples: &Samples, name: &str) -> bool {
    samples.keys().any(|(n, _)| n == name)
}

async fn scrape(target: &HttpTarget, addr: &str) -> anyhow::Result<Samples> {
    let response = get(target, addr, "/metrics", &[]).await?;
    anyhow::ensure!(response.status == 200, "/metrics: {}", response.status);
    anyhow::ensure!(
        response
            .header("content-type")
            .is_some_and(|c| c.contains("openmetrics-text")),
        "content type {:?}",
        response.header("content-type")
    );
    parse_metrics(&response.body)
}

async fn status_of(target: &HttpTarget, addr: &str, path: &str) -> Option<u16> {
    get(target, addr, path, &[]).await.ok().map(|r| r.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_readiness_of_replicas_and_agents() -> anyhow::Result<()> {
    let mut cluster = start_cluster(3, test_config()).await?;
    cluster.start_taskmanager("a", 4, &[])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 1).await?;
    let plain = HttpTarget::Plain;

    log_phase("every replica is alive and, with a leader, ready");
    for id in cluster.ids() {
        let http = cluster.replica(id)?.http.clone();
        assert_eq!(status_of(&plain, &http, "/healthz").await, Some(200));
        wait_for(DEADLINE, "the replica to be ready", || async {
            (status_of(&plain, &http, "/readyz").await == Some(200)).then_some(())
        })
        .await?;
    }
    let agent_http = cluster.taskmanager("a")?.http.clone();
    assert_eq!(status_of(&plain, &agent_http, "/healthz").await, Some(200));
    wait_for(DEADLINE, "the agent to be ready", || async {
        (status_of(&plain, &agent_http, "/readyz").await == Some(200)).then_some(())
    })
    .await?;

    log_phase("a job runs; the leader's metrics count it");
    let job = client
        .submit(submit_request("metered", 6, ""))
        .await?
        .job_id;
    wait_job_state(&client, &job, &["finished"], DEADLINE).await?;
    let leader = cluster.wait_for_leader(&cluster.ids(), DEADLINE).await?;
    let leader_http = cluster.replica(leader)?.http.clone();
    let samples = wait_for(
        DEADLINE,
        "the leader's metrics to count the job",
        || async {
            let samples = scrape(&plain, &leader_http).await.ok()?;
            let finished = value(&samples, "dispatcher_shards", &[("state", "finished")])?;
            let started = value(&samples, "dispatcher_dispatch_latency_seconds_count", &[])?;
            (finished >= 6.0 && started >= 6.0).then_some(samples)
        },
    )
    .await?;
    for family in REPLICA_FAMILIES {
        assert!(
            has_family(&samples, family),
            "no {family} in the leader's metrics"
        );
    }
    assert!(value(&samples, "dispatcher_raft_term", &[]).unwrap_or(0.0) >= 1.0);
    assert_eq!(value(&samples, "dispatcher_raft_is_leader", &[]), Some(1.0));
    assert_eq!(
        value(
            &samples,
            "dispatcher_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                (
                    "max_cluster_version",
                    &dispatcher::formats::MAX_CLUSTER_VERSION.to_string()
                )
            ]
        ),
        Some(1.0),
        "the release in dispatcher_build_info"
    );
    assert!(value(&samples, "dispatcher_raft_applied_index", &[]).unwrap_or(0.0) > 0.0);
    assert!(value(&samples, "dispatcher_placements_total", &[]).unwrap_or(0.0) >= 6.0);
    assert!(
        value(&samples, "dispatcher_wal_fsync_duration_seconds_count", &[]).unwrap_or(0.0) > 0.0
    );
    assert_eq!(
        value(&samples, "dispatcher_taskmanagers", &[("state", "alive")]),
        Some(1.0)
    );
    assert_eq!(value(&samples, "dispatcher_slots_free", &[]), Some(4.0));
    assert!(
        value(
            &samples,
            "dispatcher_raft_proposals_total",
            &[("result", "ok")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    let submits_ok = value(
        &samples,
        "dispatcher_rpcs_total",
        &[
            ("method", "/dispatcher.v1.Dispatcher/Submit"),
            ("code", "OK"),
        ],
    );
    let reports = samples.keys().any(|(n, l)| {
        n == "dispatcher_rpcs_total"
            && l.get("method")
                .is_some_and(|m| m.ends_with("/ReportShards"))
    });
    assert!(
        submits_ok.is_some() || reports,
        "the leader counted no RPC by method"
    );

    log_phase("a follower's metrics agree on the replicated counts");
    let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    let follower_http = cluster.replica(follower)?.http.clone();
    wait_for(DEADLINE, "the follower to apply the job", || async {
        let samples = scrape(&plain, &follower_http).await.ok()?;
        (value(&samples, "dispatcher_shards", &[("state", "finished")])? >= 6.0
            && value(&samples, "dispatcher_raft_is_leader", &[])? == 0.0)
            .then_some(())
    })
    .await?;

    log_phase("the leader's heartbeats to the follower ride one stream");
    // A heartbeat sent on a stream of its own would end that stream, and count one
    // AppendStream call, every heartbeat interval (100 ms here): 20 in the window.
    let ended_streams = |samples: &Samples| -> f64 {
        samples
            .iter()
            .filter(|((name, labels), _)| {
                name == "dispatcher_rpcs_total"
                    && labels.get("method").map(String::as_str)
                        == Some("/dispatcher.raft.v1.RaftService/AppendStream")
            })
            .map(|(_, count)| count)
            .sum()
    };
    let before = ended_streams(&scrape(&plain, &follower_http).await?);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await; // the window measured, not a wait
    let after = ended_streams(&scrape(&plain, &follower_http).await?);
    assert!(
        after - before <= 4.0,
        "{} append streams ended in 2 s: heartbeats open a stream each",
        after - before
    );

    log_phase("the agent's metrics count its runs");
    let agent = scrape(&plain, &agent_http).await?;
    assert!(value(&agent, "dispatcher_agent_runs_started_total", &[]).unwrap_or(0.0) >= 6.0);
    assert_eq!(value(&agent, "dispatcher_agent_slots", &[]), Some(4.0));
    assert_eq!(
        value(&agent, "dispatcher_agent_lease_valid", &[]),
        Some(1.0)
    );

    log_phase("without a quorum, the last replica is not ready");
    let others: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != follower)
        .collect();
    for id in others {
        cluster.kill(id)?;
    }
    let ready = get(&plain, &follower_http, "/readyz", &[]).await;
    let refused = wait_for(DEADLINE, "the replica to say it is not ready", || async {
        let r = get(&plain, &follower_http, "/readyz", &[]).await.ok()?;
        (r.status == 503).then_some(r)
    })
    .await?;
    assert!(!refused.body.trim().is_empty(), "a refusal says why");
    drop(ready);
    assert_eq!(
        status_of(&plain, &follower_http, "/healthz").await,
        Some(200)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_the_http_side_is_https_and_the_dashboard_data_needs_a_token() -> anyhow::Result<()>
{
    let cluster = start_secure_cluster(3, test_config()).await?;
    let ca = cluster.root().join("certs").join("ca.pem");
    let https = HttpTarget::trusting(&ca)?;
    let id = cluster.ids()[0];
    let http = cluster.replica(id)?.http.clone();

    log_phase("health, readiness and metrics are open, over HTTPS");
    wait_for(DEADLINE, "the replica to be ready", || async {
        (status_of(&https, &http, "/readyz").await == Some(200)).then_some(())
    })
    .await?;
    assert_eq!(status_of(&https, &http, "/healthz").await, Some(200));
    let samples = scrape(&https, &http).await?;
    assert!(has_family(&samples, "dispatcher_raft_term"));

    log_phase("an agent's HTTP side is HTTPS a client can verify against the cluster CA");
    let mut cluster = cluster;
    cluster.start_taskmanager("web", 1, &[])?;
    let agent_http = cluster.taskmanager("web")?.http.clone();
    wait_for(DEADLINE, "the agent's HTTPS side", || async {
        (status_of(&https, &agent_http, "/healthz").await == Some(200)).then_some(())
    })
    .await?;
    let agent = scrape(&https, &agent_http).await?;
    assert!(has_family(&agent, "dispatcher_agent_slots"));

    log_phase("plain HTTP is not served on the HTTPS port");
    assert!(
        get(&HttpTarget::Plain, &http, "/healthz", &[])
            .await
            .map_or(true, |r| r.status != 200),
        "plain HTTP answered on a TLS replica"
    );

    log_phase("the dashboard page is served; its data needs a token");
    let page = get(&https, &http, "/", &[]).await?;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<title>dispatcher</title>"));
    let script = get(&https, &http, "/console.js", &[]).await?;
    assert_eq!(script.status, 200);
    assert!(script.body.contains("followEvents"), "the console's script");
    let anonymous = get(&https, &http, "/api/overview", &[]).await?;
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    let dispatcher::local_cluster::HarnessSecurity::Tls { admin, .. } = cluster.security() else {
        anyhow::bail!("the cluster is not secure");
    };
    // A secret in the URL would be written to every log on the way: even a valid one is
    // refused there, for the overview and for the event stream.
    for path in [
        "/api/overview",
        "/api/events",
        "/api/history",
        "/api/jobs/j-1",
    ] {
        let in_url = format!("{path}?token={}", admin.expose());
        let refused = get(&https, &http, &in_url, &[]).await?;
        assert_eq!(refused.status, 401, "{path}: {}", refused.body);
        assert!(refused.body.contains("Authorization"), "{}", refused.body);
    }
    let bearer = format!("Bearer {}", admin.expose());
    let overview = get(
        &https,
        &http,
        "/api/overview",
        &[("Authorization", &bearer)],
    )
    .await?;
    assert_eq!(overview.status, 200, "{}", overview.body);
    let json: serde_json::Value = serde_json::from_str(&overview.body)?;
    assert_eq!(json["members"].as_array().map(Vec::len), Some(3));
    Ok(())
}

/// Raise this process's open-file limit to its hard limit (a thousand sockets are opened).
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a local struct; no other memory is involved.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max.min(65_536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_get_through_a_thousand_idle_connections_from_another_address() -> anyhow::Result<()>
{
    raise_fd_limit();
    let cluster = start_cluster(1, test_config()).await?;
    let http = cluster.replica(cluster.ids()[0])?.http.clone();
    let plain = HttpTarget::Plain;
    wait_for(DEADLINE, "the replica to be ready", || async {
        (status_of(&plain, &http, "/readyz").await == Some(200)).then_some(())
    })
    .await?;

    log_phase("1,000 idle connections from 127.0.0.2");
    let target: std::net::SocketAddr = http.parse()?;
    let mut idle = Vec::new();
    for _ in 0..1000 {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind("127.0.0.2:0".parse()?)?;
        if let Ok(stream) = socket.connect(target).await {
            idle.push(stream);
        }
    }
    assert!(idle.len() >= 900, "only {} connected", idle.len());

    log_phase("probes from 127.0.0.1 answer at once");
    let mut took = Vec::new();
    for _ in 0..20 {
        let started = std::time::Instant::now();
        assert_eq!(status_of(&plain, &http, "/healthz").await, Some(200));
        took.push(started.elapsed());
    }
    assert_eq!(status_of(&plain, &http, "/readyz").await, Some(200));
    took.sort();
    let median = took[took.len() / 2];
    eprintln!(
        "/healthz with 1,000 idle connections open: median {median:?}, max {:?}",
        took[took.len() - 1]
    );
    assert!(median < std::time::Duration::from_millis(100), "{took:?}");
    assert!(
        took[took.len() - 1] < std::time::Duration::from_secs(1),
        "{took:?}"
    );

    log_phase("metrics are served from a recent scrape");
    let first = get(&plain, &http, "/metrics", &[]).await?;
    assert_eq!(first.status, 200);
    drop(idle);
    Ok(())
}
