//! The HTTP door over real sockets: the article's routes and JSON shapes,
//! the rest of the API, one error shape for every malformed request, the
//! same person across gRPC and HTTP, and page sessions in the store.

use crate::helpers::{self, TestApp, spawn_app, token};
use crate::on_both_backends;
use crate::store::Backend;
use gavel::refusal::Reason;
use gavel::service::status::http_status;
use gavel::store::SessionRow;
use serde_json::{Value, json};

/// A JSON client of one test server.
struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    fn new(app: &TestApp) -> Http {
        Http {
            base: format!("http://{}", app.http_addr),
            client: crate::http_client(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        who: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(w) = who {
            req = req.bearer_auth(token(w));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        (status, v)
    }

    async fn get(&self, path: &str, who: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, Some(who), None).await
    }

    async fn post(&self, path: &str, who: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(who), Some(body))
            .await
    }

    /// A raw request: any body bytes and content type.
    async fn raw(&self, path: &str, who: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token(who))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }
}

fn job(id: &str, action: &str, tags: &[&str]) -> Value {
    json!({
        "job_id": id,
        "topic": "ops.db",
        "action": action,
        "target": "orders",
        "risk_tags": tags,
        "params": { "sql": "UPDATE orders SET x = 1", "rows": 3 },
        "proposal": { "title": format!("Do {id}"), "why": "because", "blast_radius": "one table", "reversible": true }
    })
}

fn reason_of(v: &Value) -> &str {
    v["error"]["reason"].as_str().unwrap_or("")
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

async fn the_articles_routes_keep_their_shapes(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let h = Http::new(&app);
    let (s, d) = h
        .post(
            "/api/v1/decide",
            "agent-1",
            job("job-1", "write", &["prod"]),
        )
        .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["decision"], "REQUIRE_APPROVAL");
    assert_eq!(d["state"], "PENDING");

    let (s, q) = h
        .get("/api/v1/approvals?include_resolved=false", "alice")
        .await;
    assert_eq!(s, 200, "{q}");
    let items = q["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let item = &items[0];
    assert_eq!(keys(&item["job"]), ["id", "state"]);
    assert_eq!(item["job"]["id"], "job-1");
    assert_eq!(item["job"]["state"], "PENDING");
    for field in [
        "decision",
        "policy_snapshot",
        "policy_rule_id",
        "policy_reason",
        "job_hash",
        "approval_required",
    ] {
        assert!(item.get(field).is_some(), "{field} missing: {item}");
    }
    assert_eq!(item["policy_rule_id"], "prod");
    assert_eq!(item["policy_snapshot"], d["policy_snapshot"]);
    assert_eq!(item["job_hash"], d["job_hash"]);
    assert_eq!(item["approval_required"], true);
    assert_eq!(
        keys(&item["decision_summary"]),
        ["next_effect", "title", "why"]
    );
    assert_eq!(item["decision_summary"]["title"], "Do job-1");
    // Resolution fields appear only once resolved.
    assert!(item.get("resolved_by").is_none(), "{item}");

    let (s, a) = h
        .post(
            "/api/v1/approvals/job-1/approve",
            "alice",
            json!({"reason": "approved by on-call", "note": "ticket INC-123"}),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["job"]["state"], "APPROVED");
    assert_eq!(a["resolved_by"], "alice");
    assert_eq!(a["resolution"], "approved");

    let (_, q) = h
        .get("/api/v1/approvals?include_resolved=false", "alice")
        .await;
    assert_eq!(q["items"].as_array().unwrap().len(), 0, "{q}");
    let (_, q) = h
        .get("/api/v1/approvals?include_resolved=true", "alice")
        .await;
    let items = q["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["resolved_by"], "alice");
    assert_eq!(items[0]["resolved_comment"], "approved by on-call");

    // Reject with the article's body.
    h.post(
        "/api/v1/decide",
        "agent-1",
        job("job-2", "write", &["prod"]),
    )
    .await;
    let (s, r) = h
        .post(
            "/api/v1/approvals/job-2/reject",
            "bob",
            json!({"reason": "policy violation", "note": "missing rollback plan"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["job"]["state"], "REJECTED");
    assert_eq!(r["resolution"], "rejected");
    assert_eq!(r["resolved_comment"], "policy violation");

    let (s, ds) = h.get("/api/v1/jobs/job-1/decisions", "alice").await;
    assert_eq!(s, 200, "{ds}");
    assert_eq!(ds["job"]["id"], "job-1");
    let kinds: Vec<&str> = ds["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["policy", "approval"]);
    assert_eq!(ds["items"][0]["decision"], "REQUIRE_APPROVAL");
    assert_eq!(ds["items"][0]["policy_snapshot"], d["policy_snapshot"]);
    assert_eq!(ds["items"][1]["by"], "alice");
    assert_eq!(ds["items"][1]["channel"], "http");

    // There is deliberately no GET /api/v1/approvals/{id}.
    let (s, e) = h.get("/api/v1/approvals/job-1", "alice").await;
    assert!(s == 404 || s == 405, "{s} {e}");
}
on_both_backends!(article_routes, the_articles_routes_keep_their_shapes);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cycle_runs_over_http_and_binds_once() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let h = Http::new(&app);
    let j = job("dep-1", "deploy", &[]);
    let (_, d) = h.post("/api/v1/decide", "agent-1", j.clone()).await;
    assert_eq!(d["gates"][0]["approvers"], 2);
    for who in ["alice", "bob"] {
        let (s, v) = h
            .post(
                "/api/v1/approvals/dep-1/approve",
                who,
                json!({"reason": "looked", "expected_job_hash": d["job_hash"], "expected_snapshot": d["policy_snapshot"]}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    // Binding different content is refused, and changes nothing.
    let mut changed = j.clone();
    changed["params"]["rows"] = json!(4);
    let (s, e) = h
        .post(
            "/api/v1/bind",
            "executor",
            json!({"job_id": "dep-1", "job": changed, "policy_snapshot": d["policy_snapshot"]}),
        )
        .await;
    assert_eq!(reason_of(&e), "HASH_MISMATCH", "{e}");
    assert_eq!(s, http_status(Reason::HashMismatch));

    let (s, b) = h
        .post(
            "/api/v1/bind",
            "executor",
            json!({"job_id": "dep-1", "job": j, "policy_snapshot": d["policy_snapshot"]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let canonical: Value = serde_json::from_str(b["canonical_job"].as_str().unwrap()).unwrap();
    assert_eq!(canonical["params"]["rows"], 3);
    assert_eq!(b["approvals"].as_array().unwrap().len(), 2);

    // The receipt verifies against the served JWKS.
    let (s, jwks) = h
        .send(reqwest::Method::GET, "/api/v1/keys", None, None)
        .await;
    assert_eq!(s, 200);
    let claims = gavel::receipt::verify(b["receipt"].as_str().unwrap(), &jwks).unwrap();
    assert_eq!(claims["job_id"], "dep-1");
    assert_eq!(claims["bind_id"], b["bind_id"]);

    let (s, e) = h
        .post(
            "/api/v1/bind",
            "executor",
            json!({"job_id": "dep-1", "job_hash": d["job_hash"], "policy_snapshot": d["policy_snapshot"]}),
        )
        .await;
    assert_eq!((s, reason_of(&e)), (409, "ALREADY_BOUND"), "{e}");

    let (s, o) = h
        .post(
            "/api/v1/jobs/dep-1/outcome",
            "executor",
            json!({"bind_id": b["bind_id"], "outcome": "SUCCEEDED", "detail": "done"}),
        )
        .await;
    assert_eq!(s, 200, "{o}");
    assert_eq!(o["job"]["state"], "SUCCEEDED");

    let (s, story) = h.get("/api/v1/audit/jobs/dep-1", "auditor").await;
    assert_eq!(s, 200, "{story}");
    let kinds: Vec<&str> = story["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "decision",
            "approval",
            "approval",
            "bind_refused",
            "bind",
            "bind_refused",
            "outcome"
        ]
    );
    let (s, g) = h.get("/api/v1/jobs/dep-1", "agent-1").await;
    assert_eq!(s, 200);
    assert_eq!(g["bind_id"], b["bind_id"]);
    assert_eq!(g["content"]["params"]["rows"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_request_gets_a_located_4xx_in_one_shape() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let h = Http::new(&app);
    h.post("/api/v1/decide", "agent-1", job("m-1", "write", &["prod"]))
        .await;

    // No token, a wrong token, a malformed header.
    let (s, e) = h
        .send(reqwest::Method::GET, "/api/v1/approvals", None, None)
        .await;
    assert_eq!((s, reason_of(&e)), (401, "UNAUTHENTICATED"), "{e}");
    let (s, e) = h.get("/api/v1/approvals", "nosuchperson").await;
    assert_eq!((s, reason_of(&e)), (401, "UNAUTHENTICATED"), "{e}");

    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "wrong type",
            "text/plain",
            b"{}".to_vec(),
            415,
            "content-type",
        ),
        (
            "malformed",
            "application/json",
            b"{\"reason\":".to_vec(),
            400,
            "body",
        ),
        (
            "duplicate keys",
            "application/json",
            b"{\"reason\":\"a\",\"reason\":\"b\"}".to_vec(),
            400,
            "body",
        ),
        (
            "unknown field",
            "application/json",
            b"{\"reason\":\"a\",\"bogus\":1}".to_vec(),
            400,
            "bogus",
        ),
        (
            "wrong type of field",
            "application/json",
            b"{\"reason\":5}".to_vec(),
            400,
            "reason",
        ),
        (
            "not an object",
            "application/json",
            b"[1]".to_vec(),
            400,
            "body",
        ),
        (
            "too large",
            "application/json",
            vec![b' '; 2 * 1024 * 1024],
            413,
            "body",
        ),
    ];
    for (what, ct, body, status, field) in cases {
        let (s, e) = h
            .raw("/api/v1/approvals/m-1/approve", "alice", ct, body)
            .await;
        assert_eq!(s, status, "{what}: {e}");
        assert_eq!(e["error"]["field"], field, "{what}: {e}");
        assert!(!e["error"]["message"].as_str().unwrap().is_empty());
    }
    // A body left unread closes its connection, and the answer says so,
    // so no client sends its next request down a connection being dropped.
    let connection = |big: bool| {
        let body = if big {
            vec![b' '; 2 * 1024 * 1024]
        } else {
            b"{\"reason\":5}".to_vec()
        };
        h.client
            .post(format!("{}/api/v1/approvals/m-1/approve", h.base))
            .bearer_auth(token("alice"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let resp = connection(true).await.unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    assert_eq!(resp.headers()["connection"], "close");
    let resp = connection(false).await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_ne!(
        resp.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );

    // Nothing of those landed.
    let (_, j) = h.get("/api/v1/jobs/m-1", "alice").await;
    assert_eq!(j["job"]["state"], "PENDING");
    assert!(j["approvals"].as_array().unwrap().is_empty());

    // A job field the job parser refuses is named, as in a job file.
    let (s, e) = h
        .post("/api/v1/decide", "agent-1", json!({"topic": 5}))
        .await;
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (400, Some("job.topic")),
        "{e}"
    );
    let (s, e) = h
        .post("/api/v1/decide", "agent-1", json!({"colour": "red"}))
        .await;
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (400, Some("job.colour")),
        "{e}"
    );
    let (s, e) = h.get("/api/v1/approvals?page_size=x", "alice").await;
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (400, Some("page_size")),
        "{e}"
    );
    let (s, e) = h.get("/api/v1/approvals?since=yesterday", "alice").await;
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (400, Some("since")),
        "{e}"
    );

    // Core refusals carry the status of the one mapping.
    for (body, want) in [
        (json!({"reason": "  "}), Reason::ReasonRequired),
        (
            json!({"reason": "ok", "expected_job_hash": "0".repeat(64)}),
            Reason::StaleReview,
        ),
    ] {
        let (s, e) = h.post("/api/v1/approvals/m-1/approve", "alice", body).await;
        assert_eq!(reason_of(&e), want.as_str(), "{e}");
        assert_eq!(s, http_status(want));
    }
    let (s, e) = h
        .post(
            "/api/v1/approvals/m-1/approve",
            "agent-1",
            json!({"reason": "me"}),
        )
        .await;
    assert_eq!((s, reason_of(&e)), (403, "PERMISSION_DENIED"), "{e}");
    let (s, e) = h
        .post(
            "/api/v1/approvals/nope/approve",
            "alice",
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!((s, reason_of(&e)), (404, "NOT_FOUND"), "{e}");

    // Unknown routes and methods answer in the same shape.
    let (s, e) = h.get("/api/v1/nothing", "alice").await;
    assert_eq!((s, reason_of(&e)), (404, "NOT_FOUND"));
    let (s, e) = h
        .send(
            reqwest::Method::DELETE,
            "/api/v1/decide",
            Some("alice"),
            None,
        )
        .await;
    assert_eq!(s, 405, "{e}");
    assert!(e["error"]["reason"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_person_counts_once_across_grpc_and_http() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let h = Http::new(&app);
    h.post("/api/v1/decide", "agent-1", job("x-1", "deploy", &[]))
        .await;
    let mut alice = app.as_("alice").await;
    helpers::approve(&mut alice, "x-1", "via grpc")
        .await
        .unwrap();
    let (s, e) = h
        .post(
            "/api/v1/approvals/x-1/approve",
            "alice",
            json!({"reason": "via http"}),
        )
        .await;
    assert_eq!((s, reason_of(&e)), (409, "ALREADY_APPROVED"), "{e}");
    // The requester never approves, whichever door.
    let (_, e) = h
        .post(
            "/api/v1/approvals/x-1/approve",
            "owner-1",
            json!({"reason": "mine"}),
        )
        .await;
    assert_eq!(reason_of(&e), "SELF_APPROVAL", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_reload_explain_and_list_over_http() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let h = Http::new(&app);
    let (s, e) = h
        .post(
            "/api/v1/policy/reload",
            "alice",
            json!({"source": helpers::POLICY}),
        )
        .await;
    assert_eq!((s, reason_of(&e)), (403, "PERMISSION_DENIED"));
    let source = helpers::POLICY.replace("name: test", "name: test2");
    let (s, r) = h
        .post(
            "/api/v1/policy/reload",
            "operator",
            json!({"source": source, "filename": "p.yaml"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["activated"], true);
    let id = r["snapshot"]["id"].as_str().unwrap().to_owned();
    let (s, e) = h
        .post(
            "/api/v1/policy/reload",
            "operator",
            json!({"source": "version: v1\nrules: [oops", "filename": "bad.yaml"}),
        )
        .await;
    assert_eq!(s, http_status(Reason::PolicyInvalid), "{e}");
    assert_eq!(reason_of(&e), "POLICY_INVALID");

    let (s, l) = h.get("/api/v1/policy/snapshots", "operator").await;
    assert_eq!(s, 200);
    assert!(
        l["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == id.as_str() && x["active"] == true)
    );
    let path = format!(
        "/api/v1/policy/snapshots/{}",
        id.replace(':', "%3A").replace('#', "%23")
    );
    let (s, one) = h.get(&path, "alice").await;
    assert_eq!(s, 200, "{one}");
    assert!(one["source"].as_str().unwrap().contains("name: test2"));

    let (s, x) = h
        .post(
            "/api/v1/policy/explain",
            "agent-1",
            json!({"job": job("e-1", "read", &[])}),
        )
        .await;
    assert_eq!(s, 200, "{x}");
    assert_eq!(x["decision"], "ALLOW");
    assert_eq!(x["policy_snapshot"], id.as_str());
    assert!(
        x["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule"] == "reads" && r["matched"] == true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_the_openapi_document() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let h = Http::new(&app);
    let (s, v) = h.send(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
    let (s, v) = h.send(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ready")));
    let (s, doc) = h
        .send(reqwest::Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/approvals",
        "/api/v1/approvals/{job_id}/approve",
        "/api/v1/approvals/{job_id}/reject",
        "/api/v1/jobs/{job_id}/decisions",
        "/api/v1/decide",
        "/api/v1/bind",
        "/api/v1/jobs/{job_id}",
        "/api/v1/keys",
    ] {
        assert!(paths.contains_key(p), "{p} is not documented");
    }
    assert!(!paths.contains_key("/api/v1/approvals/{job_id}"));
    assert_eq!(
        doc,
        serde_json::to_value(gavel::service::http::openapi()).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_when_the_database_is_gone() {
    // PostgreSQL can lose its database under a running server; SQLite
    // keeps its open file.
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    let h = Http::new(&app);
    let (s, _) = h.send(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(s, 200);
    let (base, name) = app.db_url.rsplit_once('/').unwrap();
    helpers::raw_sql(
        &format!("{base}/postgres"),
        &format!("DROP DATABASE \"{name}\" WITH (FORCE)"),
    )
    .await
    .unwrap();
    let (s, v) = h.send(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!((s, reason_of(&v)), (503, "UNAVAILABLE"), "{v}");
    let (s, _) = h.send(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(s, 200, "the process is still up");
}

async fn sessions_are_stored_hashed_expire_and_end(backend: Backend) {
    let Some((url, _dir)) = crate::store::fresh_url(backend, "sessions").await else {
        return;
    };
    let store = gavel::store::open(&url, "main").await.unwrap();
    let row = SessionRow {
        id_hash: "a".repeat(64),
        identity: "alice".into(),
        created_at: 1_000,
        expires_at: 2_000,
    };
    store.create_session(row.clone()).await.unwrap();
    assert_eq!(
        store.session(&row.id_hash, 1_999).await.unwrap(),
        Some(row.clone())
    );
    assert_eq!(
        store.session(&row.id_hash, 2_000).await.unwrap(),
        None,
        "expired at its deadline"
    );
    assert_eq!(store.session(&"b".repeat(64), 1_500).await.unwrap(), None);
    // The same secret twice is refused, not merged.
    assert!(store.create_session(row.clone()).await.is_err());
    let other = SessionRow {
        id_hash: "c".repeat(64),
        expires_at: 9_000,
        ..row.clone()
    };
    store.create_session(other.clone()).await.unwrap();
    assert_eq!(store.purge_sessions(2_000).await.unwrap(), 1);
    assert_eq!(
        store.session(&other.id_hash, 3_000).await.unwrap(),
        Some(other.clone())
    );
    store.end_session(&other.id_hash).await.unwrap();
    assert_eq!(store.session(&other.id_hash, 3_000).await.unwrap(), None);
    store.end_session(&other.id_hash).await.unwrap();
}
on_both_backends!(sessions, sessions_are_stored_hashed_expire_and_end);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_sessions_sign_in_out_and_expire_with_the_clock() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let e = &app.engine;
    assert_eq!(
        e.sign_in("wrong").await.unwrap_err().reason,
        Reason::Unauthenticated
    );
    let s = e.sign_in(&token("alice")).await.unwrap();
    assert_eq!(s.identity.name, "alice");
    assert_eq!(e.session(&s.secret).await.unwrap().identity.name, "alice");
    // The database holds only the hash of the secret.
    let url = app.db_url.clone();
    let touch = |key: String| {
        let url = url.clone();
        async move {
            helpers::raw_sql(
                &url,
                &format!("UPDATE sessions SET identity = identity WHERE id_hash = '{key}'"),
            )
            .await
            .unwrap()
        }
    };
    assert_eq!(touch(s.secret.clone()).await, 0);
    assert_eq!(
        touch(gavel::canonical::sha256_hex(s.secret.as_bytes())).await,
        1
    );
    assert!(gavel::engine::csrf_matches(&s.secret, &s.csrf()));
    assert!(!gavel::engine::csrf_matches(&s.secret, &"0".repeat(64)));
    let other = e.sign_in(&token("bob")).await.unwrap();
    assert_ne!(other.csrf(), s.csrf());
    // Eight hours later the session is gone.
    app.clock
        .set_ms(app.clock.now_ms_for_test() + 8 * 3600 * 1000);
    assert_eq!(
        e.session(&s.secret).await.unwrap_err().reason,
        Reason::Unauthenticated
    );
    let fresh = e.sign_in(&token("alice")).await.unwrap();
    e.sign_out(&fresh.secret).await.unwrap();
    assert!(e.session(&fresh.secret).await.is_err());
}
