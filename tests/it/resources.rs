//! Per-identity resource bounds: WatchJob streams beyond the limit are
//! refused with RESOURCE_EXHAUSTED and the slot comes back when a stream
//! ends or its reader hangs up; a request rate, when configured, refuses
//! the request past the burst on both doors until the (injected) clock
//! refills it. Other identities are unaffected.

use super::helpers::{Spawn, TestApp, decide, eventually, job, reason, spawn_with};
use crate::store::Backend;
use gavel::engine::resources::Resources;
use gavel::proto::v1 as pb;
use std::time::Duration;
use tokio_stream::StreamExt;

async fn app_with(resources: Resources) -> TestApp {
    let mut s = Spawn::on(Backend::Sqlite);
    s.options.resources = resources;
    spawn_with(s).await.unwrap()
}

async fn watch(
    c: &mut super::helpers::Clients,
    id: &str,
) -> Result<tonic::Streaming<pb::JobEvent>, tonic::Status> {
    let mut s = c
        .decision
        .watch_job(pb::WatchJobRequest { job_id: id.into() })
        .await?
        .into_inner();
    // The first event: the job as it stands.
    s.next().await.unwrap()?;
    Ok(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_are_bounded_per_identity() {
    let app = app_with(Resources {
        max_watch_streams_per_identity: 2,
        ..Resources::default()
    })
    .await;
    let mut agent = app.as_("agent-1").await;
    for id in ["w-1", "w-2", "w-3"] {
        decide(&mut agent, job(id, "deploy", &[])).await.unwrap();
    }
    let first = watch(&mut agent, "w-1").await.unwrap();
    let _second = watch(&mut agent, "w-2").await.unwrap();
    let refused = watch(&mut agent, "w-3").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert_eq!(reason(&refused), "RESOURCE_EXHAUSTED");
    assert_eq!(app.engine.open_watches("agent-1"), 2);
    // Another identity has its own allowance.
    let mut auditor = app.as_("auditor").await;
    let _theirs = watch(&mut auditor, "w-3").await.unwrap();

    // Hanging up gives the slot back.
    drop(first);
    eventually(
        "the slot is given back",
        Duration::from_secs(30),
        async || (app.engine.open_watches("agent-1") == 1).then_some(()),
    )
    .await;
    let mut third = watch(&mut agent, "w-3").await.unwrap();
    // A stream that ends (its job is final) gives it back too.
    agent
        .decision
        .cancel(pb::CancelRequest {
            job_id: "w-3".into(),
            reason: "not needed".into(),
        })
        .await
        .unwrap();
    let last = third.next().await.unwrap().unwrap();
    assert_eq!(last.job.unwrap().state, pb::JobState::Cancelled as i32);
    assert!(third.next().await.is_none());
    eventually(
        "the ended stream's slot is back",
        Duration::from_secs(30),
        async || (app.engine.open_watches("agent-1") == 1).then_some(()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_rate_is_bounded_per_identity_on_both_doors() {
    let app = app_with(Resources {
        requests_per_second_per_identity: 2.0,
        request_burst_per_identity: 3,
        ..Resources::default()
    })
    .await;
    let mut agent = app.as_("agent-1").await;
    let get = |c: &mut super::helpers::Clients| {
        let mut d = c.decision.clone();
        async move {
            d.get_job(pb::GetJobRequest {
                job_id: "r-1".into(),
            })
            .await
        }
    };
    decide(&mut agent, job("r-1", "read", &[])).await.unwrap();
    get(&mut agent).await.unwrap();
    get(&mut agent).await.unwrap();
    // The burst of three is spent (the decide was one); the clock stands still.
    let refused = get(&mut agent).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert_eq!(reason(&refused), "RESOURCE_EXHAUSTED");
    assert!(
        refused.message().contains("retry in 500 ms"),
        "{}",
        refused.message()
    );
    // The HTTP door counts against the same allowance.
    let http = crate::http_client()
        .get(format!("http://{}/api/v1/jobs/r-1", app.http_addr))
        .bearer_auth("test-token-agent-1")
        .send()
        .await
        .unwrap();
    assert_eq!(http.status(), 429);
    assert_eq!(http.headers()["retry-after"], "1");
    let body: serde_json::Value = http.json().await.unwrap();
    assert_eq!(body["error"]["reason"], "RESOURCE_EXHAUSTED");
    // Others are not slowed by agent-1.
    let mut executor = app.as_("executor").await;
    get(&mut executor).await.unwrap();
    // Half a second refills one request, and only one.
    app.clock.set_ms(app.engine.now() + 500);
    get(&mut agent).await.unwrap();
    assert_eq!(
        reason(&get(&mut agent).await.unwrap_err()),
        "RESOURCE_EXHAUSTED"
    );
    // A long pause refills the burst, no more.
    app.clock.advance_secs(3600);
    for _ in 0..3 {
        get(&mut agent).await.unwrap();
    }
    assert!(get(&mut agent).await.is_err());
}

/// A connection past a listener's limit is accepted and closed at once;
/// the place comes back when a connection closes. Both listeners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_bounded_per_listener() {
    let app = app_with(Resources {
        max_connections_per_listener: 2,
        ..Resources::default()
    })
    .await;
    let get_job = |id: &'static str| pb::GetJobRequest { job_id: id.into() };
    // Two connections, each used, so the server has accepted both.
    let mut first = app.as_("agent-1").await;
    let mut second = app.as_("agent-1").await;
    for c in [&mut first, &mut second] {
        let s = c.decision.get_job(get_job("none")).await.unwrap_err();
        assert_eq!(reason(&s), "NOT_FOUND");
    }
    // The third is closed before it is served.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect_lazy();
    let mut third = super::helpers::clients(channel, Some(super::helpers::token("agent-1")));
    let refused = third.decision.get_job(get_job("none")).await.unwrap_err();
    // The transport's error (refused, or reset mid-call), not gavel's.
    assert!(
        gavel::service::convert::error_detail(&refused).is_none()
            && matches!(
                refused.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
            ),
        "{refused:?}"
    );
    // One closes: a new connection is served again.
    drop(first);
    eventually("a place comes back", Duration::from_secs(30), async || {
        let mut c = app.as_("agent-1").await;
        c.decision
            .get_job(get_job("none"))
            .await
            .err()
            .filter(|s| reason(s) == "NOT_FOUND")
    })
    .await;

    // HTTP: two clients each keep one connection open; a third is closed.
    let url = format!("http://{}/api/v1/jobs/none", app.http_addr);
    let client = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .unwrap()
    };
    let (a, b, c) = (client(), client(), client());
    for x in [&a, &b] {
        let r = x
            .get(&url)
            .bearer_auth("test-token-agent-1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let closed = c.get(&url).bearer_auth("test-token-agent-1").send().await;
    assert!(
        closed.is_err(),
        "the third connection is closed: {closed:?}"
    );
    let scrape = || async {
        client()
            .get(format!("http://{}/metrics", app.http_addr))
            .bearer_auth("test-token-operator")
            .send()
            .await
    };
    // A scrape needs a connection too: two are still held.
    assert!(scrape().await.is_err());
    drop((a, b));
    let metrics = eventually(
        "an HTTP place comes back",
        Duration::from_secs(30),
        async || scrape().await.ok()?.text().await.ok(),
    )
    .await;
    let refused = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gavel_overload_refusals_total{what=\"connections\"} "))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(refused >= 3.0, "{metrics}");
}

/// One request past `max_requests_in_flight`, over both doors together,
/// is refused with RESOURCE_EXHAUSTED (HTTP 429 with Retry-After) before
/// any work; health and metrics are still answered. A decision waiting
/// for the database (a test transaction holds SQLite's write lock) keeps
/// the one place taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_are_bounded_over_both_doors() {
    use sqlx::Connection;
    let app = app_with(Resources {
        max_requests_in_flight: 1,
        ..Resources::default()
    })
    .await;
    let mut lock = sqlx::SqliteConnection::connect(&app.db_url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut lock)
        .await
        .unwrap();
    let mut agent = app.as_("agent-1").await;
    // The decision retries while a probe below holds the one place.
    let waiting = tokio::spawn(async move {
        loop {
            match decide(&mut agent, job("held", "read", &[])).await {
                Err(s) if reason(&s) == "RESOURCE_EXHAUSTED" => continue,
                answer => return answer,
            }
        }
    });

    // Probe until the held decision has the place: then every other
    // request is refused at once, on both doors.
    let mut probe = app.as_("auditor").await;
    let refused = eventually(
        "the place to be taken",
        Duration::from_secs(30),
        async || {
            probe
                .decision
                .get_job(pb::GetJobRequest {
                    job_id: "none".into(),
                })
                .await
                .err()
                .filter(|s| reason(s) == "RESOURCE_EXHAUSTED")
        },
    )
    .await;
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    let http = crate::http_client();
    let r = http
        .get(format!("http://{}/api/v1/jobs/none", app.http_addr))
        .bearer_auth("test-token-auditor")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["reason"], "RESOURCE_EXHAUSTED", "{body}");
    let health = http
        .get(format!("http://{}/healthz", app.http_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let (_, metrics) = super::metrics::scrape(&app, Some("operator")).await;
    assert!(
        metrics.contains("gavel_overload_refusals_total{what=\"requests\"}"),
        "{metrics}"
    );

    // The lock goes: the held decision is answered, the place is free.
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    waiting.await.unwrap().unwrap();
    let s = probe
        .decision
        .get_job(pb::GetJobRequest {
            job_id: "none".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&s), "NOT_FOUND");
}
