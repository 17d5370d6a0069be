//! Snapshot identity: the canonical JSON of a validated policy, whose sha256
//! is the snapshot id. Defaults are filled in, durations are seconds, sets
//! (globs, tags, roles, channels, `in` lists) are sorted and de-duplicated,
//! and rule order is kept (it decides the primary rule and constraint
//! precedence). So comments, key order, quoting and flow/block style never
//! change the id, and any semantic change does.
//!
//! The document is written through serde with every object's keys declared
//! in RFC 8785 order (UTF-16 code units; all fixed keys are ASCII), and every
//! user-supplied value (attribute names and operands, constraint values)
//! goes through the JCS crate, so the result is RFC 8785 canonical JSON
//! without building an intermediate tree. A test re-canonicalises the output
//! with the JCS crate and checks it is unchanged.

use super::glob::Pattern;
use super::model::*;
use crate::canonical::to_jcs;
use crate::job::Scalar;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, BTreeSet};

/// A value already in canonical form, written verbatim.
struct Jcs(Box<RawValue>);

impl Jcs {
    fn of(v: &Value) -> Jcs {
        // INVARIANT: to_jcs always yields valid JSON text.
        Jcs(RawValue::from_string(to_jcs(v))
            .unwrap_or_else(|e| unreachable!("JCS output is JSON: {e}")))
    }
    fn scalar(s: &Scalar) -> Jcs {
        Jcs::of(&match s {
            Scalar::String(x) => Value::String(x.clone()),
            Scalar::Number(n) => Value::Number(n.clone()),
            Scalar::Bool(b) => Value::Bool(*b),
        })
    }
}

impl Serialize for Jcs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// A map written with keys in UTF-16 code unit order, as RFC 8785 requires.
struct Utf16Map<'a, V>(Vec<(&'a str, V)>);

impl<'a, V> Utf16Map<'a, V> {
    fn new(mut entries: Vec<(&'a str, V)>) -> Self {
        entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
        Utf16Map(entries)
    }
}

impl<V: Serialize> Serialize for Utf16Map<'_, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

// Field order below is the canonical key order: keep it sorted.

#[derive(Serialize)]
struct CGate<'a> {
    approvers: u32,
    bind_within: u64,
    channels: Vec<&'static str>,
    /// Absent when empty, so policies without ladders keep their ids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    escalate: Vec<CStep<'a>>,
    roles: &'a BTreeSet<String>,
    sla: u64,
    timeout: u64,
}

#[derive(Serialize)]
struct CStep<'a> {
    after: u64,
    notify: &'a str,
}

impl<'a> CGate<'a> {
    fn of(g: &'a GateSpec) -> Self {
        CGate {
            approvers: g.approvers,
            bind_within: g.bind_within.0,
            channels: g.channels.iter().map(|c| c.as_str()).collect(),
            escalate: g
                .escalate
                .iter()
                .map(|st| CStep {
                    after: st.after_seconds,
                    notify: &st.notify,
                })
                .collect(),
            roles: &g.roles,
            sla: g.sla.0,
            timeout: g.timeout.0,
        }
    }
}

#[derive(Serialize)]
struct COps {
    #[serde(skip_serializing_if = "Option::is_none")]
    eq: Option<Jcs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exists: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gt: Option<Jcs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gte: Option<Jcs>,
    #[serde(rename = "in", skip_serializing_if = "Option::is_none")]
    in_: Option<Vec<Jcs>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lt: Option<Jcs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lte: Option<Jcs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ne: Option<Jcs>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum CAttr<'a> {
    Glob { glob: &'a str },
    Ops(COps),
}

impl<'a> CAttr<'a> {
    fn of(t: &'a AttrTest) -> Self {
        match t {
            AttrTest::Glob(g) => CAttr::Glob { glob: g.as_str() },
            AttrTest::Ops(o) => {
                let one = |s: &Option<Scalar>| s.as_ref().map(Jcs::scalar);
                CAttr::Ops(COps {
                    eq: one(&o.eq),
                    exists: o.exists,
                    gt: one(&o.gt),
                    gte: one(&o.gte),
                    // A set: order and repetition do not change the meaning.
                    in_: o.in_.as_ref().map(|list| {
                        let set: BTreeSet<String> = list
                            .iter()
                            .map(|s| Jcs::scalar(s).0.get().to_owned())
                            .collect();
                        set.into_iter()
                            .filter_map(|text| RawValue::from_string(text).ok().map(Jcs))
                            .collect()
                    }),
                    lt: one(&o.lt),
                    lte: one(&o.lte),
                    ne: one(&o.ne),
                })
            }
        }
    }
}

fn glob_set(g: &Option<Vec<Pattern>>) -> Option<BTreeSet<&str>> {
    g.as_ref().map(|v| v.iter().map(Pattern::as_str).collect())
}

#[derive(Serialize)]
struct CMatch<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<BTreeSet<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attributes: Option<Utf16Map<'a, CAttr<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    not: Option<Box<CMatch<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    principal: Option<BTreeSet<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    risk_tags: Option<&'a BTreeSet<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    risk_tags_none: Option<&'a BTreeSet<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<BTreeSet<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topics: Option<BTreeSet<&'a str>>,
}

impl<'a> CMatch<'a> {
    fn of(m: &'a MatchSpec) -> Self {
        CMatch {
            action: glob_set(&m.action),
            attributes: (!m.attributes.is_empty()).then(|| {
                Utf16Map::new(
                    m.attributes
                        .iter()
                        .map(|(k, t)| (k.as_str(), CAttr::of(t)))
                        .collect(),
                )
            }),
            not: m.not.as_deref().map(|n| Box::new(CMatch::of(n))),
            principal: glob_set(&m.principal),
            risk_tags: (!m.risk_tags.is_empty()).then_some(&m.risk_tags),
            risk_tags_none: (!m.risk_tags_none.is_empty()).then_some(&m.risk_tags_none),
            target: glob_set(&m.target),
            topics: glob_set(&m.topics),
        }
    }
}

#[derive(Serialize)]
struct CSummary<'a> {
    next_effect: Option<&'a str>,
    title: Option<&'a str>,
    why: Option<&'a str>,
}

#[derive(Serialize)]
struct CRule<'a> {
    approval: Option<CGate<'a>>,
    constraints: Utf16Map<'a, Jcs>,
    decision: &'static str,
    id: &'a str,
    #[serde(rename = "match")]
    matcher: CMatch<'a>,
    overridable: bool,
    reason: Option<&'a str>,
    summary: Option<CSummary<'a>>,
}

#[derive(Serialize)]
struct CDefaults<'a> {
    approval: CGate<'a>,
    decision: &'static str,
}

#[derive(Serialize)]
struct CDoc<'a> {
    defaults: CDefaults<'a>,
    name: &'a str,
    rules: Vec<CRule<'a>>,
    version: &'a str,
}

fn constraints(c: &BTreeMap<String, Value>) -> Utf16Map<'_, Jcs> {
    Utf16Map::new(c.iter().map(|(k, v)| (k.as_str(), Jcs::of(v))).collect())
}

/// The RFC 8785 canonical JSON of a validated policy.
pub fn canonical_json(doc: &PolicyDoc) -> String {
    let c = CDoc {
        defaults: CDefaults {
            approval: CGate::of(&doc.default_gate),
            decision: doc.default_decision.as_str(),
        },
        name: &doc.name,
        rules: doc
            .rules
            .iter()
            .map(|r| CRule {
                approval: r.gate.as_ref().map(CGate::of),
                constraints: constraints(&r.constraints),
                decision: r.decision.as_str(),
                id: &r.id,
                matcher: CMatch::of(&r.matcher),
                overridable: r.overridable,
                reason: r.reason.as_deref(),
                summary: r.summary.as_ref().map(|s| CSummary {
                    next_effect: s.next_effect.as_deref(),
                    title: s.title.as_deref(),
                    why: s.why.as_deref(),
                }),
            })
            .collect(),
        version: &doc.version,
    };
    // INVARIANT: every value here is serialisable (strings, integers, JCS text).
    serde_json::to_string(&c).unwrap_or_else(|e| unreachable!("canonical policy JSON: {e}"))
}
