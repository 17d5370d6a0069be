//! The shipped policy's own test suites (policies/tests/), run as part of
//! the test suite.

use super::root;
use gavel::policy::{self, suite};

#[test]
fn the_default_policy_passes_its_suites() {
    let dir = root().join("policies/tests");
    let mut suites = 0;
    let mut cases = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let s = suite::parse(&text, &path.display().to_string()).unwrap();
        let policy_path = dir.join(&s.policy);
        let source = std::fs::read_to_string(&policy_path).unwrap();
        let loaded = policy::load(&source, "default.yaml").unwrap();
        assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
        for r in s.run(&loaded.snapshot) {
            assert!(
                r.passed,
                "{}: {} (line {}): {:?}",
                path.display(),
                r.name,
                r.line,
                r.failures
            );
            cases += 1;
        }
        suites += 1;
    }
    assert!(suites >= 6 && cases >= 30, "{suites} suites, {cases} cases");
}

#[test]
fn a_failing_expectation_is_reported() {
    let source = std::fs::read_to_string(root().join("policies/default.yaml")).unwrap();
    let snap = policy::load(&source, "default.yaml").unwrap().snapshot;
    let s = suite::parse(
        r#"
policy: ../default.yaml
cases:
  - name: wrong on purpose
    job: { action: rotate, target: master_key }
    expect:
      decision: allow
      primary_rule: nope
      matched_rules: [a]
      gates: [{ approvers: 1, roles: [x] }]
      constraints: { max_runtime_sec: 1 }
      overridable: true
  - name: bad job
    job: { topic: 5 }
    expect: { decision: allow }
"#,
        "s.yaml",
    )
    .unwrap();
    let results = s.run(&snap);
    assert!(!results[0].passed);
    assert_eq!(results[0].failures.len(), 6, "{:#?}", results[0].failures);
    assert_eq!(results[0].line, 4);
    assert!(!results[1].passed);
    assert!(
        results[1].failures[0].contains("job.topic"),
        "{:?}",
        results[1].failures
    );
    let err = suite::parse("policy: x\ncases:\n  - name: a\n    jobb: {}\n", "s.yaml").unwrap_err();
    assert!(err.starts_with("s.yaml:4:5: unknown field `jobb`"), "{err}");
}
