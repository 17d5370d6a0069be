//! The server over real gRPC: every transition and refusal, races,
//! idempotency, authorization, reload, audit and restart.

use super::helpers::*;
use crate::store::Backend;
use gavel::engine::EngineOptions;
use gavel::proto::v1 as pb;
use pb::JobState as S;
use tokio_stream::StreamExt;

async fn allowed_job_binds_once_and_reports_its_outcome(b: Backend) {
    let Some(app) = spawn_app(b).await else {
        return;
    };
    let mut agent = app.as_("agent-1").await;
    let mut exec = app.as_("executor").await;
    let d = decide(&mut agent, job("read-1", "read", &["egress"]))
        .await
        .unwrap();
    assert_eq!(
        pb::Decision::try_from(d.decision).unwrap(),
        pb::Decision::AllowWithConstraints
    );
    assert_eq!(pb::JobState::try_from(d.state).unwrap(), S::Allowed);
    assert_eq!(d.primary_rule, "egress");
    assert!(d.policy_snapshot.starts_with("cfg:test:policy#sha256:"));
    assert_eq!(d.job_hash.len(), 64);
    assert!(!d.decision_id.is_empty());

    let b = bind_hash(&mut exec, "read-1", &d.job_hash, &d.policy_snapshot)
        .await
        .unwrap();
    assert!(!b.bind_id.is_empty());
    assert_eq!(b.job_hash, d.job_hash);
    assert_eq!(
        gavel::canonical::sha256_hex(b.canonical_job.as_bytes()),
        d.job_hash,
        "the canonical job is exactly what was hashed"
    );
    let c = b.constraints.unwrap();
    assert!(c.fields.contains_key("max_runtime_sec"));
    // The signed receipt verifies offline with the server's public key.
    let payload = gavel::receipt::verify(&b.receipt, &app.engine.jwks()).unwrap();
    assert_eq!(payload["job_id"], "read-1");
    assert_eq!(payload["job_hash"], d.job_hash.as_str());
    assert_eq!(payload["policy_snapshot"], d.policy_snapshot.as_str());
    assert_eq!(payload["bind_id"], b.bind_id.as_str());
    assert_eq!(payload["decision"], "allow_with_constraints");
    assert_eq!(payload["constraints"]["max_runtime_sec"], 60);
    let stranger = gavel::receipt::ReceiptSigner::from_seed([1; 32]);
    assert!(gavel::receipt::verify(&b.receipt, &stranger.jwks()).is_err());
    // The same keys over gRPC, for clients that verify what they are given;
    // callers without a token get none.
    let keys = exec
        .decision
        .get_receipt_keys(pb::GetReceiptKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    let served: serde_json::Value = serde_json::from_str(&keys.jwks).unwrap();
    assert_eq!(
        gavel::receipt::verify(&b.receipt, &served).unwrap(),
        payload
    );
    let anonymous = app
        .as_raw(None)
        .await
        .decision
        .get_receipt_keys(pb::GetReceiptKeysRequest {})
        .await
        .unwrap_err();
    assert_eq!(reason(&anonymous), "UNAUTHENTICATED");

    let again = bind_hash(&mut exec, "read-1", &d.job_hash, &d.policy_snapshot)
        .await
        .unwrap_err();
    assert_eq!(reason(&again), "ALREADY_BOUND");
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);

    let done = exec
        .decision
        .report_outcome(pb::ReportOutcomeRequest {
            job_id: "read-1".into(),
            bind_id: b.bind_id.clone(),
            outcome: pb::Outcome::Succeeded as i32,
            detail: "ok".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(state(&done), S::Succeeded);
    let wrong = exec
        .decision
        .report_outcome(pb::ReportOutcomeRequest {
            job_id: "read-1".into(),
            bind_id: b.bind_id,
            outcome: pb::Outcome::Failed as i32,
            detail: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&wrong), "NOT_BOUND");
}

async fn two_distinct_reviewers_approve_then_the_executor_binds(b: Backend) {
    let Some(app) = spawn_app(b).await else {
        return;
    };
    let mut agent = app.as_("agent-1").await;
    let d = decide(&mut agent, job("dep-1", "deploy", &[]))
        .await
        .unwrap();
    assert_eq!(pb::JobState::try_from(d.state).unwrap(), S::Pending);
    assert!(d.approval_required);
    assert_eq!(d.gates.len(), 1);
    assert_eq!(d.gates[0].approvers, 2);
    assert_eq!(d.reason, "deploys need two reviewers");

    let mut exec = app.as_("executor").await;
    let early = bind_hash(&mut exec, "dep-1", &d.job_hash, &d.policy_snapshot)
        .await
        .unwrap_err();
    assert_eq!(reason(&early), "PENDING");

    let r = approve(&mut app.as_("alice").await, "dep-1", "looks fine")
        .await
        .unwrap();
    assert_eq!(state(&r), S::Pending);
    assert_eq!(r.gates[0].filled, 1);
    let r = approve(&mut app.as_("bob").await, "dep-1", "ok")
        .await
        .unwrap();
    assert_eq!(state(&r), S::Approved);
    assert_eq!(r.resolved_by, "bob");
    assert_eq!(r.resolution, "approved");
    assert_eq!(r.approvals.len(), 2);

    let b = bind_hash(&mut exec, "dep-1", &d.job_hash, &d.policy_snapshot)
        .await
        .unwrap();
    let who: Vec<&str> = b.approvals.iter().map(|a| a.approver.as_str()).collect();
    assert_eq!(who, ["alice", "bob"]);
    assert_eq!(b.approvals[0].reason, "looks fine");
    assert_eq!(b.approvals[0].role, "reviewer");
}

async fn approval_refusals_each_have_their_reason(b: Backend) {
    let Some(app) = spawn_app(b).await else {
        return;
    };
    let mut agent1 = app.as_("agent-1").await;
    let d = decide(&mut agent1, job("dep-2", "deploy", &[]))
        .await
        .unwrap();
    let mut alice = app.as_("alice").await;

    let no_reason = approve(&mut alice, "dep-2", "  ").await.unwrap_err();
    assert_eq!(reason(&no_reason), "REASON_REQUIRED");
    assert_eq!(no_reason.code(), tonic::Code::InvalidArgument);

    // The agent's owner acts for it and may not approve its jobs.
    let owner = approve(&mut app.as_("owner-1").await, "dep-2", "mine")
        .await
        .unwrap_err();
    assert_eq!(reason(&owner), "SELF_APPROVAL");
    assert_eq!(owner.code(), tonic::Code::PermissionDenied);

    // A requester who is also a reviewer may not approve their own job.
    let mut hybrid = app.as_("hybrid").await;
    decide(&mut hybrid, job("dep-own", "deploy", &[]))
        .await
        .unwrap();
    let own = approve(&mut hybrid, "dep-own", "mine").await.unwrap_err();
    assert_eq!(reason(&own), "SELF_APPROVAL");

    let wrong_role = approve(&mut app.as_("dave").await, "dep-2", "money")
        .await
        .unwrap_err();
    assert_eq!(reason(&wrong_role), "NOT_ELIGIBLE");

    let stale = alice
        .approval
        .approve(pb::ApproveRequest {
            job_id: "dep-2".into(),
            reason: "ok".into(),
            expected_job_hash: "0".repeat(64),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&stale), "STALE_REVIEW");
    assert_eq!(stale.code(), tonic::Code::FailedPrecondition);
    let stale = alice
        .approval
        .approve(pb::ApproveRequest {
            job_id: "dep-2".into(),
            reason: "ok".into(),
            expected_job_hash: d.job_hash.clone(),
            expected_policy_snapshot: "cfg:test:policy#sha256:".to_owned() + &"1".repeat(64),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&stale), "STALE_REVIEW");

    approve(&mut alice, "dep-2", "ok").await.unwrap();
    let twice = approve(&mut alice, "dep-2", "again").await.unwrap_err();
    assert_eq!(reason(&twice), "ALREADY_APPROVED");

    let missing = approve(&mut alice, "no-such-job", "ok").await.unwrap_err();
    assert_eq!(reason(&missing), "NOT_FOUND");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // A gate that only accepts the web page refuses gRPC approvals.
    decide(&mut agent1, job("ui-1", "update", &["ui-only"]))
        .await
        .unwrap();
    let door = approve(&mut alice, "ui-1", "ok").await.unwrap_err();
    assert_eq!(reason(&door), "CHANNEL_NOT_ALLOWED");
}

async fn one_person_never_fills_two_slots_and_earlier_approvals_move(b: Backend) {
    let Some(app) = spawn_app(b).await else {
        return;
    };
    let mut agent = app.as_("agent-1").await;
    // Two gates: one reviewer (prod) and one finance approver (payment).
    let d = decide(&mut agent, job("pay-1", "update", &["prod", "payment"]))
        .await
        .unwrap();
    assert_eq!(d.gates.len(), 2);
    // alice holds both roles: she fills one slot, not two.
    let r = approve(&mut app.as_("alice").await, "pay-1", "ok")
        .await
        .unwrap();
    assert_eq!(state(&r), S::Pending);
    let filled: u32 = r.gates.iter().map(|g| g.filled).sum();
    assert_eq!(filled, 1);
    // bob is only a reviewer. Greedy filling would have put alice in the
    // reviewer slot and refused bob; gavel moves alice to finance.
    let r = approve(&mut app.as_("bob").await, "pay-1", "ok")
        .await
        .unwrap();
    assert_eq!(state(&r), S::Approved);
    let roles: Vec<(&str, &str)> = r
        .approvals
        .iter()
        .map(|a| (a.approver.as_str(), a.role.as_str()))
        .collect();
    assert_eq!(roles, [("alice", "finance"), ("bob", "reviewer")]);
}

async fn reject_and_cancel_are_final(b: Backend) {
    let Some(app) = spawn_app(b).await else {
        return;
    };
    let mut agent = app.as_("agent-1").await;
    decide(&mut agent, job("rej-1", "deploy", &[]))
        .await
        .unwrap();
    let mut bob = app.as_("bob").await;
    let no_reason = bob
        .approval
        .reject(pb::RejectRequest {
            job_id: "rej-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&no_reason), "REASON_REQUIRED");
    let r = bob
        .approval
        .reject(pb::RejectRequest {
            job_id: "rej-1".into(),
            reason: "no rollback plan".into(),
            note: "INC-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(state(&r), S::Rejected);
    assert_eq!(
        (
            r.resolved_by.as_str(),
            r.resolved_comment.as_str(),
            r.resolution.as_str()
        ),
        ("bob", "no rollback plan", "rejected")
    );
    let late = approve(&mut app.as_("alice").await, "rej-1", "ok")
        .await
        .unwrap_err();
    assert_eq!(reason(&late), "NOT_PENDING");
    let d = job_of(&mut agent, "rej-1").await;
    let b = bind_hash(
        &mut app.as_("executor").await,
        "rej-1",
        &d.job_hash,
        &d.policy_snapshot,
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&b), "REJECTED");

    let c = decide(&mut agent, job("can-1", "deploy", &[]))
        .await
        .unwrap();
    let other = app
        .as_("agent-2")
        .await
        .decision
        .cancel(pb::CancelRequest {
            job_id: "can-1".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&other), "NOT_REQUESTER");
    let r = agent
        .decision
        .cancel(pb::CancelRequest {
            job_id: "can-1".into(),
            reason: "not needed".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(state(&r), S::Cancelled);
    let b = bind_hash(
        &mut app.as_("executor").await,
        "can-1",
        &c.job_hash,
        &c.policy_snapshot,
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&b), "CANCELLED");
}

async fn denies_and_break_glass(b: Backend) {
    let Some(app) = spawn_app(b).await else {
        return;
    };
    let mut agent = app.as_("agent-1").await;
    let mut exec = app.as_("executor").await;
    let d = decide(&mut agent, job("mig-1", "migrate", &[]))
        .await
        .unwrap();
    assert_eq!(pb::JobState::try_from(d.state).unwrap(), S::Denied);
    assert!(d.overridable);
    let b = bind_hash(&mut exec, "mig-1", &d.job_hash, &d.policy_snapshot)
        .await
        .unwrap_err();
    assert_eq!(reason(&b), "DENIED");

    let not_bg = app
        .as_("alice")
        .await
        .approval
        .r#override(pb::OverrideRequest {
            job_id: "mig-1".into(),
            reason: "incident".into(),
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&not_bg), "PERMISSION_DENIED");
    let mut eve = app.as_("eve").await;
    let r = eve
        .approval
        .r#override(pb::OverrideRequest {
            job_id: "mig-1".into(),
            reason: "incident INC-9".into(),
            note: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(state(&r), S::Approved);
    assert!(r.overridden);

    // The override waits for someone else's review.
    let queue = app
        .as_("alice")
        .await
        .approval
        .list_approvals(pb::ListApprovalsRequest {
            unacknowledged_overrides: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(queue.len(), 1);
    let own = eve
        .approval
        .acknowledge_override(pb::AcknowledgeOverrideRequest {
            job_id: "mig-1".into(),
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&own), "SELF_ACKNOWLEDGE");
    let acked = app
        .as_("alice")
        .await
        .approval
        .acknowledge_override(pb::AcknowledgeOverrideRequest {
            job_id: "mig-1".into(),
            note: "reviewed".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(acked.override_acknowledged_by, "alice");
    bind_hash(&mut exec, "mig-1", &d.job_hash, &d.policy_snapshot)
        .await
        .unwrap();

    // A deny that is not overridable stays denied.
    let mut j = job("prod-del", "delete", &[]);
    j.target = "production_db".into();
    decide(&mut agent, j).await.unwrap();
    let hard = eve
        .approval
        .r#override(pb::OverrideRequest {
            job_id: "prod-del".into(),
            reason: "please".into(),
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&hard), "NOT_OVERRIDABLE");
}

async fn deadlines_expire_jobs_even_before_the_sweeper_and_escalate_once(b: Backend) {
    let Some(app) = spawn_app(b).await else {
        return;
    };
    let mut agent = app.as_("agent-1").await;
    let d = decide(&mut agent, job("exp-1", "deploy", &[]))
        .await
        .unwrap();
    // Past the SLA (5m): escalated once.
    app.clock.advance_secs(6 * 60);
    assert_eq!(app.engine.sweep().await.unwrap(), (0, 1));
    assert_eq!(app.engine.sweep().await.unwrap(), (0, 0));
    let r = job_of(&mut agent, "exp-1").await;
    assert!(r.escalated);
    // Past the timeout (10m): expired before the sweeper runs.
    app.clock.advance_secs(5 * 60);
    let r = job_of(&mut agent, "exp-1").await;
    assert_eq!(state(&r), S::Expired);
    let late = approve(&mut app.as_("alice").await, "exp-1", "ok")
        .await
        .unwrap_err();
    assert_eq!(reason(&late), "EXPIRED");
    let b = bind_hash(
        &mut app.as_("executor").await,
        "exp-1",
        &d.job_hash,
        &d.policy_snapshot,
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&b), "EXPIRED");
    assert_eq!(app.engine.sweep().await.unwrap(), (1, 0));
    assert_eq!(
        app.engine.sweep().await.unwrap(),
        (0, 0),
        "never expired twice"
    );

    // Approved but not bound within bind_within (5m): expired.
    decide(&mut agent, job("exp-2", "update", &["prod"]))
        .await
        .unwrap();
    let r = approve(&mut app.as_("alice").await, "exp-2", "ok")
        .await
        .unwrap();
    assert_eq!(state(&r), S::Approved);
    app.clock.advance_secs(5 * 60);
    let r = job_of(&mut agent, "exp-2").await;
    assert_eq!(state(&r), S::Expired);

    let history = app
        .as_("auditor")
        .await
        .audit
        .get_job_history(pb::GetJobHistoryRequest {
            tenant: Default::default(),
            job_id: "exp-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let kinds: Vec<&str> = history.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["decision", "escalation", "bind_refused", "expiry"]);
}

async fn every_bind_refusal_reason(b: Backend) {
    let Some(app) = spawn_with(Spawn {
        options: EngineOptions {
            require_active_snapshot: true,
            ..EngineOptions::default()
        },
        ..Spawn::on(b)
    })
    .await
    else {
        return;
    };
    let mut agent = app.as_("agent-1").await;
    let mut exec = app.as_("executor").await;
    let d = decide(&mut agent, job("b-1", "read", &[])).await.unwrap();
    let nf = bind_hash(&mut exec, "b-none", &d.job_hash, &d.policy_snapshot)
        .await
        .unwrap_err();
    assert_eq!(
        (reason(&nf), nf.code()),
        ("NOT_FOUND".into(), tonic::Code::NotFound)
    );
    let hm = bind_hash(&mut exec, "b-1", &"a".repeat(64), &d.policy_snapshot)
        .await
        .unwrap_err();
    assert_eq!(reason(&hm), "HASH_MISMATCH");
    let sm = bind_hash(&mut exec, "b-1", &d.job_hash, "cfg:x:policy#sha256:00")
        .await
        .unwrap_err();
    assert_eq!(reason(&sm), "SNAPSHOT_MISMATCH");
    let bad = bind_hash(&mut exec, "b-1", "xyz", &d.policy_snapshot)
        .await
        .unwrap_err();
    assert_eq!(
        (reason(&bad), bad.code()),
        ("INVALID_ARGUMENT".into(), tonic::Code::InvalidArgument)
    );

    // Sending the job itself: gavel recomputes the hash.
    let mut changed = job("b-1", "read", &[]);
    changed.params = None;
    let hm = exec
        .decision
        .bind(pb::BindRequest {
            job_id: "b-1".into(),
            content: Some(pb::bind_request::Content::Job(changed)),
            policy_snapshot: d.policy_snapshot.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&hm), "HASH_MISMATCH");

    // A new policy: the old snapshot is stale, then revoked.
    let d2 = decide(&mut agent, job("b-2", "read", &[])).await.unwrap();
    let mut op = app.as_("operator").await;
    let new_policy = POLICY
        .replace("name: test", "name: test\n# v2")
        .replace("reads\n", "reads\n    reason: v2\n");
    op.policy
        .reload_policy(pb::ReloadPolicyRequest {
            tenant: Default::default(),
            source: new_policy,
            filename: "v2.yaml".into(),
            dry_run: false,
        })
        .await
        .unwrap();
    let stale = bind_hash(&mut exec, "b-2", &d2.job_hash, &d2.policy_snapshot)
        .await
        .unwrap_err();
    assert_eq!(reason(&stale), "SNAPSHOT_STALE");
    op.policy
        .revoke_snapshot(pb::RevokeSnapshotRequest {
            snapshot_id: d2.policy_snapshot.clone(),
            reason: "bad rule".into(),
        })
        .await
        .unwrap();
    let revoked = bind_hash(&mut exec, "b-2", &d2.job_hash, &d2.policy_snapshot)
        .await
        .unwrap_err();
    assert_eq!(reason(&revoked), "SNAPSHOT_REVOKED");

    // Refused binds are audited, even for a job that does not exist.
    let history = app
        .as_("auditor")
        .await
        .audit
        .get_job_history(pb::GetJobHistoryRequest {
            tenant: Default::default(),
            job_id: "b-none".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].kind, "bind_refused");
    assert!(history[0].body.contains("NOT_FOUND"));
}

async fn decide_is_idempotent_per_job_id_and_hash(b: Backend) {
    let Some(app) = spawn_app(b).await else {
        return;
    };
    let mut agent = app.as_("agent-1").await;
    let first = decide(&mut agent, job("idem-1", "deploy", &[]))
        .await
        .unwrap();
    assert!(!first.replayed);
    let again = decide(&mut agent, job("idem-1", "deploy", &[]))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.decision_id, first.decision_id);
    assert_eq!(again.job_hash, first.job_hash);
    let other = decide(&mut agent, job("idem-1", "deploy", &["prod"]))
        .await
        .unwrap_err();
    assert_eq!(
        (reason(&other), other.code()),
        ("ALREADY_EXISTS".into(), tonic::Code::AlreadyExists)
    );
    let thief = decide(&mut app.as_("agent-2").await, job("idem-1", "deploy", &[]))
        .await
        .unwrap_err();
    assert_eq!(reason(&thief), "ALREADY_EXISTS");
    let history = app
        .as_("auditor")
        .await
        .audit
        .get_job_history(pb::GetJobHistoryRequest {
            tenant: Default::default(),
            job_id: "idem-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(history.len(), 1, "no second decision was recorded");
    let pending = app
        .as_("alice")
        .await
        .approval
        .list_approvals(pb::ListApprovalsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pending.len(), 1, "no second approval request");

    // A job without an id gets a UUIDv7.
    let anon = decide(&mut agent, job("", "read", &[])).await.unwrap();
    assert_eq!(anon.job_id.len(), 36);
}

async fn fifty_concurrent_binds_give_exactly_one_success(b: Backend) {
    let Some(app) = spawn_app(b).await else {
        return;
    };
    let d = decide_and_approve(&app, job("race-1", "deploy", &[]), &["alice", "bob"]).await;
    let mut executors = Vec::new();
    for _ in 0..50 {
        executors.push(app.as_("executor").await);
    }
    assert_eq!(race_binds(executors, &d).await, 1);
}

async fn approvers_racing_for_the_last_slot_end_consistently(b: Backend) {
    let Some(app) = spawn_app(b).await else {
        return;
    };
    let mut agent = app.as_("agent-1").await;
    decide(&mut agent, job("slot-1", "deploy", &[]))
        .await
        .unwrap();
    approve(&mut app.as_("alice").await, "slot-1", "ok")
        .await
        .unwrap();
    let mut bob = app.as_("bob").await;
    let mut carol = app.as_("carol").await;
    let (a, b) = tokio::join!(
        approve(&mut bob, "slot-1", "ok"),
        approve(&mut carol, "slot-1", "ok")
    );
    let results = [a, b];
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "{results:?}");
    for r in &results {
        if let Err(e) = r {
            assert_eq!(reason(e), "NOT_PENDING");
        }
    }
    let r = job_of(&mut agent, "slot-1").await;
    assert_eq!(state(&r), S::Approved);
    assert_eq!(r.approvals.len(), 2);
}

/// An approval and the expiry sweeper at the deadline's edge: one
/// millisecond before it the approval wins and the sweeper leaves the job
/// alone; at the deadline the job expires and the approval is refused.
/// Each in both orders and at once, so a sweeper and an approver that
/// disagreed about the deadline would show.
async fn an_approval_racing_the_expiry_sweeper_ends_consistently(b: Backend) {
    let Some(app) = spawn_app(b).await else {
        return;
    };
    let mut agent = app.as_("agent-1").await;
    let mut auditor = app.as_("auditor").await;
    for (before, offset) in [(true, -1), (false, 0)] {
        for order in ["approve first", "sweep first", "at once"] {
            let id = format!("exp-race-{}-{}", -offset, order.replace(' ', "-"));
            let d = decide(&mut agent, job(&id, "update", &["prod"]))
                .await
                .unwrap();
            let deadline = d.expires_at.unwrap();
            app.clock
                .set_ms(deadline.seconds * 1000 + i64::from(deadline.nanos) / 1_000_000 + offset);
            let mut alice = app.as_("alice").await;
            let approved = match order {
                "approve first" => {
                    let a = approve(&mut alice, &id, "ok").await;
                    app.engine.sweep().await.unwrap();
                    a
                }
                "sweep first" => {
                    app.engine.sweep().await.unwrap();
                    approve(&mut alice, &id, "ok").await
                }
                _ => {
                    let (a, swept) =
                        tokio::join!(approve(&mut alice, &id, "ok"), app.engine.sweep());
                    swept.unwrap();
                    a
                }
            };
            let r = job_of(&mut agent, &id).await;
            // The SLA (5m) is long past: a sweep before the approval
            // escalates the job once, which is not what is raced here.
            let story: Vec<String> = story(&mut auditor, &id)
                .await
                .into_iter()
                .filter(|k| k != "escalation")
                .collect();
            if before {
                assert_eq!(state(&approved.unwrap()), S::Approved, "{id}");
                assert_eq!(state(&r), S::Approved, "{id}");
                assert_eq!(r.approvals.len(), 1, "{id}");
                assert_eq!(story, ["decision", "approval"], "{id}");
            } else {
                assert_eq!(reason(&approved.unwrap_err()), "EXPIRED", "{id}");
                assert_eq!(state(&r), S::Expired, "{id}");
                assert!(r.approvals.is_empty(), "{id}");
                assert_eq!(story, ["decision", "expiry"], "{id}");
            }
        }
    }
}

async fn watch_streams_every_change_until_the_job_is_final(b: Backend) {
    let Some(app) = spawn_app(b).await else {
        return;
    };
    let mut agent = app.as_("agent-1").await;
    let d = decide(&mut agent, job("w-1", "deploy", &[])).await.unwrap();
    let mut stream = agent
        .decision
        .watch_job(pb::WatchJobRequest {
            job_id: "w-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(state(first.job.as_ref().unwrap()), S::Pending);
    for who in ["alice", "bob"] {
        approve(&mut app.as_(who).await, "w-1", "ok").await.unwrap();
    }
    bind_and_report(&app, &d, pb::Outcome::Failed, "boom").await;
    let mut kinds = Vec::new();
    while let Some(ev) = stream.next().await {
        let ev = ev.unwrap();
        kinds.push((ev.kind.clone(), state(ev.job.as_ref().unwrap())));
    }
    assert_eq!(
        kinds,
        [
            ("approval".to_owned(), S::Pending),
            ("approval".to_owned(), S::Approved),
            ("bind".to_owned(), S::Bound),
            ("outcome".to_owned(), S::Failed),
        ]
    );
}

/// Every RPC: refused without a token, with an unknown token, and with a
/// token lacking its role.
async fn every_rpc_checks_the_token_and_the_role(b: Backend) {
    let Some(app) = spawn_app(b).await else {
        return;
    };
    // A job to talk about.
    decide(&mut app.as_("agent-1").await, job("auth-1", "deploy", &[]))
        .await
        .unwrap();

    async fn all_calls(c: &mut Clients) -> Vec<(&'static str, tonic::Status)> {
        let mut out = Vec::new();
        macro_rules! call {
            ($name:expr, $e:expr) => {
                match $e.await {
                    Ok(_) => {}
                    Err(s) => out.push(($name, s)),
                }
            };
        }
        call!(
            "Decide",
            c.decision.decide(pb::DecideRequest {
                job: Some(job("auth-x", "read", &[]))
            })
        );
        call!(
            "Bind",
            c.decision.bind(pb::BindRequest {
                job_id: "auth-1".into(),
                content: Some(pb::bind_request::Content::JobHash("0".repeat(64))),
                policy_snapshot: String::new()
            })
        );
        call!(
            "ReportOutcome",
            c.decision.report_outcome(pb::ReportOutcomeRequest {
                job_id: "auth-1".into(),
                bind_id: "x".into(),
                outcome: 1,
                detail: String::new()
            })
        );
        call!(
            "Cancel",
            c.decision.cancel(pb::CancelRequest {
                job_id: "auth-1".into(),
                reason: String::new()
            })
        );
        call!(
            "GetJob",
            c.decision.get_job(pb::GetJobRequest {
                job_id: "auth-1".into()
            })
        );
        call!(
            "WatchJob",
            c.decision.watch_job(pb::WatchJobRequest {
                job_id: "auth-1".into()
            })
        );
        call!(
            "ListApprovals",
            c.approval
                .list_approvals(pb::ListApprovalsRequest::default())
        );
        call!(
            "Approve",
            c.approval.approve(pb::ApproveRequest {
                job_id: "auth-1".into(),
                reason: "r".into(),
                ..Default::default()
            })
        );
        call!(
            "Reject",
            c.approval.reject(pb::RejectRequest {
                job_id: "auth-1".into(),
                reason: "r".into(),
                note: String::new()
            })
        );
        call!(
            "Override",
            c.approval.r#override(pb::OverrideRequest {
                job_id: "auth-1".into(),
                reason: "r".into(),
                note: String::new()
            })
        );
        call!(
            "AcknowledgeOverride",
            c.approval
                .acknowledge_override(pb::AcknowledgeOverrideRequest {
                    job_id: "auth-1".into(),
                    note: String::new()
                })
        );
        call!(
            "ReloadPolicy",
            c.policy.reload_policy(pb::ReloadPolicyRequest {
                tenant: Default::default(),
                source: POLICY.into(),
                filename: String::new(),
                dry_run: true
            })
        );
        call!(
            "GetPolicy",
            c.policy.get_policy(pb::GetPolicyRequest::default())
        );
        call!(
            "ListSnapshots",
            c.policy.list_snapshots(pb::ListSnapshotsRequest::default())
        );
        call!(
            "RevokeSnapshot",
            c.policy.revoke_snapshot(pb::RevokeSnapshotRequest {
                snapshot_id: "cfg:x:policy#sha256:".to_owned() + &"0".repeat(64),
                reason: "r".into()
            })
        );
        call!(
            "Explain",
            c.policy.explain(pb::ExplainRequest {
                job: Some(job("", "read", &[])),
                principal: String::new(),
                snapshot_id: String::new()
            })
        );
        call!(
            "GetJobHistory",
            c.audit.get_job_history(pb::GetJobHistoryRequest {
                tenant: Default::default(),
                job_id: "auth-1".into()
            })
        );
        call!(
            "VerifyAudit",
            c.audit.verify_audit(pb::VerifyAuditRequest::default())
        );
        call!(
            "ExportAudit",
            c.audit.export_audit(pb::ExportAuditRequest::default())
        );
        out
    }

    for token in [None, Some("not-a-real-token".to_owned())] {
        let mut c = app.as_raw(token.clone()).await;
        let refused = all_calls(&mut c).await;
        assert_eq!(refused.len(), 19, "{token:?}: every RPC refused");
        for (name, s) in refused {
            assert_eq!(
                s.code(),
                tonic::Code::Unauthenticated,
                "{name} with {token:?}: {s:?}"
            );
            assert_eq!(reason(&s), "UNAUTHENTICATED");
        }
    }

    // `nobody` holds no role: everything but Explain is refused for permissions.
    let mut c = app.as_("nobody").await;
    let refused = all_calls(&mut c).await;
    let names: Vec<&str> = refused.iter().map(|(n, _)| *n).collect();
    assert!(
        !names.contains(&"Explain"),
        "any authenticated caller may explain"
    );
    assert_eq!(refused.len(), 18, "{names:?}");
    for (name, s) in &refused {
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{name}: {s:?}");
    }

    // Each role reaches its own RPCs only.
    let mut agent = app.as_("agent-2").await;
    let s = agent
        .decision
        .get_job(pb::GetJobRequest {
            job_id: "auth-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        reason(&s),
        "PERMISSION_DENIED",
        "agents see only their own jobs"
    );
    let s = agent
        .audit
        .verify_audit(pb::VerifyAuditRequest::default())
        .await
        .unwrap_err();
    assert_eq!(reason(&s), "PERMISSION_DENIED");
    let mut exec = app.as_("executor").await;
    let s = decide(&mut exec, job("e-1", "read", &[]))
        .await
        .unwrap_err();
    assert_eq!(reason(&s), "PERMISSION_DENIED");
    let s = app
        .as_("alice")
        .await
        .policy
        .reload_policy(pb::ReloadPolicyRequest {
            tenant: Default::default(),
            source: POLICY.into(),
            filename: String::new(),
            dry_run: true,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&s), "PERMISSION_DENIED");
    let s = app
        .as_("operator")
        .await
        .audit
        .verify_audit(pb::VerifyAuditRequest::default())
        .await
        .unwrap_err();
    assert_eq!(reason(&s), "PERMISSION_DENIED");
}

async fn a_failed_reload_changes_nothing(b: Backend) {
    let Some(app) = spawn_app(b).await else {
        return;
    };
    let mut op = app.as_("operator").await;
    let mut agent = app.as_("agent-1").await;
    let before = op
        .policy
        .get_policy(pb::GetPolicyRequest::default())
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert!(before.active);
    assert_eq!(before.version, 1);
    assert_eq!(before.source, POLICY);
    let d1 = decide(&mut agent, job("rl-1", "deploy", &[]))
        .await
        .unwrap();

    let broken = POLICY.replace("decision: allow\n", "decision: alow\n");
    let err = op
        .policy
        .reload_policy(pb::ReloadPolicyRequest {
            tenant: Default::default(),
            source: broken,
            filename: "broken.yaml".into(),
            dry_run: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (reason(&err), err.code()),
        ("POLICY_INVALID".into(), tonic::Code::InvalidArgument)
    );
    assert!(err.message().contains("broken.yaml:"), "{}", err.message());
    assert!(
        err.message().contains("unknown decision `alow`"),
        "{}",
        err.message()
    );

    // A gate nobody configured can fill is refused too, naming the gate.
    let impossible = POLICY.replace(
        "approvers: 2, roles: [reviewer]",
        "approvers: 9, roles: [reviewer]",
    );
    let err = op
        .policy
        .reload_policy(pb::ReloadPolicyRequest {
            tenant: Default::default(),
            source: impossible,
            filename: "p.yaml".into(),
            dry_run: false,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "GATE_UNSATISFIABLE");
    assert!(
        err.message().contains("rule `deploys`"),
        "{}",
        err.message()
    );

    let after = op
        .policy
        .get_policy(pb::GetPolicyRequest::default())
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(after.id, before.id);
    let d2 = decide(&mut agent, job("rl-2", "deploy", &[]))
        .await
        .unwrap();
    assert_eq!(d2.policy_snapshot, d1.policy_snapshot);
    assert_eq!(d2.primary_rule, d1.primary_rule);

    // A dry run validates without activating.
    let v2 = POLICY.replace("deploys need two reviewers", "deploys need two people");
    let dry = op
        .policy
        .reload_policy(pb::ReloadPolicyRequest {
            tenant: Default::default(),
            source: v2.clone(),
            filename: "v2.yaml".into(),
            dry_run: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!dry.activated);
    assert_ne!(dry.snapshot.as_ref().unwrap().id, before.id);
    assert_eq!(
        op.policy
            .get_policy(pb::GetPolicyRequest::default())
            .await
            .unwrap()
            .into_inner()
            .snapshot
            .unwrap()
            .id,
        before.id
    );
    // A real reload activates at once, with the next version number.
    let live = op
        .policy
        .reload_policy(pb::ReloadPolicyRequest {
            tenant: Default::default(),
            source: v2,
            filename: "v2.yaml".into(),
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(live.activated && !live.unchanged);
    assert_eq!(live.snapshot.as_ref().unwrap().version, 2);
    let d3 = decide(&mut agent, job("rl-3", "deploy", &[]))
        .await
        .unwrap();
    assert_eq!(d3.policy_snapshot, live.snapshot.unwrap().id);
    assert_eq!(d3.reason, "deploys need two people");
    // Reloading the same policy again changes nothing.
    let same = op
        .policy
        .reload_policy(pb::ReloadPolicyRequest {
            tenant: Default::default(),
            source: POLICY.replace("deploys need two reviewers", "deploys need two people"),
            filename: String::new(),
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(same.unchanged);
    let list = op
        .policy
        .list_snapshots(pb::ListSnapshotsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .snapshots;
    assert_eq!(list.len(), 2);
    // The old snapshot is kept, with its source, and can be fetched by id.
    let old = op
        .policy
        .get_policy(pb::GetPolicyRequest {
            tenant: Default::default(),
            snapshot_id: before.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert!(!old.active);
    assert_eq!(old.source, POLICY);
    // Explain against the old snapshot by id.
    let x = app
        .as_("alice")
        .await
        .policy
        .explain(pb::ExplainRequest {
            job: Some(job("", "deploy", &[])),
            principal: String::new(),
            snapshot_id: before.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(x.decision.unwrap().reason, "deploys need two reviewers");
    assert!(
        x.rules
            .iter()
            .any(|r| r.rule == "reads" && !r.matched && r.failures[0].matcher == "action")
    );
}

async fn audit_verify_finds_a_tampered_row_and_job_history_tells_the_story(b: Backend) {
    let Some(app) = spawn_app(b).await else {
        return;
    };
    full_cycle(&app, job("aud-1", "deploy", &[]), &["alice", "bob"]).await;

    let mut auditor = app.as_("auditor").await;
    let story = auditor
        .audit
        .get_job_history(pb::GetJobHistoryRequest {
            tenant: Default::default(),
            job_id: "aud-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let kinds: Vec<(&str, &str)> = story
        .iter()
        .map(|e| (e.kind.as_str(), e.actor.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("decision", "agent-1"),
            ("approval", "alice"),
            ("approval", "bob"),
            ("bind", "executor"),
            ("outcome", "executor")
        ]
    );
    let v = auditor
        .audit
        .verify_audit(pb::VerifyAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(v.ok, "{v:?}");
    assert!(
        v.entries_checked >= 6,
        "the policy load and five job entries"
    );

    // The database refuses edits to the log...
    let err = raw_sql(
        &app.db_url,
        "UPDATE audit SET actor = 'mallory' WHERE kind = 'approval'",
    )
    .await
    .unwrap_err();
    assert!(err.contains("append-only"), "{err}");
    let err = raw_sql(&app.db_url, "DELETE FROM audit").await.unwrap_err();
    assert!(err.contains("append-only"), "{err}");
    // ...and when someone with database access drops the trigger, verify names the entry.
    let drop = match app.backend {
        Backend::Sqlite => "DROP TRIGGER audit_no_update",
        Backend::Postgres => "DROP TRIGGER audit_no_update ON audit",
    };
    raw_sql(&app.db_url, drop).await.unwrap();
    let changed = raw_sql(
        &app.db_url,
        "UPDATE audit SET actor = 'mallory' WHERE job_id = 'aud-1' AND kind = 'approval' AND actor = 'bob'",
    )
    .await
    .unwrap();
    assert_eq!(changed, 1);
    let bad_seq = story.iter().find(|e| e.actor == "bob").unwrap().seq;
    let v = auditor
        .audit
        .verify_audit(pb::VerifyAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(!v.ok);
    assert_eq!(v.chains[0].first_bad_seq, bad_seq);
    assert!(
        v.chains[0].problem.contains("modified"),
        "{}",
        v.chains[0].problem
    );

    // The command line says the same, straight from the database file.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args(["audit", "verify", "--database-url", &app.db_url])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!("chain main: TAMPERED at seq {bad_seq}: ")),
        "{text}"
    );

    // Export streams every entry, in order.
    let mut stream = auditor
        .audit
        .export_audit(pb::ExportAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut seqs = Vec::new();
    while let Some(e) = stream.next().await {
        seqs.push(e.unwrap().seq);
    }
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

async fn a_restarted_server_keeps_every_state(backend: Backend) {
    let b = backend;
    let Some(app) = spawn_app(b).await else {
        return;
    };
    let mut agent = app.as_("agent-1").await;
    let pending = decide(&mut agent, job("rs-1", "deploy", &[]))
        .await
        .unwrap();
    approve(&mut app.as_("alice").await, "rs-1", "ok")
        .await
        .unwrap();
    let allowed = decide(&mut agent, job("rs-2", "read", &[])).await.unwrap();
    let b = bind_hash(
        &mut app.as_("executor").await,
        "rs-2",
        &allowed.job_hash,
        &allowed.policy_snapshot,
    )
    .await
    .unwrap();
    let clock_ms = app.clock.now_ms_for_test();
    let restart = app.stop().await;

    let Some(app) = spawn_with(Spawn {
        restart: Some(restart),
        clock_ms,
        ..Spawn::on(backend)
    })
    .await
    else {
        return;
    };
    let mut agent = app.as_("agent-1").await;
    let r = job_of(&mut agent, "rs-1").await;
    assert_eq!(state(&r), S::Pending);
    assert_eq!(r.approvals.len(), 1);
    assert_eq!(r.policy_snapshot, pending.policy_snapshot);
    let r = job_of(&mut agent, "rs-2").await;
    assert_eq!(state(&r), S::Bound);
    assert_eq!(r.bind_id, b.bind_id);
    // The approval continues where it stopped, and binds once.
    let r = approve(&mut app.as_("bob").await, "rs-1", "ok")
        .await
        .unwrap();
    assert_eq!(state(&r), S::Approved);
    let again = bind_hash(
        &mut app.as_("executor").await,
        "rs-2",
        &allowed.job_hash,
        &allowed.policy_snapshot,
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&again), "ALREADY_BOUND");
    let v = app
        .as_("auditor")
        .await
        .audit
        .verify_audit(pb::VerifyAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(v.ok);
}

async fn the_health_check_reports_serving(b: Backend) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let Some(app) = spawn_app(b).await else {
        return;
    };
    let mut health = HealthClient::new(app.channel().await);
    for service in [
        "",
        "gavel.v1.DecisionService",
        "gavel.v1.ApprovalService",
        "gavel.v1.PolicyService",
        "gavel.v1.AuditService",
    ] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
    }
}

async fn the_approval_queue_lists_what_each_approver_may_act_on(b: Backend) {
    let Some(app) = spawn_app(b).await else {
        return;
    };
    let mut agent = app.as_("agent-1").await;
    decide(&mut agent, job("q-1", "deploy", &[])).await.unwrap();
    decide(&mut agent, job("q-2", "update", &["payment"]))
        .await
        .unwrap();
    decide(&mut agent, job("q-3", "read", &[])).await.unwrap();
    let mut alice = app.as_("alice").await;
    let all = alice
        .approval
        .list_approvals(pb::ListApprovalsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    let ids: Vec<&str> = all
        .iter()
        .map(|r| r.job.as_ref().unwrap().job_id.as_str())
        .collect();
    assert_eq!(ids, ["q-1", "q-2"], "only jobs waiting for approval");
    let mut bob = app.as_("bob").await;
    let mine = bob
        .approval
        .list_approvals(pb::ListApprovalsRequest {
            actionable_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    let ids: Vec<&str> = mine
        .iter()
        .map(|r| r.job.as_ref().unwrap().job_id.as_str())
        .collect();
    assert_eq!(ids, ["q-1"], "bob is no finance approver");
    approve(&mut bob, "q-1", "ok").await.unwrap();
    let mine = bob
        .approval
        .list_approvals(pb::ListApprovalsRequest {
            actionable_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(mine.is_empty(), "bob already approved q-1");
    // Paging and resolved history.
    approve(&mut alice, "q-1", "ok").await.unwrap();
    let page = alice
        .approval
        .list_approvals(pb::ListApprovalsRequest {
            include_resolved: true,
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.items.len(), 2);
    assert!(!page.next_page_token.is_empty());
    let rest = alice
        .approval
        .list_approvals(pb::ListApprovalsRequest {
            include_resolved: true,
            page_size: 2,
            page_token: page.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.items[0].job.as_ref().unwrap().job_id, "q-3");
    assert_eq!(page.items[0].resolved_by, "alice");
    assert_eq!(page.items[0].resolution, "approved");
}

/// Every change someone must hear about lands in the outbox, in the same
/// transaction as the change: a job waiting, escalated, expired, resolved
/// or overridden. Nothing else does.
async fn notable_changes_are_written_to_the_outbox(b: Backend) {
    let Some(app) = spawn_app(b).await else {
        return;
    };
    let mut agent = app.as_("agent-1").await;
    decide(&mut agent, job("ob-wait", "update", &["prod"]))
        .await
        .unwrap();
    decide(&mut agent, job("ob-glass", "update", &["prod"]))
        .await
        .unwrap();
    decide(&mut agent, job("ob-read", "read", &[]))
        .await
        .unwrap();
    full_cycle(&app, job("ob-done", "deploy", &[]), &["alice", "bob"]).await;
    app.as_("eve")
        .await
        .approval
        .r#override(pb::OverrideRequest {
            job_id: "ob-glass".into(),
            reason: "incident 42".into(),
            note: String::new(),
        })
        .await
        .unwrap();
    app.clock.advance_secs(6 * 60);
    app.engine.sweep().await.unwrap();
    app.clock.advance_secs(5 * 60);
    app.engine.sweep().await.unwrap();

    let store = gavel::store::open(&app.db_url, "reader").await.unwrap();
    let mut ids: Vec<String> = store
        .outbox(100)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "ob-done:1:pending",
            "ob-done:3:resolved",
            "ob-glass:1:pending",
            "ob-glass:2:overridden",
            "ob-glass:3:expired",
            "ob-wait:1:pending",
            "ob-wait:2:escalated",
            "ob-wait:3:expired",
        ],
        "the allowed read (and its expiry), approvals short of the last, the bind and the outcome notify nobody"
    );
}

/// Snapshots page through the engine; a hostile page token is refused or
/// gives an empty last page, never an overflow.
async fn snapshot_pages_survive_hostile_tokens(b: Backend) {
    let Some(app) = spawn_app(b).await else {
        return;
    };
    let mut op = app.as_("operator").await;
    for n in 1..=3 {
        op.policy
            .reload_policy(pb::ReloadPolicyRequest {
                tenant: Default::default(),
                source: POLICY.replace("deploys need two reviewers", &format!("deploys, take {n}")),
                filename: format!("v{n}.yaml"),
                dry_run: false,
            })
            .await
            .unwrap();
    }
    let list = |size: u32, token: String| pb::ListSnapshotsRequest {
        page_size: size,
        page_token: token,
        ..Default::default()
    };
    let first = op
        .policy
        .list_snapshots(list(3, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.snapshots.len(), 3);
    assert_eq!(first.next_page_token, "3");
    let last = op
        .policy
        .list_snapshots(list(3, first.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(last.snapshots.len(), 1, "four snapshots in all");
    assert!(last.next_page_token.is_empty());
    // Past the end, at the very end of usize, and with the largest page.
    for token in ["4".to_owned(), usize::MAX.to_string()] {
        let page = op
            .policy
            .list_snapshots(list(u32::MAX, token.clone()))
            .await
            .unwrap()
            .into_inner();
        assert!(page.snapshots.is_empty(), "{token}");
        assert!(page.next_page_token.is_empty(), "{token}");
    }
    for token in ["-1", "x", "18446744073709551616"] {
        let e = op
            .policy
            .list_snapshots(list(1, token.into()))
            .await
            .unwrap_err();
        assert_eq!(reason(&e), "INVALID_ARGUMENT", "{token}");
    }
    let mut alice = app.as_("alice").await;
    for token in ["1:", "99999999999999999999:x", "no-colon"] {
        let e = alice
            .approval
            .list_approvals(pb::ListApprovalsRequest {
                page_token: token.into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .err();
        // A well-formed cursor past every job is an empty page; a malformed
        // one is refused.
        match token {
            "1:" => assert!(e.is_none()),
            _ => assert_eq!(reason(&e.unwrap()), "INVALID_ARGUMENT", "{token}"),
        }
    }
}

async fn reflection_lists_every_service(b: Backend) {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let Some(app) = spawn_app(b).await else {
        return;
    };
    let mut client = ServerReflectionClient::new(app.channel().await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::once(req))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "gavel.v1.DecisionService",
        "gavel.v1.ApprovalService",
        "gavel.v1.PolicyService",
        "gavel.v1.AuditService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
}

crate::on_both_backends!(
    allowed_job_binds_once_and_reports_its_outcome,
    allowed_job_binds_once_and_reports_its_outcome
);
crate::on_both_backends!(
    two_distinct_reviewers_approve_then_the_executor_binds,
    two_distinct_reviewers_approve_then_the_executor_binds
);
crate::on_both_backends!(
    approval_refusals_each_have_their_reason,
    approval_refusals_each_have_their_reason
);
crate::on_both_backends!(
    one_person_never_fills_two_slots_and_earlier_approvals_move,
    one_person_never_fills_two_slots_and_earlier_approvals_move
);
crate::on_both_backends!(reject_and_cancel_are_final, reject_and_cancel_are_final);
crate::on_both_backends!(denies_and_break_glass, denies_and_break_glass);
crate::on_both_backends!(
    deadlines_expire_jobs_even_before_the_sweeper_and_escalate_once,
    deadlines_expire_jobs_even_before_the_sweeper_and_escalate_once
);
crate::on_both_backends!(every_bind_refusal_reason, every_bind_refusal_reason);
crate::on_both_backends!(
    decide_is_idempotent_per_job_id_and_hash,
    decide_is_idempotent_per_job_id_and_hash
);
crate::on_both_backends!(
    fifty_concurrent_binds_give_exactly_one_success,
    fifty_concurrent_binds_give_exactly_one_success
);
crate::on_both_backends!(
    approvers_racing_for_the_last_slot_end_consistently,
    approvers_racing_for_the_last_slot_end_consistently
);
crate::on_both_backends!(
    an_approval_racing_the_expiry_sweeper_ends_consistently,
    an_approval_racing_the_expiry_sweeper_ends_consistently
);
crate::on_both_backends!(
    watch_streams_every_change_until_the_job_is_final,
    watch_streams_every_change_until_the_job_is_final
);
crate::on_both_backends!(
    every_rpc_checks_the_token_and_the_role,
    every_rpc_checks_the_token_and_the_role
);
crate::on_both_backends!(
    a_failed_reload_changes_nothing,
    a_failed_reload_changes_nothing
);
crate::on_both_backends!(
    audit_verify_finds_a_tampered_row_and_job_history_tells_the_story,
    audit_verify_finds_a_tampered_row_and_job_history_tells_the_story
);
crate::on_both_backends!(
    a_restarted_server_keeps_every_state,
    a_restarted_server_keeps_every_state
);
crate::on_both_backends!(
    the_health_check_reports_serving,
    the_health_check_reports_serving
);
crate::on_both_backends!(
    the_approval_queue_lists_what_each_approver_may_act_on,
    the_approval_queue_lists_what_each_approver_may_act_on
);
crate::on_both_backends!(
    reflection_lists_every_service,
    reflection_lists_every_service
);
crate::on_both_backends!(
    snapshot_pages_survive_hostile_tokens,
    snapshot_pages_survive_hostile_tokens
);
crate::on_both_backends!(
    notable_changes_are_written_to_the_outbox,
    notable_changes_are_written_to_the_outbox
);
