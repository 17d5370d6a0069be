//! The layer both doors (gRPC and HTTP) wrap every request in: it gives
//! the request its notes (`crate::observe`), then writes the request's one
//! log line and, when tracing is configured, records its span and queues
//! it for OTLP export.
//!
//! Tracing is off unless `[tracing]` names an endpoint; off, no header is
//! parsed beyond the log's `trace_id`, no id is drawn, nothing is queued.
//! A span never delays or fails a request: the queue is bounded and a
//! full queue drops the span (counted in `gavel_trace_spans_total`).

use crate::engine::Engine;
use crate::trace::{Attr, Span, SpanId, TraceId, TraceParent, export_body, sampled_root};
use axum::http::{Request, Response};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Which door a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Grpc,
    Http,
}

/// Where and how spans are exported.
#[derive(Debug, Clone)]
pub struct TracingOptions {
    /// The OTLP/HTTP traces URL, e.g. `http://127.0.0.1:4318/v1/traces`.
    pub endpoint: String,
    /// `service.name` on every span.
    pub service_name: String,
    /// The share of traces gavel starts itself that are recorded; a
    /// caller's `traceparent` decides for the traces it carries.
    pub sample_ratio: f64,
}

/// The most spans waiting for export; more are dropped.
const QUEUE: usize = 4096;
/// The most spans in one export request.
const BATCH: usize = 512;
/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Hands finished spans to the exporter. Cheap to clone.
#[derive(Clone)]
pub struct Tracer {
    queue: mpsc::Sender<Span>,
    sample_ratio: f64,
    engine: Arc<Engine>,
}

impl Tracer {
    /// Starts the exporter task; it ends once every `Tracer` is dropped
    /// and the queue is sent (or its last export failed).
    pub fn start(
        engine: Arc<Engine>,
        options: TracingOptions,
    ) -> (Tracer, tokio::task::JoinHandle<()>) {
        let (queue, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(export(engine.clone(), options.clone(), rx));
        let tracer = Tracer {
            queue,
            sample_ratio: options.sample_ratio,
            engine,
        };
        (tracer, task)
    }

    fn send(&self, span: Span) {
        if self.queue.try_send(span).is_err() {
            self.engine.count_spans("dropped", 1);
        }
    }
}

/// Sends queued spans in batches: whatever has queued while the previous
/// export was in flight goes in the next one, so an idle server exports
/// at once and a busy one in large batches.
async fn export(engine: Arc<Engine>, options: TracingOptions, mut rx: mpsc::Receiver<Span>) {
    let client = crate::notify::outbound_client().unwrap_or_default();
    let mut failing = false;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        let body = export_body(&options.service_name, engine.replica_id(), &batch);
        let sent = client
            .post(&options.endpoint)
            .timeout(EXPORT_TIMEOUT)
            .json(&body)
            .send()
            .await;
        let n = batch.len() as u64;
        match sent {
            Ok(r) if r.status().is_success() => {
                engine.count_spans("exported", n);
                if failing {
                    tracing::info!(endpoint = %options.endpoint, "trace export works again");
                    failing = false;
                }
            }
            other => {
                engine.count_spans("dropped", n);
                // Once per failing stretch, not once per batch.
                if !failing {
                    let why = match other {
                        Ok(r) => format!("the collector answered {}", r.status()),
                        Err(e) => e.to_string(),
                    };
                    tracing::warn!(endpoint = %options.endpoint, error = %why, "trace export failed; spans are dropped until it works");
                    failing = true;
                }
            }
        }
    }
}

/// The layer: one per door.
#[derive(Clone)]
pub struct Observe {
    door: Door,
    /// For the injected clock: spans start at the time the server records.
    engine: Arc<Engine>,
    tracer: Option<Tracer>,
}

impl Observe {
    pub fn new(door: Door, engine: Arc<Engine>, tracer: Option<Tracer>) -> Observe {
        Observe {
            door,
            engine,
            tracer,
        }
    }
}

impl<S> tower_layer::Layer<S> for Observe {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Observed<S> {
        Observed {
            inner,
            observe: self.clone(),
        }
    }
}

/// A service wrapped by [`Observe`].
#[derive(Clone)]
pub struct Observed<S> {
    inner: S,
    observe: Observe,
}

/// What the request was, for the line and the span.
struct Called {
    door: Door,
    /// `package.Service/Method` or `METHOD /route`.
    method: String,
    /// The HTTP method and route, when matched.
    http: Option<(String, Option<String>)>,
    parent: Option<TraceParent>,
    /// Health probes, reflection and scrapes log at debug level and are
    /// not traced.
    quiet: bool,
}

fn called<B>(door: Door, req: &Request<B>) -> Called {
    let parent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse);
    match door {
        Door::Grpc => {
            let method = req.uri().path().trim_start_matches('/').to_owned();
            let quiet = method.starts_with("grpc.");
            Called {
                door,
                method,
                http: None,
                parent,
                quiet,
            }
        }
        Door::Http => {
            let route = req
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map(|m| m.as_str().to_owned());
            // The path without the query (which may carry a sign-in code),
            // cut short: it is only for the log line.
            let path: String = req.uri().path().chars().take(200).collect();
            let verb = req.method().as_str().to_owned();
            let quiet = matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics");
            Called {
                door,
                method: format!("{verb} {}", route.as_deref().unwrap_or(&path)),
                http: Some((verb, route)),
                parent,
                quiet,
            }
        }
    }
}

/// The response's status: the HTTP status, or the gRPC status when the
/// response carries it in its headers (a refusal); a gRPC response whose
/// status follows in trailers succeeded as far as this layer sees.
fn status_of<B>(door: Door, res: &Response<B>) -> i64 {
    match door {
        Door::Http => i64::from(res.status().as_u16()),
        Door::Grpc => res
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    }
}

/// Whether a status is the server's failure (OpenTelemetry's rule for
/// server spans: 5xx over HTTP; these codes over gRPC).
fn server_error(door: Door, status: i64) -> bool {
    match door {
        Door::Http => status >= 500,
        Door::Grpc => matches!(status, 2 | 4 | 12 | 13 | 14 | 15),
    }
}

fn random<const N: usize>() -> Option<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).ok()?;
    (b != [0u8; N]).then_some(b)
}

/// The span's trace, its own id and its parent, when it is recorded.
fn span_ids(parent: Option<TraceParent>, ratio: f64) -> Option<(TraceId, SpanId, Option<SpanId>)> {
    let span_id = random::<8>()?;
    match parent {
        Some(p) if p.sampled => Some((p.trace_id, span_id, Some(p.span_id))),
        // The caller does not record this trace: neither do we.
        Some(_) => None,
        None => {
            let trace_id = random::<16>()?;
            sampled_root(&trace_id, ratio).then_some((trace_id, span_id, None))
        }
    }
}

impl<S, B, RB> tower_service::Service<Request<B>> for Observed<S>
where
    S: tower_service::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RB>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let started = Instant::now();
        let start_ms = self.observe.engine.now();
        let call = called(self.observe.door, &req);
        let tracer = self.observe.tracer.clone().filter(|_| !call.quiet);
        let inner = self.inner.call(req);
        Box::pin(async move {
            let (out, notes) = crate::observe::noted(inner).await;
            let elapsed = started.elapsed();
            let status = match &out {
                Ok(res) => status_of(call.door, res),
                // The inner service failed before answering.
                Err(_) => match call.door {
                    Door::Http => 500,
                    Door::Grpc => 13,
                },
            };
            let ids = tracer
                .as_ref()
                .and_then(|t| span_ids(call.parent, t.sample_ratio));
            let trace_id = ids
                .map(|i| i.0)
                .or(call.parent.map(|p| p.trace_id))
                .map(hex::encode);
            log_line(&call, &notes, status, elapsed, trace_id.as_deref());
            if let (Some(tracer), Some((trace_id, span_id, parent))) = (tracer, ids) {
                let start = u64::try_from(start_ms)
                    .unwrap_or(0)
                    .saturating_mul(1_000_000);
                let span = Span {
                    trace_id,
                    span_id,
                    parent,
                    name: call.method.clone(),
                    start_unix_nanos: start,
                    end_unix_nanos: start.saturating_add(elapsed.as_nanos() as u64),
                    attributes: attributes(&call, &notes, status),
                    error: server_error(call.door, status).then(|| match notes.reason {
                        Some(r) => r.to_owned(),
                        None => format!("status {status}"),
                    }),
                };
                tracer.send(span);
            }
            out
        })
    }
}

fn log_line(
    call: &Called,
    notes: &crate::observe::Notes,
    status: i64,
    elapsed: Duration,
    trace_id: Option<&str>,
) {
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    let method = call.method.as_str();
    let op = notes.op;
    let identity = notes.identity.as_deref();
    let job_id = notes.job_id.as_deref();
    let result = notes.result.as_deref();
    let reason = notes.reason;
    if call.quiet {
        tracing::debug!(
            target: "gavel::request",
            method, status, duration_ms, "request"
        );
    } else {
        tracing::info!(
            target: "gavel::request",
            method, op, identity, job_id, result, reason, status, duration_ms, trace_id, "request"
        );
    }
}

fn attributes(
    call: &Called,
    notes: &crate::observe::Notes,
    status: i64,
) -> Vec<(&'static str, Attr)> {
    let mut a = Vec::new();
    match (&call.http, call.door) {
        (Some((verb, route)), _) => {
            a.push(("http.request.method", Attr::Str(verb.clone())));
            if let Some(route) = route {
                a.push(("http.route", Attr::Str(route.clone())));
            }
            a.push(("http.response.status_code", Attr::Int(status)));
        }
        (None, _) => {
            a.push(("rpc.system", Attr::Str("grpc".into())));
            if let Some((service, method)) = call.method.split_once('/') {
                a.push(("rpc.service", Attr::Str(service.to_owned())));
                a.push(("rpc.method", Attr::Str(method.to_owned())));
            }
            a.push(("rpc.grpc.status_code", Attr::Int(status)));
        }
    }
    let mut text = |key: &'static str, value: Option<&str>| {
        if let Some(v) = value {
            a.push((key, Attr::Str(v.to_owned())));
        }
    };
    text("enduser.id", notes.identity.as_deref());
    text("gavel.op", notes.op);
    text("gavel.job_id", notes.job_id.as_deref());
    text("gavel.result", notes.result.as_deref());
    text("gavel.refusal_reason", notes.reason);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sampled_traces_are_recorded() {
        let p =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let (trace, span, parent) = span_ids(Some(p), 0.0).unwrap();
        assert_eq!((trace, parent), (p.trace_id, Some(p.span_id)));
        assert_ne!(span, p.span_id);
        let unsampled = TraceParent {
            sampled: false,
            ..p
        };
        assert_eq!(span_ids(Some(unsampled), 1.0), None);
        assert_eq!(span_ids(None, 0.0), None);
        let (_, _, parent) = span_ids(None, 1.0).unwrap();
        assert_eq!(parent, None);
    }

    #[test]
    fn server_failures_are_errors_and_refusals_are_not() {
        assert!(server_error(Door::Http, 503));
        assert!(!server_error(Door::Http, 409));
        assert!(server_error(Door::Grpc, 13));
        assert!(!server_error(Door::Grpc, 9));
        assert!(!server_error(Door::Grpc, 0));
    }
}
