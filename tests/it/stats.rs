//! Approval statistics from the audit log: a rubber stamp is flagged and a
//! careful approver is not (through the CLI, the JSON API and the page),
//! and a generated month of jobs gives exactly the numbers a reference
//! computation in this file gives from the script that made them.

use super::helpers::*;
use crate::store::Backend;
use gavel::proto::v1 as pb;
use serde_json::Value;
use std::collections::BTreeMap;

const MIN: i64 = 60_000;
const DAY: i64 = 24 * 60 * MIN;

/// `gavel stats --output json` against the test server, as `who`.
async fn cli_stats(app: &TestApp, who: &str, since: &str) -> Value {
    let out = gavel_cli()
        .args([
            "stats",
            "--since",
            since,
            "--output",
            "json",
            "--server",
            &format!("http://{}", app.addr),
            "--token",
            &token(who),
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn api_stats(app: &TestApp, who: &str, query: &str) -> (u16, Value) {
    let r = crate::http_client()
        .get(format!("http://{}/api/v1/stats{query}", app.http_addr))
        .bearer_auth(token(who))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn approver<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["approvers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["approver"] == name)
        .unwrap_or_else(|| panic!("no approver {name} in {report}"))
}

/// Decides a `prod` job (one reviewer) and has `who` review it `after_secs`
/// later.
async fn review_one(app: &TestApp, id: &str, who: &str, after_secs: i64, approve_it: bool) {
    let mut agent = app.as_("agent-1").await;
    decide(&mut agent, job(id, "write", &["prod"]))
        .await
        .unwrap();
    app.clock.advance_secs(after_secs);
    let mut c = app.as_(who).await;
    if approve_it {
        approve(&mut c, id, "looks right").await.unwrap();
    } else {
        c.approval
            .reject(pb::RejectRequest {
                job_id: id.into(),
                reason: "the target is wrong".into(),
                note: String::new(),
            })
            .await
            .unwrap();
    }
    app.clock.advance_secs(60);
}

async fn a_rubber_stamp_is_flagged_and_a_careful_approver_is_not(b: Backend) {
    let Some(app) = spawn_app(b).await else {
        return;
    };
    // alice approves everything 5 s after it arrives; bob is as quick but
    // once said no; carol takes minutes and rejects a fifth.
    for i in 0..20 {
        review_one(&app, &format!("rs-a-{i}"), "alice", 5, true).await;
    }
    for i in 0..24 {
        review_one(&app, &format!("rs-b-{i}"), "bob", 5, i != 7).await;
    }
    for i in 0..20 {
        review_one(&app, &format!("rs-c-{i}"), "carol", 180, i % 5 != 0).await;
    }

    let report = cli_stats(&app, "auditor", "1d").await;
    let alice = approver(&report, "alice");
    assert_eq!(alice["approvals"], 20);
    assert_eq!(alice["rejections"], 0);
    assert_eq!(alice["approval_rate"], 1.0);
    assert_eq!(alice["median_review_ms"], 5000);
    let why = alice["rubber_stamp"].as_str().expect("alice is flagged");
    assert!(
        why.contains("20 approvals") && why.contains("median review 5 s"),
        "{why}"
    );
    let bob = approver(&report, "bob");
    assert_eq!(
        (bob["approvals"].as_u64(), bob["rejections"].as_u64()),
        (Some(23), Some(1))
    );
    assert!(
        bob["rubber_stamp"].is_null(),
        "one rejection clears bob: {bob}"
    );
    let carol = approver(&report, "carol");
    assert_eq!(
        (carol["approvals"].as_u64(), carol["rejections"].as_u64()),
        (Some(16), Some(4))
    );
    assert_eq!(carol["median_review_ms"], 180_000);
    assert!(carol["rubber_stamp"].is_null(), "{carol}");
    assert_eq!(report["jobs"], 64);
    assert_eq!(report["approval_outcomes"]["rejected"], 5);

    // The JSON API answers the same report to an operator, and refuses
    // people who neither operate nor audit.
    let (status, api) = api_stats(&app, "operator", "?since=1d").await;
    assert_eq!(status, 200, "{api}");
    assert_eq!(api["approvers"], report["approvers"]);
    for who in ["alice", "agent-1", "executor"] {
        let (status, body) = api_stats(&app, who, "").await;
        assert_eq!(status, 403, "{who}: {body}");
        assert_eq!(body["error"]["reason"], "PERMISSION_DENIED");
    }
    let (status, body) = api_stats(&app, "auditor", "?since=soon").await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("since"))
    );
    let (status, body) = api_stats(&app, "auditor", "?tenant=elsewhere").await;
    assert_eq!(
        (status, body["error"]["reason"].as_str()),
        (404, Some("NOT_FOUND"))
    );

    // The page shows the flag in alice's row and draws the three charts.
    let session = app.engine.sign_in(&token("auditor")).await.unwrap();
    let page = crate::http_client()
        .get(format!("http://{}/ui/stats?since=1d", app.http_addr))
        .header("cookie", format!("gavel_session={}", session.secret))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    for chart in [
        "chart-time-to-decision",
        "chart-queue-depth",
        "chart-approvers",
    ] {
        assert!(
            html.contains(&format!("<svg class=\"chart\" id=\"{chart}\"")),
            "{chart}"
        );
    }
    let row = |name: &str| {
        let start = html.find(&format!("<td>{name}</td>")).unwrap();
        let open = html[..start].rfind("<tr").unwrap();
        let end = start + html[start..].find("</tr>").unwrap();
        html[open..end].to_owned()
    };
    assert!(
        row("alice").starts_with("<tr class=\"flagged\""),
        "{}",
        row("alice")
    );
    assert!(row("alice").contains("Rubber stamp?"));
    assert!(!row("carol").contains("Rubber stamp?"), "{}", row("carol"));
}
crate::on_both_backends!(
    rubber_stamp_flagged,
    a_rubber_stamp_is_flagged_and_a_careful_approver_is_not
);

// ------------------------------------------------------------------ a month

use super::helpers::Rng;

impl Rng {
    /// A review delay: mostly within the 5-minute SLA, sometimes after it,
    /// always before the 10-minute timeout.
    fn delay(&mut self) -> i64 {
        if self.below(4) == 0 {
            5 * MIN + self.below(4 * MIN as u64) as i64
        } else {
            2_000 + self.below(4 * MIN as u64 + 50_000) as i64
        }
    }
}

#[derive(Clone, Debug)]
enum Act {
    Decide(Box<pb::Job>),
    Approve(&'static str),
    Reject(&'static str, &'static str),
    Cancel,
    Override,
    Bind,
    Sweep,
}

/// What the script did to one job: the reference reads only this.
#[derive(Default, Clone, Debug)]
struct Script {
    id: String,
    decided: i64,
    tier: &'static str,
    rule: &'static str,
    roles: Vec<&'static str>,
    /// (who, at, approve, reason)
    reviews: Vec<(&'static str, i64, bool, &'static str)>,
    /// How the wait for approval ends, and when.
    end: Option<(&'static str, i64)>,
    overridden: bool,
    bound: bool,
}

const REVIEWERS: [&str; 3] = ["alice", "bob", "carol"];
const FINANCE: [&str; 2] = ["alice", "dave"];
const REASONS: [&str; 5] = [
    "No rollback plan.",
    "no rollback plan",
    "Wrong amount",
    "wrong  amount!",
    "Too broad; split it",
];

/// One job of a random kind decided at `at`: its script and its acts.
fn generate(rng: &mut Rng, n: usize, at: i64) -> (Script, Vec<(i64, Act)>) {
    let id = format!("month-{n}");
    let mut s = Script {
        id: id.clone(),
        decided: at,
        ..Script::default()
    };
    let mut acts = Vec::new();
    let kind = rng.below(10);
    let j = match kind {
        0 => {
            (s.tier, s.rule) = ("allow", "reads");
            job(&id, "read", &[])
        }
        1 => {
            (s.tier, s.rule) = ("allow_with_constraints", "egress");
            job(&id, "call", &["egress"])
        }
        2 => {
            (s.tier, s.rule) = ("deny", "stop");
            let mut j = job(&id, "write", &[]);
            j.target = "production_db".into();
            j
        }
        3 => {
            (s.tier, s.rule) = ("deny", "freeze");
            if rng.below(2) == 0 {
                s.overridden = true;
                acts.push((at + MIN, Act::Override));
            }
            job(&id, "migrate", &[])
        }
        _ => {
            s.tier = "require_approval";
            let (j, rule, roles, people): (_, _, _, &[&'static str]) = match kind {
                4 | 5 => (job(&id, "write", &["prod"]), "prod", "reviewer", &REVIEWERS),
                6 => (job(&id, "deploy", &[]), "deploys", "reviewer", &REVIEWERS),
                7 => (
                    job(&id, "pay", &["payment"]),
                    "payment",
                    "finance",
                    &FINANCE,
                ),
                _ => (job(&id, "write", &[]), "default", "reviewer", &REVIEWERS),
            };
            s.rule = rule;
            s.roles = vec![roles];
            let needed = if rule == "deploys" { 2 } else { 1 };
            match rng.below(10) {
                // Nobody decides: it escalates, then expires.
                0 => s.end = Some(("expired", at + 10 * MIN)),
                1 => {
                    let t = at + rng.delay();
                    acts.push((t, Act::Cancel));
                    s.end = Some(("cancelled", t));
                }
                2 => {
                    let t = at + rng.delay();
                    acts.push((t, Act::Override));
                    s.overridden = true;
                    s.end = Some(("overridden", t));
                }
                _ => {
                    // Distinct reviewers, in time order; the last may reject.
                    let mut who: Vec<&'static str> = Vec::new();
                    while who.len() < needed {
                        let p = *rng.pick(people);
                        if !who.contains(&p) {
                            who.push(p);
                        }
                    }
                    let mut t = at;
                    for (i, p) in who.into_iter().enumerate() {
                        t = (t + 1_000).max(at + rng.delay());
                        let last = i + 1 == needed;
                        if last && rng.below(4) == 0 {
                            let why = *rng.pick(&REASONS);
                            acts.push((t, Act::Reject(p, why)));
                            s.reviews.push((p, t, false, why));
                            s.end = Some(("rejected", t));
                        } else {
                            acts.push((t, Act::Approve(p)));
                            s.reviews.push((p, t, true, ""));
                            if last {
                                s.end = Some(("approved", t));
                                if rng.below(2) == 0 {
                                    s.bound = true;
                                    acts.push((t + 30_000, Act::Bind));
                                }
                            }
                        }
                    }
                }
            }
            // Every act sweeps first; these two reach the SLA and the
            // timeout exactly.
            acts.push((at + 5 * MIN, Act::Sweep));
            acts.push((at + 10 * MIN, Act::Sweep));
            j
        }
    };
    acts.insert(0, (at, Act::Decide(Box::new(j))));
    (s, acts)
}

/// The nearest-rank quantile, written out again for the reference.
fn rank(values: &[i64], p: f64) -> Value {
    if values.is_empty() {
        return Value::Null;
    }
    let mut v = values.to_vec();
    v.sort();
    let k = ((p * v.len() as f64).ceil() as usize).max(1);
    Value::from(v[k - 1])
}

fn durations(values: &[i64]) -> Value {
    serde_json::json!({
        "count": values.len(),
        "median_ms": rank(values, 0.5),
        "p90_ms": rank(values, 0.9),
    })
}

/// The report the script implies, computed from the script alone.
fn reference(jobs: &[Script], since: i64, until: i64) -> Value {
    let jobs: Vec<&Script> = jobs
        .iter()
        .filter(|s| s.decided >= since && s.decided <= until)
        .collect();
    let mut tiers: BTreeMap<&str, u64> = [
        "allow",
        "allow_with_constraints",
        "require_approval",
        "deny",
    ]
    .into_iter()
    .map(|t| (t, 0))
    .collect();
    let mut ends: BTreeMap<&str, u64> = [
        "approved",
        "rejected",
        "expired",
        "cancelled",
        "overridden",
        "pending",
    ]
    .into_iter()
    .map(|t| (t, 0))
    .collect();
    let mut times = Vec::new();
    // jobs, approved, rejected, expired, escalations, times to decision
    type Rule = (u64, u64, u64, u64, u64, Vec<i64>);
    let mut rules: BTreeMap<&str, Rule> = BTreeMap::new();
    let mut roles: BTreeMap<&str, (u64, Vec<i64>)> = BTreeMap::new();
    let mut reasons: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut people: BTreeMap<&str, (u64, u64, Vec<i64>)> = BTreeMap::new();
    let (mut escalations, mut expiries, mut overrides, mut unbound) = (0u64, 0u64, 0u64, 0u64);
    let mut slow = Vec::new();
    for s in &jobs {
        *tiers.get_mut(s.tier).unwrap() += 1;
        // An override approves the job; the script never binds one.
        overrides += u64::from(s.overridden);
        unbound += u64::from(s.overridden);
        if s.tier != "require_approval" {
            continue;
        }
        let end = s.end.map_or("pending", |e| e.0);
        *ends.get_mut(end).unwrap() += 1;
        let r = rules.entry(s.rule).or_default();
        r.0 += 1;
        // Escalated when still waiting at the SLA (an act at that very
        // moment sweeps before it acts).
        if s.end.map_or(until, |e| e.1) >= s.decided + 5 * MIN {
            escalations += 1;
            r.4 += 1;
        }
        for role in &s.roles {
            roles.entry(role).or_default().0 += 1;
        }
        match s.end {
            Some((e @ ("approved" | "rejected"), t)) => {
                let ms = t - s.decided;
                times.push(ms);
                r.5.push(ms);
                if e == "approved" {
                    r.1 += 1;
                    unbound += u64::from(!s.bound);
                } else {
                    r.2 += 1;
                }
                for role in &s.roles {
                    roles.get_mut(role).unwrap().1.push(ms);
                }
                slow.push((ms, s.id.clone(), s.rule, e));
            }
            Some(("expired", _)) => {
                r.3 += 1;
                expiries += 1;
            }
            _ => {}
        }
        for &(who, at, yes, why) in &s.reviews {
            let p = people.entry(who).or_default();
            if yes {
                p.0 += 1;
            } else {
                p.1 += 1;
                // Case, spacing and trailing punctuation do not make a
                // new reason.
                let key = why
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .trim_end_matches(['.', '!'])
                    .to_lowercase();
                let e = reasons.entry(key).or_insert((why.to_owned(), 0));
                e.1 += 1;
            }
            p.2.push(at - s.decided);
        }
    }
    slow.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut reasons: Vec<(String, u64)> = reasons.into_values().collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    serde_json::json!({
        "jobs": jobs.len(),
        "decisions": tiers,
        "approval_outcomes": ends,
        "time_to_decision": durations(&times),
        "by_rule": rules.iter().map(|(rule, r)| serde_json::json!({
            "rule": rule, "jobs": r.0, "approved": r.1, "rejected": r.2,
            "expired": r.3, "escalations": r.4, "time_to_decision": durations(&r.5),
        })).collect::<Vec<_>>(),
        "by_role": roles.iter().map(|(role, r)| serde_json::json!({
            "role": role, "jobs": r.0, "time_to_decision": durations(&r.1),
        })).collect::<Vec<_>>(),
        "rejection_reasons_counts": reasons.iter().map(|r| r.1).collect::<Vec<_>>(),
        "expiries": expiries,
        "expired_unbound": unbound,
        "escalations": escalations,
        "overrides": overrides,
        "approvers": people.iter().map(|(who, p)| serde_json::json!({
            "approver": who, "approvals": p.0, "rejections": p.1,
            "median_review_ms": rank(&p.2, 0.5),
        })).collect::<Vec<_>>(),
        "slowest": slow.iter().take(10).map(|s| serde_json::json!({
            "job_id": s.1, "rule": s.2, "outcome": s.3, "ms": s.0,
        })).collect::<Vec<_>>(),
    })
}

/// The deepest queue in each of the report's slices, from the script.
fn reference_queue(jobs: &[Script], since: i64, until: i64, slices: usize) -> Vec<u64> {
    let waits: Vec<(i64, i64)> = jobs
        .iter()
        .filter(|s| s.tier == "require_approval" && s.decided >= since && s.decided <= until)
        .map(|s| (s.decided, s.end.map_or(i64::MAX, |e| e.1)))
        .collect();
    let width = (until - since) / slices as i64;
    (0..slices as i64)
        .map(|i| {
            let (a, b) = (since + i * width, since + (i + 1) * width);
            // The depth at the slice's start, and after each arrival in it.
            let at = |t: i64| waits.iter().filter(|w| w.0 <= t && w.1 > t).count() as u64;
            let mut max = at(a - 1);
            // The last slice ends at `until` itself, inclusive.
            let last = i + 1 == slices as i64;
            for w in &waits {
                if w.0 >= a && (w.0 < b || (last && w.0 == b)) {
                    max = max.max(at(w.0));
                }
            }
            max
        })
        .collect()
}

async fn a_generated_month_agrees_with_the_reference(b: Backend) {
    let Some(app) = spawn_app(b).await else {
        return;
    };
    let t0 = app.engine.now();
    let until = t0 + 31 * DAY;
    let since = until - 30 * DAY;
    let mut rng = Rng(0x05ee_d0f6_a7e1);
    let (mut scripts, mut acts) = (Vec::new(), Vec::new());
    // Five jobs a day for a month, and a few before the window (one of
    // them approved inside it: it must not count).
    let mut starts: Vec<i64> = (0..4).map(|i| since - 3 * DAY + i * DAY / 2).collect();
    starts.push(since - 2 * MIN);
    for day in 0..30 {
        for _ in 0..5 {
            starts.push(since + day * DAY + rng.below(23 * 60) as i64 * MIN);
        }
    }
    for (n, at) in starts.into_iter().enumerate() {
        let (s, a) = generate(&mut rng, n, at);
        scripts.push(s);
        acts.extend(a.into_iter().map(|(t, act)| (t, n, act)));
    }
    // One still waiting when the window closes.
    let n = scripts.len();
    scripts.push(Script {
        id: "month-waiting".into(),
        decided: until - 3 * MIN,
        tier: "require_approval",
        rule: "prod",
        roles: vec!["reviewer"],
        ..Script::default()
    });
    acts.push((
        until - 3 * MIN,
        n,
        Act::Decide(Box::new(job("month-waiting", "write", &["prod"]))),
    ));
    acts.sort_by_key(|(t, n, _)| (*t, *n));

    let mut decisions: BTreeMap<usize, pb::DecideResponse> = BTreeMap::new();
    let (mut agent, mut exec, mut eve) = (
        app.as_("agent-1").await,
        app.as_("executor").await,
        app.as_("eve").await,
    );
    for (t, n, act) in acts {
        app.clock.set_ms(t);
        app.engine.sweep().await.unwrap();
        let id = scripts[n].id.clone();
        match act {
            Act::Decide(j) => {
                let d = decide(&mut agent, *j).await.unwrap();
                assert_eq!(d.primary_rule, scripts[n].rule, "{id}");
                decisions.insert(n, d);
            }
            Act::Approve(who) => {
                approve(&mut app.as_(who).await, &id, "fine").await.unwrap();
            }
            Act::Reject(who, why) => {
                app.as_(who)
                    .await
                    .approval
                    .reject(pb::RejectRequest {
                        job_id: id,
                        reason: why.into(),
                        note: String::new(),
                    })
                    .await
                    .unwrap();
            }
            Act::Cancel => {
                agent
                    .decision
                    .cancel(pb::CancelRequest {
                        job_id: id,
                        reason: "not needed".into(),
                    })
                    .await
                    .unwrap();
            }
            Act::Override => {
                eve.approval
                    .r#override(pb::OverrideRequest {
                        job_id: id,
                        reason: "incident".into(),
                        note: String::new(),
                    })
                    .await
                    .unwrap();
            }
            Act::Bind => {
                let d = &decisions[&n];
                bind_hash(&mut exec, &id, &d.job_hash, &d.policy_snapshot)
                    .await
                    .unwrap();
            }
            Act::Sweep => {}
        }
    }
    // Approved jobs nobody bound expire inside the window.
    app.clock.set_ms(until - 1);
    app.engine.sweep().await.unwrap();
    app.clock.set_ms(until);

    let got = cli_stats(&app, "auditor", "30d").await;
    assert_eq!(
        (got["since"].as_i64(), got["until"].as_i64()),
        (Some(since), Some(until))
    );
    let want = reference(&scripts, since, until);
    for key in [
        "jobs",
        "decisions",
        "approval_outcomes",
        "time_to_decision",
        "by_rule",
        "by_role",
        "expiries",
        "expired_unbound",
        "escalations",
        "overrides",
        "slowest",
    ] {
        assert_eq!(got[key], want[key], "{key}");
    }
    assert!(
        want["approval_outcomes"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v != 0),
        "every ending occurs: {want}"
    );
    let counts: Vec<u64> = got["rejection_reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["count"].as_u64().unwrap())
        .collect();
    assert_eq!(Value::from(counts), want["rejection_reasons_counts"]);
    assert_eq!(
        got["rejection_reasons"].as_array().unwrap().len(),
        3,
        "five spellings, three reasons"
    );
    for a in want["approvers"].as_array().unwrap() {
        let g = approver(&got, a["approver"].as_str().unwrap());
        for k in ["approvals", "rejections", "median_review_ms"] {
            assert_eq!(g[k], a[k], "{} {k}", a["approver"]);
        }
    }
    assert_eq!(
        got["approvers"].as_array().unwrap().len(),
        want["approvers"].as_array().unwrap().len()
    );
    let slices = got["queue_depth"].as_array().unwrap();
    let depth: Vec<u64> = slices
        .iter()
        .map(|p| p["max_depth"].as_u64().unwrap())
        .collect();
    assert_eq!(depth, reference_queue(&scripts, since, until, slices.len()));
    assert!(depth.iter().any(|&d| d >= 1));
}
crate::on_both_backends!(generated_month, a_generated_month_agrees_with_the_reference);
