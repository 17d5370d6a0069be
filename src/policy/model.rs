//! The validated policy: every default filled in, every value checked and
//! normalised. Its canonical JSON is what the snapshot id hashes.

use super::glob::Pattern;
use crate::job::Scalar;
use serde::{Deserialize, Serialize};
use serde_json::Value;
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
    /// An escalation ladder, by `after` (from the job's creation); empty:
    /// one escalation at the SLA.
    pub escalate: Vec<EscalationStep>,
}

/// One rung of an escalation ladder: once the job has waited `after`,
/// notify the channel named `notify` (once).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EscalationStep {
    pub after_seconds: u64,
    pub notify: String,
}

/// A test of one job attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrTest {
    /// The attribute is a string matching this glob.
    Glob(Pattern),
    /// Every operator present must hold.
    Ops(std::sync::Arc<AttrOps>),
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

/// A `match` block.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MatchSpec {
    pub topics: Option<Vec<Pattern>>,
    pub action: Option<Vec<Pattern>>,
    pub target: Option<Vec<Pattern>>,
    pub principal: Option<Vec<Pattern>>,
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
    pub fn globs(&self, field: GlobField) -> Option<&Vec<Pattern>> {
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
    /// Every channel an escalation ladder of this policy notifies.
    pub fn ladder_channels(&self) -> BTreeSet<String> {
        std::iter::once(&self.default_gate)
            .chain(self.rules.iter().filter_map(|r| r.gate.as_ref()))
            .flat_map(|g| g.escalate.iter().map(|s| s.notify.clone()))
            .collect()
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
