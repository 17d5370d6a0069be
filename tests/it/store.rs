//! The store conformance suite: written once against the `Store` trait, run
//! against SQLite always and PostgreSQL whenever one can be started.

use gavel::approval::{self, ApproveInput, BindInput, Command, JobState, NotificationKind};
use gavel::audit::ChainVerifier;
use gavel::identity::Identity;
use gavel::job::JobHash;
use gavel::policy::{Channel, Scope, SnapshotId};
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

/// A fresh store with snapshot `a` of policy `p` active in `system`.
async fn open_active(
    backend: Backend,
    test: &str,
) -> Option<(Arc<dyn Store>, Option<tempfile::TempDir>, SnapshotRow)> {
    let (store, dir) = open(backend, test).await?;
    let s = activate_a(store.as_ref()).await;
    Some((store, dir, s))
}

/// Activates snapshot `a` of policy `p` in `system`.
async fn activate_a(store: &dyn Store) -> SnapshotRow {
    store
        .activate_snapshot(&system(), snapshot('a', "p"), "op", 1)
        .await
        .unwrap()
        .snapshot
}

fn snapshot(id_hash: char, name: &str) -> SnapshotRow {
    let loaded = gavel::policy::load(super::helpers::POLICY, "p.yaml").unwrap();
    SnapshotRow {
        id: SnapshotId::parse(&format!(
            "cfg:{name}:policy#sha256:{}",
            id_hash.to_string().repeat(64)
        ))
        .unwrap(),
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
        tenants: Default::default(),
    }
}

/// A decided job under `snapshot`, as Decide would record it.
fn decided(snapshot: &SnapshotId, job_id: &str, action: &str, now: i64) -> approval::Transition {
    let loaded = gavel::policy::load(super::helpers::POLICY, "p.yaml").unwrap();
    let job = gavel::job::Job::from_json(
        format!(r#"{{"job_id":"{job_id}","action":"{action}","topic":"t","params":{{"n":1}}}}"#)
            .as_bytes(),
        &Default::default(),
    )
    .unwrap();
    let eval = loaded.snapshot.policy.evaluate(&job, Some("agent-1"));
    approval::decided(
        approval::NewJob {
            job_id: job_id.into(),
            job_hash: job.hash(),
            canonical_job: job.canonical_json(),
            tenant: String::new(),
            requester: "agent-1".into(),
            snapshot_id: snapshot.clone(),
            decision_id: format!("d-{job_id}"),
            evaluation: eval,
            default_bind_within_secs: 300,
        },
        now,
    )
}

fn approve_as(who: &Identity, reason: &str) -> Command {
    Command::Approve(ApproveInput {
        by: who.clone(),
        reason: reason.into(),
        note: String::new(),
        channel: Channel::Grpc,
        expected_job_hash: None,
        expected_snapshot: None,
    })
}

fn bind_as(who: &Identity, hash: JobHash, snapshot: &str) -> Command {
    Command::Bind(BindInput {
        by: who.clone(),
        job_hash: hash,
        snapshot_id: snapshot.into(),
        snapshot_revoked: false,
        require_active: None,
        bind_id: "b".into(),
    })
}

fn system() -> Scope {
    Scope::system()
}

async fn snapshots_activate_version_and_revoke(backend: Backend) {
    let Some((store, _dir)) = open(backend, "store::snapshots").await else {
        return;
    };
    assert!(store.active_snapshots().await.unwrap().is_empty());
    let activated = store
        .activate_snapshot(&system(), snapshot('a', "p"), "op", 10)
        .await
        .unwrap();
    let a = activated.snapshot;
    assert!(activated.changed);
    assert_eq!(a.version, Some(1));
    assert_eq!(a.activated_by.as_deref(), Some("op"));
    let again = store
        .activate_snapshot(&system(), snapshot('a', "p"), "op", 11)
        .await
        .unwrap();
    assert!(
        !again.changed,
        "activating the active snapshot changes nothing"
    );
    let b = store
        .activate_snapshot(&system(), snapshot('b', "p"), "op", 12)
        .await
        .unwrap()
        .snapshot;
    assert_eq!(b.version, Some(2));
    let c = store
        .activate_snapshot(&system(), snapshot('c', "other"), "op", 13)
        .await
        .unwrap()
        .snapshot;
    assert_eq!(c.version, Some(1), "versions count per policy name");
    // Re-activating an old snapshot keeps its first version.
    let a2 = store
        .activate_snapshot(&system(), snapshot('a', "p"), "op", 14)
        .await
        .unwrap();
    assert!(a2.changed);
    assert_eq!(a2.snapshot.version, Some(1));
    let active = store.active_snapshots().await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!((&active[0].0, &active[0].1), (&system(), &a.id));
    // Each scope has its own active snapshot.
    let tenant = Scope::parse("team-a").unwrap();
    store
        .activate_snapshot(&tenant, snapshot('b', "p"), "op", 15)
        .await
        .unwrap();
    let active = store.active_snapshots().await.unwrap();
    let scopes: Vec<(&str, &SnapshotId)> = active.iter().map(|(s, id)| (s.as_str(), id)).collect();
    assert_eq!(scopes, [("system", &a.id), ("team-a", &b.id)]);
    assert_eq!(store.snapshots(None).await.unwrap().len(), 3);
    assert_eq!(store.snapshots(Some("p")).await.unwrap().len(), 2);
    let r = store
        .revoke_snapshot(b.id.as_str(), "", "op", "bad", 15)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.revoked_at, Some(15));
    let again = store
        .revoke_snapshot(b.id.as_str(), "", "op2", "again", 16)
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
            .revoke_snapshot("cfg:x:policy#sha256:none", "", "op", "r", 17)
            .await
            .unwrap()
            .is_none()
    );
}
crate::on_both_backends!(snapshots, snapshots_activate_version_and_revoke);

async fn decisions_are_recorded_once(backend: Backend) {
    let Some((store, _dir, s)) = open_active(backend, "store::decisions").await else {
        return;
    };
    let out = store
        .record_decisions(vec![
            decided(&s.id, "j1", "deploy", 100),
            decided(&s.id, "j2", "read", 100),
        ])
        .await
        .unwrap();
    assert!(matches!(&out[0], Recorded::Inserted(r) if r.job_id == "j1"));
    let mut dup = decided(&s.id, "j1", "read", 200);
    dup.record.decision_id = "other".into();
    let out = store
        .record_decisions(vec![dup, decided(&s.id, "j3", "read", 200)])
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
    let Some((store, _dir, s)) = open_active(backend, "store::transitions").await else {
        return;
    };
    store
        .record_decisions(vec![decided(&s.id, "j1", "deploy", 100)])
        .await
        .unwrap();
    let alice = person("alice", &["reviewer"]);
    let r = store
        .transition("j1", approve_as(&alice, "ok"), 200)
        .await
        .unwrap();
    assert_eq!(r.version, 2);
    let stored = store.job("j1").await.unwrap().unwrap();
    assert_eq!(stored.approvals.len(), 1);
    assert_eq!(stored.approvals[0].roles, ["reviewer"]);
    // A refusal changes nothing.
    let err = store
        .transition("j1", approve_as(&alice, "again"), 300)
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransitionError::Refused(ref r) if r.refusal.reason == gavel::refusal::Reason::AlreadyApproved)
    );
    assert_eq!(store.job("j1").await.unwrap().unwrap().version, 2);
    assert!(matches!(
        store.transition("missing", Command::Expire, 1).await,
        Err(TransitionError::NotFound)
    ));
    // Bind refusals write their audit entry even though nothing else changes.
    let exec = person("executor", &["executor"]);
    let err = store
        .transition(
            "j1",
            bind_as(&exec, JobHash::parse(&"0".repeat(64)).unwrap(), "y"),
            500,
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
    let Some((store, _dir, s)) = open_active(backend, "store::listing").await else {
        return;
    };
    let mut batch = Vec::new();
    for i in 0..5 {
        batch.push(decided(&s.id, &format!("p{i}"), "deploy", 100 + i));
    }
    batch.push(decided(&s.id, "r1", "read", 50));
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
    // Refused binds of unknown jobs are audited outside any job's record.
    let exec = person("executor-é€😀", &["executor"]);
    for i in 0..20 {
        let hash = JobHash::parse(&format!("{i:064}")).unwrap();
        let refused = store
            .transition(&format!("j{i}"), bind_as(&exec, hash, "s-é€😀"), i)
            .await;
        assert!(matches!(refused, Err(TransitionError::NotFound)));
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
        let exec = person("executor", &["executor"]);
        tasks.push(tokio::spawn(async move {
            let hash = JobHash::parse(&"1".repeat(64)).unwrap();
            s.transition(&format!("j{i}"), bind_as(&exec, hash, "x"), i)
                .await
        }));
    }
    for t in tasks {
        assert!(matches!(t.await.unwrap(), Err(TransitionError::NotFound)));
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

/// On PostgreSQL a replica's writes waiting together share one
/// transaction. When one of them fails there, the others still commit:
/// each runs again in a transaction of its own before anyone is answered,
/// and the chain has no gap where the rolled-back batch was.
#[tokio::test]
async fn on_postgres_a_failing_write_fails_alone_in_its_batch() {
    let test = "store::failing_write";
    let Some((url, _)) = fresh_url(Backend::Postgres, test).await else {
        return;
    };
    let store = gavel::store::open(&url, "main").await.unwrap();
    let s = activate_a(store.as_ref()).await;
    let ids = ["j0", "j1", "poisoned", "j2", "j3"];
    let jobs = ids.iter().map(|id| decided(&s.id, id, "deploy", 100));
    store.record_decisions(jobs.collect()).await.unwrap();
    // Any change to the job `poisoned` is an error in the database.
    let sql = super::helpers::raw_sql;
    sql(&url, "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'poisoned by the test'; END $$")
        .await
        .unwrap();
    sql(&url, "CREATE TRIGGER poison BEFORE UPDATE ON jobs FOR EACH ROW WHEN (NEW.job_id = 'poisoned') EXECUTE FUNCTION poison()")
        .await
        .unwrap();
    let alice = person("alice", &["reviewer"]);
    // This runtime has one thread: polling each approval once queues its
    // write and leaves it waiting for the answer, all before the writer
    // task runs, so the writer takes the five as one batch.
    let mut pending: Vec<_> = ids
        .iter()
        .map(|id| store.transition(id, approve_as(&alice, "ok"), 200))
        .collect();
    let mut early = Vec::new();
    for f in &mut pending {
        let polled = std::future::poll_fn(|cx| std::task::Poll::Ready(f.as_mut().poll(cx))).await;
        early.push(polled.is_ready());
    }
    assert_eq!(
        early, [false; 5],
        "no approval was answered before the writer ran"
    );
    let mut results = Vec::new();
    for f in pending {
        results.push(f.await);
    }
    for (id, result) in ids.iter().zip(&results) {
        match (*id, result) {
            ("poisoned", Err(TransitionError::Store(gavel::store::StoreError::Unavailable(e)))) => {
                assert!(e.contains("poisoned by the test"), "{e}")
            }
            ("poisoned", other) => panic!("the poisoned approval: {other:?}"),
            (_, Ok(record)) => assert_eq!(record.version, 2, "{id}"),
            (_, Err(e)) => panic!("{id} failed with the poisoned one: {e}"),
        }
    }
    assert_eq!(store.job("poisoned").await.unwrap().unwrap().version, 1);
    let page = store.audit_page("main", 0, 100).await.unwrap();
    let mut v = ChainVerifier::new("main");
    page.iter().for_each(|e| v.push(e));
    let report = v.finish();
    // One activation, five decisions, four approvals.
    assert!(report.ok && report.entries == 10, "{report:?}");
}

/// After PostgreSQL restarts, the connection the writer kept is dead. The
/// first writes after the restart still commit: the writer connects again
/// rather than refusing them.
#[tokio::test]
async fn on_postgres_the_first_writes_after_a_restart_commit() {
    let Some(cluster) = super::pg::dedicated("store::restart") else {
        return;
    };
    let url = cluster.fresh_database().await;
    let store = gavel::store::open(&url, "main").await.unwrap();
    let s = activate_a(store.as_ref()).await;
    store
        .record_decisions(vec![decided(&s.id, "j0", "deploy", 100)])
        .await
        .unwrap();
    cluster.stop();
    cluster.start().unwrap();
    let recorded = store
        .record_decisions(vec![decided(&s.id, "j1", "deploy", 200)])
        .await
        .expect("the first decision after the restart");
    assert!(matches!(recorded[..], [Recorded::Inserted(_)]));
    let alice = person("alice", &["reviewer"]);
    let approved = store
        .transition("j0", approve_as(&alice, "ok"), 300)
        .await
        .expect("the first approval after the restart");
    assert_eq!(approved.version, 2);
}

/// Every transition that must be notified writes one outbox message in its
/// own transaction, keyed by job, version and kind; the others write none.
async fn transitions_write_their_outbox_messages(backend: Backend) {
    let Some((store, _dir, s)) = open_active(backend, "store::outbox").await else {
        return;
    };
    // Pending (dep: two reviewers), allowed (read) and a pending one that
    // will be rejected.
    store
        .record_decisions(vec![
            decided(&s.id, "dep", "deploy", 100),
            decided(&s.id, "rd", "read", 100),
            decided(&s.id, "rej", "update", 100),
        ])
        .await
        .unwrap();
    let (alice, bob) = (person("alice", &["reviewer"]), person("bob", &["reviewer"]));
    store
        .transition("dep", approve_as(&alice, "ok"), 200)
        .await
        .unwrap();
    store
        .transition("dep", approve_as(&bob, "ok"), 300)
        .await
        .unwrap();
    store
        .transition(
            "rej",
            Command::Reject {
                by: bob.clone(),
                reason: "no".into(),
                note: String::new(),
            },
            400,
        )
        .await
        .unwrap();
    // A refused transition notifies nothing.
    assert!(
        store
            .transition("dep", approve_as(&alice, "again"), 500)
            .await
            .is_err()
    );
    let rows = store.outbox(100).await.unwrap();
    let got: Vec<(&str, NotificationKind, &str, i64)> = rows
        .iter()
        .map(|m| (m.id.as_str(), m.kind, m.job_id.as_str(), m.job_version))
        .collect();
    assert_eq!(
        got,
        [
            ("dep:1:pending", NotificationKind::Pending, "dep", 1),
            ("rej:1:pending", NotificationKind::Pending, "rej", 1),
            ("dep:3:resolved", NotificationKind::Resolved, "dep", 3),
            ("rej:2:resolved", NotificationKind::Resolved, "rej", 2),
        ]
    );
    let resolved = &rows[2];
    assert_eq!(resolved.state, "pending", "written, not yet delivered");
    assert_eq!(resolved.attempts, 0);
    assert_eq!(
        resolved.body,
        serde_json::json!({ "state": "approved", "actor": "bob" })
    );
    assert_eq!(rows[3].body["state"], "rejected");
    assert_eq!(rows[0].body["actor"], "agent-1", "the requester");
}
crate::on_both_backends!(outbox, transitions_write_their_outbox_messages);

/// The sweep query and a record's effective state agree on when a deadline
/// is reached: not a millisecond before, and at the deadline itself.
async fn deadlines_agree_between_the_sweep_and_the_record(backend: Backend) {
    let Some((store, _dir, s)) = open_active(backend, "store::deadlines").await else {
        return;
    };
    store
        .record_decisions(vec![decided(&s.id, "soon", "read", 1000)])
        .await
        .unwrap();
    let r = store.job("soon").await.unwrap().unwrap();
    let deadline = r.expires_at.unwrap();
    for (now, due) in [
        (deadline - 1, false),
        (deadline, true),
        (deadline + 1, true),
    ] {
        let listed = store
            .due(now, 10)
            .await
            .unwrap()
            .contains(&"soon".to_owned());
        assert_eq!(listed, due, "due() at deadline{:+}", now - deadline);
        assert_eq!(
            r.effective_state(now) == JobState::Expired,
            due,
            "effective_state at deadline{:+}",
            now - deadline
        );
    }
}
crate::on_both_backends!(deadlines, deadlines_agree_between_the_sweep_and_the_record);
