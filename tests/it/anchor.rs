//! Audit anchoring: signed checkpoints of the chain heads, kept outside
//! the database, let verification find what a hash chain alone cannot:
//! entries deleted from a chain's end, and a chain rewritten and re-hashed
//! after an edit. Bind receipts name their entry's place in the chain. The
//! server appends its chain head to a checkpoint file and signs the last
//! one on its way out. Both backends; the attacker has the database.

use super::helpers::{Spawn, TestApp, full_cycle, job, raw_sql, reason, spawn_app, spawn_with};
use crate::store::Backend;
use gavel::checkpoint::Checkpoint;
use gavel::proto::v1 as pb;
use std::process::Command;

async fn sign(app: &TestApp) -> Vec<String> {
    app.as_("auditor")
        .await
        .audit
        .sign_checkpoints(pb::SignCheckpointsRequest {})
        .await
        .unwrap()
        .into_inner()
        .checkpoints
}

async fn verify(app: &TestApp, checkpoints: &[String]) -> pb::VerifyAuditResponse {
    app.as_("auditor")
        .await
        .audit
        .verify_audit(pb::VerifyAuditRequest {
            checkpoints: checkpoints.to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// `gavel audit verify --database-url` with a checkpoint file and the
/// server's JWKS: (exit code, stdout).
fn verify_offline(app: &TestApp, checkpoints: &[String]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("checkpoints");
    std::fs::write(
        &file,
        format!("# kept elsewhere\n{}\n", checkpoints.join("\n")),
    )
    .unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, app.engine.jwks().to_string()).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args([
            "audit",
            "verify",
            "--database-url",
            &app.db_url,
            "--checkpoints",
        ])
        .arg(&file)
        .arg("--jwks")
        .arg(&jwks)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

fn drop_trigger(app: &TestApp, name: &str) -> String {
    match app.backend {
        Backend::Sqlite => format!("DROP TRIGGER {name}"),
        Backend::Postgres => format!("DROP TRIGGER {name} ON audit"),
    }
}

async fn entries(app: &TestApp) -> Vec<gavel::audit::AuditEntry> {
    let store = gavel::store::open(&app.db_url, "main").await.unwrap();
    store.audit_page("main", 0, 10_000).await.unwrap()
}

async fn deleting_the_chain_end_is_found_against_a_checkpoint(b: Backend) {
    let Some(app) = spawn_app(b).await else {
        return;
    };
    let (_, bound, _) = full_cycle(&app, job("an-1", "deploy", &[]), &["alice", "bob"]).await;
    // The receipt names the bind's entry: its chain, seq and hash.
    let claims = gavel::receipt::verify(&bound.receipt, &app.engine.jwks()).unwrap();
    let log = entries(&app).await;
    let at = claims["audit"]["seq"].as_i64().unwrap();
    let entry = log.iter().find(|e| e.seq == at).unwrap();
    assert_eq!(claims["audit"]["chain"], "main");
    assert_eq!(
        (entry.kind.as_str(), entry.job_id.as_str()),
        ("bind", "an-1")
    );
    assert_eq!(claims["audit"]["entry_hash"], entry.entry_hash.as_str());
    assert_eq!(entry.body["bind_id"], bound.bind_id.as_str());

    let signed = sign(&app).await;
    assert_eq!(signed.len(), 1);
    let cp = Checkpoint::verify(&signed[0], &app.engine.jwks()).unwrap();
    let head = log.last().unwrap();
    assert_eq!((cp.chain.as_str(), cp.seq), ("main", head.seq));
    assert_eq!(cp.entry_hash, head.entry_hash);
    assert_eq!(cp.at, app.engine.now());
    assert!(verify(&app, &signed).await.ok);

    // The chain grows past its checkpoint: still fine.
    full_cycle(&app, job("an-2", "deploy", &[]), &["alice", "bob"]).await;
    assert!(verify(&app, &signed).await.ok);

    // A checkpoint this server did not sign is refused, located.
    let other = gavel::receipt::ReceiptSigner::from_seed([9; 32]);
    let forged = cp.sign(&other);
    let err = app
        .as_("auditor")
        .await
        .audit
        .verify_audit(pb::VerifyAuditRequest {
            checkpoints: vec![signed[0].clone(), forged],
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INVALID_ARGUMENT");
    let detail = gavel::service::convert::error_detail(&err).unwrap();
    assert_eq!(detail.field, "checkpoints[1]");
    // Only auditors sign checkpoints.
    let err = app
        .as_("operator")
        .await
        .audit
        .sign_checkpoints(pb::SignCheckpointsRequest {})
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "PERMISSION_DENIED");

    // Someone with the database cuts the chain back to before the
    // checkpoint. The chain alone still verifies: its rest is intact.
    raw_sql(&app.db_url, &drop_trigger(&app, "audit_no_delete"))
        .await
        .unwrap();
    let keep = cp.seq - 2;
    let gone = raw_sql(
        &app.db_url,
        &format!("DELETE FROM audit WHERE chain = 'main' AND seq > {keep}"),
    )
    .await
    .unwrap();
    assert!(gone > 2);
    assert!(
        verify(&app, &[]).await.ok,
        "truncation is invisible to the chain alone"
    );
    let v = verify(&app, &signed).await;
    assert!(!v.ok);
    assert_eq!(v.chains[0].first_bad_seq, (keep + 1) as u64);
    assert!(
        v.chains[0].problem.contains("deleted"),
        "{}",
        v.chains[0].problem
    );
    // The command line, straight from the database, says the same.
    let (code, out) = verify_offline(&app, &signed);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("deleted"), "{out}");
}

async fn a_rewritten_chain_is_found_against_a_checkpoint(b: Backend) {
    let Some(app) = spawn_app(b).await else {
        return;
    };
    full_cycle(&app, job("rw-1", "deploy", &[]), &["alice", "bob"]).await;
    let signed = sign(&app).await;
    let (code, out) = verify_offline(&app, &signed);
    assert_eq!(code, Some(0), "{out}");

    // Bob's approval becomes mallory's, and every hash from there on is
    // recomputed so the chain is consistent again.
    raw_sql(&app.db_url, &drop_trigger(&app, "audit_no_update"))
        .await
        .unwrap();
    let mut log = entries(&app).await;
    let from = log
        .iter()
        .position(|e| e.kind == "approval" && e.actor == "bob")
        .unwrap();
    log[from].actor = "mallory".into();
    for i in from..log.len() {
        if i > 0 {
            log[i].prev_hash = log[i - 1].entry_hash.clone();
        }
        log[i].entry_hash = log[i].expected_hash();
        let e = &log[i];
        raw_sql(
            &app.db_url,
            &format!(
                "UPDATE audit SET actor = '{}', prev_hash = '{}', entry_hash = '{}' WHERE chain = 'main' AND seq = {}",
                e.actor, e.prev_hash, e.entry_hash, e.seq
            ),
        )
        .await
        .unwrap();
    }
    assert!(
        verify(&app, &[]).await.ok,
        "a re-hashed chain verifies alone"
    );
    let v = verify(&app, &signed).await;
    assert!(!v.ok);
    assert_eq!(v.chains[0].first_bad_seq, log.last().unwrap().seq as u64);
    assert!(
        v.chains[0].problem.contains("rewritten"),
        "{}",
        v.chains[0].problem
    );
    let (code, out) = verify_offline(&app, &signed);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("rewritten"), "{out}");
}

crate::on_both_backends!(
    truncation,
    deleting_the_chain_end_is_found_against_a_checkpoint
);
crate::on_both_backends!(rewrite, a_rewritten_chain_is_found_against_a_checkpoint);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_appends_its_head_and_signs_the_last_on_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("anchor").join("checkpoints.jsonl");
    let app = spawn_with(Spawn {
        checkpoints: Some(gavel::server::CheckpointOptions {
            file: file.clone(),
            // Only the first tick and the shutdown fall inside the test.
            interval: std::time::Duration::from_secs(3600),
        }),
        ..Spawn::on(Backend::Sqlite)
    })
    .await
    .unwrap();
    full_cycle(&app, job("out-1", "deploy", &[]), &["alice", "bob"]).await;
    let jwks = app.engine.jwks();
    let engine = app.engine.clone();
    let _database = app.stop().await;
    let text = std::fs::read_to_string(&file).unwrap();
    let written = gavel::checkpoint::read_file(&text, &jwks).unwrap();
    assert!(!written.is_empty());
    // Each line moved the head forward; the last is the chain's end.
    assert!(
        written.windows(2).all(|w| w[0].seq < w[1].seq),
        "{written:?}"
    );
    let auditor = engine
        .directory()
        .caller(Some("Bearer test-token-auditor"), None, engine.now())
        .unwrap();
    let head = engine.checkpoint("main").await.unwrap().unwrap().0;
    let last = written.last().unwrap();
    assert_eq!((last.seq, &last.entry_hash), (head.seq, &head.entry_hash));
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert!(engine.verify_audit(&auditor, &lines).await.unwrap().ok);
}
