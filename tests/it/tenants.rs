//! Tenants: each with its own policy, people and audit story, on one
//! installation. The people and tenants come from a real `gavel.toml`
//! text, parsed as `gavel serve` parses it.

use super::helpers::*;
use crate::store::Backend;
use gavel::proto::v1 as pb;
use std::time::Duration;
use tokio_stream::StreamExt;

/// The installation: `pay` (its own policy, no fallback), `search` (the
/// system policy until it has its own) and `ops` (neither).
pub fn config() -> gavel::config::Config {
    let people: &[(&str, &str, &str)] = &[
        ("pay-agent", "agent", r#"["pay"]"#),
        ("search-agent", "agent", r#"["search", "ops"]"#),
        ("pay-alice", "reviewer", r#"["pay"]"#),
        ("pay-bob", "reviewer", r#"["pay"]"#),
        ("search-carol", "reviewer", r#"["search"]"#),
        ("pay-exec", "executor", r#"["pay"]"#),
        ("search-exec", "executor", r#"["search"]"#),
        ("pay-op", "operator", r#"["pay"]"#),
        ("search-op", "operator", r#"["search"]"#),
        ("root-op", "operator", r#"["*"]"#),
        ("pay-auditor", "auditor", r#"["pay"]"#),
        ("search-auditor", "auditor", r#"["search"]"#),
        ("root-auditor", "auditor", r#"["*"]"#),
        ("pay-glass", "breakglass", r#"["pay"]"#),
        ("search-glass", "breakglass", r#"["search"]"#),
        ("pay-nobody", "", r#"["pay"]"#),
        ("search-nobody", "", r#"["search"]"#),
        // The system policy's `payment` rule needs a finance approver.
        ("root-dave", "finance", r#"["*"]"#),
    ];
    let mut text =
        String::from("[tenants.pay]\n[tenants.search]\nsystem_fallback = true\n[tenants.ops]\n");
    for (name, role, tenants) in people {
        let roles = if role.is_empty() {
            String::new()
        } else {
            format!("\"{role}\"")
        };
        text.push_str(&format!(
            "[[identities]]\nname = \"{name}\"\nroles = [{roles}]\ntenants = {tenants}\ntokens = [\"{}\"]\n",
            gavel::identity::token_hash(&token(name))
        ));
        if let Some(slack) = slack_id(name) {
            text.push_str(&format!("slack_user_ids = [\"{slack}\"]\n"));
        }
    }
    gavel::config::Config::from_toml(&text, "gavel.toml").expect("the tenants config")
}

/// The Slack user id of the reviewers who approve in Slack.
pub fn slack_id(name: &str) -> Option<&'static str> {
    match name {
        "pay-alice" => Some("UPAYALICE"),
        "search-carol" => Some("USEARCHCAROL"),
        _ => None,
    }
}

/// The `pay` tenant's policy: everything needs one reviewer, `migrate`
/// is denied (overridable).
pub fn pay_policy(reason: &str) -> String {
    format!(
        r#"
version: v1
name: pay
defaults:
  decision: require_approval
  approval: {{ approvers: 1, roles: [reviewer], sla: 5m, timeout: 10m, bind_within: 5m }}
rules:
  - id: pay-reads
    match: {{ action: [read] }}
    decision: allow
  - id: pay-changes
    match: {{ action: [deploy] }}
    decision: require_approval
    reason: {reason}
  - id: pay-freeze
    match: {{ action: [migrate] }}
    decision: deny
    overridable: true
"#
    )
}

pub async fn spawn_tenants(b: Backend) -> Option<TestApp> {
    let c = config();
    spawn_with(Spawn {
        directory: Some(c.directory().unwrap()),
        options: gavel::engine::EngineOptions {
            tenancy: c.tenancy().unwrap(),
            ..Default::default()
        },
        ..Spawn::on(b)
    })
    .await
}

pub fn tjob(id: &str, tenant: &str, action: &str) -> pb::Job {
    pb::Job {
        tenant: tenant.into(),
        ..job(id, action, &[])
    }
}

pub async fn reload(
    c: &mut Clients,
    tenant: &str,
    source: String,
) -> Result<pb::Snapshot, tonic::Status> {
    c.policy
        .reload_policy(pb::ReloadPolicyRequest {
            tenant: tenant.into(),
            source,
            filename: "pay.yaml".into(),
            dry_run: false,
        })
        .await
        .map(|r| r.into_inner().snapshot.unwrap())
}

fn get(id: &str) -> pb::GetJobRequest {
    pb::GetJobRequest { job_id: id.into() }
}

async fn history(c: &mut Clients, id: &str, tenant: &str) -> Result<Vec<pb::AuditEntry>, String> {
    c.audit
        .get_job_history(pb::GetJobHistoryRequest {
            job_id: id.into(),
            tenant: tenant.into(),
        })
        .await
        .map(|r| r.into_inner().entries)
        .map_err(|s| reason(&s))
}

async fn export(c: &mut Clients, tenant: &str) -> Vec<pb::AuditEntry> {
    let mut s = c
        .audit
        .export_audit(pb::ExportAuditRequest {
            tenant: tenant.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(e) = s.next().await {
        out.push(e.unwrap());
    }
    out
}

async fn tenants_keep_their_policies_people_and_stories_apart(b: Backend) {
    let Some(app) = spawn_tenants(b).await else {
        return;
    };
    let system = app.engine.active().unwrap().id.to_string();

    // Policies: a tenant's is named after it and loaded by its operators
    // (or global ones); the system policy only by global operators.
    let mut pay_op = app.as_("pay-op").await;
    let wrong = reload(&mut pay_op, "pay", POLICY.into()).await.unwrap_err();
    assert_eq!(reason(&wrong), "POLICY_INVALID", "{wrong:?}");
    assert!(wrong.message().contains("must be named `pay`"), "{wrong:?}");
    for (tenant, why) in [("", "PERMISSION_DENIED"), ("search", "PERMISSION_DENIED")] {
        let e = reload(&mut pay_op, tenant, pay_policy("x"))
            .await
            .unwrap_err();
        assert_eq!(reason(&e), why, "pay-op reloading `{tenant}`");
    }
    let e = reload(&mut app.as_("root-op").await, "nope", pay_policy("x"))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "UNKNOWN_TENANT");
    let v1 = reload(&mut pay_op, "pay", pay_policy("first"))
        .await
        .unwrap();
    assert!(v1.id.starts_with("cfg:pay:policy#sha256:"), "{}", v1.id);
    assert_eq!(v1.version, 1, "a tenant numbers its own versions");
    let v2 = reload(&mut app.as_("root-op").await, "pay", pay_policy("second"))
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(
        app.engine
            .active_in(&gavel::policy::Scope::parse("pay").unwrap())
            .unwrap()
            .id
            .as_str(),
        v2.id
    );
    assert_eq!(
        app.engine.active().unwrap().id.as_str(),
        system,
        "system unchanged"
    );

    // Decide: the tenant's own snapshot, the system one as a configured
    // fallback, a clear refusal otherwise; agents only in their tenants.
    let mut pay_agent = app.as_("pay-agent").await;
    let d = decide(&mut pay_agent, tjob("p-1", "pay", "deploy"))
        .await
        .unwrap();
    assert_eq!(d.policy_snapshot, v2.id);
    assert_eq!(d.reason, "second");
    let e = decide(&mut pay_agent, tjob("p-x", "search", "deploy"))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "PERMISSION_DENIED");
    let e = decide(&mut pay_agent, tjob("p-y", "", "deploy"))
        .await
        .unwrap_err();
    assert_eq!(
        reason(&e),
        "PERMISSION_DENIED",
        "the empty tenant is not pay's"
    );
    let mut search_agent = app.as_("search-agent").await;
    let d = decide(&mut search_agent, tjob("s-1", "search", "deploy"))
        .await
        .unwrap();
    assert_eq!(
        d.policy_snapshot, system,
        "search falls back to the system policy"
    );
    let e = decide(&mut search_agent, tjob("o-1", "ops", "deploy"))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "NO_TENANT_POLICY", "{e:?}");
    assert!(e.message().contains("gavel policy reload --tenant ops"));
    // A job id another tenant holds says only that it is taken.
    let e = decide(&mut search_agent, tjob("p-1", "search", "deploy"))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "ALREADY_EXISTS");
    assert!(!e.message().contains("sha256"), "{e:?}");

    // Another tenant's job is not found, whoever asks and however.
    for who in [
        "search-carol",
        "search-exec",
        "search-op",
        "search-auditor",
        "search-glass",
    ] {
        let mut c = app.as_(who).await;
        let e = c.decision.get_job(get("p-1")).await.unwrap_err();
        assert_eq!(reason(&e), "NOT_FOUND", "{who} GetJob");
        let e = c
            .decision
            .watch_job(pb::WatchJobRequest {
                job_id: "p-1".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&e), "NOT_FOUND", "{who} WatchJob");
        let listed = c
            .approval
            .list_approvals(pb::ListApprovalsRequest {
                include_resolved: true,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().items)
            .unwrap_or_default();
        assert!(
            listed
                .iter()
                .all(|j| j.job.as_ref().unwrap().job_id != "p-1"),
            "{who} lists p-1"
        );
    }
    let mut carol = app.as_("search-carol").await;
    let e = carol
        .approval
        .approve(pb::ApproveRequest {
            job_id: "p-1".into(),
            reason: "looks fine".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "NOT_FOUND");
    let queue = carol
        .approval
        .list_approvals(pb::ListApprovalsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    let ids: Vec<&str> = queue
        .iter()
        .map(|j| j.job.as_ref().unwrap().job_id.as_str())
        .collect();
    assert_eq!(ids, ["s-1"], "carol's queue is her tenant's");
    let asked_other = carol
        .approval
        .list_approvals(pb::ListApprovalsRequest {
            tenant: "pay".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(asked_other.is_empty(), "another tenant's queue is empty");

    // The job's own tenant approves and binds it; another tenant's
    // executor cannot bind it.
    app.as_("pay-alice")
        .await
        .approval
        .approve(pb::ApproveRequest {
            job_id: "p-1".into(),
            reason: "checked".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let bind = |hash: String| pb::BindRequest {
        job_id: "p-1".into(),
        content: Some(pb::bind_request::Content::JobHash(hash)),
        policy_snapshot: v2.id.clone(),
    };
    let hash = decide(&mut pay_agent, tjob("p-1", "pay", "deploy"))
        .await
        .unwrap()
        .job_hash;
    let e = app
        .as_("search-exec")
        .await
        .decision
        .bind(bind(hash.clone()))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "NOT_FOUND");
    app.as_("pay-exec")
        .await
        .decision
        .bind(bind(hash))
        .await
        .unwrap();

    // The audit story carries the tenant and is read per tenant.
    let mut pay_auditor = app.as_("pay-auditor").await;
    let story = history(&mut pay_auditor, "p-1", "").await.unwrap();
    let kinds: Vec<&str> = story.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["decision", "approval", "bind"]);
    assert!(story.iter().all(|e| e.tenant == "pay"));
    let probe = history(&mut app.as_("root-auditor").await, "p-1", "")
        .await
        .unwrap();
    assert_eq!(
        probe.len(),
        4,
        "a global auditor also sees search-exec's refused bind"
    );
    assert_eq!(
        history(&mut app.as_("search-auditor").await, "p-1", "").await,
        Err("NOT_FOUND".into())
    );
    assert_eq!(
        history(&mut app.as_("root-auditor").await, "p-1", "search").await,
        Err("NOT_FOUND".into())
    );
    let everything = export(&mut app.as_("root-auditor").await, "").await;
    let pay_only = export(&mut app.as_("root-auditor").await, "pay").await;
    let mine = export(&mut pay_auditor, "").await;
    assert!(everything.iter().any(|e| e.tenant == "search"));
    assert!(everything.iter().any(|e| e.tenant.is_empty()));
    assert!(!pay_only.is_empty() && pay_only.iter().all(|e| e.tenant == "pay"));
    assert_eq!(
        mine.iter().map(|e| &e.entry_hash).collect::<Vec<_>>(),
        pay_only.iter().map(|e| &e.entry_hash).collect::<Vec<_>>(),
        "a tenant's auditor reads exactly its tenant's entries"
    );
    let reloads: Vec<_> = pay_only
        .iter()
        .filter(|e| e.kind == "policy_reload")
        .collect();
    assert_eq!(reloads.len(), 2, "both pay reloads are pay's");
    assert!(export(&mut pay_auditor, "search").await.is_empty());
    // The tenant is part of each entry's hash: the chain still verifies.
    let v = app
        .as_("root-auditor")
        .await
        .audit
        .verify_audit(pb::VerifyAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(v.ok, "{v:?}");

    // Snapshots: a tenant's are seen and revoked by its people only.
    let mut search_op = app.as_("search-op").await;
    let e = search_op
        .policy
        .get_policy(pb::GetPolicyRequest {
            snapshot_id: v1.id.clone(),
            tenant: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "NOT_FOUND");
    let e = search_op
        .policy
        .get_policy(pb::GetPolicyRequest {
            snapshot_id: String::new(),
            tenant: "pay".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "NOT_FOUND");
    let listed = search_op
        .policy
        .list_snapshots(pb::ListSnapshotsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .snapshots;
    assert!(
        listed.iter().all(|s| !s.id.starts_with("cfg:pay:")),
        "{listed:?}"
    );
    assert!(listed.iter().any(|s| s.id == system));
    let revoke = |id: &str| pb::RevokeSnapshotRequest {
        snapshot_id: id.into(),
        reason: "superseded".into(),
    };
    let e = search_op
        .policy
        .revoke_snapshot(revoke(&v1.id))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "NOT_FOUND");
    let e = pay_op
        .policy
        .revoke_snapshot(revoke(&system))
        .await
        .unwrap_err();
    assert_eq!(
        reason(&e),
        "PERMISSION_DENIED",
        "the system's snapshots are global"
    );
    let revoked = pay_op
        .policy
        .revoke_snapshot(revoke(&v1.id))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert!(revoked.revoked);
    let shown = pay_op
        .policy
        .get_policy(pb::GetPolicyRequest {
            snapshot_id: String::new(),
            tenant: "pay".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(shown.id, v2.id);
    let revocation = export(&mut pay_auditor, "pay").await;
    assert!(
        revocation
            .iter()
            .any(|e| e.kind == "snapshot_revoked" && e.snapshot_id == v1.id)
    );
}

crate::on_both_backends!(
    tenants_keep_their_policies_people_and_stories_apart,
    tenants_keep_their_policies_people_and_stories_apart
);

/// Replicas switch a tenant's snapshot by themselves, as for the system's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_reload_reaches_another_replica() {
    let Some(a) = spawn_tenants(Backend::Postgres).await else {
        return;
    };
    let c = config();
    let b = spawn_with(Spawn {
        directory: Some(c.directory().unwrap()),
        options: gavel::engine::EngineOptions {
            tenancy: c.tenancy().unwrap(),
            ..Default::default()
        },
        restart: Some(a.share()),
        replica: "second",
        ..Spawn::on(Backend::Postgres)
    })
    .await
    .unwrap();
    let v = reload(&mut a.as_("pay-op").await, "pay", pay_policy("replicated"))
        .await
        .unwrap();
    let mut agent = b.as_("pay-agent").await;
    let mut n = 0;
    eventually(
        "the second replica decides pay's jobs under pay's new snapshot",
        Duration::from_secs(10),
        async || {
            n += 1;
            decide(&mut agent, tjob(&format!("r-{n}"), "pay", "deploy"))
                .await
                .ok()
                .filter(|d| d.policy_snapshot == v.id)
        },
    )
    .await;
}

/// The command line names tenants too: reload and show a tenant's policy,
/// export and read its audit entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reloads_shows_and_audits_per_tenant() {
    let app = spawn_tenants(Backend::Sqlite).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pay.yaml");
    std::fs::write(&file, pay_policy("from the cli")).unwrap();
    let server = format!("http://{}", app.addr);
    let gavel = |who: &str, args: Vec<&str>| {
        gavel_cli()
            .args(["--output", "json"])
            .args(args)
            .args(["--server", &server, "--token", &token(who)])
            .output()
    };
    let file = file.display().to_string();
    let out = gavel("pay-op", vec!["policy", "reload", "--tenant", "pay", &file])
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["policy_snapshot"].as_str().unwrap().to_owned();
    assert!(id.starts_with("cfg:pay:policy#sha256:"), "{v}");
    let out = gavel(
        "search-op",
        vec!["policy", "reload", "--tenant", "pay", &file],
    )
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(err.contains("PERMISSION_DENIED"), "{err}");

    let out = gavel("pay-op", vec!["policy", "show", "--tenant", "pay"])
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["id"], id.as_str());
    assert!(v["source"].as_str().unwrap().contains("from the cli"));

    decide(
        &mut app.as_("pay-agent").await,
        tjob("c-1", "pay", "deploy"),
    )
    .await
    .unwrap();
    decide(
        &mut app.as_("search-agent").await,
        tjob("c-2", "search", "deploy"),
    )
    .await
    .unwrap();
    let out = gavel("root-auditor", vec!["audit", "export", "--tenant", "pay"])
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|e| e["job_id"] == "c-1"));
    assert!(lines.iter().all(|e| e["tenant"] == "pay"), "{lines:?}");
    let out = gavel(
        "root-auditor",
        vec!["audit", "job", "c-1", "--tenant", "search"],
    )
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(err.contains("NOT_FOUND"), "{err}");
    let out = gavel("pay-auditor", vec!["audit", "job", "c-1"])
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
