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
