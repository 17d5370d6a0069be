//! The shadowed-rule lint: a rule that never takes effect because a stricter
//! rule matches every job it matches.
//!
//! Comparing every pair of rules is quadratic (10,000 rules: 10^8 pairs), so
//! this lint asks the compiled index instead: for each rule it builds one job
//! the rule matches (a witness), and only the rules that also match the
//! witness can cover it. Those few get the exact `covers` check.

use super::compile::Policy;
use super::glob::Pattern;
use super::model::*;
use super::validate::{covers, never_matches};
use crate::job::{Job, Scalar};
use serde_json::Number;

/// A job (and principal) that match `m`, when one is easy to build.
fn witness(m: &MatchSpec) -> Option<(Job, Option<String>)> {
    let example = |globs: Option<&Vec<Pattern>>| -> Option<String> {
        match globs {
            None => Some(String::new()),
            Some(g) => g.first()?.example(),
        }
    };
    let principal = match &m.principal {
        None => None,
        Some(_) => Some(example(m.principal.as_ref())?),
    };
    let mut attributes = std::collections::BTreeMap::new();
    for (key, test) in &m.attributes {
        let value = match test {
            AttrTest::Glob(g) => Scalar::String(g.example()?),
            AttrTest::Ops(ops) => match attr_example(ops)? {
                Some(v) => v,
                None => continue,
            },
        };
        attributes.insert(key.clone(), value);
    }
    let job = Job {
        job_id: None,
        tenant: String::new(),
        topic: example(m.topics.as_ref())?,
        action: example(m.action.as_ref())?,
        target: example(m.target.as_ref())?,
        risk_tags: m.risk_tags.clone(),
        attributes,
        params: Default::default(),
        proposal: None,
    };
    Some((job, principal))
}

fn number(f: f64) -> Option<Scalar> {
    Number::from_f64(f).map(Scalar::Number)
}

/// A value satisfying operator tests: `Some(None)` for "leave the attribute
/// out" (`exists: false`), `None` when no easy value is found.
fn attr_example(ops: &AttrOps) -> Option<Option<Scalar>> {
    if ops.exists == Some(false) {
        return Some(None);
    }
    if let Some(v) = &ops.eq {
        return Some(Some(v.clone()));
    }
    if let Some(list) = &ops.in_ {
        return Some(Some(list.first()?.clone()));
    }
    let bound = ops
        .gte
        .clone()
        .or_else(|| ops.lte.clone())
        .or_else(|| match &ops.gt {
            Some(Scalar::Number(n)) => number(n.as_f64()? + 1.0),
            Some(Scalar::String(s)) => Some(Scalar::String(format!("{s}~"))),
            _ => None,
        })
        .or_else(|| match &ops.lt {
            Some(Scalar::Number(n)) => number(n.as_f64()? - 1.0),
            Some(Scalar::String(_)) => Some(Scalar::String(String::new())),
            _ => None,
        });
    if let Some(v) = bound {
        return Some(Some(v));
    }
    match &ops.ne {
        Some(Scalar::Number(n)) => Some(number(n.as_f64()? + 1.0)),
        Some(Scalar::String(s)) => Some(Some(Scalar::String(format!("{s}~")))),
        Some(Scalar::Bool(b)) => Some(Some(Scalar::Bool(!b))),
        None => Some(Some(Scalar::String("x".into()))),
    }
}

/// Warnings for rules that never take effect: a stricter rule matches every
/// job they match, and they contribute nothing under that decision (an
/// allow contributes nothing anywhere; gates and constraints nothing under
/// deny). Conservative: silent when unsure.
pub(crate) fn shadowed(policy: &Policy, file: &str) -> Vec<Finding> {
    let rules = policy.rules();
    let mut out = Vec::new();
    for (bi, b) in rules.iter().enumerate() {
        if b.decision == Decision::Deny || never_matches(&b.matcher).is_some() {
            continue;
        }
        let Some((job, principal)) = witness(&b.matcher) else {
            continue;
        };
        let matching = policy.matching_rules(&job, principal.as_deref());
        if !matching.contains(&bi) {
            continue;
        }
        let shadow = matching.iter().map(|&ai| &rules[ai]).find(|a| {
            a.decision > b.decision
                && (b.decision == Decision::Allow || a.decision == Decision::Deny)
                && never_matches(&a.matcher).is_none()
                && covers(&a.matcher, &b.matcher)
        });
        if let Some(a) = shadow {
            out.push(Finding {
                severity: Severity::Warning,
                code: "shadowed-rule",
                message: format!(
                    "rule `{}` never takes effect: rule `{}` (line {}) matches every job it matches and decides `{}`, which is stricter",
                    b.id, a.id, a.pos.line, a.decision
                ),
                file: file.to_owned(),
                line: b.pos.line,
                column: b.pos.column,
                rule: Some(b.id.clone()),
            });
        }
    }
    out
}
