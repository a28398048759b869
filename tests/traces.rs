//! Traces over OTLP, from outside: replicas started with `OTEL_EXPORTER_OTLP_ENDPOINT`
//! pointing at a collector stand-in (a small gRPC server in the test) send each job's life
//! as one trace: the submission, then per shard its placement and its run, in that order,
//! under one root span, with the job's attributes.

mod common;

use common::*;
use dispatcher::local_cluster::{free_port, wait_for};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use std::sync::{Arc, Mutex};

/// Keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.spans.lock().expect("the spans");
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                kept.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .clone()?;
    match value.value? {
        any_value::Value::StringValue(s) => Some(s),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_life_arrives_at_the_collector_as_one_trace_in_order() -> anyhow::Result<()> {
    let collector = Collector::default();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve(addr),
    );

    let mut cluster = start_cluster(3, test_config()).await?;
    log_phase("every replica restarted with the collector as its OTLP endpoint");
    for id in cluster.ids() {
        cluster.kill(id)?;
        let endpoint = (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
            format!("http://{addr}"),
        );
        cluster.set_env(id, vec![endpoint])?;
    }
    for id in cluster.ids() {
        cluster.restart(id)?;
    }
    cluster.wait_for_leader(&cluster.ids(), DEADLINE).await?;
    cluster.start_taskmanager("traced-tm", 2, &[])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 1).await?;

    let job = client
        .submit(job_request(
            "traced",
            2,
            1,
            1,
            ("/bin/true".to_string(), vec![]),
        ))
        .await?
        .job_id;
    wait_job_state(&client, &job, &["finished"], DEADLINE).await?;
    let spans = wait_for(DEADLINE, "the job's trace at the collector", || async {
        let kept = collector.spans.lock().ok()?.clone();
        let root = kept
            .iter()
            .find(|s| s.name == format!("job {job}"))?
            .clone();
        let trace: Vec<Span> = kept
            .into_iter()
            .filter(|s| s.trace_id == root.trace_id)
            .collect();
        Some(trace)
    })
    .await?;
    server.abort();

    let root = spans
        .iter()
        .find(|s| s.parent_span_id.is_empty())
        .expect("a root span");
    assert_eq!(root.name, format!("job {job}"));
    assert_eq!(
        attribute(root, "dispatcher.job.name").as_deref(),
        Some("traced")
    );
    assert_eq!(
        attribute(root, "dispatcher.job.state").as_deref(),
        Some("finished")
    );
    let mut names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        vec![
            format!("job {job}").as_str(),
            "shard 0 placement",
            "shard 0 run",
            "shard 1 placement",
            "shard 1 run",
            "submit",
        ],
        "one trace: the root, the submission, each shard's placement and run"
    );
    let span = |name: &str| spans.iter().find(|s| s.name == name).expect(name);
    for child in spans.iter().filter(|s| !s.parent_span_id.is_empty()) {
        assert_eq!(
            child.parent_span_id, root.span_id,
            "{} under the root",
            child.name
        );
        assert!(child.start_time_unix_nano >= root.start_time_unix_nano);
        assert!(child.end_time_unix_nano <= root.end_time_unix_nano);
    }
    for shard in 0..2 {
        let placement = span(&format!("shard {shard} placement"));
        let run = span(&format!("shard {shard} run"));
        assert!(
            span("submit").end_time_unix_nano <= placement.end_time_unix_nano
                && placement.end_time_unix_nano <= run.start_time_unix_nano
                && run.start_time_unix_nano <= run.end_time_unix_nano,
            "submit → placement → start → end, shard {shard}"
        );
        assert_eq!(
            attribute(run, "dispatcher.taskmanager").as_deref(),
            Some("traced-tm")
        );
        assert_eq!(
            attribute(run, "dispatcher.outcome").as_deref(),
            Some("finished")
        );
    }
    Ok(())
}
