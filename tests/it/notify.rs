//! Notifications through the outbox, against local fake receivers that
//! speak the documented protocols: a webhook receiver that verifies the
//! signature, and a fake PagerDuty Events API v2. Rounds of the worker are
//! driven directly, with the injected clock, so nothing waits on time;
//! the crash test runs real `gavel serve` processes.

use crate::helpers::{self, TestApp, eventually, spawn_app, token};
use crate::on_both_backends;
use crate::store::Backend;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use gavel::notify::{ChannelConfig, ChannelKind, Notifier, NotifyConfig, Route, verify_webhook};
use gavel::store::DeliveryResult;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "webhook-test-secret";

/// What a fake receiver saw.
#[derive(Default)]
struct Seen {
    /// Accepted messages: (idempotency key, body).
    accepted: Mutex<Vec<(String, Value)>>,
    /// Requests answered with an error on purpose.
    refused: AtomicUsize,
    /// Requests whose signature did not verify.
    forged: AtomicUsize,
    /// Answer this many requests with 503 before accepting.
    fail_next: AtomicUsize,
    /// (idempotency key, path) of accepted webhooks.
    paths: Mutex<Vec<(String, String)>>,
}

impl Seen {
    fn keys(&self) -> Vec<String> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .map(|(k, _)| k.clone())
            .collect()
    }
    fn bodies(&self) -> Vec<Value> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }
}

async fn webhook(
    State(seen): State<Arc<Seen>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // In-process servers run on the injected clock (2027), so there the
    // timestamp is only checked for being signed; against a real process
    // (the crash test) it must also be within 5 minutes of now.
    let ts: i64 = h("x-gavel-timestamp").parse().unwrap_or(0);
    let reference = if (ts - now).abs() < 3600 { now } else { ts };
    if !verify_webhook(
        SECRET,
        &h("x-gavel-timestamp"),
        &h("x-gavel-signature"),
        &body,
        reference,
        300,
    ) {
        seen.forged.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    if seen
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        seen.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(h("idempotency-key"), v["id"].as_str().unwrap());
    assert_eq!(h("x-gavel-event"), v["kind"].as_str().unwrap());
    seen.paths
        .lock()
        .unwrap()
        .push((h("idempotency-key"), uri.path().to_owned()));
    seen.accepted
        .lock()
        .unwrap()
        .push((h("idempotency-key"), v));
    StatusCode::NO_CONTENT
}

/// The fake PagerDuty Events API v2: `POST /v2/enqueue`, 202 with the
/// documented response shape.
async fn pagerduty(State(seen): State<Arc<Seen>>, body: Bytes) -> (StatusCode, axum::Json<Value>) {
    let v: Value = serde_json::from_slice(&body).unwrap();
    let valid = v["routing_key"] == "pd-routing-key"
        && matches!(v["event_action"].as_str(), Some("trigger" | "resolve"))
        && v["dedup_key"].is_string()
        && (v["event_action"] == "resolve"
            || (v["payload"]["summary"].is_string()
                && v["payload"]["source"].is_string()
                && matches!(
                    v["payload"]["severity"].as_str(),
                    Some("critical" | "error" | "warning" | "info")
                )));
    if !valid {
        seen.forged.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({"status": "invalid event", "message": "Event object is invalid", "errors": ["bad"]}),
            ),
        );
    }
    let key = format!(
        "{}:{}",
        v["dedup_key"].as_str().unwrap(),
        v["event_action"].as_str().unwrap()
    );
    seen.accepted.lock().unwrap().push((key, v.clone()));
    (
        StatusCode::ACCEPTED,
        axum::Json(
            json!({"status": "success", "message": "Event processed", "dedup_key": v["dedup_key"]}),
        ),
    )
}

/// A fake receiver on a free loopback port; stopped when the test's runtime ends.
async fn receiver() -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/hook", post(webhook))
        .route("/hook/{name}", post(webhook))
        .route("/v2/enqueue", post(pagerduty))
        .with_state(seen.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

/// The channels' secret files, written once per process: tests run in
/// parallel, and rewriting a file another test is reading would race.
fn secret_files() -> &'static (std::path::PathBuf, std::path::PathBuf) {
    static FILES: std::sync::OnceLock<(std::path::PathBuf, std::path::PathBuf)> =
        std::sync::OnceLock::new();
    FILES.get_or_init(|| {
        let dir = std::env::temp_dir();
        let hook = dir.join(format!("gavel-notify-{}.secret", std::process::id()));
        std::fs::write(&hook, format!("{SECRET}\n")).unwrap();
        let pd = dir.join(format!("gavel-notify-{}.pd", std::process::id()));
        std::fs::write(&pd, "pd-routing-key").unwrap();
        (hook, pd)
    })
}

fn config(base: &str) -> NotifyConfig {
    let (secret_file, pd_file) = secret_files();
    NotifyConfig {
        max_attempts: 4,
        backoff_base_ms: 1000,
        backoff_max_ms: 8000,
        lease_secs: 30,
        poll_ms: 50,
        page_url: "https://gavel.test/ui/".into(),
        channels: vec![
            ChannelConfig {
                name: "team".into(),
                kind: ChannelKind::Webhook,
                url: format!("{base}/hook"),
                secret_env: None,
                secret_file: Some(secret_file.display().to_string()),
                rate_per_sec: 1000.0,
                timeout_ms: 5000,
                slack_channel: None,
            },
            ChannelConfig {
                name: "pager".into(),
                kind: ChannelKind::Pagerduty,
                url: base.to_owned(),
                secret_env: None,
                secret_file: Some(pd_file.display().to_string()),
                rate_per_sec: 1000.0,
                timeout_ms: 5000,
                slack_channel: None,
            },
        ],
        routes: vec![Route {
            kinds: vec![
                "escalated".into(),
                "overridden".into(),
                "resolved".into(),
                "expired".into(),
            ],
            rules: vec!["prod".into()],
            channels: vec!["pager".into(), "team".into()],
            ..Route::default()
        }],
        default_channels: vec!["team".into()],
        slack: None,
    }
}

async fn decide(app: &TestApp, id: &str, tags: &[&str]) {
    let mut c = app.as_("agent-1").await;
    helpers::decide(&mut c, helpers::job(id, "write", tags))
        .await
        .unwrap();
}

async fn a_pending_job_is_announced_once_and_its_resolution_too(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (base, seen) = receiver().await;
    let n = Notifier::new(app.engine.clone(), config(&base), "main").unwrap();
    decide(&app, "n-1", &[]).await;
    assert_eq!(n.round().await.unwrap(), 1);
    assert_eq!(n.round().await.unwrap(), 0, "sent once");
    let bodies = seen.bodies();
    assert_eq!(bodies.len(), 1);
    let b = &bodies[0];
    assert_eq!(b["kind"], "pending");
    assert_eq!(b["id"], "n-1:1:pending");
    assert_eq!(b["job"]["job"]["id"], "n-1");
    assert_eq!(b["job"]["job"]["state"], "PENDING");
    assert_eq!(b["links"]["page"], "https://gavel.test/ui/jobs/n-1");
    assert_eq!(seen.forged.load(Ordering::SeqCst), 0);

    let mut bob = app.as_("bob").await;
    helpers::approve(&mut bob, "n-1", "ok").await.unwrap();
    assert_eq!(n.round().await.unwrap(), 1);
    assert_eq!(seen.keys(), ["n-1:1:pending", "n-1:2:resolved"]);
    assert_eq!(seen.bodies()[1]["actor"], "bob");
    // An allowed job needs nobody: no message.
    let mut c = app.as_("agent-1").await;
    helpers::decide(&mut c, helpers::job("n-2", "read", &[]))
        .await
        .unwrap();
    assert_eq!(n.round().await.unwrap(), 0);
}
on_both_backends!(
    announced_once,
    a_pending_job_is_announced_once_and_its_resolution_too
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_gets_every_message_once_it_is_back() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let (base, seen) = receiver().await;
    let n = Notifier::new(app.engine.clone(), config(&base), "main").unwrap();
    seen.fail_next.store(2, Ordering::SeqCst);
    decide(&app, "d-1", &[]).await;
    decide(&app, "d-2", &[]).await;
    // Both fail once; nothing is due again until the backoff passes.
    assert_eq!(n.round().await.unwrap(), 2);
    assert!(seen.keys().is_empty());
    assert_eq!(n.round().await.unwrap(), 0, "retried before its backoff");
    let m = crate::metrics::read(&app).await;
    assert_eq!(
        m.get("gavel_deliveries_total{channel=\"team\",result=\"retry\"}"),
        Some(&2.0)
    );
    assert_eq!(m.get("gavel_outbox_pending{channel=\"team\"}"), Some(&2.0));
    let store = gavel::store::open(&app.db_url, "main").await.unwrap();
    let pending = store.deliveries("pending", 10).await.unwrap();
    assert_eq!(pending.len(), 2);
    for d in &pending {
        assert_eq!(d.attempts, 1);
        assert!(
            d.last_error.as_deref().unwrap().contains("HTTP 503"),
            "{d:?}"
        );
        let wait = d.next_attempt_at - app.clock.now_ms_for_test();
        assert!((500..=1000).contains(&wait), "first backoff {wait} ms");
    }
    app.clock.set_ms(app.clock.now_ms_for_test() + 1000);
    assert_eq!(n.round().await.unwrap(), 2);
    let mut keys = seen.keys();
    keys.sort();
    assert_eq!(keys, ["d-1:1:pending", "d-2:1:pending"]);
    assert_eq!(seen.refused.load(Ordering::SeqCst), 2);
    assert!(store.deliveries("pending", 10).await.unwrap().is_empty());
    assert_eq!(store.deliveries("delivered", 10).await.unwrap().len(), 2);
    let m = crate::metrics::read(&app).await;
    assert_eq!(
        m.get("gavel_deliveries_total{channel=\"team\",result=\"delivered\"}"),
        Some(&2.0)
    );
    assert!(!m.keys().any(|k| k.starts_with("gavel_outbox_pending{")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_keeps_failing_is_dead_lettered_after_its_tries() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let (base, seen) = receiver().await;
    let n = Notifier::new(app.engine.clone(), config(&base), "main").unwrap();
    seen.fail_next.store(usize::MAX, Ordering::SeqCst);
    decide(&app, "x-1", &[]).await;
    for _ in 0..4 {
        assert_eq!(n.round().await.unwrap(), 1);
        app.clock.set_ms(app.clock.now_ms_for_test() + 8000);
    }
    assert_eq!(n.round().await.unwrap(), 0, "no fifth try");
    let store = gavel::store::open(&app.db_url, "main").await.unwrap();
    let dead = store.deliveries("dead", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 4);
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("after 4 tries")
    );
    assert_eq!(seen.refused.load(Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalations_and_overrides_page_and_resolutions_resolve() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let (base, seen) = receiver().await;
    let n = Notifier::new(app.engine.clone(), config(&base), "main").unwrap();
    decide(&app, "p-1", &["prod"]).await;
    decide(&app, "p-2", &["prod"]).await;
    n.round().await.unwrap();
    // Past the SLA (5 minutes): escalated, which pages.
    app.clock
        .set_ms(app.clock.now_ms_for_test() + 5 * 60 * 1000 + 1);
    let (_, escalated) = app.engine.sweep().await.unwrap();
    assert_eq!(escalated, 2);
    let mut eve = app.as_("eve").await;
    eve.approval
        .r#override(gavel::proto::v1::OverrideRequest {
            job_id: "p-2".into(),
            reason: "incident".into(),
            note: String::new(),
        })
        .await
        .unwrap();
    let mut bob = app.as_("bob").await;
    helpers::approve(&mut bob, "p-1", "ok").await.unwrap();
    while n.round().await.unwrap() > 0 {}
    let pd: Vec<Value> = seen
        .bodies()
        .into_iter()
        .filter(|b| b.get("routing_key").is_some())
        .collect();
    let summary: Vec<(String, String)> = pd
        .iter()
        .map(|e| {
            (
                e["dedup_key"].as_str().unwrap().into(),
                e["event_action"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        summary.contains(&("gavel:p-1".into(), "trigger".into())),
        "{summary:?}"
    );
    assert!(
        summary.contains(&("gavel:p-1".into(), "resolve".into())),
        "{summary:?}"
    );
    assert!(
        summary.contains(&("gavel:p-2".into(), "trigger".into())),
        "{summary:?}"
    );
    let over = pd
        .iter()
        .find(|e| e["payload"]["class"] == "overridden")
        .unwrap();
    assert_eq!(over["payload"]["severity"], "critical");
    assert_eq!(over["links"][0]["href"], "https://gavel.test/ui/jobs/p-2");
    // Pending jobs never page.
    assert!(pd.iter().all(|e| e["payload"]["class"] != "pending"));
    assert_eq!(seen.forged.load(Ordering::SeqCst), 0);
    // The team hook got every kind of both jobs.
    let team: Vec<String> = seen
        .keys()
        .into_iter()
        .filter(|k| !k.starts_with("gavel:"))
        .collect();
    for k in [
        "p-1:1:pending",
        "p-1:2:escalated",
        "p-2:3:overridden",
        "p-1:3:resolved",
    ] {
        assert!(team.iter().any(|t| t == k), "{k} missing from {team:?}");
    }
}

async fn leases_give_each_delivery_one_sender(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    decide(&app, "l-1", &[]).await;
    let store = gavel::store::open(&app.db_url, "main").await.unwrap();
    let now = app.clock.now_ms_for_test();
    let m = store.unrouted_outbox(10).await.unwrap();
    assert_eq!(m.len(), 1);
    assert!(
        store
            .route_outbox(&m[0].id, vec!["team".into()], now)
            .await
            .unwrap()
    );
    assert!(
        !store
            .route_outbox(&m[0].id, vec!["team".into()], now)
            .await
            .unwrap(),
        "routed twice"
    );
    assert!(store.unrouted_outbox(10).await.unwrap().is_empty());
    let a = store.claim_deliveries("a", now, 1000, 10).await.unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].id, "l-1:1:pending@team");
    assert_eq!(a[0].message.job_id, "l-1");
    assert!(
        store
            .claim_deliveries("b", now + 999, 1000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A's lease ran out (a crash mid-send): B takes over; A's late answer changes nothing.
    let b = store
        .claim_deliveries("b", now + 1000, 1000, 10)
        .await
        .unwrap();
    assert_eq!(b.len(), 1);
    assert!(
        !store
            .finish_delivery(&a[0].id, "a", DeliveryResult::Delivered, now + 1001)
            .await
            .unwrap()
    );
    assert!(
        store
            .finish_delivery(&b[0].id, "b", DeliveryResult::Delivered, now + 1002)
            .await
            .unwrap()
    );
    let done = store.deliveries("delivered", 10).await.unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].attempts, 1);
    assert_eq!(done[0].delivered_at, Some(now + 1002));
    assert!(
        store
            .claim_deliveries("c", now + 10_000, 1000, 10)
            .await
            .unwrap()
            .is_empty()
    );
}
on_both_backends!(leases, leases_give_each_delivery_one_sender);

#[test]
fn a_route_to_an_unknown_channel_is_a_config_error() {
    let mut c = config("http://127.0.0.1:9");
    c.routes[0].channels.push("nowhere".into());
    let e = c.channels().err().unwrap().to_string();
    assert!(e.contains("unknown channel `nowhere`"), "{e}");
    let mut c = config("http://127.0.0.1:9");
    c.default_channels = vec!["gone".into()];
    assert!(c.channels().err().unwrap().to_string().contains("`gone`"));
    let mut c = config("http://127.0.0.1:9");
    c.channels[0].secret_file = None;
    c.channels[0].secret_env = Some("GAVEL_TEST_SURELY_UNSET_VAR".into());
    assert!(
        c.channels()
            .err()
            .unwrap()
            .to_string()
            .contains("is not set")
    );
    let mut c = config("http://127.0.0.1:9");
    c.channels[1].url = "ftp://x".into();
    assert!(c.channels().is_err());
    let mut c = config("http://127.0.0.1:9");
    c.routes[0].kinds.push("sometimes".into());
    assert!(
        c.channels()
            .err()
            .unwrap()
            .to_string()
            .contains("unknown kind")
    );
}

/// kill -9 between the commit and the delivery: after a restart the
/// message still arrives, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_committed_before_a_crash_is_delivered_after_restart() {
    let (base, seen) = receiver().await;
    seen.fail_next.store(usize::MAX, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hook.secret");
    std::fs::write(&secret, SECRET).unwrap();
    let cfg = dir.path().join("gavel.toml");
    let hash = gavel::identity::token_hash(&token("agent-1"));
    std::fs::write(
        &cfg,
        format!(
            r#"database_url = "sqlite://{db}"
policy = "{policy}"
receipt_key = "{key}"
[[identities]]
name = "agent-1"
roles = ["agent"]
tokens = ["{hash}"]
[[identities]]
name = "bob"
roles = ["reviewer"]
[notify]
poll_ms = 20
backoff_base_ms = 20
backoff_max_ms = 40
lease_secs = 1
default_channels = ["team"]
[[notify.channels]]
name = "team"
kind = "webhook"
url = "{base}/hook"
secret_file = "{secret}"
"#,
            db = dir.path().join("g.db").display(),
            policy = crate::root()
                .join("tests/fixtures/notify-policy.yaml")
                .display(),
            key = dir.path().join("receipt.key").display(),
            secret = secret.display(),
        ),
    )
    .unwrap();
    let start = || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gavel"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .args([
                "--grpc-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let (_, http) = helpers::listening_addrs(&mut child);
        (child, http)
    };
    let (mut first, http) = start();
    let r = crate::http_client()
        .post(format!("http://{http}/api/v1/decide"))
        .bearer_auth(token("agent-1"))
        .json(&json!({"job_id": "crash-1", "action": "write"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // The message was committed and tried (and refused): not delivered.
    eventually(
        "a first delivery attempt",
        Duration::from_secs(30),
        async || (seen.refused.load(Ordering::SeqCst) > 0).then_some(()),
    )
    .await;
    assert!(seen.keys().is_empty());
    std::process::Command::new("kill")
        .args(["-9", &first.id().to_string()])
        .status()
        .unwrap();
    first.wait().unwrap();
    seen.fail_next.store(0, Ordering::SeqCst);
    let (mut second, _) = start();
    eventually(
        "delivery after restart",
        Duration::from_secs(30),
        async || (!seen.keys().is_empty()).then_some(()),
    )
    .await;
    std::process::Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    assert!(second.wait().unwrap().success());
    assert_eq!(seen.keys(), ["crash-1:1:pending"]);
    assert_eq!(seen.forged.load(Ordering::SeqCst), 0);
}

/// An escalation ladder: each rung fires once, at its time, to the channel
/// it names; after the last one nothing more fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rung_of_an_escalation_ladder_fires_once_to_its_channel() {
    let mut spawn = helpers::Spawn::on(Backend::Sqlite);
    spawn.policy = helpers::POLICY.replace(
        "    approval: { approvers: 1, roles: [finance] }",
        "    approval: { approvers: 1, roles: [finance], timeout: 2h, escalate: [{ after: 45m, notify: leads }, { after: 15m, notify: oncall }] }",
    );
    let app = helpers::spawn_with(spawn).await.unwrap();
    let (base, seen) = receiver().await;
    let mut cfg = config(&base);
    for name in ["oncall", "leads"] {
        let mut c = cfg.channels[0].clone();
        c.name = name.into();
        c.url = format!("{base}/hook/{name}");
        cfg.channels.push(c);
    }
    cfg.routes.clear();
    let n = Notifier::new(app.engine.clone(), cfg, "main").unwrap();
    let doc = app.engine.active().unwrap();
    n.check_ladders(doc.policy.doc()).unwrap();
    decide(&app, "e-1", &["payment"]).await;
    let start = app.clock.now_ms_for_test();
    let at = |min: i64| start + min * 60 * 1000;

    app.clock.set_ms(at(15) - 1);
    assert_eq!(app.engine.sweep().await.unwrap(), (0, 0), "not yet");
    app.clock.set_ms(at(15));
    assert_eq!(app.engine.sweep().await.unwrap(), (0, 1), "first rung");
    assert_eq!(app.engine.sweep().await.unwrap(), (0, 0), "once");
    app.clock.set_ms(at(45));
    assert_eq!(app.engine.sweep().await.unwrap(), (0, 1), "second rung");
    app.clock.set_ms(at(100));
    assert_eq!(app.engine.sweep().await.unwrap(), (0, 0), "no third rung");
    while n.round().await.unwrap() > 0 {}
    let paths = seen.paths.lock().unwrap().clone();
    let has = |key: &str, path: &str| paths.iter().any(|(k, p)| k == key && p == path);
    assert!(has("e-1:2:escalated", "/hook/oncall"), "{paths:?}");
    assert!(has("e-1:3:escalated", "/hook/leads"), "{paths:?}");
    assert!(!has("e-1:2:escalated", "/hook/leads"), "{paths:?}");
    assert!(!has("e-1:3:escalated", "/hook/oncall"), "{paths:?}");
    // The team's default channel hears every rung too.
    assert!(has("e-1:2:escalated", "/hook") && has("e-1:3:escalated", "/hook"));
    let rungs: Vec<Value> = seen
        .bodies()
        .into_iter()
        .filter(|b| b["kind"] == "escalated")
        .collect();
    assert!(
        rungs
            .iter()
            .all(|b| b["job"]["escalated"] == true || b["job_version"] == 2)
    );

    // A ladder naming an unconfigured channel is refused at start.
    let mut bare = config(&base);
    bare.routes.clear();
    let n2 = Notifier::new(app.engine.clone(), bare, "main").unwrap();
    let e = n2.check_ladders(doc.policy.doc()).unwrap_err().to_string();
    assert!(e.contains("`leads`") || e.contains("`oncall`"), "{e}");
}

#[test]
fn ladders_are_validated_and_leave_other_policies_ids_alone() {
    let base = helpers::POLICY;
    let id = |src: &str| {
        gavel::policy::load(src, "p.yaml")
            .unwrap()
            .snapshot
            .id
            .to_string()
    };
    let plain = id(base);
    let with = base.replace(
        "approval: { approvers: 1, roles: [finance] }",
        "approval: { approvers: 1, roles: [finance], escalate: [{ after: 15m, notify: oncall }] }",
    );
    assert_ne!(id(&with), plain, "a ladder is part of the policy's meaning");
    // Policies without ladders keep the ids they always had (the canonical
    // form leaves an empty ladder out): the shipped policy's id as the code
    // before ladders computed it (`gavel policy hash`, 2026-12-02).
    let shipped = std::fs::read_to_string(crate::root().join("policies/default.yaml")).unwrap();
    assert_eq!(
        id(&shipped),
        "cfg:default:policy#sha256:e89193b2b7c6785b63a63ce8ec6079ab62f97d34500d84c6afc3f8cdca0b29c5"
    );
    for (bad, code) in [
        ("escalate: [{ notify: oncall }]", "missing-field"),
        ("escalate: [{ after: 15m }]", "missing-field"),
        (
            "escalate: [{ after: 0s, notify: oncall }]",
            "invalid-duration",
        ),
        (
            "escalate: [{ after: soon, notify: oncall }]",
            "invalid-duration",
        ),
        (
            "escalate: [{ after: 15m, notify: \"on call\" }]",
            "invalid-channel-name",
        ),
        (
            "escalate: [{ after: 15m, notify: a }, { after: 15m, notify: b }]",
            "duplicate-escalation",
        ),
    ] {
        let src = base.replace(
            "approval: { approvers: 1, roles: [finance] }",
            &format!("approval: {{ approvers: 1, roles: [finance], {bad} }}"),
        );
        let e = gavel::policy::load(&src, "p.yaml")
            .err()
            .unwrap_or_else(|| panic!("{bad} loaded"));
        assert!(
            e.findings.iter().any(|f| f.code == code),
            "{bad}: {:?}",
            e.findings
        );
    }
}
