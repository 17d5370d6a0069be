//! The authorization matrix: every gRPC method, every HTTP route and the
//! page's job actions, called by every role from the job's own tenant and
//! from another one. A call succeeds only where the table below says so;
//! another tenant's caller learns nothing a missing job would not tell.

use super::helpers::*;
use super::tenants::{pay_policy, reload, spawn_tenants, tjob};
use crate::store::Backend;
use gavel::proto::v1 as pb;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use tokio_stream::StreamExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Agent,
    Executor,
    Reviewer,
    Operator,
    Auditor,
    Breakglass,
    Nobody,
}

const ROLES: [Role; 7] = [
    Role::Agent,
    Role::Executor,
    Role::Reviewer,
    Role::Operator,
    Role::Auditor,
    Role::Breakglass,
    Role::Nobody,
];

/// The person holding `role` in `pay` (the jobs' tenant) or in `search`.
fn person(role: Role, same: bool) -> &'static str {
    match (role, same) {
        (Role::Agent, true) => "pay-agent",
        (Role::Agent, false) => "search-agent",
        (Role::Executor, true) => "pay-exec",
        (Role::Executor, false) => "search-exec",
        (Role::Reviewer, true) => "pay-bob",
        (Role::Reviewer, false) => "search-carol",
        (Role::Operator, true) => "pay-op",
        (Role::Operator, false) => "search-op",
        (Role::Auditor, true) => "pay-auditor",
        (Role::Auditor, false) => "search-auditor",
        (Role::Breakglass, true) => "pay-glass",
        (Role::Breakglass, false) => "search-glass",
        (Role::Nobody, true) => "pay-nobody",
        (Role::Nobody, false) => "search-nobody",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Decide,
    Bind,
    ReportOutcome,
    Cancel,
    GetJob,
    WatchJob,
    ListApprovals,
    Approve,
    Reject,
    Override,
    AcknowledgeOverride,
    ReloadPolicy,
    GetPolicy,
    ListSnapshots,
    RevokeSnapshot,
    Explain,
    GetJobHistory,
    VerifyAudit,
    SignCheckpoints,
    ExportAudit,
    GetStats,
}

const OPS: [Op; 21] = [
    Op::Decide,
    Op::Bind,
    Op::ReportOutcome,
    Op::Cancel,
    Op::GetJob,
    Op::WatchJob,
    Op::ListApprovals,
    Op::Approve,
    Op::Reject,
    Op::Override,
    Op::AcknowledgeOverride,
    Op::ReloadPolicy,
    Op::GetPolicy,
    Op::ListSnapshots,
    Op::RevokeSnapshot,
    Op::Explain,
    Op::GetJobHistory,
    Op::VerifyAudit,
    Op::SignCheckpoints,
    Op::ExportAudit,
    Op::GetStats,
];

/// Who may do what to a `pay` job or policy, from inside `pay`. Nobody
/// outside `pay` may do anything to it; verifying the whole log is the
/// one tenant-free operation (it returns counts and hashes, no content),
/// and so is signing the chain heads.
fn allowed(op: Op, role: Role, same: bool) -> bool {
    use Role::*;
    let roles: &[Role] = match op {
        Op::Decide | Op::Cancel => &[Agent],
        Op::Bind | Op::ReportOutcome => &[Executor],
        Op::GetJob | Op::WatchJob => &[Agent, Executor, Reviewer, Operator, Auditor, Breakglass],
        Op::ListApprovals => &[Reviewer, Operator, Auditor, Breakglass],
        Op::Approve | Op::Reject => &[Reviewer],
        Op::Override => &[Breakglass],
        Op::AcknowledgeOverride => &[Reviewer, Operator, Auditor, Breakglass],
        Op::ReloadPolicy | Op::ListSnapshots | Op::RevokeSnapshot => &[Operator],
        Op::GetPolicy => &[Reviewer, Operator, Auditor, Breakglass],
        Op::Explain => &[
            Agent, Executor, Reviewer, Operator, Auditor, Breakglass, Nobody,
        ],
        Op::GetJobHistory | Op::ExportAudit => &[Auditor],
        Op::GetStats => &[Operator, Auditor],
        Op::VerifyAudit | Op::SignCheckpoints => return role == Auditor,
    };
    same && roles.contains(&role)
}

/// What a call came to: it did the thing, or it was refused for a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Done,
    Refused(String),
}

impl Outcome {
    /// A refusal about the job's state (not pending, self-approval...)
    /// comes after the caller was let in: it counts as allowed.
    fn let_in(&self) -> bool {
        match self {
            Outcome::Done => true,
            Outcome::Refused(r) => !matches!(
                r.as_str(),
                "PERMISSION_DENIED" | "NOT_FOUND" | "UNAUTHENTICATED" | "UNKNOWN_TENANT" | "EMPTY"
            ),
        }
    }
}

fn grpc(r: Result<(), tonic::Status>) -> Outcome {
    match r {
        Ok(()) => Outcome::Done,
        Err(s) => Outcome::Refused(reason(&s)),
    }
}

/// What one call is about: a job (its id, hash and bind id) and the
/// `pay` snapshots.
#[derive(Clone)]
struct Target {
    job_id: String,
    hash: String,
    bind_id: String,
    snapshot: String,
    old_snapshot: String,
}

impl Target {
    /// The same call about a job that does not exist.
    fn missing(&self) -> Target {
        Target {
            job_id: format!("{}-missing", self.job_id),
            ..self.clone()
        }
    }
}

struct World {
    app: TestApp,
    snapshot: String,
    old_snapshot: String,
    n: std::cell::Cell<u32>,
}

impl World {
    async fn new(b: Backend) -> Option<World> {
        let app = spawn_tenants(b).await?;
        let mut op = app.as_("pay-op").await;
        let old = reload(&mut op, "pay", pay_policy("old")).await.unwrap();
        let now = reload(&mut op, "pay", pay_policy("now")).await.unwrap();
        Some(World {
            app,
            snapshot: now.id,
            old_snapshot: old.id,
            n: std::cell::Cell::new(0),
        })
    }

    fn fresh_id(&self, what: &str) -> String {
        self.n.set(self.n.get() + 1);
        format!("m-{what}-{}", self.n.get())
    }

    /// A fresh `pay` job in the state `op` acts on.
    async fn target(&self, op: Op) -> Target {
        let id = self.fresh_id(&format!("{op:?}").to_lowercase());
        let mut agent = self.app.as_("pay-agent").await;
        let action = if op == Op::Override || op == Op::AcknowledgeOverride {
            "migrate"
        } else {
            "deploy"
        };
        let mut t = Target {
            job_id: id.clone(),
            hash: String::new(),
            bind_id: "none".into(),
            snapshot: self.snapshot.clone(),
            old_snapshot: self.old_snapshot.clone(),
        };
        if op == Op::Decide {
            return t;
        }
        t.hash = decide(&mut agent, tjob(&id, "pay", action))
            .await
            .unwrap()
            .job_hash;
        match op {
            Op::AcknowledgeOverride => {
                self.app
                    .as_("pay-glass")
                    .await
                    .approval
                    .r#override(pb::OverrideRequest {
                        job_id: id.clone(),
                        reason: "incident".into(),
                        note: String::new(),
                    })
                    .await
                    .unwrap();
            }
            Op::Bind | Op::ReportOutcome => {
                self.app
                    .as_("pay-alice")
                    .await
                    .approval
                    .approve(pb::ApproveRequest {
                        job_id: id.clone(),
                        reason: "checked".into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                if op == Op::ReportOutcome {
                    t.bind_id = self
                        .app
                        .as_("pay-exec")
                        .await
                        .decision
                        .bind(bind_request(&t))
                        .await
                        .unwrap()
                        .into_inner()
                        .bind_id;
                }
            }
            _ => {}
        }
        t
    }
}

fn bind_request(t: &Target) -> pb::BindRequest {
    pb::BindRequest {
        job_id: t.job_id.clone(),
        content: Some(pb::bind_request::Content::JobHash(t.hash.clone())),
        policy_snapshot: t.snapshot.clone(),
    }
}

/// Whether a listing shows something of `pay`'s.
fn shows_pay(text: &str, t: &Target) -> Outcome {
    if text.contains(&t.job_id) || text.contains("cfg:pay:") {
        Outcome::Done
    } else {
        Outcome::Refused("EMPTY".into())
    }
}

/// Whether a stats report counts any of `pay`'s jobs (callers of other
/// tenants get their own tenants' statistics, with none of `pay`'s).
fn stats_show_pay(report: &str) -> Outcome {
    let v: Value = serde_json::from_str(report).unwrap();
    if v["jobs"].as_u64().unwrap() > 0 {
        Outcome::Done
    } else {
        Outcome::Refused("EMPTY".into())
    }
}

/// One gRPC call.
async fn call_grpc(op: Op, c: &mut Clients, t: &Target) -> Outcome {
    let id = t.job_id.clone();
    match op {
        Op::Decide => grpc(decide(c, tjob(&id, "pay", "deploy")).await.map(drop)),
        Op::Bind => grpc(c.decision.bind(bind_request(t)).await.map(drop)),
        Op::ReportOutcome => grpc(
            c.decision
                .report_outcome(pb::ReportOutcomeRequest {
                    job_id: id,
                    bind_id: t.bind_id.clone(),
                    outcome: pb::Outcome::Succeeded as i32,
                    detail: String::new(),
                })
                .await
                .map(drop),
        ),
        Op::Cancel => grpc(
            c.decision
                .cancel(pb::CancelRequest {
                    job_id: id,
                    reason: "no longer needed".into(),
                })
                .await
                .map(drop),
        ),
        Op::GetJob => grpc(
            c.decision
                .get_job(pb::GetJobRequest { job_id: id })
                .await
                .map(drop),
        ),
        Op::WatchJob => match c
            .decision
            .watch_job(pb::WatchJobRequest { job_id: id })
            .await
        {
            Ok(s) => match s.into_inner().next().await {
                Some(Ok(_)) => Outcome::Done,
                Some(Err(s)) => Outcome::Refused(reason(&s)),
                None => Outcome::Refused("EMPTY".into()),
            },
            Err(s) => Outcome::Refused(reason(&s)),
        },
        Op::ListApprovals => match c
            .approval
            .list_approvals(pb::ListApprovalsRequest {
                include_resolved: true,
                page_size: 500,
                ..Default::default()
            })
            .await
        {
            Ok(r) => shows_pay(&format!("{:?}", r.into_inner()), t),
            Err(s) => Outcome::Refused(reason(&s)),
        },
        Op::Approve => grpc(
            c.approval
                .approve(pb::ApproveRequest {
                    job_id: id,
                    reason: "checked".into(),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        Op::Reject => grpc(
            c.approval
                .reject(pb::RejectRequest {
                    job_id: id,
                    reason: "no".into(),
                    note: String::new(),
                })
                .await
                .map(drop),
        ),
        Op::Override => grpc(
            c.approval
                .r#override(pb::OverrideRequest {
                    job_id: id,
                    reason: "incident".into(),
                    note: String::new(),
                })
                .await
                .map(drop),
        ),
        Op::AcknowledgeOverride => grpc(
            c.approval
                .acknowledge_override(pb::AcknowledgeOverrideRequest {
                    job_id: id,
                    note: "seen".into(),
                })
                .await
                .map(drop),
        ),
        Op::ReloadPolicy => grpc(
            c.policy
                .reload_policy(pb::ReloadPolicyRequest {
                    tenant: "pay".into(),
                    source: pay_policy("now"),
                    filename: "pay.yaml".into(),
                    dry_run: true,
                })
                .await
                .map(drop),
        ),
        Op::GetPolicy => grpc(
            c.policy
                .get_policy(pb::GetPolicyRequest {
                    snapshot_id: t.snapshot.clone(),
                    tenant: String::new(),
                })
                .await
                .map(drop),
        ),
        Op::ListSnapshots => match c
            .policy
            .list_snapshots(pb::ListSnapshotsRequest::default())
            .await
        {
            Ok(r) => shows_pay(&format!("{:?}", r.into_inner()), t),
            Err(s) => Outcome::Refused(reason(&s)),
        },
        Op::RevokeSnapshot => grpc(
            c.policy
                .revoke_snapshot(pb::RevokeSnapshotRequest {
                    snapshot_id: t.old_snapshot.clone(),
                    reason: "superseded".into(),
                })
                .await
                .map(drop),
        ),
        Op::Explain => grpc(
            c.policy
                .explain(pb::ExplainRequest {
                    job: Some(tjob("", "pay", "deploy")),
                    principal: String::new(),
                    snapshot_id: String::new(),
                })
                .await
                .map(drop),
        ),
        Op::GetJobHistory => grpc(
            c.audit
                .get_job_history(pb::GetJobHistoryRequest {
                    job_id: id,
                    tenant: String::new(),
                })
                .await
                .map(drop),
        ),
        Op::VerifyAudit => grpc(
            c.audit
                .verify_audit(pb::VerifyAuditRequest::default())
                .await
                .map(drop),
        ),
        Op::SignCheckpoints => grpc(
            c.audit
                .sign_checkpoints(pb::SignCheckpointsRequest {})
                .await
                .map(drop),
        ),
        Op::ExportAudit => match c
            .audit
            .export_audit(pb::ExportAuditRequest::default())
            .await
        {
            Ok(s) => {
                let entries: Vec<_> = s.into_inner().collect().await;
                let pay = entries
                    .iter()
                    .any(|e| e.as_ref().is_ok_and(|e| e.tenant == "pay"));
                if pay {
                    Outcome::Done
                } else {
                    Outcome::Refused("EMPTY".into())
                }
            }
            Err(s) => Outcome::Refused(reason(&s)),
        },
        Op::GetStats => match c
            .audit
            .get_stats(pb::GetStatsRequest {
                window_seconds: 86_400,
                tenant: String::new(),
            })
            .await
        {
            Ok(r) => stats_show_pay(&r.into_inner().report_json),
            Err(s) => Outcome::Refused(reason(&s)),
        },
    }
}

/// The same operation through the HTTP API (`None` for those it does
/// not have: WatchJob, VerifyAudit, SignCheckpoints and ExportAudit are
/// gRPC and CLI only).
async fn call_http(op: Op, who: &str, t: &Target, base: &str) -> Option<Outcome> {
    let id = &t.job_id;
    let (method, path, body): (&str, String, Option<Value>) = match op {
        Op::Decide => (
            "POST",
            "/api/v1/decide".into(),
            Some(
                json!({"job_id": id, "tenant": "pay", "topic": "job.test.deploy", "action": "deploy", "target": "svc-a", "params": {"n": 1}}),
            ),
        ),
        Op::Bind => (
            "POST",
            "/api/v1/bind".into(),
            Some(json!({"job_id": id, "job_hash": t.hash, "policy_snapshot": t.snapshot})),
        ),
        Op::ReportOutcome => (
            "POST",
            format!("/api/v1/jobs/{id}/outcome"),
            Some(json!({"bind_id": t.bind_id, "outcome": "SUCCEEDED"})),
        ),
        Op::Cancel => (
            "POST",
            format!("/api/v1/jobs/{id}/cancel"),
            Some(json!({"reason": "no longer needed"})),
        ),
        Op::GetJob => ("GET", format!("/api/v1/jobs/{id}"), None),
        Op::WatchJob | Op::VerifyAudit | Op::SignCheckpoints | Op::ExportAudit => return None,
        Op::ListApprovals => (
            "GET",
            "/api/v1/approvals?include_resolved=true&page_size=500".into(),
            None,
        ),
        Op::Approve => (
            "POST",
            format!("/api/v1/approvals/{id}/approve"),
            Some(json!({"reason": "checked"})),
        ),
        Op::Reject => (
            "POST",
            format!("/api/v1/approvals/{id}/reject"),
            Some(json!({"reason": "no"})),
        ),
        Op::Override => (
            "POST",
            format!("/api/v1/approvals/{id}/override"),
            Some(json!({"reason": "incident"})),
        ),
        Op::AcknowledgeOverride => (
            "POST",
            format!("/api/v1/approvals/{id}/acknowledge"),
            Some(json!({"note": "seen"})),
        ),
        Op::ReloadPolicy => (
            "POST",
            "/api/v1/policy/reload".into(),
            Some(json!({"tenant": "pay", "source": pay_policy("now"), "dry_run": true})),
        ),
        Op::GetPolicy => (
            "GET",
            format!(
                "/api/v1/policy/snapshots/{}",
                t.snapshot.replace('#', "%23")
            ),
            None,
        ),
        Op::ListSnapshots => ("GET", "/api/v1/policy/snapshots".into(), None),
        Op::RevokeSnapshot => (
            "POST",
            format!(
                "/api/v1/policy/snapshots/{}/revoke",
                t.old_snapshot.replace('#', "%23")
            ),
            Some(json!({"reason": "superseded"})),
        ),
        Op::Explain => (
            "POST",
            "/api/v1/policy/explain".into(),
            Some(
                json!({"job": {"tenant": "pay", "topic": "job.test.deploy", "action": "deploy", "target": "svc-a"}}),
            ),
        ),
        Op::GetJobHistory => ("GET", format!("/api/v1/audit/jobs/{id}"), None),
        Op::GetStats => ("GET", "/api/v1/stats?since=1d".into(), None),
    };
    let client = crate::http_client();
    let url = format!("{base}{path}");
    let mut req = match method {
        "GET" => client.get(url),
        _ => client.post(url),
    }
    .bearer_auth(token(who));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let ok = resp.status().is_success();
    let text = resp.text().await.unwrap();
    Some(if !ok {
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Outcome::Refused(v["error"]["reason"].as_str().unwrap_or("?").to_owned())
    } else if matches!(op, Op::ListApprovals | Op::ListSnapshots) {
        shows_pay(&text, t)
    } else if op == Op::GetStats {
        stats_show_pay(&text)
    } else {
        Outcome::Done
    })
}

/// The page's job page and its actions, with a signed-in session.
async fn call_page(op: Op, who: &str, t: &Target, app: &TestApp) -> Option<Outcome> {
    let action = match op {
        Op::GetJob => None,
        Op::Approve => Some("approve"),
        Op::Reject => Some("reject"),
        Op::AcknowledgeOverride => Some("acknowledge"),
        _ => return None,
    };
    let Ok(session) = app.engine.sign_in(&token(who)).await else {
        // The page signs in approvers and those who oversee them only.
        return Some(Outcome::Refused("PERMISSION_DENIED".into()));
    };
    let base = format!("http://{}/ui/jobs/{}", app.http_addr, t.job_id);
    let client = crate::http_client();
    let cookie = format!("gavel_session={}", session.secret);
    let resp = match action {
        None => client.get(&base).header("cookie", cookie),
        Some(a) => client
            .post(format!("{base}/{a}"))
            .header("cookie", cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                serde_urlencoded::to_string([
                    ("csrf", session.csrf().as_str()),
                    ("reason", "from the page"),
                    ("note", "seen"),
                ])
                .unwrap(),
            ),
    }
    .send()
    .await
    .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    Some(match status {
        200..=399 => Outcome::Done,
        _ => Outcome::Refused(
            ["NOT_FOUND", "PERMISSION_DENIED", "UNAUTHENTICATED"]
                .into_iter()
                .find(|r| text.contains(r))
                .unwrap_or("BUSINESS")
                .to_owned(),
        ),
    })
}

async fn every_door_every_role_both_tenants(b: Backend) {
    let Some(w) = World::new(b).await else {
        return;
    };
    let base = format!("http://{}", w.app.http_addr);
    let mut failures = Vec::new();
    let mut cells = 0;
    let mut doors = BTreeSet::new();
    for op in OPS {
        for role in ROLES {
            for same in [true, false] {
                let who = person(role, same);
                let expect = allowed(op, role, same);
                for door in ["grpc", "http", "page"] {
                    let t = w.target(op).await;
                    let got = match door {
                        "grpc" => Some(call_grpc(op, &mut w.app.as_(who).await, &t).await),
                        "http" => call_http(op, who, &t, &base).await,
                        _ => call_page(op, who, &t, &w.app).await,
                    };
                    let Some(got) = got else { continue };
                    cells += 1;
                    doors.insert(door);
                    if got.let_in() != expect {
                        failures.push(format!(
                            "{door} {op:?} by {who}: expected {}, got {got:?}",
                            if expect { "allowed" } else { "refused" }
                        ));
                        continue;
                    }
                    // Another tenant's caller is told what a missing job
                    // would tell: nothing says the job exists.
                    if !same
                        && door != "page"
                        && !matches!(
                            op,
                            Op::Decide
                                | Op::ListApprovals
                                | Op::ListSnapshots
                                | Op::Explain
                                | Op::ReloadPolicy
                                | Op::VerifyAudit
                                | Op::SignCheckpoints
                                | Op::ExportAudit
                                | Op::GetStats
                                | Op::GetPolicy
                                | Op::RevokeSnapshot
                        )
                    {
                        let m = w.target(op).await.missing();
                        let missing = match door {
                            "grpc" => call_grpc(op, &mut w.app.as_(who).await, &m).await,
                            _ => call_http(op, who, &m, &base).await.unwrap(),
                        };
                        if missing != got {
                            failures.push(format!("{door} {op:?} by {who}: {got:?} for pay's job but {missing:?} for a missing one"));
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(doors.len(), 3);
    assert!(cells >= 21 * 14 * 2, "{cells} cells");
}

crate::on_both_backends!(
    every_door_every_role_both_tenants,
    every_door_every_role_both_tenants
);
