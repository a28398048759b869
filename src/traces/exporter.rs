//! The leader's trace exporter: follows the applied events from where it took over, turns
//! each ended job's into spans (`job_traces`) and sends them to the OTLP endpoint (gRPC,
//! `TraceService/Export`) from a task of its own, so a slow or absent collector never holds
//! the events back: what it cannot take is dropped, and said so in the log.

use super::job_traces::JobTraces;
use crate::clock::now_ms;
use crate::raft::{NextEvents, SharedState};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use std::sync::Arc;
use std::time::Duration;

/// Events read from the ring at a time.
const BATCH: usize = 256;
/// Batches of spans waiting for the collector; more are dropped.
const QUEUE: usize = 64;
/// Spans in one export request (a wide job's trace goes in several), well under the 4 MiB a
/// collector takes by default.
const SPANS_PER_EXPORT: usize = 2_000;
/// One export's deadline.
const EXPORT_DEADLINE: Duration = Duration::from_secs(5);

/// Export the traces of the jobs that end while this replica leads (the caller stops it when
/// leadership ends).
pub async fn run(shared: Arc<SharedState>, endpoint: String) {
    let channel = match tonic::transport::Endpoint::from_shared(endpoint.clone()) {
        Ok(endpoint) => endpoint
            .connect_timeout(Duration::from_secs(2))
            .timeout(EXPORT_DEADLINE)
            .connect_lazy(),
        Err(e) => {
            tracing::error!(%endpoint, "the OTLP endpoint is not a URL ({e}); no traces are sent");
            return;
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<Span>>(QUEUE);
    let sender = tokio::spawn(send(TraceServiceClient::new(channel), rx, endpoint));
    let _stop_sender = AbortOnDrop(sender);
    let mut traces = JobTraces::default();
    let mut applied = shared.subscribe();
    let (mut index, mut seq) = (*applied.borrow() + 1, 0);
    loop {
        match shared.next_events(&mut applied, index, seq, BATCH).await {
            NextEvents::Batch(batch) => {
                let seen_at = now_ms();
                let mut spans = Vec::new();
                {
                    let view = shared.read();
                    for event in &batch {
                        (index, seq) = (event.index, event.seq + 1);
                        if let Some(ended) = traces.observe(event, seen_at, &view.state) {
                            spans.extend(ended);
                        }
                    }
                }
                for chunk in spans.chunks(SPANS_PER_EXPORT) {
                    if tx.try_send(chunk.to_vec()).is_err() {
                        tracing::warn!("the OTLP collector falls behind: spans were dropped");
                        break;
                    }
                }
            }
            NextEvents::Gone { oldest } => (index, seq) = (oldest, 0),
            NextEvents::Stopped => return,
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn resource() -> Resource {
    Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("dispatcher".into())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn send(
    mut client: TraceServiceClient<tonic::transport::Channel>,
    mut rx: tokio::sync::mpsc::Receiver<Vec<Span>>,
    endpoint: String,
) {
    while let Some(spans) = rx.recv().await {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "dispatcher".into(),
                        version: crate::formats::release().into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        if let Err(status) = client.export(request).await {
            tracing::warn!(%endpoint, "exporting a job's trace failed: {}", status.message());
        }
    }
}
