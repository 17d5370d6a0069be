//! Policy test suites (`gavel policy test`): YAML files of jobs with the
//! decision, primary rule, matched rules, gates and constraints each should
//! get. Pure: the caller reads the files and hands in the policy.

use super::raw::{self, Pos, RawCase};
use super::{Decision, Evaluation, Snapshot};
use crate::job::{Job, Limits};
use serde::Serialize;
use std::collections::BTreeSet;

/// A parsed suite.
#[derive(Debug)]
pub struct Suite {
    pub name: Option<String>,
    /// The policy path as written, relative to the suite file.
    pub policy: String,
    cases: Vec<(Pos, RawCase)>,
}

/// Parses suite text; the error is located (`file:line:col: message`).
pub fn parse(source: &str, file: &str) -> Result<Suite, String> {
    let raw = raw::parse_suite(source).map_err(|e| {
        let pos = e
            .location()
            .map(|l| Pos::from_location(&l))
            .unwrap_or(Pos { line: 1, column: 1 });
        let (_, msg) = super::validate::describe_parse_error(&e.without_snippet().to_string());
        format!("{file}:{}:{}: {msg}", pos.line, pos.column)
    })?;
    Ok(Suite {
        name: raw.name,
        policy: raw.policy,
        cases: raw
            .cases
            .into_iter()
            .map(|c| (Pos::of(&c), c.value))
            .collect(),
    })
}

/// The outcome of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub name: String,
    pub line: u32,
    pub passed: bool,
    /// What differed from the expectation.
    pub failures: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<Evaluation>,
}

impl Suite {
    /// Runs every case against a snapshot.
    pub fn run(&self, snapshot: &Snapshot) -> Vec<CaseResult> {
        self.cases
            .iter()
            .map(|(pos, case)| run_case(case, *pos, snapshot))
            .collect()
    }
}

fn run_case(case: &RawCase, pos: Pos, snapshot: &Snapshot) -> CaseResult {
    let mut failures = Vec::new();
    let job = match Job::from_json_value(case.job.clone(), &Limits::default()) {
        Ok(j) => j,
        Err(e) => {
            return CaseResult {
                name: case.name.clone(),
                line: pos.line,
                passed: false,
                failures: vec![format!("invalid job: {e}")],
                evaluation: None,
            };
        }
    };
    let eval = snapshot.policy.evaluate(&job, case.principal.as_deref());
    let expect = &case.expect;
    match Decision::parse(&expect.decision) {
        None => failures.push(format!(
            "unknown expected decision `{}`, expected one of allow, allow_with_constraints, require_approval, deny",
            expect.decision
        )),
        Some(d) if d != eval.decision => failures.push(format!(
            "decision: expected {d}, got {} (primary rule `{}`)",
            eval.decision, eval.primary_rule
        )),
        Some(_) => {}
    }
    if let Some(p) = &expect.primary_rule
        && *p != eval.primary_rule
    {
        failures.push(format!(
            "primary_rule: expected `{p}`, got `{}`",
            eval.primary_rule
        ));
    }
    if let Some(m) = &expect.matched_rules {
        let want: BTreeSet<&String> = m.iter().collect();
        let got: BTreeSet<&String> = eval.matched_rules.iter().collect();
        if want != got {
            failures.push(format!("matched_rules: expected {want:?}, got {got:?}"));
        }
    }
    if let Some(gates) = &expect.gates {
        let want: BTreeSet<(u32, BTreeSet<&String>)> = gates
            .iter()
            .map(|g| (g.approvers, g.roles.iter().collect()))
            .collect();
        let got: BTreeSet<(u32, BTreeSet<&String>)> = eval
            .gates
            .iter()
            .map(|g| (g.approvers, g.roles.iter().collect()))
            .collect();
        if want != got {
            failures.push(format!("gates: expected {want:?}, got {got:?}"));
        }
        for g in gates {
            let Some(rules) = &g.rules else { continue };
            let roles: Vec<String> = g
                .roles
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let actual = eval.gates.iter().find(|x| x.roles == roles);
            let want: BTreeSet<&String> = rules.iter().collect();
            let got: BTreeSet<&String> =
                actual.map(|a| a.rules.iter().collect()).unwrap_or_default();
            if want != got {
                failures.push(format!(
                    "gate [{}] rules: expected {want:?}, got {got:?}",
                    roles.join(", ")
                ));
            }
        }
    }
    if let Some(c) = &expect.constraints
        && *c != eval.constraints
    {
        failures.push(format!(
            "constraints: expected {}, got {}",
            serde_json::to_string(c).unwrap_or_default(),
            serde_json::to_string(&eval.constraints).unwrap_or_default()
        ));
    }
    if let Some(o) = expect.overridable
        && o != eval.overridable
    {
        failures.push(format!(
            "overridable: expected {o}, got {}",
            eval.overridable
        ));
    }
    CaseResult {
        name: case.name.clone(),
        line: pos.line,
        passed: failures.is_empty(),
        failures,
        evaluation: Some(eval),
    }
}
