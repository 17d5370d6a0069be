//! The approver page in a real browser: `tests/browser/page.mjs` drives
//! Debian's chromium through playwright-core against a server spawned
//! here; afterwards the server's records must show exactly what the
//! browser did. Without node, playwright-core or chromium the test says so
//! and skips, unless `GAVEL_REQUIRE_BROWSER=1` (set by `.ci/run`) makes
//! that a failure.

use crate::helpers::spawn_app;
use crate::root;
use crate::store::Backend;
use gavel::approval::JobState;
use gavel::policy::Channel;
use std::process::Command;

fn browser_available() -> Result<(), String> {
    let modules = root().join("tests/browser/node_modules/playwright-core");
    if !modules.exists() {
        return Err("run `npm ci` in tests/browser".into());
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !std::path::Path::new(&chromium).exists() {
        return Err(format!("{chromium} is missing (Debian package chromium)"));
    }
    Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| format!("node: {e}"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvers_work_the_queue_in_a_real_browser() {
    if let Err(why) = browser_available() {
        if std::env::var("GAVEL_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
            panic!("GAVEL_REQUIRE_BROWSER=1 but the browser tests cannot run: {why}");
        }
        eprintln!("SKIPPED: browser tests: {why}");
        return;
    }
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let http = crate::http_client();
    let jobs = [
        ("pg-single", "write", "prod", "Fix order 7", "one row"),
        ("pg-reject", "write", "prod", "Rewrite orders", "one table"),
        ("pg-dual", "deploy", "", "Deploy api", "the api"),
        ("pg-pay", "pay", "payment", "Pay invoice", "one payment"),
        ("pg-glass", "write", "prod", "Hotfix", "one row"),
    ];
    for (id, action, tag, title, blast) in jobs {
        // Distinct creation times keep "oldest first" well defined.
        app.clock.set_ms(app.clock.now_ms_for_test() + 1000);
        let resp = http
            .post(format!("http://{}/api/v1/decide", app.http_addr))
            .bearer_auth(crate::helpers::token("agent-1"))
            .json(&serde_json::json!({
                "job_id": id, "topic": "ops.db", "action": action, "target": "orders",
                "risk_tags": if tag.is_empty() { vec![] } else { vec![tag] },
                "params": { "sql": "UPDATE orders SET status = 1 WHERE id = 7" },
                "proposal": { "title": title, "why": "customer ticket", "blast_radius": blast, "reversible": true },
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }
    let mut eve = app.as_("eve").await;
    eve.approval
        .r#override(gavel::proto::v1::OverrideRequest {
            job_id: "pg-glass".into(),
            reason: "incident 42".into(),
            note: String::new(),
        })
        .await
        .unwrap();

    // Screenshots go to a temp dir; `GAVEL_SCREENSHOTS=docs` refreshes
    // the ones the README links.
    let tmp = tempfile::tempdir().unwrap();
    let shots = std::env::var("GAVEL_SCREENSHOTS")
        .map(|d| root().join(d))
        .unwrap_or_else(|_| tmp.path().to_path_buf());
    let base = format!("http://{}", app.http_addr);
    let script = root().join("tests/browser/page.mjs");
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .env("GAVEL_URL", &base)
        .env("GAVEL_SHOTS", &shots)
        .current_dir(root().join("tests/browser"))
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("every step held"), "{stdout}");

    for shot in ["page-queue.png", "page-job.png"] {
        let len = std::fs::metadata(shots.join(shot)).map_or(0, |m| m.len());
        assert!(len > 1000, "{shot}: {len} bytes");
    }

    // The server recorded exactly what the browser did.
    let auditor = app.engine.directory().by_name("auditor").unwrap().clone();
    let get = |id: &'static str| {
        let e = app.engine.clone();
        let who = auditor.clone();
        async move { e.get_job(&who, id).await.unwrap() }
    };
    let single = get("pg-single").await;
    assert_eq!(single.state, JobState::Approved);
    assert_eq!(single.record.approvals.len(), 1);
    assert_eq!(single.record.approvals[0].approver, "alice");
    assert_eq!(single.record.approvals[0].channel, Channel::Ui);
    assert_eq!(single.record.approvals[0].reason, "checked the row count");
    let dual = get("pg-dual").await;
    assert_eq!(dual.state, JobState::Approved);
    let who: Vec<&str> = dual
        .record
        .approvals
        .iter()
        .map(|a| a.approver.as_str())
        .collect();
    assert_eq!(who, ["alice", "bob"]);
    let rejected = get("pg-reject").await;
    assert_eq!(
        rejected.state,
        JobState::Pending,
        "forged and reasonless forms changed it"
    );
    assert!(rejected.record.approvals.is_empty());
    let glass = get("pg-glass").await;
    assert_eq!(glass.record.override_ack_by.as_deref(), Some("alice"));
}
