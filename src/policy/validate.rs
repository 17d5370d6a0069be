//! From the raw file to a validated [`PolicyDoc`]: every error of SPEC §2.3
//! with its location, all of them at once rather than the first, then lint
//! warnings for rules that can never match or never matter.

use super::glob::Pattern;
use super::model::*;
use super::raw::{self, RawApproval, RawAttrTest, RawMatch, RawPolicy, RawRule, S};
use super::template::Template;
use crate::job::Scalar;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The built-in gate, before `defaults.approval` is applied.
pub fn builtin_gate() -> GateSpec {
    GateSpec {
        approvers: 1,
        roles: BTreeSet::from(["approver".to_owned()]),
        sla: Secs(30 * 60),
        timeout: Secs(60 * 60),
        bind_within: Secs(30 * 60),
        channels: Channel::ALL.into_iter().collect(),
        escalate: Vec::new(),
    }
}

/// The policy name used when the file gives none.
pub const DEFAULT_NAME: &str = "system";

/// Reads and validates a policy source. Returns the document when there are
/// no errors, and every finding (errors and warnings) either way.
pub fn validate_source(source: &str, file: &str) -> (Option<PolicyDoc>, Vec<Finding>) {
    let mut v = Validator {
        file,
        findings: Vec::new(),
    };
    match raw::parse(source) {
        Ok(raw) => {
            let doc = v.policy(raw);
            if let Some(doc) = &doc {
                v.lint(doc);
            }
            let has_errors = v.findings.iter().any(|f| f.severity == Severity::Error);
            (if has_errors { None } else { doc }, v.findings)
        }
        Err(e) => {
            v.parse_error(&e);
            (None, v.findings)
        }
    }
}

struct Validator<'a> {
    file: &'a str,
    findings: Vec<Finding>,
}

fn is_rule_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_role(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_constraint_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn scalar(v: &Value) -> Option<Scalar> {
    match v {
        Value::String(s) => Some(Scalar::String(s.clone())),
        Value::Number(n) => Some(Scalar::Number(n.clone())),
        Value::Bool(b) => Some(Scalar::Bool(*b)),
        _ => None,
    }
}

impl Validator<'_> {
    fn push(
        &mut self,
        severity: Severity,
        code: &'static str,
        pos: Pos,
        rule: Option<&str>,
        message: String,
    ) {
        self.findings.push(Finding {
            severity,
            code,
            message,
            file: self.file.to_owned(),
            line: pos.line,
            column: pos.column,
            rule: rule.map(str::to_owned),
        });
    }

    fn error(&mut self, code: &'static str, pos: Pos, rule: Option<&str>, message: String) {
        self.push(Severity::Error, code, pos, rule, message);
    }

    fn warn(&mut self, code: &'static str, pos: Pos, rule: Option<&str>, message: String) {
        self.push(Severity::Warning, code, pos, rule, message);
    }

    fn parse_error(&mut self, e: &serde_saphyr::Error) {
        let pos = e
            .location()
            .map(|l| Pos::from_location(&l))
            .unwrap_or(Pos { line: 1, column: 1 });
        let (code, message) = describe_parse_error(&e.without_snippet().to_string());
        self.error(code, pos, None, message);
    }

    fn policy(&mut self, raw: RawPolicy) -> Option<PolicyDoc> {
        let version = match raw.version {
            None => {
                self.error(
                    "missing-key",
                    Pos { line: 1, column: 1 },
                    None,
                    "missing `version`; this format is `version: v1`".into(),
                );
                String::new()
            }
            Some(v) if v.value == "v1" => v.value,
            Some(v) => {
                self.error(
                    "unsupported-version",
                    Pos::of(&v),
                    None,
                    format!("unsupported version `{}`, expected `v1`", v.value),
                );
                v.value
            }
        };
        let name = match raw.name {
            None => DEFAULT_NAME.to_owned(),
            Some(n) => {
                if !is_name(&n.value) {
                    self.error(
                        "invalid-name",
                        Pos::of(&n),
                        None,
                        format!(
                            "invalid policy name `{}`: use 1-64 characters of [A-Za-z0-9._-]",
                            n.value
                        ),
                    );
                }
                n.value
            }
        };

        let mut default_decision = Decision::RequireApproval;
        let mut default_gate = builtin_gate();
        if let Some(defaults) = raw.defaults {
            let defaults = defaults.value;
            if let Some(d) = defaults.decision {
                match Decision::parse(&d.value) {
                    Some(dec) if dec != Decision::AllowWithConstraints => default_decision = dec,
                    Some(_) => self.error(
                        "unknown-decision",
                        Pos::of(&d),
                        None,
                        "`defaults.decision` cannot be `allow_with_constraints` (a default has no constraints); expected one of allow, require_approval, deny".into(),
                    ),
                    None => self.error(
                        "unknown-decision",
                        Pos::of(&d),
                        None,
                        format!(
                            "unknown decision `{}`, expected one of allow, require_approval, deny",
                            d.value
                        ),
                    ),
                }
            }
            if let Some(a) = defaults.approval {
                default_gate = self.gate(&a.value, &builtin_gate(), None);
            }
        }

        let mut rules = Vec::with_capacity(raw.rules.as_ref().map_or(0, |r| r.value.len()));
        let mut seen: HashMap<String, Pos> = HashMap::new();
        if let Some(raw_rules) = raw.rules {
            // Each raw rule is boxed and freed as soon as it is validated.
            for r in raw_rules.value {
                let pos = Pos::of(&r);
                if let Some(rule) = self.rule(*r.value, pos, &default_gate, &mut seen) {
                    rules.push(rule);
                }
            }
        }
        Some(PolicyDoc {
            version,
            name,
            default_decision,
            default_gate,
            rules,
        })
    }

    fn rule(
        &mut self,
        r: RawRule,
        pos: Pos,
        default_gate: &GateSpec,
        seen: &mut HashMap<String, Pos>,
    ) -> Option<RuleSpec> {
        let errors_before = self.error_count();
        let id = match &r.id {
            None => {
                self.error("missing-key", pos, None, "rule without `id`".into());
                String::new()
            }
            Some(id) => {
                if !is_rule_id(&id.value) {
                    self.error(
                        "invalid-rule-id",
                        Pos::of(id),
                        Some(&id.value),
                        format!(
                            "invalid rule id `{}`: use 1-128 characters of [a-z0-9-_.]",
                            id.value
                        ),
                    );
                } else if let Some(first) = seen.get(&id.value) {
                    self.error(
                        "duplicate-rule-id",
                        Pos::of(id),
                        Some(&id.value),
                        format!(
                            "duplicate rule id `{}` (first defined at line {})",
                            id.value, first.line
                        ),
                    );
                } else {
                    seen.insert(id.value.clone(), Pos::of(id));
                }
                id.value.clone()
            }
        };
        let rid = Some(id.as_str()).filter(|s| !s.is_empty());

        let decision = match &r.decision {
            None => {
                self.error(
                    "missing-key",
                    pos,
                    rid,
                    format!("rule `{id}` has no `decision`"),
                );
                None
            }
            Some(d) => match Decision::parse(&d.value) {
                Some(dec) => Some(dec),
                None => {
                    self.error(
                        "unknown-decision",
                        Pos::of(d),
                        rid,
                        format!(
                            "unknown decision `{}`, expected one of allow, allow_with_constraints, require_approval, deny",
                            d.value
                        ),
                    );
                    None
                }
            },
        };

        let matcher = match r.matcher {
            None => {
                self.error(
                    "missing-key",
                    pos,
                    rid,
                    format!("rule `{id}` has no `match`; write `match: {{}}` to match every job"),
                );
                MatchSpec::default()
            }
            Some(m) => self.match_spec(*m.value, rid),
        };

        let gate = match (&r.approval, decision) {
            (Some(a), Some(Decision::RequireApproval)) => {
                Some(self.gate(&a.value, default_gate, rid))
            }
            (None, Some(Decision::RequireApproval)) => Some(default_gate.clone()),
            (Some(a), Some(d)) => {
                self.error(
                    "misplaced-key",
                    Pos::of(a),
                    rid,
                    format!("`approval` has no effect on a `{d}` rule; only require_approval rules have gates"),
                );
                None
            }
            (None, _) | (_, None) => None,
        };

        let mut constraints = BTreeMap::new();
        match (&r.constraints, decision) {
            (Some(c), Some(Decision::AllowWithConstraints)) => {
                if c.value.is_empty() {
                    self.error(
                        "invalid-constraint",
                        Pos::of(c),
                        rid,
                        "`constraints` is empty; an allow_with_constraints rule needs at least one".into(),
                    );
                }
                for (key, value) in &c.value {
                    if self.constraint(key, value, rid) {
                        constraints.insert(key.clone(), value.value.clone());
                    }
                }
            }
            (None, Some(Decision::AllowWithConstraints)) => self.error(
                "missing-key",
                pos,
                rid,
                format!("rule `{id}` is allow_with_constraints but has no `constraints`"),
            ),
            (Some(c), Some(d)) => self.error(
                "misplaced-key",
                Pos::of(c),
                rid,
                format!("`constraints` have no effect on a `{d}` rule; put them on an allow_with_constraints rule that matches the same jobs"),
            ),
            _ => {}
        }

        let overridable = match (&r.overridable, decision) {
            (Some(o), Some(Decision::Deny)) => o.value,
            (Some(o), Some(d)) if o.value => {
                self.error(
                    "misplaced-key",
                    Pos::of(o),
                    rid,
                    format!("`overridable` only applies to deny rules, not `{d}`"),
                );
                false
            }
            _ => false,
        };

        let summary = r.summary.map(|s| {
            let s = s.value;
            SummarySpec {
                title: self.template(s.title, rid),
                why: self.template(s.why, rid),
                next_effect: self.template(s.next_effect, rid),
            }
        });
        let reason = r.reason.map(|r| r.value);

        if self.error_count() > errors_before {
            return None;
        }
        Some(RuleSpec {
            id,
            matcher,
            decision: decision?,
            reason,
            gate,
            constraints,
            summary,
            overridable,
            pos,
        })
    }

    fn error_count(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    }

    fn template(&mut self, t: Option<S<String>>, rule: Option<&str>) -> Option<String> {
        let t = t?;
        if let Err(e) = Template::parse(&t.value) {
            self.error("invalid-template", Pos::of(&t), rule, e);
        }
        Some(t.value)
    }

    fn constraint(&mut self, key: &str, value: &S<Value>, rule: Option<&str>) -> bool {
        let pos = Pos::of(value);
        if !is_constraint_key(key) {
            self.error(
                "invalid-constraint",
                pos,
                rule,
                format!("invalid constraint name `{key}`: use [a-z0-9_]"),
            );
            return false;
        }
        let v = &value.value;
        if key.starts_with("max_") {
            let ok = v.as_f64().is_some_and(|n| n >= 0.0);
            if !ok {
                self.error(
                    "invalid-constraint",
                    pos,
                    rule,
                    format!("`{key}` must be a number of at least 0 (max_* constraints combine by minimum)"),
                );
                return false;
            }
        } else if key.ends_with("_allowlist") || key.ends_with("_denylist") {
            let ok = v
                .as_array()
                .is_some_and(|items| items.iter().all(Value::is_string));
            if !ok {
                self.error(
                    "invalid-constraint",
                    pos,
                    rule,
                    format!("`{key}` must be a list of strings (allowlists combine by intersection, denylists by union)"),
                );
                return false;
            }
        } else if v.is_null() {
            self.error(
                "invalid-constraint",
                pos,
                rule,
                format!("`{key}` has no value"),
            );
            return false;
        }
        true
    }

    fn gate(&mut self, a: &RawApproval, base: &GateSpec, rule: Option<&str>) -> GateSpec {
        let mut g = base.clone();
        if let Some(n) = &a.approvers {
            if n.value < 1 {
                self.error(
                    "invalid-approvers",
                    Pos::of(n),
                    rule,
                    format!("`approvers` must be at least 1, got {}", n.value),
                );
            } else if n.value > 64 {
                self.error(
                    "invalid-approvers",
                    Pos::of(n),
                    rule,
                    format!("`approvers` must be at most 64, got {}", n.value),
                );
            } else {
                g.approvers = n.value as u32;
            }
        }
        if let Some(roles) = &a.roles {
            if roles.value.is_empty() {
                self.error(
                    "empty-roles",
                    Pos::of(roles),
                    rule,
                    "`roles` is empty; a gate needs at least one approver role".into(),
                );
            }
            let mut set = BTreeSet::new();
            for r in &roles.value {
                if BUILTIN_ROLES.contains(&r.value.as_str()) {
                    self.error(
                        "invalid-role",
                        Pos::of(r),
                        rule,
                        format!(
                            "`{}` is a built-in role, not an approver role; built-in roles are {}",
                            r.value,
                            BUILTIN_ROLES.join(", ")
                        ),
                    );
                } else if !is_role(&r.value) {
                    self.error(
                        "invalid-role",
                        Pos::of(r),
                        rule,
                        format!(
                            "invalid role `{}`: use 1-64 characters of [A-Za-z0-9._-]",
                            r.value
                        ),
                    );
                }
                set.insert(r.value.clone());
            }
            g.roles = set;
        }
        for (field, raw, slot) in [
            ("sla", &a.sla, &mut g.sla),
            ("timeout", &a.timeout, &mut g.timeout),
            ("bind_within", &a.bind_within, &mut g.bind_within),
        ] {
            if let Some(d) = raw {
                match Secs::parse(&d.value) {
                    Ok(s) => *slot = s,
                    Err(e) => self.error(
                        "invalid-duration",
                        Pos::of(d),
                        rule,
                        format!("`{field}`: {e}"),
                    ),
                }
            }
        }
        if let Some(channels) = &a.channels {
            if channels.value.is_empty() {
                self.error(
                    "unknown-channel",
                    Pos::of(channels),
                    rule,
                    "`channels` is empty: nobody could approve; omit it to allow every channel"
                        .into(),
                );
            }
            let mut set = BTreeSet::new();
            for c in &channels.value {
                match Channel::parse(&c.value) {
                    Some(ch) => {
                        set.insert(ch);
                    }
                    None => self.error(
                        "unknown-channel",
                        Pos::of(c),
                        rule,
                        format!(
                            "unknown channel `{}`, expected one of ui, http, grpc, slack",
                            c.value
                        ),
                    ),
                }
            }
            g.channels = set;
        }
        if let Some(steps) = &a.escalate {
            let mut ladder = Vec::new();
            for st in &steps.value {
                let after = match &st.value.after {
                    Some(d) => match Secs::parse(&d.value) {
                        Ok(s) if s.0 > 0 => Some(s.0),
                        Ok(_) => {
                            self.error(
                                "invalid-duration",
                                Pos::of(d),
                                rule,
                                "`escalate.after` must be longer than 0s".into(),
                            );
                            None
                        }
                        Err(e) => {
                            self.error(
                                "invalid-duration",
                                Pos::of(d),
                                rule,
                                format!("`escalate.after`: {e}"),
                            );
                            None
                        }
                    },
                    None => {
                        self.error(
                            "missing-field",
                            Pos::of(st),
                            rule,
                            "an escalation step needs `after`".into(),
                        );
                        None
                    }
                };
                let notify = match &st.value.notify {
                    Some(n) if is_role(&n.value) => Some(n.value.clone()),
                    Some(n) => {
                        self.error("invalid-channel-name", Pos::of(n), rule, format!("`escalate.notify` `{}`: name a notification channel (1-64 characters of [A-Za-z0-9._-])", n.value));
                        None
                    }
                    None => {
                        self.error(
                            "missing-field",
                            Pos::of(st),
                            rule,
                            "an escalation step needs `notify` (a notification channel)".into(),
                        );
                        None
                    }
                };
                if let (Some(after_seconds), Some(notify)) = (after, notify) {
                    if after_seconds > g.timeout.0 {
                        self.warn(
                            "escalation-after-timeout",
                            Pos::of(st),
                            rule,
                            format!(
                                "escalation after {} comes after the timeout {}: it never fires",
                                Secs(after_seconds),
                                g.timeout
                            ),
                        );
                    }
                    ladder.push(EscalationStep {
                        after_seconds,
                        notify,
                    });
                }
            }
            ladder.sort();
            if ladder
                .windows(2)
                .any(|w| w[0].after_seconds == w[1].after_seconds)
            {
                self.error(
                    "duplicate-escalation",
                    Pos::of(steps),
                    rule,
                    "two escalation steps have the same `after`".into(),
                );
            }
            g.escalate = ladder;
        }
        if g.sla > g.timeout {
            let pos = a.sla.as_ref().map(Pos::of).unwrap_or_default();
            self.warn(
                "sla-after-timeout",
                pos,
                rule,
                format!(
                    "sla {} is longer than timeout {}: the job expires before it is ever escalated",
                    g.sla, g.timeout
                ),
            );
        }
        g
    }

    fn globs(
        &mut self,
        list: &Option<raw::GlobList>,
        key: &str,
        rule: Option<&str>,
    ) -> Option<Vec<Pattern>> {
        let list = list.as_ref()?;
        if list.value.is_empty() {
            self.error(
                "empty-glob-list",
                Pos::of(list),
                rule,
                format!("`{key}` is empty and could never match; omit it to match any value"),
            );
        }
        let mut out = Vec::new();
        for g in &list.value {
            match Pattern::parse(&g.value) {
                Ok(p) => out.push(p),
                Err(e) => self.error("invalid-glob", Pos::of(g), rule, e.to_string()),
            }
        }
        Some(out)
    }

    fn tags(
        &mut self,
        list: &Option<S<Vec<S<String>>>>,
        key: &str,
        rule: Option<&str>,
    ) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for t in list.iter().flat_map(|l| l.value.iter()) {
            if t.value.is_empty() {
                self.error(
                    "invalid-tag",
                    Pos::of(t),
                    rule,
                    format!("empty tag in `{key}`"),
                );
            }
            out.insert(t.value.clone());
        }
        out
    }

    fn match_spec(&mut self, m: RawMatch, rule: Option<&str>) -> MatchSpec {
        let mut spec = MatchSpec {
            topics: self.globs(&m.topics, "topics", rule),
            action: self.globs(&m.action, "action", rule),
            target: self.globs(&m.target, "target", rule),
            principal: self.globs(&m.principal, "principal", rule),
            risk_tags: self.tags(&m.risk_tags, "risk_tags", rule),
            risk_tags_none: self.tags(&m.risk_tags_none, "risk_tags_none", rule),
            ..MatchSpec::default()
        };
        if let Some(attrs) = m.attributes {
            for (key, test) in attrs.value {
                let pos = Pos::of(&test);
                if key.is_empty() {
                    self.error(
                        "invalid-attribute-test",
                        pos,
                        rule,
                        "empty attribute name".into(),
                    );
                    continue;
                }
                if let Some(t) = self.attr_test(&key, test.value, pos, rule) {
                    spec.attributes.insert(key, t);
                }
            }
        }
        if let Some(not) = m.not {
            spec.not = Some(Box::new(self.match_spec(not.value, rule)));
        }
        spec
    }

    fn attr_test(
        &mut self,
        key: &str,
        t: RawAttrTest,
        pos: Pos,
        rule: Option<&str>,
    ) -> Option<AttrTest> {
        let bad = |v: &mut Self, msg: String| {
            v.error(
                "invalid-attribute-test",
                pos,
                rule,
                format!("attributes.{key}: {msg}"),
            );
        };
        match t {
            RawAttrTest::Glob(g) => match Pattern::parse(&g) {
                Ok(p) => Some(AttrTest::Glob(p)),
                Err(e) => {
                    self.error("invalid-glob", pos, rule, format!("attributes.{key}: {e}"));
                    None
                }
            },
            RawAttrTest::Equals(v) => Some(AttrTest::Ops(std::sync::Arc::new(AttrOps {
                eq: scalar(&v),
                ..AttrOps::default()
            }))),
            RawAttrTest::Ops(o) => {
                let mut ops = AttrOps::default();
                let mut any = false;
                let mut ok = true;
                for (name, raw, slot, ordered) in [
                    ("eq", &o.eq, &mut ops.eq, false),
                    ("ne", &o.ne, &mut ops.ne, false),
                    ("gt", &o.gt, &mut ops.gt, true),
                    ("gte", &o.gte, &mut ops.gte, true),
                    ("lt", &o.lt, &mut ops.lt, true),
                    ("lte", &o.lte, &mut ops.lte, true),
                ] {
                    let Some(v) = raw else { continue };
                    any = true;
                    match scalar(v) {
                        Some(Scalar::Bool(_)) if ordered => {
                            bad(
                                self,
                                format!("`{name}` needs a number or a string, not a boolean"),
                            );
                            ok = false;
                        }
                        Some(s) => *slot = Some(s),
                        None => {
                            bad(self, format!("`{name}` needs a string, number or boolean"));
                            ok = false;
                        }
                    }
                }
                if let Some(list) = &o.in_ {
                    any = true;
                    let mut items = Vec::new();
                    for v in list {
                        match scalar(v) {
                            Some(s) => items.push(s),
                            None => {
                                bad(
                                    self,
                                    "`in` takes a list of strings, numbers or booleans".into(),
                                );
                                ok = false;
                            }
                        }
                    }
                    ops.in_ = Some(items);
                }
                if let Some(e) = o.exists {
                    any = true;
                    ops.exists = Some(e);
                }
                if !any {
                    bad(
                        self,
                        "empty operator map; use eq, ne, in, gt, gte, lt, lte or exists".into(),
                    );
                    ok = false;
                }
                ok.then(|| AttrTest::Ops(std::sync::Arc::new(ops)))
            }
        }
    }

    fn lint(&mut self, doc: &PolicyDoc) {
        for rule in &doc.rules {
            if let Some(why) = never_matches(&rule.matcher) {
                self.warn(
                    "never-matches",
                    rule.pos,
                    Some(&rule.id),
                    format!("rule `{}` can never match: {why}", rule.id),
                );
            }
        }
    }
}

/// Why a match block can never hold, when that is certain.
pub fn never_matches(m: &MatchSpec) -> Option<String> {
    if let Some(t) = m.risk_tags.intersection(&m.risk_tags_none).next() {
        return Some(format!("tag `{t}` is both required and forbidden"));
    }
    if let Some(not) = &m.not
        && not.is_empty()
    {
        return Some("`not: {}` excludes every job".into());
    }
    for (key, t) in &m.attributes {
        if let AttrTest::Ops(ops) = t
            && let Some(why) = ops_contradiction(ops)
        {
            return Some(format!("attributes.{key}: {why}"));
        }
    }
    None
}

fn ops_contradiction(o: &AttrOps) -> Option<&'static str> {
    let has_value_test = o.eq.is_some()
        || o.ne.is_some()
        || o.in_.is_some()
        || o.gt.is_some()
        || o.gte.is_some()
        || o.lt.is_some()
        || o.lte.is_some();
    if o.exists == Some(false) && has_value_test {
        return Some("`exists: false` with a test of the value");
    }
    if o.in_.as_ref().is_some_and(Vec::is_empty) {
        return Some("`in: []` holds for no value");
    }
    if let (Some(eq), Some(ne)) = (&o.eq, &o.ne)
        && eq == ne
    {
        return Some("`eq` and `ne` name the same value");
    }
    let num = |s: &Option<Scalar>| s.as_ref().and_then(Scalar::as_f64);
    let lower = [(num(&o.gt), false), (num(&o.gte), true)];
    let upper = [(num(&o.lt), false), (num(&o.lte), true)];
    for (lo, lo_incl) in lower {
        for (hi, hi_incl) in upper {
            if let (Some(lo), Some(hi)) = (lo, hi)
                && (lo > hi || (lo == hi && !(lo_incl && hi_incl)))
            {
                return Some("the lower bound is above the upper bound");
            }
        }
    }
    None
}

/// Whether match `a` holds for every job match `b` holds for. Conservative:
/// `false` when unsure.
pub fn covers(a: &MatchSpec, b: &MatchSpec) -> bool {
    for f in GlobField::ALL {
        let Some(a_globs) = a.globs(f) else { continue };
        if a_globs.iter().any(Pattern::matches_everything) {
            continue;
        }
        let Some(b_globs) = b.globs(f) else {
            return false;
        };
        let all_covered = b_globs.iter().all(|bg| {
            a_globs.contains(bg)
                || (bg.is_literal() && a_globs.iter().any(|ap| ap.matches(bg.as_str())))
        });
        if !all_covered {
            return false;
        }
    }
    if !a.risk_tags.is_subset(&b.risk_tags) || !a.risk_tags_none.is_subset(&b.risk_tags_none) {
        return false;
    }
    for (k, t) in &a.attributes {
        if b.attributes.get(k) != Some(t) {
            return false;
        }
    }
    match (&a.not, &b.not) {
        (None, _) => true,
        (Some(an), Some(bn)) => an == bn,
        (Some(_), None) => false,
    }
}

/// Turns a parser message into a finding code and a message without the
/// parser's own location (the finding carries it).
pub(crate) fn describe_parse_error(raw: &str) -> (&'static str, String) {
    let flat = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    let message = match flat.find(" at line ") {
        Some(i) => flat[..i].to_owned(),
        None => flat,
    };
    let lower = message.to_ascii_lowercase();
    let friendly = |what: &str| format!("{what} ({message})");
    if lower.contains("unknown field") {
        ("unknown-key", message)
    } else if lower.contains("missing field") {
        ("missing-key", message)
    } else if lower.starts_with("budget breached") {
        (
            "too-complex",
            friendly("the document is too large or uses too many aliases or too deep nesting"),
        )
    } else if lower.contains("recursion limit") {
        ("too-complex", friendly("nesting is too deep"))
    } else if lower.contains("expected sequence start") {
        (
            "wrong-type",
            friendly("expected a list here, like `[a, b]`"),
        )
    } else if lower.contains("expected mapping start") {
        (
            "wrong-type",
            friendly("expected a mapping here, like `{key: value}`"),
        )
    } else if lower.contains("expected string") {
        ("wrong-type", friendly("expected a string here"))
    } else if lower.contains("invalid i64") || lower.contains("invalid u64") {
        ("wrong-type", friendly("expected a whole number here"))
    } else if lower.contains("invalid boolean") {
        ("wrong-type", friendly("expected `true` or `false` here"))
    } else if lower.contains("invalid type") || lower.contains("invalid value") {
        ("wrong-type", message)
    } else if lower.contains("duplicate") {
        ("duplicate-key", message)
    } else {
        ("yaml", message)
    }
}
