//! Traces of jobs over OTLP (`serve --otlp-endpoint`, or `OTEL_EXPORTER_OTLP_ENDPOINT`): each
//! job's life is one trace, from its submission to its end, with a span for the submission
//! reaching the log and, per shard attempt, one for waiting to be placed and one for the run.
//! Off unless an endpoint is given; then only the leader exports (it sees every entry apply),
//! so nothing is sent twice.
//!
//! `job_traces` turns the applied events into spans and is pure (it is given the time each
//! event was seen); `exporter` follows the events on the leader and sends the spans.

pub mod exporter;
pub mod job_traces;

pub use exporter::run;
