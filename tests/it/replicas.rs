//! Several gavel replicas on one PostgreSQL: real `gavel serve` processes
//! sharing a database, behaving as one service.

use super::helpers::*;
use crate::store::Backend;
use gavel::proto::v1 as pb;
use pb::JobState as S;
use std::process::Command;
use std::time::Duration;
use tokio_stream::StreamExt;

/// The replica tests' policy: the usual one plus a job kind that escalates
/// after one second and expires after three.
fn policy() -> String {
    format!(
        "{POLICY}  - id: quick\n    match: {{ action: [quick] }}\n    decision: require_approval\n    approval: {{ approvers: 1, roles: [reviewer], sla: 1s, timeout: 3s }}\n"
    )
}

/// A replica: one `gavel serve` process with its own `replica_id`.
type Replica = ServeProcess;

fn replica(config: &std::path::Path, id: &str) -> Replica {
    ServeProcess::start(config, &["--replica-id", id], "warn")
}

/// Two replicas on a fresh PostgreSQL database, or `None` when PostgreSQL
/// is unavailable (and not required).
async fn two_replicas(test: &str) -> Option<(Replica, Replica, String, tempfile::TempDir)> {
    let (db_url, _) = crate::store::fresh_url(Backend::Postgres, test).await?;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), policy()).unwrap();
    let mut config = format!(
        "database_url = \"{db_url}\"\npolicy = \"{}\"\nreceipt_key = \"{}\"\nsweep_interval_secs = 1\n",
        dir.path().join("policy.yaml").display(),
        dir.path().join("receipt.key").display(),
    );
    for (name, roles, acts_for) in PEOPLE {
        let q = |v: &[&str]| {
            v.iter()
                .map(|r| format!("\"{r}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        config.push_str(&format!(
            "[[identities]]\nname = \"{name}\"\nroles = [{}]\nacts_for = [{}]\ntokens = [\"{}\"]\n",
            q(roles),
            q(acts_for),
            gavel::identity::token_hash(&token(name))
        ));
    }
    let path = dir.path().join("gavel.toml");
    std::fs::write(&path, config).unwrap();
    let a = replica(&path, "replica-a");
    let b = replica(&path, "replica-b");
    Some((a, b, db_url, dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_decided_on_one_replica_is_approved_and_bound_through_others() {
    let Some((a, b, _, _dir)) = two_replicas("replicas::cross").await else {
        return;
    };
    let d = decide(&mut a.as_("agent-1").await, job("x-1", "deploy", &[]))
        .await
        .unwrap();
    let r = approve(&mut b.as_("alice").await, "x-1", "on b")
        .await
        .unwrap();
    assert_eq!(state(&r), S::Pending);
    let r = approve(&mut a.as_("bob").await, "x-1", "on a")
        .await
        .unwrap();
    assert_eq!(state(&r), S::Approved);
    let bound = bind_hash(
        &mut a.as_("executor").await,
        "x-1",
        &d.job_hash,
        &d.policy_snapshot,
    )
    .await
    .unwrap();
    let who: Vec<&str> = bound
        .approvals
        .iter()
        .map(|x| x.approver.as_str())
        .collect();
    assert_eq!(who, ["alice", "bob"]);
    let seen = job_of(&mut b.as_("agent-1").await, "x-1").await;
    assert_eq!(state(&seen), S::Bound);
    // Both replicas sign receipts with the one shared key.
    let jwks: serde_json::Value = serde_json::from_slice(
        &Command::new(env!("CARGO_BIN_EXE_gavel"))
            .args(["keys", "--key-file"])
            .arg(_dir.path().join("receipt.key"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    gavel::receipt::verify(&bound.receipt, &jwks).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_racing_across_replicas_give_exactly_one_success() {
    let Some((a, b, _, _dir)) = two_replicas("replicas::binds").await else {
        return;
    };
    let d = decide_and_approve(&a, job("race-x", "deploy", &[]), &["alice"]).await;
    approve(&mut b.as_("bob").await, "race-x", "ok")
        .await
        .unwrap();
    let mut executors = Vec::new();
    for i in 0..30 {
        let on = if i % 2 == 0 { &a } else { &b };
        executors.push(on.as_("executor").await);
    }
    assert_eq!(race_binds(executors, &d).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvers_racing_across_replicas_end_consistently() {
    let Some((a, b, _, _dir)) = two_replicas("replicas::slots").await else {
        return;
    };
    decide(&mut a.as_("agent-1").await, job("slot-x", "deploy", &[]))
        .await
        .unwrap();
    approve(&mut a.as_("alice").await, "slot-x", "ok")
        .await
        .unwrap();
    let mut bob = a.as_("bob").await;
    let mut carol = b.as_("carol").await;
    let (x, y) = tokio::join!(
        approve(&mut bob, "slot-x", "ok"),
        approve(&mut carol, "slot-x", "ok")
    );
    let results = [x, y];
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(reason(r), "NOT_PENDING");
    }
    let r = job_of(&mut b.as_("agent-1").await, "slot-x").await;
    assert_eq!(state(&r), S::Approved);
    assert_eq!(r.approvals.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_on_one_replica_reaches_every_replica() {
    let Some((a, b, _, _dir)) = two_replicas("replicas::reload").await else {
        return;
    };
    let mut op_b = b.as_("operator").await;
    let before = op_b
        .policy
        .get_policy(pb::GetPolicyRequest::default())
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    let v2 = policy().replace("deploys need two reviewers", "deploys need two people");
    let reloaded = a
        .as_("operator")
        .await
        .policy
        .reload_policy(pb::ReloadPolicyRequest {
            tenant: Default::default(),
            source: v2,
            filename: "v2.yaml".into(),
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_ne!(reloaded.id, before.id);
    // Replica b switches by itself: its decisions move to the new snapshot.
    let mut agent_b = b.as_("agent-1").await;
    let mut n = 0;
    let d = eventually(
        "replica b decides with the reloaded snapshot",
        Duration::from_secs(30),
        async || {
            n += 1;
            let d = decide(
                &mut agent_b,
                job(&format!("after-reload-{n}"), "deploy", &[]),
            )
            .await
            .unwrap();
            (d.policy_snapshot == reloaded.id).then_some(d)
        },
    )
    .await;
    assert_eq!(d.reason, "deploys need two people");
    for r in [&a, &b] {
        let s = r
            .as_("operator")
            .await
            .policy
            .get_policy(pb::GetPolicyRequest::default())
            .await
            .unwrap()
            .into_inner()
            .snapshot
            .unwrap();
        assert_eq!(s.id, reloaded.id);
        assert_eq!(s.version, 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweepers_on_every_replica_expire_and_escalate_each_job_once() {
    let Some((a, b, db_url, _dir)) = two_replicas("replicas::sweep").await else {
        return;
    };
    let mut agent = a.as_("agent-1").await;
    let ids: Vec<String> = (0..10).map(|i| format!("quick-{i}")).collect();
    // Watch every job through replica b until it is final.
    let mut watchers = Vec::new();
    for id in &ids {
        decide(&mut agent, job(id, "quick", &[])).await.unwrap();
        let mut c = b.as_("agent-1").await;
        let id = id.clone();
        watchers.push(tokio::spawn(async move {
            let mut stream = c
                .decision
                .watch_job(pb::WatchJobRequest { job_id: id })
                .await
                .unwrap()
                .into_inner();
            let mut last = None;
            while let Some(ev) = stream.next().await {
                last = Some(state(ev.unwrap().job.as_ref().unwrap()));
            }
            last
        }));
    }
    for w in watchers {
        // The jobs expire on the replicas' own clocks (real processes): a
        // generous bound only guards against a hang.
        let last = tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("every watched job reached a final state")
            .unwrap();
        assert_eq!(last, Some(S::Expired));
    }
    let mut auditor = a.as_("auditor").await;
    for id in &ids {
        assert_eq!(
            story(&mut auditor, id).await,
            ["decision", "escalation", "expiry"],
            "{id}"
        );
    }
    // Each replica keeps its own chain; verification covers them all.
    let v = auditor
        .audit
        .verify_audit(pb::VerifyAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(v.ok, "{v:?}");
    let chains: Vec<&str> = v.chains.iter().map(|c| c.chain.as_str()).collect();
    assert!(chains.contains(&"replica-a"), "{chains:?}");
    let o = Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args(["audit", "verify", "--database-url", &db_url])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    drop(b);
}

/// The same race without timing: two engines on one database sweep at the
/// same instant, and every job is expired exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sweeps_never_expire_a_job_twice() {
    let Some(a) = spawn_with(Spawn {
        policy: policy(),
        ..Spawn::on(Backend::Postgres)
    })
    .await
    else {
        return;
    };
    let Some(b) = spawn_with(Spawn {
        policy: policy(),
        restart: Some(a.share()),
        replica: "second",
        ..Spawn::on(Backend::Postgres)
    })
    .await
    else {
        return;
    };
    let mut agent = a.as_("agent-1").await;
    for i in 0..25 {
        decide(&mut agent, job(&format!("sw-{i}"), "quick", &[]))
            .await
            .unwrap();
    }
    a.clock.advance_secs(10);
    b.clock.advance_secs(10);
    let (x, y) = tokio::join!(a.engine.sweep(), b.engine.sweep());
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.0 + y.0, 25, "every job expired exactly once: {x:?} {y:?}");
    let (x, y) = tokio::join!(a.engine.sweep(), b.engine.sweep());
    assert_eq!((x.unwrap().0, y.unwrap().0), (0, 0));
    let mut auditor = a.as_("auditor").await;
    for i in 0..25 {
        let n = auditor
            .audit
            .get_job_history(pb::GetJobHistoryRequest {
                tenant: Default::default(),
                job_id: format!("sw-{i}"),
            })
            .await
            .unwrap()
            .into_inner()
            .entries
            .iter()
            .filter(|e| e.kind == "expiry")
            .count();
        assert_eq!(n, 1);
    }
}

/// When PostgreSQL cannot be reached, Decide fails closed with UNAVAILABLE
/// and nothing is written; when it comes back, service resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_fails_closed() {
    use sqlx::Connection;
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    let mut agent = app.as_("agent-1").await;
    decide(&mut agent, job("before", "read", &[]))
        .await
        .unwrap();
    let db = app.db_url.rsplit('/').next().unwrap().to_owned();
    let admin_url = app.db_url.replace(&format!("/{db}"), "/postgres");
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    let cut = |allow: bool| format!("ALTER DATABASE {db} ALLOW_CONNECTIONS {allow}");
    sqlx::query(sqlx::AssertSqlSafe(cut(false)))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    // Termination is asynchronous: wait until the backends are gone.
    let count = format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}'");
    eventually(
        "every connection to the database terminated",
        Duration::from_secs(30),
        async || {
            let left: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count.clone()))
                .fetch_one(&mut admin)
                .await
                .unwrap();
            (left == 0).then_some(())
        },
    )
    .await;

    let refused = decide(&mut agent, job("during", "deploy", &[]))
        .await
        .unwrap_err();
    assert_eq!(
        (reason(&refused), refused.code()),
        ("UNAVAILABLE".into(), tonic::Code::Unavailable)
    );
    let bind = bind_hash(
        &mut app.as_("executor").await,
        "before",
        &"0".repeat(64),
        "x",
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&bind), "UNAVAILABLE");

    sqlx::query(sqlx::AssertSqlSafe(cut(true)))
        .execute(&mut admin)
        .await
        .unwrap();
    let d = decide(&mut agent, job("after", "read", &[])).await.unwrap();
    assert_eq!(d.job_id, "after");
    let gone = agent
        .decision
        .get_job(pb::GetJobRequest {
            job_id: "during".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        reason(&gone),
        "NOT_FOUND",
        "the refused decision left nothing behind"
    );
}
