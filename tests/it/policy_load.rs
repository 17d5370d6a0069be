//! Loading, validation, lint and snapshot identity.

use super::{decide, load, root};
use gavel::policy::{self, Decision, Finding, Person, Severity, SnapshotId};
use std::collections::BTreeSet;

fn findings(yaml: &str) -> Vec<Finding> {
    policy::check(yaml, "p.yaml")
}

fn errors(yaml: &str) -> Vec<Finding> {
    let f = findings(yaml);
    assert!(
        policy::load(yaml, "p.yaml").is_err(),
        "a policy with errors must not load: {f:#?}"
    );
    f.into_iter()
        .filter(|f| f.severity == Severity::Error)
        .collect()
}

fn warnings(yaml: &str) -> Vec<Finding> {
    let loaded = policy::load(yaml, "p.yaml").unwrap_or_else(|e| panic!("{:#?}", e.findings));
    loaded.warnings
}

#[test]
fn the_seed_policy_loads_unchanged_and_decides_as_its_rules_say() {
    let source =
        std::fs::read_to_string(root().join("tests/fixtures/seed-approval-policy.yaml")).unwrap();
    let loaded = policy::load(&source, "seed-approval-policy.yaml").unwrap();
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    let snap = loaded.snapshot;
    assert_eq!(snap.source, source, "the source is kept verbatim");
    assert!(snap.id.as_str().starts_with("cfg:system:policy#sha256:"));
    assert_eq!(snap.id.sha256().len(), 64);

    let read = decide(
        &snap,
        r#"{"topic":"job.repo.read","action":"read","target":"x"}"#,
    );
    assert_eq!(
        (read.decision, read.primary_rule.as_str()),
        (Decision::Allow, "allow-read")
    );

    let prod = decide(
        &snap,
        r#"{"topic":"job.config.update","target":"prod-eu","risk_tags":["prod","write"]}"#,
    );
    assert_eq!(prod.decision, Decision::RequireApproval);
    assert_eq!(prod.primary_rule, "prod-write-gate");
    assert_eq!(prod.reason, "Production writes require human approval");
    assert!(prod.approval_required);
    // The seed gives no approval block: the built-in default gate applies.
    assert_eq!(prod.gates.len(), 1);
    assert_eq!(prod.gates[0].approvers, 1);
    assert_eq!(prod.gates[0].roles, vec!["approver"]);

    let pay = decide(
        &snap,
        r#"{"topic":"job.billing.pay","risk_tags":["payment"]}"#,
    );
    assert_eq!(
        (pay.decision, pay.primary_rule.as_str()),
        (Decision::RequireApproval, "payment-gate")
    );
    assert_eq!(pay.reason, "Financial operations require dual approval");

    let egress = decide(
        &snap,
        r#"{"topic":"job.http.get_x","risk_tags":["egress"]}"#,
    );
    assert_eq!(egress.decision, Decision::AllowWithConstraints);
    assert_eq!(egress.constraints["max_runtime_sec"], 60);
    assert_eq!(
        egress.constraints["network_allowlist"],
        serde_json::json!(["api.github.com", "api.slack.com"])
    );

    let unknown = decide(&snap, r#"{"topic":"job.x.frob"}"#);
    assert_eq!(
        unknown.decision,
        Decision::RequireApproval,
        "fail safe default"
    );
    assert_eq!(unknown.primary_rule, "default");
    assert!(unknown.matched_rules.is_empty());
}

const BASE: &str = r#"
version: v1
name: team-a
defaults:
  decision: require_approval
  approval: { approvers: 1, roles: [reviewer], sla: 30m, timeout: 60m }
rules:
  - id: read
    match: { topics: ["job.*.read"], risk_tags: [] }
    decision: allow
  - id: gate
    match: { risk_tags: [prod, write] }
    decision: require_approval
    approval: { approvers: 2, roles: [oncall, owner], timeout: 1h }
"#;

#[test]
fn formatting_does_not_change_the_snapshot_id() {
    let base = load(BASE).id;
    let same = [
        // comments and blank lines
        "# a comment\n".to_owned() + BASE + "\n# trailing\n",
        // block instead of flow style, keys reordered, quoting changed
        r#"
rules:
  - decision: allow
    id: "read"
    match:
      topics:
        - 'job.*.read'
  - match:
      risk_tags: [write, prod, prod]
    approval:
      roles: [owner, oncall]
      timeout: 60m
      approvers: 2
    id: gate
    decision: require_approval
defaults:
  approval: { timeout: 1h, sla: 1800s, approvers: 1, roles: [reviewer] }
  decision: require_approval
name: team-a
version: v1
"#
        .to_owned(),
    ];
    for yaml in same {
        assert_eq!(load(&yaml).id, base, "{yaml}");
    }
}

#[test]
fn every_semantic_change_changes_the_snapshot_id() {
    let base = load(BASE).id;
    let changes = [
        ("name: team-a", "name: team-b"),
        ("approvers: 2", "approvers: 3"),
        ("roles: [oncall, owner]", "roles: [oncall]"),
        ("timeout: 1h", "timeout: 2h"),
        ("decision: allow", "decision: deny"),
        ("job.*.read", "job.*.list"),
        ("risk_tags: [prod, write]", "risk_tags: [prod]"),
        ("id: read", "id: read-2"),
        ("sla: 30m", "sla: 20m"),
    ];
    let mut seen = BTreeSet::new();
    for (from, to) in changes {
        assert!(BASE.contains(from), "{from}");
        let changed = BASE.replacen(from, to, 1);
        let id = load(&changed).id;
        assert_ne!(id, base, "{from} -> {to}");
        assert!(seen.insert(id), "two changes hashed alike: {from}");
    }
    // Adding a reason, or moving a rule (which changes the primary rule),
    // is a semantic change too.
    let with_reason = BASE.replace(
        "    decision: allow\n",
        "    decision: allow\n    reason: reads\n",
    );
    assert_ne!(load(&with_reason).id, base);
    let name_in_id = load(BASE).id;
    assert_eq!(name_in_id.name(), "team-a");
}

#[test]
fn snapshot_ids_parse() {
    let id = load(BASE).id;
    assert_eq!(SnapshotId::parse(id.as_str()).unwrap(), id);
    for bad in [
        "",
        "cfg:x:policy#sha256:abc",
        "x:team:policy#sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "cfg::policy#sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "cfg:a:policy#sha256:000000000000000000000000000000000000000000000000000000000000000G",
    ] {
        assert!(SnapshotId::parse(bad).is_err(), "{bad}");
    }
}

/// One broken policy per validation error: the code and the exact location.
#[test]
fn every_validation_error_is_located() {
    let cases: &[(&str, &str, u32, u32)] = &[
        ("version: v2\n", "unsupported-version", 1, 10),
        ("rules: []\n", "missing-key", 1, 1),
        ("version: v1\nrulez: []\n", "unknown-key", 2, 1),
        ("version: v1\nname: 'a b'\n", "invalid-name", 2, 7),
        (
            "version: v1\ndefaults: { decision: maybe }\n",
            "unknown-decision",
            2,
            23,
        ),
        (
            "version: v1\ndefaults: { decision: allow_with_constraints }\n",
            "unknown-decision",
            2,
            23,
        ),
        (
            "version: v1\ndefaults: { approval: { approvers: 0 } }\n",
            "invalid-approvers",
            2,
            36,
        ),
        (
            "version: v1\ndefaults: { approval: { roles: [] } }\n",
            "empty-roles",
            2,
            32,
        ),
        (
            "version: v1\ndefaults: { approval: { sla: 30 } }\n",
            "invalid-duration",
            2,
            30,
        ),
        (
            "version: v1\ndefaults: { approval: { timeout: soon } }\n",
            "invalid-duration",
            2,
            34,
        ),
        (
            "version: v1\ndefaults: { approval: { channels: [email] } }\n",
            "unknown-channel",
            2,
            36,
        ),
        (
            "version: v1\ndefaults: { approval: { roles: [agent] } }\n",
            "invalid-role",
            2,
            33,
        ),
        (
            "version: v1\nrules:\n  - id: a\n    match: {}\n    decision: alow\n",
            "unknown-decision",
            5,
            15,
        ),
        (
            "version: v1\nrules:\n  - id: A!\n    match: {}\n    decision: allow\n",
            "invalid-rule-id",
            3,
            9,
        ),
        (
            "version: v1\nrules:\n  - id: a\n    match: {}\n    decision: allow\n  - id: a\n    match: {}\n    decision: deny\n",
            "duplicate-rule-id",
            6,
            9,
        ),
        (
            "version: v1\nrules:\n  - id: a\n    match: { topics: ['job.[x'] }\n    decision: allow\n",
            "invalid-glob",
            4,
            23,
        ),
        (
            "version: v1\nrules:\n  - id: a\n    match: { target: ['[z-a]'] }\n    decision: deny\n",
            "invalid-glob",
            4,
            23,
        ),
        (
            "version: v1\nrules:\n  - id: a\n    match: { attributes: { env: 'p[' } }\n    decision: deny\n",
            "invalid-glob",
            4,
            33,
        ),
        (
            "version: v1\nrules:\n  - id: a\n    match: { topics: [] }\n    decision: allow\n",
            "empty-glob-list",
            4,
            22,
        ),
        (
            "version: v1\nrules:\n  - id: a\n    match: {}\n    decision: require_approval\n    approval: { approvers: -1 }\n",
            "invalid-approvers",
            6,
            28,
        ),
        (
            "version: v1\nrules:\n  - id: a\n    match: {}\n    decision: require_approval\n    approval: { roles: [] }\n",
            "empty-roles",
            6,
            24,
        ),
        (
            "version: v1\nrules:\n  - id: a\n    match: {}\n    decision: require_approval\n    approval: { bind_within: 5 minutes }\n",
            "invalid-duration",
            6,
            30,
        ),
        (
            "version: v1\nrules:\n  - id: a\n    match: {}\n    decision: allow\n    approval: { approvers: 2 }\n",
            "misplaced-key",
            6,
            15,
        ),
        (
            "version: v1\nrules:\n  - id: a\n    match: {}\n    decision: allow\n    constraints: { max_runtime_sec: 5 }\n",
            "misplaced-key",
            6,
            18,
        ),
        (
            "version: v1\nrules:\n  - id: a\n    match: {}\n    decision: allow\n    overridable: true\n",
            "misplaced-key",
            6,
            18,
        ),
        (
            "version: v1\nrules:\n  - id: a\n    match: {}\n    decision: allow_with_constraints\n    constraints: { max_runtime_sec: fast }\n",
            "invalid-constraint",
            6,
            37,
        ),
        (
            "version: v1\nrules:\n  - id: a\n    match: {}\n    decision: allow_with_constraints\n    constraints: { network_allowlist: example.com }\n",
            "invalid-constraint",
            6,
            39,
        ),
        (
            "version: v1\nrules:\n  - id: a\n    match: {}\n    decision: allow_with_constraints\n",
            "missing-key",
            3,
            5,
        ),
        (
            "version: v1\nrules:\n  - id: a\n    decision: allow\n",
            "missing-key",
            3,
            5,
        ),
        (
            "version: v1\nrules:\n  - id: a\n    match: {}\n    decision: deny\n    summary: { title: 'Review {topik}' }\n",
            "invalid-template",
            6,
            23,
        ),
        (
            "version: v1\nrules:\n  - id: a\n    match: { attributes: { cost: { gt: true } } }\n    decision: deny\n",
            "invalid-attribute-test",
            4,
            34,
        ),
        (
            "version: v1\nrules:\n  - id: a\n    match: { attributes: { cost: {} } }\n    decision: deny\n",
            "invalid-attribute-test",
            4,
            34,
        ),
        (
            "version: v1\nrules:\n  - id: a\n    match: { attributes: { cost: { between: [1, 2] } } }\n    decision: deny\n",
            "unknown-key",
            4,
            36,
        ),
        (
            "version: v1\nrules:\n  - id: a\n    match: { action: modify }\n    decision: deny\n",
            "wrong-type",
            4,
            22,
        ),
        (
            "version: v1\nrules:\n  - id: a\n    match: { topic: [x] }\n    decision: deny\n",
            "unknown-key",
            4,
            14,
        ),
        (
            "version: v1\nrules:\n  - id: a\n    match: {}\n    decision: deny\n    overridable: yes\n",
            "wrong-type",
            6,
            18,
        ),
        ("version: v1\nversion: v1\n", "duplicate-key", 2, 1),
        ("version: v1\nrules: [\n", "yaml", 2, 8),
        ("version: v1\n---\nversion: v1\n", "too-complex", 2, 1),
    ];
    for &(yaml, code, line, column) in cases {
        let errs = errors(yaml);
        let found = errs.iter().find(|f| f.code == code);
        let Some(f) = found else {
            panic!("expected `{code}` for:\n{yaml}\ngot {errs:#?}");
        };
        assert_eq!(
            (f.line, f.column),
            (line, column),
            "location of `{code}` in:\n{yaml}\n{f}"
        );
        assert_eq!(f.file, "p.yaml");
        let shown = f.to_string();
        assert!(
            shown.starts_with(&format!("p.yaml:{line}:{column}: error[{code}]: ")),
            "{shown}"
        );
    }
}

#[test]
fn all_errors_are_reported_at_once() {
    let yaml = "version: v1\nrules:\n  - id: a\n    match: { topics: ['x['] }\n    decision: alow\n  - id: b\n    match: {}\n    decision: require_approval\n    approval: { approvers: 0, roles: [], sla: 10x }\n";
    let codes: BTreeSet<&str> = errors(yaml).iter().map(|f| f.code).collect();
    let want: BTreeSet<&str> = [
        "invalid-glob",
        "unknown-decision",
        "invalid-approvers",
        "empty-roles",
        "invalid-duration",
    ]
    .into();
    assert_eq!(codes, want);
}

#[test]
fn hostile_yaml_gives_a_located_error_not_a_panic() {
    // An alias bomb: nine levels of ten-fold references.
    let mut bomb = String::from(
        "version: v1\nrules:\n  - id: r\n    decision: allow_with_constraints\n    match: {}\n    constraints:\n      x0: &a0 [a, a, a, a, a, a, a, a, a, a]\n",
    );
    for i in 1..9 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        bomb.push_str(&format!("      x{i}: &a{i} [{refs}]\n"));
    }
    let deep_flow = format!(
        "version: v1\nrules:\n  - id: r\n    decision: allow_with_constraints\n    match: {{}}\n    constraints:\n      x: {}{}\n",
        "[".repeat(500),
        "]".repeat(500)
    );
    let mut deep_not =
        String::from("version: v1\nrules:\n  - id: r\n    decision: allow\n    match:\n");
    for i in 0..80 {
        deep_not.push_str(&format!("{}not:\n", "  ".repeat(i + 3)));
    }
    deep_not.push_str(&format!("{}topics: [x]\n", "  ".repeat(83)));
    let cases = [
        bomb,
        deep_flow,
        deep_not,
        "version: v1\nrules: 12\n".into(),
        "version: v1\nrules:\n  - 12\n".into(),
        "version: v1\nrules:\n  - id: [a]\n".into(),
        "version: [v1]\n".into(),
        "\u{0}\u{1}".into(),
        "version: v1\nrules:\n  - id: r\n    match: !!binary aGVsbG8=\n".into(),
        ": : :\n- - -\n".into(),
        "version: v1\nrules:\n  - id: r\n    decision: allow\n    match: { topics: *nope }\n"
            .into(),
        String::new(),
    ];
    for yaml in cases {
        let errs = errors(&yaml);
        assert!(!errs.is_empty(), "{yaml}");
        for e in errs {
            assert!(e.line >= 1 && e.column >= 1, "unlocated: {e}");
        }
    }
}

#[test]
fn lint_warns_about_rules_that_never_match_or_never_matter() {
    let w = warnings(
        r#"
version: v1
rules:
  - id: contradiction
    match: { risk_tags: [prod], risk_tags_none: [prod] }
    decision: deny
  - id: empty-not
    match: { not: {} }
    decision: deny
  - id: bad-range
    match: { attributes: { cost: { gt: 10, lt: 5 } } }
    decision: deny
  - id: empty-in
    match: { attributes: { env: { in: [] } } }
    decision: deny
  - id: stop-prod
    match: { target: ["prod-*"] }
    decision: deny
  - id: allow-prod-eu
    match: { target: ["prod-eu"], action: [deploy] }
    decision: allow
  - id: gate-prod
    match: { target: ["prod-*"], risk_tags: [write] }
    decision: require_approval
  - id: limit-prod
    match: { target: ["prod-*"] }
    decision: allow_with_constraints
    constraints: { max_runtime_sec: 5 }
  - id: limit-reads
    match: { topics: ["*.read"] }
    decision: allow_with_constraints
    constraints: { max_runtime_sec: 5 }
  - id: gate-reads
    match: { topics: ["*.read"] }
    decision: require_approval
    approval: { sla: 2h, timeout: 1h }
"#,
    );
    let by_rule = |rule: &str, code: &str| {
        w.iter().any(|f| {
            f.rule.as_deref() == Some(rule) && f.code == code && f.severity == Severity::Warning
        })
    };
    assert!(by_rule("contradiction", "never-matches"), "{w:#?}");
    assert!(by_rule("empty-not", "never-matches"));
    assert!(by_rule("bad-range", "never-matches"));
    assert!(by_rule("empty-in", "never-matches"));
    // A deny over a superset shadows an allow, a gate and a constraint rule.
    assert!(by_rule("allow-prod-eu", "shadowed-rule"));
    assert!(by_rule("gate-prod", "shadowed-rule"));
    assert!(by_rule("limit-prod", "shadowed-rule"));
    // Constraints still apply under require_approval: not shadowed.
    assert!(!by_rule("limit-reads", "shadowed-rule"));
    assert!(by_rule("gate-reads", "sla-after-timeout"));
    assert!(!by_rule("stop-prod", "shadowed-rule"));
    let line = w
        .iter()
        .find(|f| f.rule.as_deref() == Some("allow-prod-eu"))
        .unwrap()
        .line;
    assert_eq!(line, 19, "the `- id:` line of the rule");
}

#[test]
fn gates_no_configured_people_can_fill_are_reported() {
    let snap = load(
        r#"
version: v1
defaults: { approval: { roles: [reviewer] } }
rules:
  - id: dual
    match: { risk_tags: [payment] }
    decision: require_approval
    approval: { approvers: 2, roles: [finance] }
  - id: single
    match: { risk_tags: [prod] }
    decision: require_approval
    approval: { approvers: 1, roles: [oncall, owner] }
"#,
    );
    let person = |name: &str, roles: &[&str]| Person {
        name: name.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
    };
    let people = [
        person("alice", &["finance", "reviewer"]),
        person("bob", &["owner"]),
    ];
    let found = policy::unsatisfiable_gates(snap.policy.doc(), &people, "p.yaml");
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].rule.as_deref(), Some("dual"));
    assert!(
        found[0].message.contains("needs 2 distinct approvers"),
        "{}",
        found[0]
    );
    let more = [
        people[0].clone(),
        people[1].clone(),
        person("carol", &["finance"]),
    ];
    assert!(policy::unsatisfiable_gates(snap.policy.doc(), &more, "p.yaml").is_empty());
    let nobody = policy::unsatisfiable_gates(snap.policy.doc(), &[], "p.yaml");
    assert_eq!(
        nobody.len(),
        3,
        "both rules and the default gate: {nobody:#?}"
    );
}

#[test]
fn the_snapshot_document_is_rfc8785_canonical() {
    let tricky = r#"
version: v1
name: tricky
rules:
  - id: unicode-keys
    match:
      attributes:
        "\uFB33": x*
        "\U0001F600": { gt: 1.5e21, lt: 1e-7, in: [3, 1.0, "b", "a", 1] }
        "é": { ne: -0.0 }
        z: true
    decision: require_approval
  - id: floats
    match: { topics: ["b", "a", "b"] }
    decision: allow_with_constraints
    constraints:
      max_cost: 0.000001
      zeta: { b: [1e30, 4.50], a: "\u20ac" }
      alpha_allowlist: [y, x]
"#;
    let sources = [
        tricky.to_owned(),
        BASE.to_owned(),
        std::fs::read_to_string(root().join("policies/default.yaml")).unwrap(),
        std::fs::read_to_string(root().join("tests/fixtures/seed-approval-policy.yaml")).unwrap(),
        gavel::policy::generate::policy_yaml(200, 3),
    ];
    for source in sources {
        let snap = load(&source);
        let reparsed: serde_json::Value = serde_json::from_str(&snap.canonical_json).unwrap();
        assert_eq!(gavel::canonical::to_jcs(&reparsed), snap.canonical_json);
        assert_eq!(
            snap.id.sha256(),
            gavel::canonical::sha256_hex(snap.canonical_json.as_bytes())
        );
    }
}

/// The roles a full load resolves, gate by gate.
fn roles_of_loaded(yaml: &str) -> BTreeSet<String> {
    let loaded = policy::load(yaml, "p.yaml").unwrap_or_else(|e| panic!("{:#?}", e.findings));
    let doc = loaded.snapshot.policy.doc();
    let mut roles = doc.default_gate.roles.clone();
    for gate in doc.rules.iter().filter_map(|r| r.gate.as_ref()) {
        roles.extend(gate.roles.iter().cloned());
    }
    roles
}

#[test]
fn approver_roles_read_cheaply_agree_with_a_full_load() {
    let shipped = std::fs::read_to_string(root().join("policies/default.yaml")).unwrap();
    let seed =
        std::fs::read_to_string(root().join("tests/fixtures/seed-approval-policy.yaml")).unwrap();
    let no_defaults = "version: v1\nrules:\n  - id: a\n    match: { action: [x] }\n    decision: require_approval\n  - id: b\n    match: { action: [y] }\n    decision: require_approval\n    approval: { roles: [dba, sre] }\n";
    let default_roles = "version: v1\ndefaults:\n  decision: deny\n  approval: { roles: [finance] }\nrules:\n  - id: a\n    match: { action: [x] }\n    decision: require_approval\n    approval: { approvers: 2 }\n";
    let generated = policy::generate::policy_yaml(500, 7);
    for (what, yaml) in [
        ("shipped", shipped.as_str()),
        ("seed", seed.as_str()),
        ("no defaults", no_defaults),
        ("default roles", default_roles),
        ("generated", generated.as_str()),
    ] {
        let cheap = policy::approver_roles(yaml, "p.yaml").unwrap();
        assert_eq!(cheap, roles_of_loaded(yaml), "{what}");
        assert!(!cheap.is_empty(), "{what}");
    }
    let names = |yaml| -> Vec<String> {
        policy::approver_roles(yaml, "p.yaml")
            .unwrap()
            .into_iter()
            .collect()
    };
    assert_eq!(names(no_defaults), ["approver", "dba", "sre"]);
    assert_eq!(names(default_roles), ["finance"]);

    // A file that does not parse gets the located errors of a full load.
    let broken = "version: v1\nrules:\n  - id: a\n    match: [\n";
    let e = policy::approver_roles(broken, "p.yaml").unwrap_err();
    assert_eq!(e.findings, policy::check(broken, "p.yaml"));
    assert!(e.findings.iter().all(|f| f.line >= 1 && f.file == "p.yaml"));
}
