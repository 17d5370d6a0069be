//! Every matcher, strictest-wins, gates, constraints and summaries.

use super::{decide, job, load};
use gavel::policy::{Decision, Snapshot};
use serde_json::json;

fn matched(snap: &Snapshot, job_json: &str) -> Vec<String> {
    decide(snap, job_json).matched_rules
}

fn matched_as(snap: &Snapshot, job_json: &str, principal: &str) -> Vec<String> {
    snap.policy
        .evaluate(&job(job_json), Some(principal))
        .matched_rules
}

/// The failures `explain` reports for one rule.
fn why_not(snap: &Snapshot, job_json: &str, rule: &str) -> Vec<(String, String)> {
    let x = snap.policy.explain(&job(job_json), None);
    let r = x
        .rules
        .iter()
        .find(|r| r.rule == rule)
        .expect("rule reported");
    assert!(!r.matched, "{rule} matched");
    r.failures
        .iter()
        .map(|f| (f.matcher.clone(), f.detail.clone()))
        .collect()
}

#[test]
fn glob_matchers_on_topic_action_target() {
    let snap = load(
        r#"
version: v1
defaults: { decision: deny }
rules:
  - id: t
    match: { topics: ["job.*.read", "job.exact"] }
    decision: allow
  - id: a
    match: { action: ["del?te", "[!x]rop"] }
    decision: allow
  - id: g
    match: { target: ["production_*"] }
    decision: allow
  - id: all-three
    match: { topics: ["job.db.*"], action: [drop], target: ["prod_[ab]"] }
    decision: allow
"#,
    );
    assert_eq!(matched(&snap, r#"{"topic":"job.repo.read"}"#), ["t"]);
    assert_eq!(matched(&snap, r#"{"topic":"job.a.b.read"}"#), ["t"]);
    assert_eq!(matched(&snap, r#"{"topic":"job.exact"}"#), ["t"]);
    assert!(matched(&snap, r#"{"topic":"job.exactly"}"#).is_empty());
    assert!(
        matched(&snap, r#"{"topic":"JOB.repo.read"}"#).is_empty(),
        "case-sensitive"
    );
    assert_eq!(matched(&snap, r#"{"action":"delete"}"#), ["a"]);
    assert_eq!(matched(&snap, r#"{"action":"drop"}"#), ["a"]);
    assert!(matched(&snap, r#"{"action":"xrop"}"#).is_empty());
    assert_eq!(matched(&snap, r#"{"target":"production_db"}"#), ["g"]);
    assert_eq!(
        matched(
            &snap,
            r#"{"topic":"job.db.x","action":"drop","target":"prod_b"}"#
        ),
        ["a", "all-three"]
    );
    // Every key must hold.
    assert_eq!(
        matched(
            &snap,
            r#"{"topic":"job.db.x","action":"drop","target":"prod_c"}"#
        ),
        ["a"]
    );
    let why = why_not(
        &snap,
        r#"{"topic":"job.db.x","action":"drop","target":"prod_c"}"#,
        "all-three",
    );
    assert_eq!(why.len(), 1);
    assert_eq!(why[0].0, "target");
    assert!(
        why[0].1.contains("`prod_c` matches none of"),
        "{}",
        why[0].1
    );
    // A deny default with nothing matched.
    let d = decide(&snap, r#"{"topic":"other"}"#);
    assert_eq!(
        (d.decision, d.primary_rule.as_str()),
        (Decision::Deny, "default")
    );
    assert!(!d.overridable);
}

#[test]
fn principal_is_the_authenticated_caller() {
    let snap = load(
        r#"
version: v1
rules:
  - id: bots
    match: { principal: ["bot-*"] }
    decision: allow
"#,
    );
    assert_eq!(matched_as(&snap, r#"{}"#, "bot-7"), ["bots"]);
    assert!(matched_as(&snap, r#"{}"#, "alice").is_empty());
    assert!(matched(&snap, r#"{}"#).is_empty(), "no principal, no match");
    let why = why_not(&snap, "{}", "bots");
    assert_eq!(
        why,
        [("principal".to_owned(), "no principal was given".to_owned())]
    );
}

#[test]
fn risk_tags_all_required_and_risk_tags_none() {
    let snap = load(
        r#"
version: v1
rules:
  - id: prod-write
    match: { risk_tags: [prod, write] }
    decision: deny
  - id: not-prod
    match: { risk_tags_none: [prod, pii] }
    decision: allow
  - id: any
    match: { risk_tags: [] }
    decision: allow
"#,
    );
    assert_eq!(
        matched(&snap, r#"{"risk_tags":["prod","write","x"]}"#),
        ["prod-write", "any"]
    );
    assert_eq!(matched(&snap, r#"{"risk_tags":["prod"]}"#), ["any"]);
    assert_eq!(
        matched(&snap, r#"{"risk_tags":["write"]}"#),
        ["not-prod", "any"]
    );
    assert_eq!(matched(&snap, r#"{"risk_tags":["pii"]}"#), ["any"]);
    let why = why_not(&snap, r#"{"risk_tags":["prod"]}"#, "prod-write");
    assert_eq!(
        why,
        [(
            "risk_tags".into(),
            r#"missing required tags ["write"]"#.into()
        )]
    );
    let why = why_not(&snap, r#"{"risk_tags":["pii","prod"]}"#, "not-prod");
    assert_eq!(
        why,
        [(
            "risk_tags_none".into(),
            r#"has forbidden tags ["pii", "prod"]"#.into()
        )]
    );
}

#[test]
fn attribute_tests() {
    let snap = load(
        r#"
version: v1
rules:
  - id: glob
    match: { attributes: { env: "prod-*" } }
    decision: allow
  - id: eq-bool
    match: { attributes: { reversible: false } }
    decision: allow
  - id: eq-num
    match: { attributes: { replicas: 3 } }
    decision: allow
  - id: range
    match: { attributes: { cost: { gte: 100, lt: 1000 } } }
    decision: allow
  - id: in
    match: { attributes: { region: { in: [eu-west-1, eu-central-1] } } }
    decision: allow
  - id: ne
    match: { attributes: { region: { ne: us-east-1 } } }
    decision: allow
  - id: exists
    match: { attributes: { ticket: { exists: true } } }
    decision: allow
  - id: absent
    match: { attributes: { ticket: { exists: false } } }
    decision: allow
  - id: strings-ordered
    match: { attributes: { version: { gt: "2.0" } } }
    decision: allow
"#,
    );
    let m = |attrs: serde_json::Value| {
        let mut v = matched(&snap, &json!({ "attributes": attrs }).to_string());
        v.retain(|r| r != "absent");
        v
    };
    assert_eq!(m(json!({"env": "prod-eu"})), ["glob"]);
    assert!(m(json!({"env": "staging"})).is_empty());
    assert!(m(json!({"env": 7})).is_empty(), "a glob needs a string");
    assert_eq!(m(json!({"reversible": false})), ["eq-bool"]);
    assert!(m(json!({"reversible": "false"})).is_empty(), "no coercion");
    assert_eq!(
        m(json!({"replicas": 3.0})),
        ["eq-num"],
        "3 and 3.0 are one number"
    );
    assert_eq!(m(json!({"cost": 100})), ["range"]);
    assert_eq!(m(json!({"cost": 999.5})), ["range"]);
    assert!(m(json!({"cost": 1000})).is_empty());
    assert!(m(json!({"cost": 99})).is_empty());
    assert!(
        m(json!({"cost": "500"})).is_empty(),
        "a string is not a number"
    );
    assert_eq!(m(json!({"region": "eu-west-1"})), ["in", "ne"]);
    assert_eq!(m(json!({"region": "ap-south-1"})), ["ne"]);
    assert!(m(json!({"region": "us-east-1"})).is_empty());
    assert!(
        m(json!({"region": 5})).is_empty(),
        "ne across types does not hold"
    );
    assert_eq!(m(json!({"ticket": "INC-1"})), ["exists"]);
    assert_eq!(m(json!({"version": "2.1"})), ["strings-ordered"]);
    assert!(
        m(json!({"version": "10.0"})).is_empty(),
        "strings order by code point"
    );
    assert!(matched(&snap, r#"{"attributes":{}}"#).contains(&"absent".to_owned()));
    assert!(!matched(&snap, r#"{"attributes":{"ticket":1}}"#).contains(&"absent".to_owned()));
    // A missing attribute does not hold; explain says so.
    let why = why_not(&snap, r#"{"attributes":{}}"#, "range");
    assert_eq!(
        why,
        [(
            "attributes.cost".into(),
            "attribute `cost` is missing".into()
        )]
    );
    // A type mismatch does not hold and explain reports it.
    let why = why_not(&snap, r#"{"attributes":{"cost":"500"}}"#, "range");
    assert_eq!(why[0].0, "attributes.cost");
    assert!(why[0].1.starts_with("type mismatch"), "{}", why[0].1);
    let why = why_not(&snap, r#"{"attributes":{"env":7}}"#, "glob");
    assert!(why[0].1.starts_with("type mismatch"), "{}", why[0].1);
    let why = why_not(&snap, r#"{"attributes":{"cost":1000}}"#, "range");
    assert_eq!(why[0].1, "1000 fails `lt: 1000`");
}

#[test]
fn not_blocks_exclude() {
    let snap = load(
        r#"
version: v1
rules:
  - id: deletes-outside-scratch
    match:
      action: [delete]
      not: { target: ["scratch/*"], not: { risk_tags: [keep] } }
    decision: deny
"#,
    );
    assert_eq!(
        matched(&snap, r#"{"action":"delete","target":"data/x"}"#),
        ["deletes-outside-scratch"]
    );
    assert!(matched(&snap, r#"{"action":"delete","target":"scratch/x"}"#).is_empty());
    // The inner `not` re-includes scratch files tagged keep.
    assert_eq!(
        matched(
            &snap,
            r#"{"action":"delete","target":"scratch/x","risk_tags":["keep"]}"#
        ),
        ["deletes-outside-scratch"]
    );
    let why = why_not(
        &snap,
        r#"{"action":"delete","target":"scratch/x"}"#,
        "deletes-outside-scratch",
    );
    assert_eq!(why[0].0, "not");
}

const TIERS: &str = r#"
version: v1
rules:
  - id: allow-all
    match: {}
    decision: allow
  - id: limits
    match: { topics: ["job.*"] }
    decision: allow_with_constraints
    constraints: { max_runtime_sec: 60 }
  - id: review
    match: { risk_tags: [write] }
    decision: require_approval
  - id: stop
    match: { risk_tags: [prod, write] }
    decision: deny
    reason: never in production
"#;

#[test]
fn strictest_decision_wins_whatever_the_order() {
    let snap = load(TIERS);
    let d = |j: &str| {
        let e = decide(&snap, j);
        (e.decision, e.primary_rule)
    };
    assert_eq!(d(r#"{"topic":"x"}"#), (Decision::Allow, "allow-all".into()));
    assert_eq!(
        d(r#"{"topic":"job.a"}"#),
        (Decision::AllowWithConstraints, "limits".into())
    );
    assert_eq!(
        d(r#"{"topic":"job.a","risk_tags":["write"]}"#),
        (Decision::RequireApproval, "review".into())
    );
    assert_eq!(
        d(r#"{"topic":"job.a","risk_tags":["write","prod"]}"#),
        (Decision::Deny, "stop".into())
    );
    let e = decide(&snap, r#"{"topic":"job.a","risk_tags":["write","prod"]}"#);
    assert_eq!(e.matched_rules, ["allow-all", "limits", "review", "stop"]);
    assert_eq!(e.reason, "never in production");
    assert!(e.gates.is_empty(), "no gates under deny");
    assert!(e.constraints.is_empty(), "no constraints under deny");
    assert!(!e.approval_required);

    // Reverse the rules: same decisions.
    let mut parts: Vec<&str> = TIERS.split("  - id: ").collect();
    let head = parts.remove(0);
    parts.reverse();
    let reversed = format!("{head}  - id: {}", parts.join("  - id: "));
    let rev = load(&reversed);
    for j in [
        r#"{"topic":"x"}"#,
        r#"{"topic":"job.a","risk_tags":["write"]}"#,
        r#"{"topic":"job.a","risk_tags":["write","prod"]}"#,
    ] {
        assert_eq!(
            rev.policy.evaluate(&job(j), None).decision,
            snap.policy.evaluate(&job(j), None).decision
        );
    }
}

#[test]
fn the_primary_rule_is_the_first_in_file_order_with_the_winning_decision() {
    let snap = load(
        r#"
version: v1
rules:
  - id: first
    match: { risk_tags: [a] }
    decision: require_approval
    reason: first reason
  - id: second
    match: { risk_tags: [a] }
    decision: require_approval
    reason: second reason
"#,
    );
    let e = decide(&snap, r#"{"risk_tags":["a"]}"#);
    assert_eq!(e.primary_rule, "first");
    assert_eq!(e.reason, "first reason");
    assert_eq!(e.matched_rules, ["first", "second"]);
}

#[test]
fn gates_with_the_same_roles_merge_and_others_add_up() {
    let snap = load(
        r#"
version: v1
rules:
  - id: pay
    match: { risk_tags: [payment] }
    decision: require_approval
    approval: { approvers: 2, roles: [finance], sla: 20m, timeout: 2h, bind_within: 10m, channels: [ui, grpc] }
  - id: big
    match: { attributes: { cost: { gt: 1000 } } }
    decision: require_approval
    approval: { approvers: 1, roles: [finance], sla: 10m, timeout: 3h, channels: [ui, slack] }
  - id: prod
    match: { risk_tags: [prod] }
    decision: require_approval
    approval: { approvers: 1, roles: [owner, oncall], timeout: 30m }
"#,
    );
    let e = decide(
        &snap,
        r#"{"risk_tags":["payment","prod"],"attributes":{"cost":5000}}"#,
    );
    assert_eq!(e.gates.len(), 2, "{:#?}", e.gates);
    let fin = &e.gates[0];
    assert_eq!(fin.roles, ["finance"]);
    assert_eq!(fin.approvers, 2, "the larger count");
    assert_eq!(fin.rules, ["pay", "big"]);
    assert_eq!(fin.sla_seconds, 600);
    assert_eq!(fin.timeout_seconds, 7200);
    assert_eq!(fin.bind_within_seconds, 600);
    assert_eq!(
        fin.channels,
        [gavel::policy::Channel::Ui],
        "a merged gate accepts only doors both accept"
    );
    let own = &e.gates[1];
    assert_eq!(own.roles, ["oncall", "owner"], "roles are a set");
    assert_eq!(
        (own.approvers, own.rules.as_slice()),
        (1, ["prod".to_owned()].as_slice())
    );
    let t = e.timing.expect("timing");
    assert_eq!(
        (t.sla_seconds, t.timeout_seconds, t.bind_within_seconds),
        (600, 1800, 600)
    );
    assert!(
        e.decision_summary.next_effect.contains("2 of finance"),
        "{}",
        e.decision_summary.next_effect
    );
}

#[test]
fn constraints_combine_by_kind() {
    let snap = load(
        r#"
version: v1
rules:
  - id: a
    match: { risk_tags: [egress] }
    decision: allow_with_constraints
    constraints:
      max_runtime_sec: 60
      network_allowlist: [api.github.com, api.slack.com, example.com]
      path_denylist: [/etc]
      sandbox: strict
  - id: b
    match: { topics: ["job.*"] }
    decision: allow_with_constraints
    constraints:
      max_runtime_sec: 30
      max_memory_mb: 512
      network_allowlist: [api.slack.com, api.github.com]
      path_denylist: [/root, /etc]
      sandbox: loose
  - id: gate
    match: { risk_tags: [write] }
    decision: require_approval
"#,
    );
    let e = decide(&snap, r#"{"topic":"job.x","risk_tags":["egress","write"]}"#);
    assert_eq!(e.decision, Decision::RequireApproval);
    assert_eq!(
        serde_json::to_value(&e.constraints).unwrap(),
        json!({
            "max_runtime_sec": 30,
            "max_memory_mb": 512,
            "network_allowlist": ["api.github.com", "api.slack.com"],
            "path_denylist": ["/etc", "/root"],
            "sandbox": "strict",
        })
    );
    assert_eq!(e.constraint_conflicts.len(), 1);
    let c = &e.constraint_conflicts[0];
    assert_eq!(
        (
            c.key.as_str(),
            c.kept_rule.as_str(),
            c.ignored_rule.as_str()
        ),
        ("sandbox", "a", "b")
    );
}

#[test]
fn overridable_denies() {
    let snap = load(
        r#"
version: v1
rules:
  - id: freeze
    match: { topics: ["job.deploy.*"] }
    decision: deny
    overridable: true
  - id: hard-stop
    match: { target: [production_db] }
    decision: deny
"#,
    );
    let soft = decide(&snap, r#"{"topic":"job.deploy.api","target":"web"}"#);
    assert!(soft.overridable);
    assert!(soft.decision_summary.next_effect.contains("break-glass"));
    let hard = decide(
        &snap,
        r#"{"topic":"job.deploy.api","target":"production_db"}"#,
    );
    assert!(
        !hard.overridable,
        "one non-overridable deny keeps the job denied"
    );
}

#[test]
fn summaries_are_templated_from_the_job() {
    let snap = load(
        r#"
version: v1
rules:
  - id: gate
    match: { risk_tags: [prod] }
    decision: require_approval
    reason: Production writes require human approval
    approval: { approvers: 2, roles: [oncall] }
    summary:
      title: "Review {topic} on {target}"
      why: "{reason} ({attributes.ticket}; asked by {principal})"
      next_effect: "{approvers} approvals continue the {decision} flow"
  - id: plain
    match: { risk_tags: [plain] }
    decision: deny
"#,
    );
    let e = snap.policy.evaluate(
        &job(r#"{"topic":"job.config.update","target":"prod-eu","risk_tags":["prod"],"attributes":{"ticket":"INC-7"}}"#),
        Some("agent-1"),
    );
    assert_eq!(
        e.decision_summary.title,
        "Review job.config.update on prod-eu"
    );
    assert_eq!(
        e.decision_summary.why,
        "Production writes require human approval (INC-7; asked by agent-1)"
    );
    assert_eq!(
        e.decision_summary.next_effect,
        "2 approvals continue the require_approval flow"
    );
    // Without a summary: the proposal title, else what/where; why = reason.
    let p = decide(
        &snap,
        r#"{"action":"drop","topic":"job.db","target":"t1","risk_tags":["plain"],"proposal":{"title":"Drop t1"}}"#,
    );
    assert_eq!(p.decision_summary.title, "Drop t1");
    assert_eq!(p.decision_summary.why, "rule `plain` decided deny");
    let q = decide(
        &snap,
        r#"{"action":"drop","topic":"job.db","target":"t1","risk_tags":["plain"]}"#,
    );
    assert_eq!(q.decision_summary.title, "drop job.db on t1");
}

#[test]
fn explain_agrees_with_evaluate() {
    let snap = load(TIERS);
    for j in [
        r#"{"topic":"x"}"#,
        r#"{"topic":"job.a","risk_tags":["write"]}"#,
        r#"{"topic":"job.a","risk_tags":["write","prod"]}"#,
    ] {
        let x = snap.policy.explain(&job(j), None);
        assert_eq!(x.evaluation, snap.policy.evaluate(&job(j), None));
        let matched: Vec<&str> = x
            .rules
            .iter()
            .filter(|r| r.matched)
            .map(|r| r.rule.as_str())
            .collect();
        assert_eq!(matched, x.evaluation.matched_rules);
        assert!(x.rules.iter().all(|r| r.matched == r.failures.is_empty()));
    }
}
