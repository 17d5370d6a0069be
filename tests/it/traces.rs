//! Request spans over OTLP: a local collector (an HTTP server speaking
//! OTLP/HTTP with JSON bodies, `POST /v1/traces`) receives the spans of a
//! decide → approve → bind story whose calls carried one W3C trace, over
//! gRPC metadata and an HTTP header; the caller's unsampled trace is not
//! recorded; a call without a trace starts its own; a dead collector costs
//! the requests nothing.

use super::helpers::{Spawn, job, reason, spawn_with};
use crate::store::Backend;
use gavel::proto::v1 as pb;
use gavel::service::observe::TracingOptions;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::mpsc;

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const UNSAMPLED: &str = "11111111111111111111111111111111";

fn parent(trace: &str, span: &str, sampled: bool) -> String {
    format!("00-{trace}-{span}-{}", if sampled { "01" } else { "00" })
}

/// A collector on a free loopback port: every span it is sent, with the
/// resource's attributes, in the order received.
async fn collector() -> (String, mpsc::UnboundedReceiver<(Value, Value)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let tx = tx.clone();
            async move {
                assert_eq!(headers["content-type"], "application/json");
                let v: Value = serde_json::from_str(&body).unwrap();
                for rs in v["resourceSpans"].as_array().unwrap() {
                    for ss in rs["scopeSpans"].as_array().unwrap() {
                        for s in ss["spans"].as_array().unwrap() {
                            let _ = tx.send((rs["resource"].clone(), s.clone()));
                        }
                    }
                }
                axum::Json(json!({}))
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (format!("http://{addr}/v1/traces"), rx)
}

fn attr(span: &Value, key: &str) -> Value {
    span["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| {
            let v = &a["value"];
            v.get("stringValue")
                .or_else(|| v.get("intValue"))
                .cloned()
                .unwrap()
        })
        .unwrap_or(Value::Null)
}

fn with_trace<T>(msg: T, traceparent: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    r
}

/// The exported-span counters of an engine, read after it stopped (when
/// the exporter has sent or dropped everything).
async fn span_counts(engine: &gavel::engine::Engine) -> (u64, u64) {
    let operator = engine
        .directory()
        .caller(Some("Bearer test-token-operator"), None, engine.now())
        .unwrap();
    let text = engine.metrics_text(&operator).await.unwrap();
    let count = |result: &str| {
        let prefix = format!("gavel_trace_spans_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |v| v.parse().unwrap())
    };
    (count("exported"), count("dropped"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_job_through_both_doors() {
    let (endpoint, mut spans) = collector().await;
    let app = spawn_with(Spawn {
        tracing: Some(TracingOptions {
            endpoint,
            service_name: "gavel-under-test".into(),
            sample_ratio: 1.0,
        }),
        ..Spawn::on(Backend::Sqlite)
    })
    .await
    .unwrap();
    let mut agent = app.as_("agent-1").await;
    let mut exec = app.as_("executor").await;

    // Decide over gRPC, inside the caller's trace.
    let d = agent
        .decision
        .decide(with_trace(
            pb::DecideRequest {
                job: Some(job("t-1", "deploy", &[])),
            },
            &parent(TRACE, "00f067aa0ba902b7", true),
        ))
        .await
        .unwrap()
        .into_inner();
    // Approve over HTTP, the same trace in the header.
    let approved = crate::http_client()
        .post(format!(
            "http://{}/api/v1/approvals/t-1/approve",
            app.http_addr
        ))
        .bearer_auth("test-token-alice")
        .header("traceparent", parent(TRACE, "b7ad6b7169203331", true))
        .json(&json!({ "reason": "looked at it" }))
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 200, "{}", approved.text().await.unwrap());
    // Deploys want two approvals: carol gives the second over gRPC without
    // a trace.
    let mut carol = app.as_("carol").await;
    let second = carol
        .approval
        .approve(pb::ApproveRequest {
            job_id: "t-1".into(),
            reason: "fine".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        second.into_inner().job.unwrap().state,
        pb::JobState::Approved as i32
    );
    // Bind over gRPC in the trace; a refused bind is a span too.
    let refused = exec
        .decision
        .bind(with_trace(
            pb::BindRequest {
                job_id: "t-1".into(),
                content: Some(pb::bind_request::Content::JobHash("0".repeat(64))),
                policy_snapshot: d.policy_snapshot.clone(),
            },
            &parent(TRACE, "c0ffee00c0ffee00", true),
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "HASH_MISMATCH");
    // A caller that does not record its trace: no span.
    agent
        .decision
        .decide(with_trace(
            pb::DecideRequest {
                job: Some(job("t-2", "read", &[])),
            },
            &parent(UNSAMPLED, "00f067aa0ba902b7", false),
        ))
        .await
        .unwrap();
    // A malformed header counts as none: the span starts its own trace.
    let mut last = tonic::Request::new(pb::GetJobRequest {
        job_id: "t-1".into(),
    });
    last.metadata_mut()
        .insert("traceparent", "00-zz-nonsense-01".parse().unwrap());
    agent.decision.get_job(last).await.unwrap();

    // Spans leave in the order the requests finished; the GetJob is last.
    let mut got = Vec::new();
    loop {
        let (resource, span) = tokio::time::timeout(Duration::from_secs(60), spans.recv())
            .await
            .expect("the collector hears from gavel")
            .unwrap();
        let done = span["name"] == "gavel.v1.DecisionService/GetJob";
        got.push((resource, span));
        if done {
            break;
        }
    }
    let names: Vec<&str> = got
        .iter()
        .map(|(_, s)| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "gavel.v1.DecisionService/Decide",
            "POST /api/v1/approvals/{job_id}/approve",
            "gavel.v1.ApprovalService/Approve",
            "gavel.v1.DecisionService/Bind",
            "gavel.v1.DecisionService/GetJob",
        ],
        "{got:#?}"
    );
    let (resource, decide) = &got[0];
    assert_eq!(attr(resource, "service.name"), "gavel-under-test");
    assert_eq!(attr(resource, "service.instance.id"), "main");
    assert_eq!(decide["traceId"], TRACE);
    assert_eq!(decide["parentSpanId"], "00f067aa0ba902b7");
    assert_eq!(decide["kind"], 2);
    assert_eq!(attr(decide, "rpc.system"), "grpc");
    assert_eq!(attr(decide, "rpc.method"), "Decide");
    assert_eq!(attr(decide, "enduser.id"), "agent-1");
    assert_eq!(attr(decide, "gavel.op"), "decide");
    assert_eq!(attr(decide, "gavel.job_id"), "t-1");
    assert_eq!(attr(decide, "gavel.result"), "require_approval");
    let start: u64 = decide["startTimeUnixNano"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let end: u64 = decide["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
    // Spans start on the server's (injected) clock.
    assert_eq!(start / 1_000_000, app.engine.now() as u64);
    assert!(end >= start);

    let approve = &got[1].1;
    assert_eq!(approve["traceId"], TRACE);
    assert_eq!(approve["parentSpanId"], "b7ad6b7169203331");
    assert_eq!(attr(approve, "http.request.method"), "POST");
    assert_eq!(
        attr(approve, "http.route"),
        "/api/v1/approvals/{job_id}/approve"
    );
    assert_eq!(attr(approve, "http.response.status_code"), "200");
    assert_eq!(attr(approve, "enduser.id"), "alice");
    assert_eq!(attr(approve, "gavel.op"), "approval");
    assert_eq!(attr(approve, "gavel.result"), "pending");

    // No traceparent: a trace of its own, no parent.
    let second_span = &got[2].1;
    assert_ne!(second_span["traceId"], TRACE);
    assert!(second_span.get("parentSpanId").is_none());
    assert_eq!(attr(second_span, "gavel.result"), "approved");
    assert_eq!(attr(second_span, "enduser.id"), "carol");

    let bind = &got[3].1;
    assert_eq!(bind["traceId"], TRACE);
    assert_eq!(bind["parentSpanId"], "c0ffee00c0ffee00");
    assert_eq!(attr(bind, "enduser.id"), "executor");
    assert_eq!(attr(bind, "gavel.refusal_reason"), "HASH_MISMATCH");
    // FAILED_PRECONDITION: the caller's mistake, not an error of the server.
    assert_eq!(attr(bind, "rpc.grpc.status_code"), "9");
    assert!(bind.get("status").is_none());

    let get = &got[4].1;
    assert_ne!(get["traceId"], TRACE);
    assert!(get.get("parentSpanId").is_none());
    assert_eq!(attr(get, "gavel.job_id"), "t-1");
    assert!(
        got.iter().all(|(_, s)| s["traceId"] != UNSAMPLED),
        "an unsampled trace was recorded"
    );
    // Every span id is fresh.
    let ids: std::collections::BTreeSet<&str> = got
        .iter()
        .map(|(_, s)| s["spanId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), got.len());

    let engine = app.engine.clone();
    // Kept: it holds the database the metrics are read from.
    let _database = app.stop().await;
    let (exported, dropped) = span_counts(&engine).await;
    assert_eq!((exported, dropped), (got.len() as u64, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_costs_the_requests_nothing() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}/v1/traces", closed.local_addr().unwrap());
    drop(closed);
    let app = spawn_with(Spawn {
        tracing: Some(TracingOptions {
            endpoint,
            service_name: "gavel".into(),
            sample_ratio: 1.0,
        }),
        ..Spawn::on(Backend::Sqlite)
    })
    .await
    .unwrap();
    let mut agent = app.as_("agent-1").await;
    for i in 0..3 {
        let d = agent
            .decision
            .decide(with_trace(
                pb::DecideRequest {
                    job: Some(job(&format!("dead-{i}"), "read", &[])),
                },
                &parent(TRACE, "00f067aa0ba902b7", true),
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.decision, pb::Decision::Allow as i32);
    }
    let engine = app.engine.clone();
    // Kept: it holds the database the metrics are read from.
    let _database = app.stop().await;
    let (exported, dropped) = span_counts(&engine).await;
    assert_eq!((exported, dropped), (0, 3));
}
