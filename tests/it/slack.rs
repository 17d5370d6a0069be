//! The Slack app against a local fake of Slack's Web API (recording
//! `chat.postMessage`, `chat.update` and `views.open`, answering with
//! Slack's response shapes) and interactions signed the way Slack signs
//! them. The notifier's rounds are driven directly.

use crate::helpers::{self, Spawn, TestApp, spawn_with, token};
use crate::store::Backend;
use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use gavel::notify::{
    ChannelConfig, ChannelKind, Notifier, NotifyConfig, SlackApp, SlackConfig, sign_slack,
};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

const SIGNING: &str = "slack-signing-secret";
const BOT: &str = "xoxb-test-token";

#[derive(Default)]
struct FakeSlack {
    /// (method, body) of every authorised call.
    calls: Mutex<Vec<(String, Value)>>,
}

impl FakeSlack {
    fn of(&self, method: &str) -> Vec<Value> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _)| m == method)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

async fn web_api(
    State(fake): State<Arc<FakeSlack>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {BOT}"))
    {
        return Json(json!({"ok": false, "error": "invalid_auth"}));
    }
    fake.calls
        .lock()
        .unwrap()
        .push((method.clone(), body.clone()));
    Json(match method.as_str() {
        "chat.postMessage" => {
            json!({"ok": true, "channel": body["channel"], "ts": "1800000000.000100", "message": {"text": body["text"]}})
        }
        "chat.update" => {
            json!({"ok": true, "channel": body["channel"], "ts": body["ts"], "text": body["text"]})
        }
        "views.open" => json!({"ok": true, "view": {"id": "V0001", "type": "modal"}}),
        _ => json!({"ok": false, "error": "unknown_method"}),
    })
}

struct Setup {
    app: TestApp,
    fake: Arc<FakeSlack>,
    notifier: Notifier,
    http: reqwest::Client,
}

async fn setup() -> Setup {
    setup_with(Spawn::on(Backend::Sqlite)).await
}

/// The fake Slack, and a server on `spawn` answering its interactions.
async fn setup_with(mut spawn: Spawn) -> Setup {
    let fake = Arc::new(FakeSlack::default());
    let router = Router::new()
        .route("/api/{method}", post(web_api))
        .with_state(fake.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}/api", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, router).await.unwrap() });
    // Written once per process: tests run in parallel.
    static FILES: std::sync::OnceLock<(std::path::PathBuf, std::path::PathBuf)> =
        std::sync::OnceLock::new();
    let (bot_file, sign_file) = FILES.get_or_init(|| {
        let dir = std::env::temp_dir();
        let bot = dir.join(format!("gavel-slack-bot-{}", std::process::id()));
        let sign = dir.join(format!("gavel-slack-sign-{}", std::process::id()));
        std::fs::write(&bot, BOT).unwrap();
        std::fs::write(&sign, SIGNING).unwrap();
        (bot, sign)
    });
    let slack = SlackConfig {
        api_url: api,
        bot_token_env: None,
        bot_token_file: Some(bot_file.display().to_string()),
        signing_secret_env: None,
        signing_secret_file: Some(sign_file.display().to_string()),
    };
    let app_secrets: SlackApp = slack.app().unwrap();
    spawn.http.slack = Some(app_secrets);
    let app = spawn_with(spawn).await.unwrap();
    let config = NotifyConfig {
        channels: vec![ChannelConfig {
            name: "approvals".into(),
            kind: ChannelKind::Slack,
            url: String::new(),
            secret_env: None,
            secret_file: None,
            rate_per_sec: 1000.0,
            timeout_ms: 5000,
            slack_channel: Some("C0APPROVALS".into()),
        }],
        default_channels: vec!["approvals".into()],
        page_url: "https://gavel.test/ui".into(),
        slack: Some(slack),
        ..NotifyConfig::default()
    };
    let notifier = Notifier::new(app.engine.clone(), config, "main").unwrap();
    Setup {
        app,
        fake,
        notifier,
        http: crate::http_client(),
    }
}

impl Setup {
    /// Posts an interaction signed as Slack signs it, `age_secs` old.
    async fn interact_signed(
        &self,
        payload: &Value,
        age_secs: i64,
        secret: &str,
    ) -> (u16, Value, String, String) {
        let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
        let ts = (self.app.clock.now_ms_for_test() / 1000 - age_secs).to_string();
        let sig = sign_slack(secret, &ts, body.as_bytes());
        self.send(&body, &ts, &sig).await
    }

    async fn send(&self, body: &str, ts: &str, sig: &str) -> (u16, Value, String, String) {
        let r = self
            .http
            .post(format!("http://{}/slack/interactions", self.app.http_addr))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", ts)
            .header("x-slack-signature", sig)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            ts.to_owned(),
            sig.to_owned(),
        )
    }

    async fn interact(&self, payload: &Value) -> (u16, Value) {
        let (s, v, _, _) = self.interact_signed(payload, 0, SIGNING).await;
        (s, v)
    }

    async fn state(&self, id: &str) -> String {
        self.state_as("auditor", id).await
    }

    /// A job's state as `who` reads it.
    async fn state_as(&self, who: &str, id: &str) -> String {
        let who = self.app.engine.directory().by_name(who).unwrap().clone();
        self.app
            .engine
            .get_job(&who, id)
            .await
            .unwrap()
            .state
            .as_str()
            .to_owned()
    }
}

fn click(user: &str, action: &str, value: &str) -> Value {
    json!({
        "type": "block_actions",
        "user": {"id": user},
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "actions": [{"action_id": action, "block_id": "gavel", "value": value, "type": "button"}],
    })
}

fn submit(user: &str, callback: &str, meta: &str, reason: &str) -> Value {
    json!({
        "type": "view_submission",
        "user": {"id": user},
        "view": {
            "callback_id": callback,
            "private_metadata": meta,
            "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}},
        },
    })
}

async fn decide(s: &Setup, id: &str, action: &str, tags: &[&str]) {
    let mut c = s.app.as_("agent-1").await;
    helpers::decide(&mut c, helpers::job(id, action, tags))
        .await
        .unwrap();
}

fn button_value(message: &Value) -> String {
    let blocks = message["attachments"][0]["blocks"].as_array().unwrap();
    let actions = blocks
        .iter()
        .find(|b| b["type"] == "actions")
        .expect("buttons");
    assert_eq!(actions["elements"][0]["action_id"], "gavel_approve");
    assert_eq!(actions["elements"][1]["action_id"], "gavel_reject");
    actions["elements"][0]["value"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_approved_from_slack_and_its_message_follows() {
    let s = setup().await;
    decide(&s, "s-1", "write", &["prod"]).await;
    assert_eq!(s.notifier.round().await.unwrap(), 1);
    assert_eq!(s.notifier.round().await.unwrap(), 0);
    let posts = s.fake.of("chat.postMessage");
    assert_eq!(posts.len(), 1, "exactly one message for a pending job");
    let m = &posts[0];
    assert_eq!(m["channel"], "C0APPROVALS");
    assert_eq!(
        m["attachments"][0]["color"], "#f5a623",
        "one approval: amber"
    );
    let text = m.to_string();
    assert!(
        text.contains("*Target:*") && text.contains("*Snapshot*") && text.contains("*Job hash*")
    );
    assert!(text.contains("nobody yet"));
    let value = button_value(m);
    assert!(value.starts_with("s-1|"), "{value}");

    // Approve: a modal asks for the reason, prefilled.
    let (st, _) = s.interact(&click("UBOB", "gavel_approve", &value)).await;
    assert_eq!(st, 200);
    let opened = s.fake.of("views.open");
    assert_eq!(opened.len(), 1);
    let view = &opened[0]["view"];
    assert_eq!(view["callback_id"], "gavel_approve");
    assert_eq!(view["private_metadata"], value.as_str());
    assert!(view["blocks"][1]["element"]["initial_value"].is_string());
    assert_eq!(
        s.state("s-1").await,
        "pending",
        "a click alone changes nothing"
    );

    let (st, v) = s
        .interact(&submit(
            "UBOB",
            "gavel_approve",
            &value,
            "matches the change ticket",
        ))
        .await;
    assert_eq!((st, &v), (200, &json!({"response_action": "clear"})));
    assert_eq!(s.state("s-1").await, "approved");
    let who = s.app.engine.directory().by_name("auditor").unwrap().clone();
    let job = s.app.engine.get_job(&who, "s-1").await.unwrap();
    assert_eq!(job.record.approvals[0].approver, "bob");
    assert_eq!(
        job.record.approvals[0].channel,
        gavel::policy::Channel::Slack
    );

    // The resolution updates the message: who approved, final state, no buttons.
    assert_eq!(s.notifier.round().await.unwrap(), 1);
    let updates = s.fake.of("chat.update");
    assert_eq!(updates.len(), 1);
    let u = &updates[0];
    assert_eq!(u["ts"], "1800000000.000100");
    assert_eq!(u["channel"], "C0APPROVALS");
    let blocks = u["attachments"][0]["blocks"].as_array().unwrap();
    assert!(
        blocks.iter().all(|b| b["type"] != "actions"),
        "buttons gone"
    );
    assert!(u.to_string().contains("APPROVED") && u.to_string().contains("bob"));

    // A stale button answers with the real state and acts on nothing.
    let (st, _) = s.interact(&click("UBOB", "gavel_reject", &value)).await;
    assert_eq!(st, 200);
    let info = &s.fake.of("views.open")[1]["view"];
    assert!(info["callback_id"].is_null(), "no form for a decided job");
    assert!(info.to_string().contains("approved"), "{info}");
    let (_, v) = s
        .interact(&submit("UBOB", "gavel_reject", &value, "too late"))
        .await;
    assert_eq!(v["response_action"], "errors");
    assert_eq!(s.state("s-1").await, "approved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_and_replayed_interactions_are_refused_and_change_nothing() {
    let s = setup().await;
    decide(&s, "s-2", "write", &["prod"]).await;
    s.notifier.round().await.unwrap();
    let value = button_value(&s.fake.of("chat.postMessage")[0]);
    let approve = submit("UBOB", "gavel_approve", &value, "looks right");

    let (st, _, _, _) = s.interact_signed(&approve, 0, "not-the-secret").await;
    assert_eq!(st, 401, "wrong signing secret");
    let (st, _, _, _) = s.interact_signed(&approve, 301, SIGNING).await;
    assert_eq!(st, 401, "older than five minutes");
    let (st, _, _, _) = s.interact_signed(&approve, -301, SIGNING).await;
    assert_eq!(st, 401, "from the future");
    let (st, _) = s.send("payload=%7B%7D", "1", "v0=00").await.into_two();
    assert_eq!(st, 401, "garbage");
    assert_eq!(s.state("s-2").await, "pending");
    assert!(s.fake.of("views.open").is_empty());

    // Correct once; the very same request again is a replay.
    let reject = submit("UBOB", "gavel_reject", &value, "missing rollback plan");
    let (st, v, ts, sig) = s.interact_signed(&reject, 0, SIGNING).await;
    assert_eq!((st, v), (200, json!({"response_action": "clear"})));
    let body = serde_urlencoded::to_string([("payload", reject.to_string())]).unwrap();
    let (st, _, _, _) = s.send(&body, &ts, &sig).await;
    assert_eq!(st, 401, "replayed");
    assert_eq!(s.state("s-2").await, "rejected");
}

trait IntoTwo {
    fn into_two(self) -> (u16, Value);
}

impl IntoTwo for (u16, Value, String, String) {
    fn into_two(self) -> (u16, Value) {
        (self.0, self.1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_person_counts_once_across_the_page_api_and_slack_and_gates_may_refuse_slack() {
    let s = setup().await;
    // Two reviewers needed; alice approves over HTTP first.
    decide(&s, "s-3", "deploy", &[]).await;
    s.notifier.round().await.unwrap();
    let m = &s.fake.of("chat.postMessage")[0];
    assert_eq!(
        m["attachments"][0]["color"], "#d0021b",
        "dual approval: red"
    );
    let value = button_value(m);
    let r = s
        .http
        .post(format!(
            "http://{}/api/v1/approvals/s-3/approve",
            s.app.http_addr
        ))
        .bearer_auth(token("alice"))
        .json(&json!({"reason": "first"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, v) = s
        .interact(&submit(
            "UALICE",
            "gavel_approve",
            &value,
            "again, from Slack",
        ))
        .await;
    assert_eq!(v["response_action"], "errors");
    assert!(
        v["errors"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("ALREADY_APPROVED"),
        "{v}"
    );

    // And the other way round: bob approves in Slack, then on the page.
    decide(&s, "s-5", "deploy", &[]).await;
    s.notifier.round().await.unwrap();
    let posted = s.fake.of("chat.postMessage");
    let v5 = button_value(posted.last().unwrap());
    let (_, v) = s
        .interact(&submit("UBOB", "gavel_approve", &v5, "from Slack"))
        .await;
    assert_eq!(v, json!({"response_action": "clear"}));
    let session = s.app.engine.sign_in(&token("bob")).await.unwrap();
    let mut parts = v5.split('|');
    let (_, hash, snap) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
    let form = serde_urlencoded::to_string([
        ("csrf", session.csrf().as_str()),
        ("reason", "from the page"),
        ("job_hash", hash),
        ("snapshot", snap),
    ])
    .unwrap();
    let r = s
        .http
        .post(format!("http://{}/ui/jobs/s-5/approve", s.app.http_addr))
        .header("cookie", format!("gavel_session={}", session.secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("ALREADY_APPROVED"));
    let who = s.app.engine.directory().by_name("auditor").unwrap().clone();
    let job = s.app.engine.get_job(&who, "s-5").await.unwrap();
    assert_eq!(job.record.approvals.len(), 1, "bob counted once");

    // A gate that takes approvals only from the page refuses Slack.
    decide(&s, "s-4", "write", &["ui-only"]).await;
    s.notifier.round().await.unwrap();
    let value = button_value(s.fake.of("chat.postMessage").last().unwrap());
    let (_, v) = s
        .interact(&submit("UBOB", "gavel_approve", &value, "from Slack"))
        .await;
    assert!(
        v["errors"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("CHANNEL_NOT_ALLOWED"),
        "{v}"
    );
    assert_eq!(s.state("s-4").await, "pending");

    // Someone Slack knows and gavel does not is told so; nothing happens.
    let (st, _) = s
        .interact(&click("USTRANGER", "gavel_approve", &value))
        .await;
    assert_eq!(st, 200);
    let opened = s.fake.of("views.open");
    assert!(opened.last().unwrap().to_string().contains("not linked"));
    let (_, v) = s
        .interact(&submit("USTRANGER", "gavel_approve", &value, "hi"))
        .await;
    assert_eq!(v["response_action"], "errors");
    assert_eq!(s.state("s-4").await, "pending");
}

/// Slack is one more door: a reviewer of another tenant acting on a job
/// from a message (or a forged button value) finds no such job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_approvers_act_only_in_their_tenants() {
    use crate::tenants::{config, pay_policy, reload, slack_id, tjob};
    let c = config();
    let s = setup_with(Spawn {
        directory: Some(c.directory().unwrap()),
        options: gavel::engine::EngineOptions {
            tenancy: c.tenancy().unwrap(),
            ..Default::default()
        },
        ..Spawn::on(Backend::Sqlite)
    })
    .await;
    let snap = reload(&mut s.app.as_("pay-op").await, "pay", pay_policy("slack"))
        .await
        .unwrap()
        .id;
    let d = helpers::decide(
        &mut s.app.as_("pay-agent").await,
        tjob("t-1", "pay", "deploy"),
    )
    .await
    .unwrap();
    let value = format!("t-1|{}|{snap}", d.job_hash);
    let carol = slack_id("search-carol").unwrap();
    let (_, v) = s
        .interact(&submit(carol, "gavel_approve", &value, "looks fine"))
        .await;
    let said = v["errors"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(said.starts_with("NOT_FOUND"), "{v}");
    let (_, v) = s
        .interact(&submit(carol, "gavel_reject", &value, "no"))
        .await;
    assert!(v.to_string().contains("NOT_FOUND"), "{v}");
    assert_eq!(
        s.state_as("root-auditor", "t-1").await,
        "pending",
        "nothing changed"
    );
    let (_, v) = s
        .interact(&submit(
            slack_id("pay-alice").unwrap(),
            "gavel_approve",
            &value,
            "checked",
        ))
        .await;
    assert_eq!(v, json!({"response_action": "clear"}));
    assert_eq!(s.state_as("root-auditor", "t-1").await, "approved");
}
