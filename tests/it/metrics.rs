//! `GET /metrics` after a scripted scenario: the exposition is parsed and
//! each counter, gauge and histogram count compared with what the
//! scenario did.

use super::helpers::*;
use crate::store::Backend;
use gavel::proto::v1 as pb;
use std::collections::BTreeMap;

/// `name{labels}` → value, for every sample line.
pub fn parse(text: &str) -> BTreeMap<String, f64> {
    assert!(text.trim_end().ends_with("# EOF"), "a complete exposition");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').expect("name and value");
            (key.to_owned(), value.parse::<f64>().expect("a number"))
        })
        .collect()
}

/// The engine's exposition as the operator reads it, parsed.
pub async fn read(app: &TestApp) -> BTreeMap<String, f64> {
    let who = app.engine.directory().by_name("operator").unwrap().clone();
    parse(&app.engine.metrics_text(&who).await.unwrap())
}

pub(super) async fn scrape(app: &TestApp, who: Option<&str>) -> (u16, String) {
    let mut req = crate::http_client().get(format!("http://{}/metrics", app.http_addr));
    if let Some(w) = who {
        req = req.bearer_auth(token(w));
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn get(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no sample `{key}` in {:#?}", m.keys()))
}

async fn metrics_follow_a_scripted_scenario(b: Backend) {
    let Some(app) = spawn_app(b).await else {
        return;
    };
    let mut agent = app.as_("agent-1").await;
    decide(&mut agent, job("m-read", "read", &[]))
        .await
        .unwrap();
    decide(&mut agent, job("m-read-2", "read", &[]))
        .await
        .unwrap();
    let prod = decide(&mut agent, job("m-prod", "write", &["prod"]))
        .await
        .unwrap();
    decide(&mut agent, job("m-prod-2", "write", &["prod"]))
        .await
        .unwrap();
    decide(&mut agent, job("m-deploy", "deploy", &[]))
        .await
        .unwrap();
    decide(&mut agent, job("m-migrate", "migrate", &[]))
        .await
        .unwrap();

    // Reviewed 30 s later: one approval, one rejection.
    app.clock.advance_secs(30);
    let approve = |id: &str| pb::ApproveRequest {
        job_id: id.into(),
        reason: "checked".into(),
        ..Default::default()
    };
    app.as_("alice")
        .await
        .approval
        .approve(approve("m-prod"))
        .await
        .unwrap();
    app.as_("carol")
        .await
        .approval
        .reject(pb::RejectRequest {
            job_id: "m-prod-2".into(),
            reason: "too wide".into(),
            note: String::new(),
        })
        .await
        .unwrap();
    app.as_("eve")
        .await
        .approval
        .r#override(pb::OverrideRequest {
            job_id: "m-migrate".into(),
            reason: "incident".into(),
            note: String::new(),
        })
        .await
        .unwrap();
    let mut exec = app.as_("executor").await;
    let bound = exec
        .decision
        .bind(pb::BindRequest {
            job_id: "m-prod".into(),
            content: Some(pb::bind_request::Content::JobHash(prod.job_hash.clone())),
            policy_snapshot: prod.policy_snapshot.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let refused = exec
        .decision
        .bind(pb::BindRequest {
            job_id: "m-deploy".into(),
            content: Some(pb::bind_request::Content::JobHash("0".repeat(64))),
            policy_snapshot: prod.policy_snapshot.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "HASH_MISMATCH");
    exec.decision
        .report_outcome(pb::ReportOutcomeRequest {
            job_id: "m-prod".into(),
            bind_id: bound.bind_id,
            outcome: pb::Outcome::Succeeded as i32,
            detail: String::new(),
        })
        .await
        .unwrap();

    // Who may read them.
    assert_eq!(scrape(&app, None).await.0, 401);
    assert_eq!(scrape(&app, Some("agent-1")).await.0, 403);
    assert_eq!(scrape(&app, Some("alice")).await.0, 403);
    let (status, text) = scrape(&app, Some("operator")).await;
    assert_eq!(status, 200, "{text}");
    let m = parse(&text);
    let d = |decision: &str, rule: &str| {
        get(
            &m,
            &format!("gavel_decisions_total{{decision=\"{decision}\",rule=\"{rule}\"}}"),
        )
    };
    assert_eq!(d("allow", "reads"), 2.0);
    assert_eq!(d("require_approval", "prod"), 2.0);
    assert_eq!(d("require_approval", "deploys"), 1.0);
    assert_eq!(d("deny", "freeze"), 1.0);
    assert_eq!(get(&m, "gavel_decide_duration_seconds_count"), 6.0);
    assert_eq!(get(&m, "gavel_approvals_total{rule=\"prod\"}"), 1.0);
    assert_eq!(get(&m, "gavel_rejections_total{rule=\"prod\"}"), 1.0);
    assert_eq!(get(&m, "gavel_overrides_total{rule=\"freeze\"}"), 1.0);
    assert_eq!(
        get(&m, "gavel_binds_total{result=\"bound\",reason=\"\"}"),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "gavel_binds_total{result=\"refused\",reason=\"HASH_MISMATCH\"}"
        ),
        1.0
    );
    assert_eq!(get(&m, "gavel_bind_duration_seconds_count"), 2.0);
    assert_eq!(get(&m, "gavel_outcomes_total{outcome=\"succeeded\"}"), 1.0);
    // Both reviews took 30 s: in the 32 s bucket, not the 16 s one.
    let t = |le: &str| {
        get(
            &m,
            &format!("gavel_time_to_decision_seconds_bucket{{le=\"{le}\",rule=\"prod\"}}"),
        )
    };
    assert_eq!((t("16.0"), t("32.0")), (0.0, 2.0));
    assert_eq!(
        get(&m, "gavel_time_to_decision_seconds_sum{rule=\"prod\"}"),
        60.0
    );
    // Waiting: the deploy needs two reviewers; the override is unacknowledged.
    assert_eq!(
        get(&m, "gavel_pending_jobs{tenant=\"\",role=\"reviewer\"}"),
        1.0
    );
    assert_eq!(get(&m, "gavel_unacknowledged_overrides"), 1.0);
    let snapshot = format!(
        "gavel_active_snapshot_version{{scope=\"system\",snapshot=\"{}\"}}",
        prod.policy_snapshot
    );
    assert_eq!(get(&m, &snapshot), 1.0);
    assert_eq!(get(&m, "gavel_replica{replica=\"main\"}"), 1.0);
    assert!(
        !text.contains("m-prod") && !text.contains("alice"),
        "no job ids or people in labels"
    );

    // Eleven minutes on, the sweeper expires the deploy: the queue empties.
    app.clock.advance_secs(11 * 60);
    app.engine.sweep().await.unwrap();
    let m = parse(&scrape(&app, Some("auditor")).await.1);
    assert_eq!(get(&m, "gavel_expiries_total{rule=\"deploys\"}"), 1.0);
    assert!(
        !m.keys().any(|k| k.starts_with("gavel_pending_jobs{")),
        "{m:#?}"
    );
}

crate::on_both_backends!(
    metrics_follow_a_scripted_scenario,
    metrics_follow_a_scripted_scenario
);
