//! Evaluation: a pure function from (policy, job, principal) to a decision
//! value. All rules are considered; the strictest matching decision wins,
//! whatever the file order. `explain` additionally says, for every rule that
//! did not match, which matcher failed and why.

use super::compile::{CompiledAttr, Node, Policy};
use super::glob::GlobScratch;
use super::model::*;
use super::template::Context;
use crate::job::{Job, Scalar};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// One approval requirement of a decided job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    pub approvers: u32,
    pub roles: Vec<String>,
    /// The rules that contributed this gate (same role set merged).
    pub rules: Vec<String>,
    pub sla_seconds: u64,
    pub timeout_seconds: u64,
    pub bind_within_seconds: u64,
    pub channels: Vec<Channel>,
    /// The escalation ladder (empty: one escalation at the SLA).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalate: Vec<EscalationStep>,
}

/// What the approver reads first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionSummary {
    pub title: String,
    pub why: String,
    pub next_effect: String,
}

/// A constraint key that several matching rules set to different values;
/// the first rule in file order won.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConstraintConflict {
    pub key: String,
    pub kept_rule: String,
    pub kept: Value,
    pub ignored_rule: String,
    pub ignored: Value,
}

/// The deadlines of a job that needs approval: the shortest of its gates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    pub sla_seconds: u64,
    pub timeout_seconds: u64,
    pub bind_within_seconds: u64,
    /// Every gate's escalation steps, by `after`, each (after, notify) once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ladder: Vec<EscalationStep>,
}

/// The result of evaluating one job against one policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub decision: Decision,
    /// The first matching rule (file order) with the winning decision, or
    /// `default` when nothing matched.
    pub primary_rule: String,
    /// Every matching rule id, in file order.
    pub matched_rules: Vec<String>,
    pub reason: String,
    pub approval_required: bool,
    pub gates: Vec<Gate>,
    pub constraints: BTreeMap<String, Value>,
    pub constraint_conflicts: Vec<ConstraintConflict>,
    pub decision_summary: DecisionSummary,
    /// A deny that break-glass may override.
    pub overridable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timing: Option<Timing>,
}

/// Why one rule did or did not match.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleReport {
    pub rule: String,
    pub decision: Decision,
    pub matched: bool,
    /// For a rule that did not match: each failing matcher and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<MatcherFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatcherFailure {
    /// `topics`, `risk_tags`, `attributes.cost`, `not`, …
    pub matcher: String,
    pub detail: String,
}

/// An evaluation with the story of every rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    #[serde(flatten)]
    pub evaluation: Evaluation,
    pub rules: Vec<RuleReport>,
}

/// Per-evaluation state: which patterns matched the job's fields.
struct Facts<'a> {
    job: &'a Job,
    principal: Option<&'a str>,
    /// Per glob field, sorted matching pattern ids.
    matched: [Vec<usize>; 4],
    /// (attribute key index, sorted matching pattern ids) for string attributes.
    attr_matched: Vec<(usize, Vec<usize>)>,
}

impl Facts<'_> {
    fn field_value(&self, f: usize) -> Option<&str> {
        match f {
            0 => Some(&self.job.topic),
            1 => Some(&self.job.action),
            2 => Some(&self.job.target),
            _ => self.principal,
        }
    }
}

impl Policy {
    fn facts<'a>(&self, job: &'a Job, principal: Option<&'a str>) -> Facts<'a> {
        let mut scratch = GlobScratch::default();
        let mut matched: [Vec<usize>; 4] = Default::default();
        let subjects = [
            Some(job.topic.as_str()),
            Some(job.action.as_str()),
            Some(job.target.as_str()),
            principal,
        ];
        for (f, subject) in subjects.into_iter().enumerate() {
            if let Some(s) = subject {
                self.fields[f].matches_into(s, &mut scratch, &mut matched[f]);
            }
        }
        let mut attr_matched = Vec::new();
        if !self.attr_keys.is_empty() {
            for (key, value) in &job.attributes {
                let (Some(&k), Scalar::String(s)) = (self.attr_keys.get(key), value) else {
                    continue;
                };
                if self.attr_globs[k].is_empty() {
                    continue;
                }
                let mut out = Vec::new();
                self.attr_globs[k].matches_into(s, &mut scratch, &mut out);
                attr_matched.push((k, out));
            }
        }
        Facts {
            job,
            principal,
            matched,
            attr_matched,
        }
    }

    /// Evaluates a job as `principal` (the authenticated caller of Decide).
    pub fn evaluate(&self, job: &Job, principal: Option<&str>) -> Evaluation {
        let matched = self.matching_rules(job, principal);
        self.combine(&matched, job, principal)
    }

    /// The indexes (file order) of every rule matching the job. The index
    /// proposes candidates (rules whose anchor glob or tag matched, plus the
    /// few with nothing to anchor on); each candidate is then checked in full.
    pub(crate) fn matching_rules(&self, job: &Job, principal: Option<&str>) -> Vec<usize> {
        let facts = self.facts(job, principal);
        let mut candidates: Vec<u32> = Vec::new();
        for f in 0..4 {
            for &p in &facts.matched[f] {
                candidates.extend_from_slice(&self.anchors[f][p]);
            }
        }
        if !self.tag_anchors.is_empty() {
            for t in &job.risk_tags {
                if let Some(rules) = self.tag_anchors.get(t) {
                    candidates.extend_from_slice(rules);
                }
            }
        }
        candidates.extend_from_slice(&self.unanchored);
        candidates.sort_unstable();
        candidates.dedup();
        candidates
            .into_iter()
            .map(|r| r as usize)
            .filter(|&r| self.node_holds(r, &facts))
            .collect()
    }

    /// Evaluates every rule in full and reports why each did or did not
    /// match. Slower than [`Policy::evaluate`], with the same decision.
    pub fn explain(&self, job: &Job, principal: Option<&str>) -> Explanation {
        let facts = self.facts(job, principal);
        let mut matched = Vec::new();
        let mut rules = Vec::with_capacity(self.doc.rules.len());
        for (i, rule) in self.doc.rules.iter().enumerate() {
            let mut failures = Vec::new();
            self.node_failures(i, &facts, &mut failures);
            if failures.is_empty() {
                matched.push(i);
            }
            rules.push(RuleReport {
                rule: rule.id.clone(),
                decision: rule.decision,
                matched: failures.is_empty(),
                failures,
            });
        }
        Explanation {
            evaluation: self.combine(&matched, job, principal),
            rules,
        }
    }

    fn node_holds(&self, n: usize, facts: &Facts<'_>) -> bool {
        let node: &Node = &self.nodes[n];
        for f in 0..4 {
            if let Some(ids) = &node.globs[f] {
                let hit = ids
                    .iter()
                    .any(|p| facts.matched[f].binary_search(p).is_ok());
                if !hit {
                    return false;
                }
            }
        }
        let tags = &facts.job.risk_tags;
        if !node.risk_tags.iter().all(|t| tags.contains(t)) {
            return false;
        }
        if node.risk_tags_none.iter().any(|t| tags.contains(t)) {
            return false;
        }
        for (k, test) in &node.attrs {
            if self.attr_check(*k, test, facts).is_err() {
                return false;
            }
        }
        match node.not {
            Some(inner) => !self.node_holds(inner, facts),
            None => true,
        }
    }

    fn node_failures(&self, n: usize, facts: &Facts<'_>, out: &mut Vec<MatcherFailure>) {
        let node: &Node = &self.nodes[n];
        for f in GlobField::ALL {
            let fi = f.index();
            let Some(ids) = &node.globs[fi] else { continue };
            if ids
                .iter()
                .any(|p| facts.matched[fi].binary_search(p).is_ok())
            {
                continue;
            }
            let globs: Vec<&str> = ids
                .iter()
                .map(|&p| self.fields[fi].patterns()[p].as_str())
                .collect();
            let detail = match facts.field_value(fi) {
                None => "no principal was given".to_owned(),
                Some(v) => format!("{} `{v}` matches none of {globs:?}", f.subject()),
            };
            out.push(MatcherFailure {
                matcher: f.key().into(),
                detail,
            });
        }
        let tags = &facts.job.risk_tags;
        let missing: Vec<&str> = node
            .risk_tags
            .iter()
            .filter(|t| !tags.contains(*t))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            out.push(MatcherFailure {
                matcher: "risk_tags".into(),
                detail: format!("missing required tags {missing:?}"),
            });
        }
        let forbidden: Vec<&str> = node
            .risk_tags_none
            .iter()
            .filter(|t| tags.contains(*t))
            .map(String::as_str)
            .collect();
        if !forbidden.is_empty() {
            out.push(MatcherFailure {
                matcher: "risk_tags_none".into(),
                detail: format!("has forbidden tags {forbidden:?}"),
            });
        }
        for (k, test) in &node.attrs {
            if let Err(detail) = self.attr_check(*k, test, facts) {
                out.push(MatcherFailure {
                    matcher: format!("attributes.{}", self.attr_names[*k]),
                    detail,
                });
            }
        }
        if let Some(inner) = node.not
            && self.node_holds(inner, facts)
        {
            out.push(MatcherFailure {
                matcher: "not".into(),
                detail: "the job matches the `not` block".into(),
            });
        }
    }

    /// Checks one attribute test; the error says why it does not hold.
    fn attr_check(&self, k: usize, test: &CompiledAttr, facts: &Facts<'_>) -> Result<(), String> {
        let key = &self.attr_names[k];
        let value = facts.job.attributes.get(key);
        match test {
            CompiledAttr::Glob { pattern } => {
                let glob = self.attr_globs[k].patterns()[*pattern].as_str();
                match value {
                    None => Err(format!("attribute `{key}` is missing")),
                    Some(Scalar::String(s)) => {
                        let hit = facts
                            .attr_matched
                            .iter()
                            .find(|(ak, _)| *ak == k)
                            .is_some_and(|(_, ids)| ids.binary_search(pattern).is_ok());
                        if hit {
                            Ok(())
                        } else {
                            Err(format!("`{s}` does not match `{glob}`"))
                        }
                    }
                    Some(other) => Err(format!(
                        "type mismatch: glob `{glob}` needs a string, the attribute is a {}",
                        other.type_name()
                    )),
                }
            }
            CompiledAttr::Ops(ops) => check_ops(key, ops, value),
        }
    }

    /// Combines the matching rules (indexes, file order) into a decision.
    fn combine(&self, matched: &[usize], job: &Job, principal: Option<&str>) -> Evaluation {
        let rules = &self.doc.rules;
        let matched_rules: Vec<String> = matched.iter().map(|&i| rules[i].id.clone()).collect();
        let decision = matched
            .iter()
            .map(|&i| rules[i].decision)
            .max()
            .unwrap_or(self.doc.default_decision);
        let primary = matched
            .iter()
            .copied()
            .find(|&i| rules[i].decision == decision);

        let mut gates: Vec<Gate> = Vec::new();
        if decision == Decision::RequireApproval {
            let mut add = |spec: &GateSpec, rule: &str| {
                let roles: Vec<String> = spec.roles.iter().cloned().collect();
                match gates.iter_mut().find(|g| g.roles == roles) {
                    Some(g) => {
                        g.approvers = g.approvers.max(spec.approvers);
                        g.sla_seconds = g.sla_seconds.min(spec.sla.0);
                        g.timeout_seconds = g.timeout_seconds.min(spec.timeout.0);
                        g.bind_within_seconds = g.bind_within_seconds.min(spec.bind_within.0);
                        g.channels.retain(|c| spec.channels.contains(c));
                        for st in &spec.escalate {
                            if !g.escalate.contains(st) {
                                g.escalate.push(st.clone());
                            }
                        }
                        g.escalate.sort();
                        g.rules.push(rule.to_owned());
                    }
                    None => gates.push(Gate {
                        approvers: spec.approvers,
                        roles,
                        rules: vec![rule.to_owned()],
                        sla_seconds: spec.sla.0,
                        timeout_seconds: spec.timeout.0,
                        bind_within_seconds: spec.bind_within.0,
                        channels: spec.channels.iter().copied().collect(),
                        escalate: spec.escalate.clone(),
                    }),
                }
            };
            if primary.is_none() {
                add(&self.doc.default_gate, "default");
            }
            for &i in matched {
                if let Some(spec) = &rules[i].gate {
                    add(spec, &rules[i].id);
                }
            }
        }
        let timing = (!gates.is_empty()).then(|| Timing {
            sla_seconds: gates.iter().map(|g| g.sla_seconds).min().unwrap_or(0),
            timeout_seconds: gates.iter().map(|g| g.timeout_seconds).min().unwrap_or(0),
            bind_within_seconds: gates
                .iter()
                .map(|g| g.bind_within_seconds)
                .min()
                .unwrap_or(0),
            ladder: {
                let mut l: Vec<EscalationStep> = gates
                    .iter()
                    .flat_map(|g| g.escalate.iter().cloned())
                    .collect();
                l.sort();
                l.dedup();
                l
            },
        });

        let mut constraints: BTreeMap<String, Value> = BTreeMap::new();
        let mut setters: BTreeMap<String, usize> = BTreeMap::new();
        let mut constraint_conflicts = Vec::new();
        if decision != Decision::Deny {
            for &i in matched {
                for (key, v) in &rules[i].constraints {
                    let Some(current) = constraints.get_mut(key) else {
                        constraints.insert(key.clone(), v.clone());
                        setters.insert(key.clone(), i);
                        continue;
                    };
                    if key.starts_with("max_") {
                        if v.as_f64() < current.as_f64() {
                            *current = v.clone();
                        }
                    } else if key.ends_with("_allowlist") {
                        let other: &[Value] = v.as_array().map_or(&[], Vec::as_slice);
                        if let Value::Array(items) = current {
                            items.retain(|x| other.contains(x));
                        }
                    } else if key.ends_with("_denylist") {
                        if let Value::Array(items) = current {
                            for x in v.as_array().into_iter().flatten() {
                                if !items.contains(x) {
                                    items.push(x.clone());
                                }
                            }
                        }
                    } else if current != v {
                        constraint_conflicts.push(ConstraintConflict {
                            key: key.clone(),
                            kept_rule: rules[setters[key]].id.clone(),
                            kept: current.clone(),
                            ignored_rule: rules[i].id.clone(),
                            ignored: v.clone(),
                        });
                    }
                }
            }
        }

        let overridable = decision == Decision::Deny
            && !matched.is_empty()
            && matched
                .iter()
                .filter(|&&i| rules[i].decision == Decision::Deny)
                .all(|&i| rules[i].overridable);

        let primary_rule = primary.map_or("default".to_owned(), |i| rules[i].id.clone());
        let reason = match primary {
            Some(i) => rules[i]
                .reason
                .clone()
                .unwrap_or_else(|| format!("rule `{}` decided {decision}", rules[i].id)),
            None => format!("no rule matched; the default decision is {decision}"),
        };
        let approvers: u32 = gates.iter().map(|g| g.approvers).sum();
        let ctx = Context {
            job,
            principal,
            decision,
            rule: &primary_rule,
            reason: &reason,
            approvers,
        };
        let summary = primary.and_then(|i| self.summaries[i].as_ref());
        let render = |t: Option<&super::template::Template>| t.map(|t| t.render(&ctx));
        let title =
            render(summary.and_then(|s| s.title.as_ref())).unwrap_or_else(|| default_title(job));
        let why = render(summary.and_then(|s| s.why.as_ref())).unwrap_or_else(|| reason.clone());
        let next_effect = render(summary.and_then(|s| s.next_effect.as_ref()))
            .unwrap_or_else(|| default_next_effect(decision, &gates, overridable));

        Evaluation {
            decision,
            primary_rule,
            matched_rules,
            reason,
            approval_required: decision == Decision::RequireApproval,
            gates,
            constraints,
            constraint_conflicts,
            decision_summary: DecisionSummary {
                title,
                why,
                next_effect,
            },
            overridable,
            timing,
        }
    }
}

fn default_title(job: &Job) -> String {
    if let Some(p) = &job.proposal
        && !p.title.is_empty()
    {
        return p.title.clone();
    }
    let head = [job.action.as_str(), job.topic.as_str()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    match (head.is_empty(), job.target.is_empty()) {
        (false, false) => format!("{head} on {}", job.target),
        (false, true) => head,
        (true, false) => job.target.clone(),
        (true, true) => "unnamed job".into(),
    }
}

fn default_next_effect(decision: Decision, gates: &[Gate], overridable: bool) -> String {
    match decision {
        Decision::Allow => "Runs without review".into(),
        Decision::AllowWithConstraints => "Runs within the listed constraints".into(),
        Decision::RequireApproval => {
            let needs: Vec<String> = gates
                .iter()
                .map(|g| format!("{} of {}", g.approvers, g.roles.join("/")))
                .collect();
            format!(
                "Runs once approved by distinct people: {}",
                needs.join(" and ")
            )
        }
        Decision::Deny if overridable => "Does not run unless break-glass overrides it".into(),
        Decision::Deny => "Does not run".into(),
    }
}

fn compare(a: &Scalar, b: &Scalar) -> Option<Ordering> {
    match (a, b) {
        (Scalar::Number(x), Scalar::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Scalar::String(x), Scalar::String(y)) => Some(x.cmp(y)),
        (Scalar::Bool(x), Scalar::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn show(s: &Scalar) -> String {
    match s {
        Scalar::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// Checks operator tests against an attribute value. A missing attribute
/// holds only for `exists: false`; a type mismatch never holds.
fn check_ops(key: &str, ops: &AttrOps, value: Option<&Scalar>) -> Result<(), String> {
    let Some(v) = value else {
        return if ops.exists == Some(false) {
            Ok(())
        } else {
            Err(format!("attribute `{key}` is missing"))
        };
    };
    if ops.exists == Some(false) {
        return Err(format!("attribute `{key}` exists (`exists: false`)"));
    }
    let mismatch = |op: &str, want: &Scalar| {
        format!(
            "type mismatch: `{op}: {}` is a {}, the attribute is a {} ({})",
            show(want),
            want.type_name(),
            v.type_name(),
            show(v)
        )
    };
    type Test<'a> = (&'static str, &'a Option<Scalar>, fn(Ordering) -> bool);
    let tests: [Test<'_>; 6] = [
        ("eq", &ops.eq, |o| o == Ordering::Equal),
        ("ne", &ops.ne, |o| o != Ordering::Equal),
        ("gt", &ops.gt, |o| o == Ordering::Greater),
        ("gte", &ops.gte, |o| o != Ordering::Less),
        ("lt", &ops.lt, |o| o == Ordering::Less),
        ("lte", &ops.lte, |o| o != Ordering::Greater),
    ];
    for (op, want, ok) in tests {
        let Some(want) = want else { continue };
        match compare(v, want) {
            None => return Err(mismatch(op, want)),
            Some(o) if ok(o) => {}
            Some(_) => return Err(format!("{} fails `{op}: {}`", show(v), show(want))),
        }
    }
    if let Some(list) = &ops.in_ {
        let same_type: Vec<&Scalar> = list.iter().filter(|w| compare(v, w).is_some()).collect();
        if same_type.is_empty() && !list.is_empty() {
            return Err(format!(
                "type mismatch: `in` holds no {} values, the attribute is {}",
                v.type_name(),
                show(v)
            ));
        }
        if !same_type
            .iter()
            .any(|w| compare(v, w) == Some(Ordering::Equal))
        {
            let shown: Vec<String> = list.iter().map(show).collect();
            return Err(format!("{} is not in [{}]", show(v), shown.join(", ")));
        }
    }
    Ok(())
}
