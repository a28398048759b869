//! Counts every gRPC call by method and the status it ended with, as the outermost layer
//! (refusals by the access layer count too). A status sent in the response headers (an
//! error before any message) is counted at once; otherwise the body is watched for its
//! trailers, and a body dropped before them (the client went away) counts as `CANCELLED`.
//!
//! Method labels come only from the access table's methods, so a client cannot grow the
//! metric with made-up paths.

use crate::metrics::Metrics;
use bytes::Bytes;
use http_body::{Body, Frame};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::codegen::http;

/// The label of a path the access table does not know.
const UNKNOWN_METHOD: &str = "unknown";

#[derive(Clone)]
pub struct CallMetricsLayer {
    metrics: Arc<Metrics>,
}

impl CallMetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        CallMetricsLayer { metrics }
    }
}

impl<S> tower::Layer<S> for CallMetricsLayer {
    type Service = CallMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CallMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CallMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for CallMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let method = if super::access::is_known_method(path) {
            path
        } else {
            UNKNOWN_METHOD
        }
        .to_string();
        let metrics = self.metrics.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let mut outcome = Outcome {
                metrics,
                method,
                code: None,
            };
            if let Some(code) = response.headers().get("grpc-status") {
                outcome.code = Some(code_name(code.as_bytes()));
                return Ok(response);
            }
            Ok(response.map(|inner| {
                tonic::body::Body::new(Watched {
                    inner,
                    outcome: Some(outcome),
                })
            }))
        })
    }
}

/// Counts one call when dropped, with the code seen or `CANCELLED`.
struct Outcome {
    metrics: Arc<Metrics>,
    method: String,
    code: Option<&'static str>,
}

impl Drop for Outcome {
    fn drop(&mut self) {
        self.metrics
            .rpc_served(&self.method, self.code.unwrap_or("CANCELLED"));
    }
}

/// A response body that notes the status in its trailers.
struct Watched {
    inner: tonic::body::Body,
    outcome: Option<Outcome>,
}

impl Body for Watched {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(code) = frame.trailers_ref().and_then(|t| t.get("grpc-status")) {
                if let Some(outcome) = &mut self.outcome {
                    outcome.code = Some(code_name(code.as_bytes()));
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The canonical name of a `grpc-status` value.
fn code_name(value: &[u8]) -> &'static str {
    use tonic::Code::*;
    match tonic::Code::from_bytes(value) {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_values_get_their_canonical_names() {
        assert_eq!(code_name(b"0"), "OK");
        assert_eq!(code_name(b"5"), "NOT_FOUND");
        assert_eq!(code_name(b"14"), "UNAVAILABLE");
        assert_eq!(code_name(b"junk"), "UNKNOWN");
    }
}
