//! The store conformance suite: written once against the `Store` trait, run
//! against SQLite always and PostgreSQL whenever one can be started.

use gavel::approval::{self, AuditEvent, JobState};
use gavel::audit::ChainVerifier;
use gavel::identity::Identity;
use gavel::policy::Channel;
use gavel::store::{JobFilter, Recorded, SnapshotRow, Store, TransitionError};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh database URL for the backend, or `None` when PostgreSQL is
/// unavailable (and not required). The temp dir keeps a SQLite file alive.
pub async fn fresh_url(
    backend: Backend,
    test: &str,
) -> Option<(String, Option<tempfile::TempDir>)> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("gavel.db").display());
            Some((url, Some(dir)))
        }
        Backend::Postgres => {
            let cluster = super::pg::cluster(test)?;
            Some((cluster.fresh_database().await, None))
        }
    }
}

/// Runs an async test body once per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body($crate::store::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body($crate::store::Backend::Postgres).await;
            }
        }
    };
}

async fn open(backend: Backend, test: &str) -> Option<(Arc<dyn Store>, Option<tempfile::TempDir>)> {
    let (url, dir) = fresh_url(backend, test).await?;
    Some((gavel::store::open(&url, "main").await.unwrap(), dir))
}

fn snapshot(id_hash: char, name: &str) -> SnapshotRow {
    let loaded = gavel::policy::load(super::helpers::POLICY, "p.yaml").unwrap();
    SnapshotRow {
        id: format!(
            "cfg:{name}:policy#sha256:{}",
            id_hash.to_string().repeat(64)
        ),
        name: name.into(),
        sha256: id_hash.to_string().repeat(64),
        version: None,
        source: loaded.snapshot.source,
        canonical_json: loaded.snapshot.canonical_json,
        rule_count: 3,
        created_at: 0,
        activated_at: None,
        activated_by: None,
        revoked_at: None,
        revoked_by: None,
        revoke_reason: None,
    }
}

fn person(name: &str, roles: &[&str]) -> Identity {
    Identity {
        name: name.into(),
        roles: roles.iter().map(|r| r.to_string()).collect::<BTreeSet<_>>(),
        acts_for: BTreeSet::new(),
    }
}

fn record(store_snapshot: &str, job_id: &str, action: &str, now: i64) -> approval::JobRecord {
    let loaded = gavel::policy::load(super::helpers::POLICY, "p.yaml").unwrap();
    let job = gavel::job::Job::from_json(
        format!(r#"{{"job_id":"{job_id}","action":"{action}","topic":"t","params":{{"n":1}}}}"#)
            .as_bytes(),
        &Default::default(),
    )
    .unwrap();
    let eval = loaded.snapshot.policy.evaluate(&job, Some("agent-1"));
    approval::new_record(
        job_id.into(),
        job.hash().to_string(),
        job.canonical_json(),
        String::new(),
        "agent-1".into(),
        store_snapshot.into(),
        format!("d-{job_id}"),
        eval,
        300,
        now,
    )
}

async fn snapshots_activate_version_and_revoke(backend: Backend) {
    let Some((store, _dir)) = open(backend, "store::snapshots").await else {
        return;
    };
    assert!(store.active_snapshot().await.unwrap().is_none());
    let (a, changed) = store
        .activate_snapshot(snapshot('a', "p"), "op", 10)
        .await
        .unwrap();
    assert!(changed);
    assert_eq!(a.version, Some(1));
    assert_eq!(a.activated_by.as_deref(), Some("op"));
    let (_, changed) = store
        .activate_snapshot(snapshot('a', "p"), "op", 11)
        .await
        .unwrap();
    assert!(!changed, "activating the active snapshot changes nothing");
    let (b, _) = store
        .activate_snapshot(snapshot('b', "p"), "op", 12)
        .await
        .unwrap();
    assert_eq!(b.version, Some(2));
    let (c, _) = store
        .activate_snapshot(snapshot('c', "other"), "op", 13)
        .await
        .unwrap();
    assert_eq!(c.version, Some(1), "versions count per policy name");
    // Re-activating an old snapshot keeps its first version.
    let (a2, changed) = store
        .activate_snapshot(snapshot('a', "p"), "op", 14)
        .await
        .unwrap();
    assert!(changed);
    assert_eq!(a2.version, Some(1));
    assert_eq!(store.active_snapshot().await.unwrap().unwrap().id, a.id);
    assert_eq!(store.snapshots(None).await.unwrap().len(), 3);
    assert_eq!(store.snapshots(Some("p")).await.unwrap().len(), 2);
    let r = store
        .revoke_snapshot(&b.id, "op", "bad", 15)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.revoked_at, Some(15));
    let again = store
        .revoke_snapshot(&b.id, "op2", "again", 16)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.revoked_by.as_deref(),
        Some("op"),
        "revocation is kept once"
    );
    assert!(
        store
            .revoke_snapshot("cfg:x:policy#sha256:none", "op", "r", 17)
            .await
            .unwrap()
            .is_none()
    );
}
crate::on_both_backends!(snapshots, snapshots_activate_version_and_revoke);

async fn decisions_are_recorded_once(backend: Backend) {
    let Some((store, _dir)) = open(backend, "store::decisions").await else {
        return;
    };
    let (s, _) = store
        .activate_snapshot(snapshot('a', "p"), "op", 1)
        .await
        .unwrap();
    let out = store
        .record_decisions(vec![
            record(&s.id, "j1", "deploy", 100),
            record(&s.id, "j2", "read", 100),
        ])
        .await
        .unwrap();
    assert!(matches!(&out[0], Recorded::Inserted(r) if r.job_id == "j1"));
    let mut dup = record(&s.id, "j1", "read", 200);
    dup.decision_id = "other".into();
    let out = store
        .record_decisions(vec![dup, record(&s.id, "j3", "read", 200)])
        .await
        .unwrap();
    match &out[0] {
        Recorded::Existing(r) => assert_eq!(r.decision_id, "d-j1", "the stored job is unchanged"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(&out[1], Recorded::Inserted(_)));
    let j1 = store.job("j1").await.unwrap().unwrap();
    assert_eq!(j1.state, JobState::Pending);
    assert_eq!(j1.evaluation.gates[0].approvers, 2);
    assert!(store.job("nope").await.unwrap().is_none());
    assert_eq!(store.audit_for_job("j1").await.unwrap().len(), 1);
}
crate::on_both_backends!(decisions, decisions_are_recorded_once);

async fn transitions_are_guarded_and_audited(backend: Backend) {
    let Some((store, _dir)) = open(backend, "store::transitions").await else {
        return;
    };
    let (s, _) = store
        .activate_snapshot(snapshot('a', "p"), "op", 1)
        .await
        .unwrap();
    store
        .record_decisions(vec![record(&s.id, "j1", "deploy", 100)])
        .await
        .unwrap();
    let alice = person("alice", &["reviewer"]);
    fn input(r: &str) -> approval::ApproveInput<'_> {
        approval::ApproveInput {
            reason: r,
            note: "",
            channel: Channel::Grpc,
            expected_job_hash: None,
            expected_snapshot: None,
        }
    }
    let a2 = alice.clone();
    let r = store
        .transition(
            "j1",
            200,
            Box::new(move |r| approval::approve(r, &a2, &input("ok"), 200)),
        )
        .await
        .unwrap();
    assert_eq!(r.version, 2);
    let stored = store.job("j1").await.unwrap().unwrap();
    assert_eq!(stored.approvals.len(), 1);
    assert_eq!(stored.approvals[0].roles, ["reviewer"]);
    // A refusal changes nothing.
    let a3 = alice.clone();
    let err = store
        .transition(
            "j1",
            300,
            Box::new(move |r| approval::approve(r, &a3, &input("again"), 300)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransitionError::Refused(ref r) if r.refusal.reason == gavel::refusal::Reason::AlreadyApproved)
    );
    assert_eq!(store.job("j1").await.unwrap().unwrap().version, 2);
    assert!(matches!(
        store
            .transition("missing", 1, Box::new(|r| approval::expire(r, 1)))
            .await,
        Err(TransitionError::NotFound)
    ));
    // Bind refusals write their audit entry even though nothing else changes.
    let exec = person("executor", &["executor"]);
    let err = store
        .transition(
            "j1",
            500,
            Box::new(move |r| {
                approval::bind(
                    r,
                    &exec,
                    &approval::BindInput {
                        job_hash: "x",
                        snapshot_id: "y",
                        snapshot_revoked: false,
                        require_active: None,
                        bind_id: "b".into(),
                    },
                    500,
                )
            }),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TransitionError::Refused(_)));
    let kinds: Vec<String> = store
        .audit_for_job("j1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["decision", "approval", "bind_refused"]);
}
crate::on_both_backends!(transitions, transitions_are_guarded_and_audited);

async fn listing_and_deadlines(backend: Backend) {
    let Some((store, _dir)) = open(backend, "store::listing").await else {
        return;
    };
    let (s, _) = store
        .activate_snapshot(snapshot('a', "p"), "op", 1)
        .await
        .unwrap();
    let mut batch = Vec::new();
    for i in 0..5 {
        batch.push(record(&s.id, &format!("p{i}"), "deploy", 100 + i));
    }
    batch.push(record(&s.id, "r1", "read", 50));
    store.record_decisions(batch).await.unwrap();
    let pending = store
        .jobs(&JobFilter {
            states: vec![JobState::Pending],
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = pending.iter().map(|r| r.job_id.as_str()).collect();
    assert_eq!(ids, ["p0", "p1", "p2"]);
    let last = pending.last().unwrap();
    let rest = store
        .jobs(&JobFilter {
            states: vec![JobState::Pending],
            limit: 10,
            after: Some((last.created_at, last.job_id.clone())),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rest.len(), 2);
    let all = store
        .jobs(&JobFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.first().unwrap().job_id, "r1", "ordered by creation");
    assert_eq!(all.len(), 6);
    // Deadlines: pending jobs escalate after their 5m SLA; the allowed job
    // must be bound within 5m (300s here) or it expires.
    assert!(store.due(100, 100).await.unwrap().is_empty());
    let mut due = store.due(100 + 6 * 60 * 1000, 100).await.unwrap();
    due.sort();
    assert_eq!(due, ["p0", "p1", "p2", "p3", "p4", "r1"]);
}
crate::on_both_backends!(listing, listing_and_deadlines);

async fn the_audit_log_chains_and_refuses_edits(backend: Backend) {
    let Some((store, _dir)) = open(backend, "store::audit").await else {
        return;
    };
    for i in 0..20 {
        store
            .append_audit(
                AuditEvent {
                    kind: "bind_refused",
                    actor: "x".into(),
                    job_id: format!("j{i}"),
                    snapshot_id: String::new(),
                    body: serde_json::json!({ "i": i, "text": "é€😀" }),
                },
                i,
            )
            .await
            .unwrap();
    }
    assert_eq!(store.chains().await.unwrap(), ["main"]);
    let mut v = ChainVerifier::new("main");
    let mut after = 0;
    loop {
        let page = store.audit_page("main", after, 7).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            v.push(e);
        }
    }
    let report = v.finish();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.entries, 20);
}
crate::on_both_backends!(audit, the_audit_log_chains_and_refuses_edits);

/// Concurrent appends from one replica never fork its chain.
async fn concurrent_appends_keep_one_chain(backend: Backend) {
    let Some((store, _dir)) = open(backend, "store::concurrent_audit").await else {
        return;
    };
    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.append_audit(
                AuditEvent {
                    kind: "bind_refused",
                    actor: "x".into(),
                    job_id: format!("j{i}"),
                    snapshot_id: String::new(),
                    body: serde_json::json!({}),
                },
                i,
            )
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let page = store.audit_page("main", 0, 100).await.unwrap();
    let mut v = ChainVerifier::new("main");
    for e in &page {
        v.push(e);
    }
    let r = v.finish();
    assert!(r.ok && r.entries == 40, "{r:?}");
}
crate::on_both_backends!(concurrent_audit, concurrent_appends_keep_one_chain);
