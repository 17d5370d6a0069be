//! The policy engine: the v1 YAML format parsed into strict types, validated
//! with located findings, compiled once into glob sets and indexes, and
//! evaluated by a pure function. No IO happens here: callers hand in the
//! source text and get back an immutable [`Snapshot`].

mod compile;
mod eval;
pub mod generate;
pub mod glob;
mod identity;
mod lint;
pub mod model;
mod raw;
pub mod suite;
mod template;
mod validate;

pub use compile::Policy;
pub use eval::{
    ConstraintConflict, DecisionSummary, Evaluation, Explanation, Gate, MatcherFailure, RuleReport,
    Timing,
};
pub use model::{Channel, Decision, EscalationStep, Finding, PolicyDoc, Severity};
pub use validate::{covers, never_matches};

use crate::canonical;
use std::collections::BTreeSet;
use std::fmt;

/// A snapshot id: `cfg:<policy name>:policy#sha256:<64 hex>`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(into = "String", try_from = "String")]
pub struct SnapshotId(String);

impl TryFrom<String> for SnapshotId {
    type Error = String;
    fn try_from(s: String) -> Result<SnapshotId, String> {
        SnapshotId::parse(&s)
    }
}

impl From<SnapshotId> for String {
    fn from(s: SnapshotId) -> String {
        s.0
    }
}

impl SnapshotId {
    fn new(name: &str, sha256: &str) -> SnapshotId {
        SnapshotId(format!("cfg:{name}:policy#sha256:{sha256}"))
    }

    /// Parses and checks the shape of a snapshot id.
    pub fn parse(s: &str) -> Result<SnapshotId, String> {
        let bad =
            || format!("invalid snapshot id `{s}`: expected cfg:<name>:policy#sha256:<64 hex>");
        let rest = s.strip_prefix("cfg:").ok_or_else(bad)?;
        let (name, hash) = rest.split_once(":policy#sha256:").ok_or_else(bad)?;
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        let hash_ok = hash.len() == 64
            && hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !name_ok || !hash_ok {
            return Err(bad());
        }
        Ok(SnapshotId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The policy name part.
    pub fn name(&self) -> &str {
        self.0
            .strip_prefix("cfg:")
            .and_then(|r| r.split_once(":policy#sha256:"))
            .map_or("", |(n, _)| n)
    }

    /// The sha256 part.
    pub fn sha256(&self) -> &str {
        self.0.rsplit(':').next().unwrap_or("")
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which active policy a job is decided under. There is one scope today,
/// `system`; per-tenant policies will add one scope per tenant without
/// changing how a decision finds its snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(std::borrow::Cow<'static, str>);

impl Scope {
    /// The scope of the installation-wide policy.
    pub const SYSTEM: &'static str = "system";

    /// No allocation: every decision looks this scope up.
    pub fn system() -> Scope {
        Scope(std::borrow::Cow::Borrowed(Scope::SYSTEM))
    }

    /// A scope name: 1-64 characters of `[A-Za-z0-9._-]`.
    pub fn parse(s: &str) -> Result<Scope, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(Scope(std::borrow::Cow::Owned(s.to_owned())))
        } else {
            Err(format!(
                "invalid policy scope `{s}`: use 1-64 characters of [A-Za-z0-9._-]"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One immutable, validated, compiled policy version with its source text.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: SnapshotId,
    /// RFC 8785 JSON of the normalised policy; its sha256 is in the id.
    pub canonical_json: String,
    /// The YAML exactly as given, kept for the auditor.
    pub source: String,
    pub policy: Policy,
}

impl Snapshot {
    pub fn name(&self) -> &str {
        &self.policy.doc().name
    }
}

/// A policy that failed validation: every finding, errors first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    pub findings: Vec<Finding>,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors: Vec<&Finding> = self
            .findings
            .iter()
            .filter(|x| x.severity == Severity::Error)
            .collect();
        match errors.as_slice() {
            [] => f.write_str("invalid policy"),
            [one] => write!(f, "{one}"),
            [first, rest @ ..] => write!(f, "{first} (and {} more errors)", rest.len()),
        }
    }
}

/// A loaded snapshot and the lint warnings found on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub snapshot: Snapshot,
    pub warnings: Vec<Finding>,
}

/// Validates a source and reports every finding, errors and warnings.
pub fn check(source: &str, file: &str) -> Vec<Finding> {
    match load(source, file) {
        Ok(loaded) => loaded.warnings,
        Err(e) => e.findings,
    }
}

fn sort_findings(findings: &mut [Finding]) {
    findings.sort_by_key(|f| (f.severity, f.line, f.column));
}

/// Parses, validates and compiles a policy source into a snapshot. `file`
/// names the source in finding locations.
pub fn load(source: &str, file: &str) -> Result<Loaded, PolicyError> {
    let (doc, mut findings) = validate::validate_source(source, file);
    sort_findings(&mut findings);
    let Some(doc) = doc else {
        return Err(PolicyError { findings });
    };
    let canonical_json = identity::canonical_json(&doc);
    let sha = canonical::sha256_hex(canonical_json.as_bytes());
    let id = SnapshotId::new(&doc.name, &sha);
    let policy = Policy::compile(doc);
    findings.extend(lint::shadowed(&policy, file));
    sort_findings(&mut findings);
    Ok(Loaded {
        snapshot: Snapshot {
            id,
            canonical_json,
            source: source.to_owned(),
            policy,
        },
        warnings: findings,
    })
}

/// Every approver role a policy's gates can ask for: the default gate's and
/// each rule gate's, exactly as [`load`] would resolve them, without building
/// the validated document. A policy that does not parse gets the located
/// errors of a full load.
pub fn approver_roles(source: &str, file: &str) -> Result<BTreeSet<String>, PolicyError> {
    let Ok(named) = raw::named_roles(source) else {
        let loaded = load(source, file)?;
        let doc = loaded.snapshot.policy.doc();
        let mut roles = doc.default_gate.roles.clone();
        for gate in doc.rules.iter().filter_map(|r| r.gate.as_ref()) {
            roles.extend(gate.roles.iter().cloned());
        }
        return Ok(roles);
    };
    let mut roles: BTreeSet<String> = match named.default {
        Some(default) => default.into_iter().collect(),
        None => validate::builtin_gate().roles,
    };
    roles.extend(named.rules);
    Ok(roles)
}

/// Parses YAML into the raw model and drops it: the parser's share of
/// [`load`], for benchmarks only.
#[doc(hidden)]
pub fn parse_only(source: &str) -> bool {
    raw::parse(source).is_ok()
}

/// A person who may approve: one identity, whatever credentials they use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub name: String,
    pub roles: BTreeSet<String>,
}

/// The gates no set of distinct configured people could fill: a gate of N
/// approvers needs N different people holding one of its roles.
pub fn unsatisfiable_gates(doc: &PolicyDoc, people: &[Person], file: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut check = |gate: &model::GateSpec, rule: Option<&model::RuleSpec>| {
        let eligible = people
            .iter()
            .filter(|p| p.roles.iter().any(|r| gate.roles.contains(r)))
            .count();
        if eligible < gate.approvers as usize {
            let roles: Vec<&str> = gate.roles.iter().map(String::as_str).collect();
            let what = rule.map_or("the default gate".to_owned(), |r| {
                format!("rule `{}`", r.id)
            });
            out.push(Finding {
                severity: Severity::Warning,
                code: "unsatisfiable-gate",
                message: format!(
                    "{what} needs {} distinct approvers holding one of [{}], but only {eligible} configured people do",
                    gate.approvers,
                    roles.join(", ")
                ),
                file: file.to_owned(),
                line: rule.map_or(1, |r| r.pos.line),
                column: rule.map_or(1, |r| r.pos.column),
                rule: rule.map(|r| r.id.clone()),
            });
        }
    };
    if doc.default_decision == Decision::RequireApproval {
        check(&doc.default_gate, None);
    }
    for rule in &doc.rules {
        if let Some(gate) = &rule.gate {
            check(gate, Some(rule));
        }
    }
    out
}
