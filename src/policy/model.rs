//! The validated policy: every default filled in, every value checked and
//! normalised. Its canonical JSON is what the snapshot id hashes.

use crate::job::Scalar;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub use super::raw::Pos;

/// A decision, ordered by strictness: `Allow < AllowWithConstraints <
/// RequireApproval < Deny`. The strictest matching decision wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    AllowWithConstraints,
    RequireApproval,
    Deny,
}

impl Decision {
    pub const ALL: [Decision; 4] = [
        Decision::Allow,
        Decision::AllowWithConstraints,
        Decision::RequireApproval,
        Decision::Deny,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::AllowWithConstraints => "allow_with_constraints",
            Decision::RequireApproval => "require_approval",
            Decision::Deny => "deny",
        }
    }

    pub fn parse(s: &str) -> Option<Decision> {
        Decision::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A door an approval can come through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Grpc,
    Http,
    Slack,
    Ui,
}

impl Channel {
    pub const ALL: [Channel; 4] = [Channel::Grpc, Channel::Http, Channel::Slack, Channel::Ui];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Grpc => "grpc",
            Channel::Http => "http",
            Channel::Slack => "slack",
            Channel::Ui => "ui",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Roles with a fixed meaning for the API; they cannot be approver roles.
pub const BUILTIN_ROLES: [&str; 5] = ["agent", "executor", "operator", "auditor", "breakglass"];

/// A span of time in whole seconds, written like `90s`, `15m`, `1h30m`, `2d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Secs(pub u64);

impl Secs {
    /// Parses a duration: one or more `<digits><unit>` with unit `s`, `m`,
    /// `h` or `d`. Zero and anything above 365 days are refused.
    pub fn parse(s: &str) -> Result<Secs, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("empty duration; write it like `30m`, `1h30m` or `90s`".into());
        }
        let mut total: u64 = 0;
        let mut digits = String::new();
        for c in t.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                c if c.is_whitespace() => {
                    return Err(format!(
                        "invalid duration `{s}`: no spaces; write it like `5m` or `1h30m`"
                    ));
                }
                _ => {
                    return Err(format!(
                        "invalid duration `{s}`: unknown unit `{c}`; use s, m, h or d"
                    ));
                }
            };
            if digits.is_empty() {
                return Err(format!(
                    "invalid duration `{s}`: a number must come before `{c}`"
                ));
            }
            let n: u64 = digits
                .parse()
                .map_err(|_| format!("invalid duration `{s}`: number too large"))?;
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| format!("invalid duration `{s}`: too large"))?;
            digits.clear();
        }
        if !digits.is_empty() {
            return Err(format!(
                "invalid duration `{s}`: missing unit after `{digits}`; use s, m, h or d"
            ));
        }
        if total == 0 {
            return Err(format!("invalid duration `{s}`: must be longer than zero"));
        }
        if total > 365 * 86_400 {
            return Err(format!("invalid duration `{s}`: longer than 365 days"));
        }
        Ok(Secs(total))
    }
}

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        let mut wrote = false;
        for (unit, name) in [(86_400, 'd'), (3600, 'h'), (60, 'm'), (1, 's')] {
            if rest >= unit {
                write!(f, "{}{name}", rest / unit)?;
                rest %= unit;
                wrote = true;
            }
        }
        if !wrote {
            f.write_str("0s")?;
        }
        Ok(())
    }
}

/// One approval requirement with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateSpec {
    pub approvers: u32,
    pub roles: BTreeSet<String>,
    pub sla: Secs,
    pub timeout: Secs,
    pub bind_within: Secs,
    pub channels: BTreeSet<Channel>,
}

impl GateSpec {
    fn canonical_value(&self) -> Value {
        json!({
            "approvers": self.approvers,
            "roles": self.roles,
            "sla": self.sla.0,
            "timeout": self.timeout.0,
            "bind_within": self.bind_within.0,
            "channels": self.channels.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        })
    }
}

/// A test of one job attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrTest {
    /// The attribute is a string matching this glob.
    Glob(String),
    /// Every operator present must hold.
    Ops(AttrOps),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttrOps {
    pub eq: Option<Scalar>,
    pub ne: Option<Scalar>,
    pub in_: Option<Vec<Scalar>>,
    pub gt: Option<Scalar>,
    pub gte: Option<Scalar>,
    pub lt: Option<Scalar>,
    pub lte: Option<Scalar>,
    pub exists: Option<bool>,
}

impl AttrTest {
    fn canonical_value(&self) -> Value {
        match self {
            AttrTest::Glob(g) => json!({ "glob": g }),
            AttrTest::Ops(ops) => {
                let mut m = Map::new();
                let mut put = |k: &str, v: &Option<Scalar>| {
                    if let Some(v) = v {
                        m.insert(k.into(), json!(v));
                    }
                };
                put("eq", &ops.eq);
                put("ne", &ops.ne);
                put("gt", &ops.gt);
                put("gte", &ops.gte);
                put("lt", &ops.lt);
                put("lte", &ops.lte);
                if let Some(list) = &ops.in_ {
                    // A set: order and repetition do not change the meaning.
                    let mut items: Vec<String> = list
                        .iter()
                        .map(|s| crate::canonical::to_jcs(&json!(s)))
                        .collect();
                    items.sort();
                    items.dedup();
                    let values: Vec<Value> = items
                        .iter()
                        .filter_map(|s| serde_json::from_str(s).ok())
                        .collect();
                    m.insert("in".into(), Value::Array(values));
                }
                if let Some(e) = ops.exists {
                    m.insert("exists".into(), Value::Bool(e));
                }
                Value::Object(m)
            }
        }
    }
}

/// A `match` block.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MatchSpec {
    pub topics: Option<Vec<String>>,
    pub action: Option<Vec<String>>,
    pub target: Option<Vec<String>>,
    pub principal: Option<Vec<String>>,
    pub risk_tags: BTreeSet<String>,
    pub risk_tags_none: BTreeSet<String>,
    pub attributes: BTreeMap<String, AttrTest>,
    pub not: Option<Box<MatchSpec>>,
}

/// The four glob matchers, in a fixed order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GlobField {
    Topics,
    Action,
    Target,
    Principal,
}

impl GlobField {
    pub const ALL: [GlobField; 4] = [
        GlobField::Topics,
        GlobField::Action,
        GlobField::Target,
        GlobField::Principal,
    ];

    pub fn key(self) -> &'static str {
        match self {
            GlobField::Topics => "topics",
            GlobField::Action => "action",
            GlobField::Target => "target",
            GlobField::Principal => "principal",
        }
    }

    /// What the matcher is tested against, for messages.
    pub fn subject(self) -> &'static str {
        match self {
            GlobField::Topics => "topic",
            GlobField::Action => "action",
            GlobField::Target => "target",
            GlobField::Principal => "principal",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl MatchSpec {
    pub fn globs(&self, field: GlobField) -> Option<&Vec<String>> {
        match field {
            GlobField::Topics => self.topics.as_ref(),
            GlobField::Action => self.action.as_ref(),
            GlobField::Target => self.target.as_ref(),
            GlobField::Principal => self.principal.as_ref(),
        }
    }

    /// True for `{}`: matches every job.
    pub fn is_empty(&self) -> bool {
        GlobField::ALL.iter().all(|f| self.globs(*f).is_none())
            && self.risk_tags.is_empty()
            && self.risk_tags_none.is_empty()
            && self.attributes.is_empty()
            && self.not.is_none()
    }

    fn canonical_value(&self) -> Value {
        let mut m = Map::new();
        for f in GlobField::ALL {
            if let Some(globs) = self.globs(f) {
                let set: BTreeSet<&String> = globs.iter().collect();
                m.insert(f.key().into(), json!(set));
            }
        }
        if !self.risk_tags.is_empty() {
            m.insert("risk_tags".into(), json!(self.risk_tags));
        }
        if !self.risk_tags_none.is_empty() {
            m.insert("risk_tags_none".into(), json!(self.risk_tags_none));
        }
        if !self.attributes.is_empty() {
            let attrs: Map<String, Value> = self
                .attributes
                .iter()
                .map(|(k, t)| (k.clone(), t.canonical_value()))
                .collect();
            m.insert("attributes".into(), Value::Object(attrs));
        }
        if let Some(not) = &self.not {
            m.insert("not".into(), not.canonical_value());
        }
        Value::Object(m)
    }
}

/// Summary templates with `{field}` placeholders.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SummarySpec {
    pub title: Option<String>,
    pub why: Option<String>,
    pub next_effect: Option<String>,
}

/// One validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSpec {
    pub id: String,
    pub matcher: MatchSpec,
    pub decision: Decision,
    pub reason: Option<String>,
    /// Present exactly for `require_approval` rules, defaults filled in.
    pub gate: Option<GateSpec>,
    /// Non-empty only for `allow_with_constraints` rules.
    pub constraints: BTreeMap<String, Value>,
    pub summary: Option<SummarySpec>,
    pub overridable: bool,
    /// Where the rule starts in the source.
    pub pos: Pos,
}

impl RuleSpec {
    fn canonical_value(&self) -> Value {
        let summary = self
            .summary
            .as_ref()
            .map(|s| json!({ "title": s.title, "why": s.why, "next_effect": s.next_effect }));
        json!({
            "id": self.id,
            "match": self.matcher.canonical_value(),
            "decision": self.decision.as_str(),
            "reason": self.reason,
            "approval": self.gate.as_ref().map(GateSpec::canonical_value),
            "constraints": self.constraints,
            "summary": summary,
            "overridable": self.overridable,
        })
    }
}

/// A validated policy document.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyDoc {
    pub version: String,
    pub name: String,
    pub default_decision: Decision,
    pub default_gate: GateSpec,
    pub rules: Vec<RuleSpec>,
}

impl PolicyDoc {
    /// The normalised document hashed into the snapshot id: defaults filled
    /// in, durations in seconds, sets sorted. Rule order is kept: it decides
    /// the primary rule and constraint precedence.
    pub fn canonical_value(&self) -> Value {
        json!({
            "version": self.version,
            "name": self.name,
            "defaults": {
                "decision": self.default_decision.as_str(),
                "approval": self.default_gate.canonical_value(),
            },
            "rules": self.rules.iter().map(RuleSpec::canonical_value).collect::<Vec<_>>(),
        })
    }
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
}

/// A validation error or lint warning, located in the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// A stable kind, e.g. `unknown-decision`.
    pub code: &'static str,
    pub message: String,
    pub file: String,
    pub line: u32,
    pub column: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {sev}[{}]: {}",
            self.file, self.line, self.column, self.code, self.message
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(Secs::parse("30m"), Ok(Secs(1800)));
        assert_eq!(Secs::parse("1h30m"), Ok(Secs(5400)));
        assert_eq!(Secs::parse("90s"), Ok(Secs(90)));
        assert_eq!(Secs::parse("2d"), Ok(Secs(172_800)));
        assert_eq!(Secs::parse("60m"), Secs::parse("1h"));
        for bad in [
            "",
            "30",
            "m",
            "10x",
            "0m",
            "400d",
            "1.5h",
            "-1m",
            "99999999999999999999s",
        ] {
            assert!(Secs::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(Secs(5400).to_string(), "1h30m");
        assert_eq!(Secs(0).to_string(), "0s");
    }

    #[test]
    fn decisions_order_by_strictness() {
        assert!(Decision::Deny > Decision::RequireApproval);
        assert!(Decision::RequireApproval > Decision::AllowWithConstraints);
        assert!(Decision::AllowWithConstraints > Decision::Allow);
        for d in Decision::ALL {
            assert_eq!(Decision::parse(d.as_str()), Some(d));
        }
        assert_eq!(Decision::parse("alow"), None);
    }
}
