//! The policy file as written: strict serde types with source spans, read by
//! serde-saphyr. Unknown keys are refused here; meaning is checked in
//! `validate`. This is the only module that knows the YAML parser.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_saphyr::{Location, Spanned};
use std::collections::BTreeMap;
use std::fmt;

pub type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub version: Option<S<String>>,
    #[serde(default)]
    pub name: Option<S<String>>,
    #[serde(default)]
    pub defaults: Option<S<RawDefaults>>,
    #[serde(default)]
    pub rules: Option<S<Vec<S<Box<RawRule>>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    #[serde(default)]
    pub decision: Option<S<String>>,
    #[serde(default)]
    pub approval: Option<S<RawApproval>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApproval {
    #[serde(default)]
    pub approvers: Option<S<i64>>,
    #[serde(default)]
    pub roles: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    pub sla: Option<S<String>>,
    #[serde(default)]
    pub timeout: Option<S<String>>,
    #[serde(default)]
    pub bind_within: Option<S<String>>,
    #[serde(default)]
    pub channels: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    pub escalate: Option<S<Vec<S<RawStep>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    pub after: Option<S<String>>,
    pub notify: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub id: Option<S<String>>,
    #[serde(rename = "match")]
    pub matcher: Option<S<Box<RawMatch>>>,
    pub decision: Option<S<String>>,
    #[serde(default)]
    pub reason: Option<S<String>>,
    #[serde(default)]
    pub approval: Option<S<Box<RawApproval>>>,
    #[serde(default)]
    pub constraints: Option<S<BTreeMap<String, S<Value>>>>,
    #[serde(default)]
    pub summary: Option<S<Box<RawSummary>>>,
    #[serde(default)]
    pub overridable: Option<S<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSummary {
    #[serde(default)]
    pub title: Option<S<String>>,
    #[serde(default)]
    pub why: Option<S<String>>,
    #[serde(default)]
    pub next_effect: Option<S<String>>,
}

pub type GlobList = S<Vec<S<String>>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    #[serde(default)]
    pub topics: Option<GlobList>,
    #[serde(default)]
    pub action: Option<GlobList>,
    #[serde(default)]
    pub target: Option<GlobList>,
    #[serde(default)]
    pub principal: Option<GlobList>,
    #[serde(default)]
    pub risk_tags: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    pub risk_tags_none: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    pub attributes: Option<S<BTreeMap<String, S<RawAttrTest>>>>,
    #[serde(default)]
    pub not: Option<Box<S<RawMatch>>>,
}

/// One attribute test as written: a string is a glob, another scalar means
/// equality, a mapping holds operators.
#[derive(Debug)]
pub enum RawAttrTest {
    Glob(String),
    Equals(Value),
    Ops(Box<RawAttrOps>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAttrOps {
    #[serde(default)]
    pub eq: Option<Value>,
    #[serde(default)]
    pub ne: Option<Value>,
    #[serde(default, rename = "in")]
    pub in_: Option<Vec<Value>>,
    #[serde(default)]
    pub gt: Option<Value>,
    #[serde(default)]
    pub gte: Option<Value>,
    #[serde(default)]
    pub lt: Option<Value>,
    #[serde(default)]
    pub lte: Option<Value>,
    #[serde(default)]
    pub exists: Option<bool>,
}

impl<'de> Deserialize<'de> for RawAttrTest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawAttrTest;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a glob string, a number, a boolean, or a map of operators (eq, ne, in, gt, gte, lt, lte, exists)",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawAttrTest, E> {
                Ok(RawAttrTest::Glob(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<RawAttrTest, E> {
                Ok(RawAttrTest::Glob(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawAttrTest, E> {
                Ok(RawAttrTest::Equals(Value::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawAttrTest, E> {
                Ok(RawAttrTest::Equals(Value::from(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawAttrTest, E> {
                Ok(RawAttrTest::Equals(Value::from(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawAttrTest, E> {
                serde_json::Number::from_f64(v)
                    .map(|n| RawAttrTest::Equals(Value::Number(n)))
                    .ok_or_else(|| E::custom("attribute tests need finite numbers"))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawAttrTest, A::Error> {
                RawAttrOps::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|ops| RawAttrTest::Ops(Box::new(ops)))
            }
        }
        d.deserialize_any(V)
    }
}

/// A 1-based line and column in the policy source (0 when unknown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

impl Pos {
    pub fn of<T>(s: &Spanned<T>) -> Pos {
        Pos::from_location(&s.referenced)
    }

    pub fn from_location(l: &Location) -> Pos {
        Pos {
            line: u32::try_from(l.line()).unwrap_or(u32::MAX),
            column: u32::try_from(l.column()).unwrap_or(u32::MAX),
        }
    }
}

/// Parser options shared by policies and test suites: budgets against alias
/// bombs, deep nesting and oversized documents; one document; duplicate keys
/// and YAML 1.1 booleans (`yes`, `on`) refused.
fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = 24;
    budget.flow_nesting_limit = 24;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_recorded_anchor_events = 20_000;
    budget.max_recorded_anchor_bytes = 1024 * 1024;
    budget.max_documents = 1;
    budget.max_nodes = 2_000_000;
    budget.max_events = 4_000_000;
    budget.max_total_scalar_bytes = 64 * 1024 * 1024;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.with_snippet = false;
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    options.strict_booleans = true;
    options
}

/// Parses YAML text into the raw model.
pub fn parse(source: &str) -> Result<RawPolicy, serde_saphyr::Error> {
    serde_saphyr::from_str_with_options(source, options())
}

/// The approver roles a policy names, as written: the default gate's (if it
/// sets any) and every rule gate's. Read without spans and without
/// validation, so it costs a fraction of a full load. Unknown keys are
/// ignored here; the full load refuses them with their locations.
pub struct NamedRoles {
    pub default: Option<Vec<String>>,
    pub rules: Vec<String>,
}

pub fn named_roles(source: &str) -> Result<NamedRoles, serde_saphyr::Error> {
    #[derive(Deserialize)]
    struct Doc {
        #[serde(default)]
        defaults: Option<Holder>,
        #[serde(default)]
        rules: Option<Vec<Holder>>,
    }
    #[derive(Deserialize)]
    struct Holder {
        #[serde(default)]
        approval: Option<Roles>,
    }
    #[derive(Deserialize)]
    struct Roles {
        #[serde(default)]
        roles: Option<Vec<String>>,
    }
    let doc: Doc = serde_saphyr::from_str_with_options(source, options())?;
    Ok(NamedRoles {
        default: doc.defaults.and_then(|d| d.approval?.roles),
        rules: doc
            .rules
            .into_iter()
            .flatten()
            .filter_map(|r| r.approval?.roles)
            .flatten()
            .collect(),
    })
}

/// A `gavel policy test` suite as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSuite {
    #[serde(default)]
    pub name: Option<String>,
    /// The policy under test, relative to the suite file.
    pub policy: String,
    pub cases: Vec<S<RawCase>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCase {
    pub name: String,
    #[serde(default)]
    pub principal: Option<String>,
    pub job: Value,
    pub expect: RawExpect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExpect {
    pub decision: String,
    #[serde(default)]
    pub primary_rule: Option<String>,
    #[serde(default)]
    pub matched_rules: Option<Vec<String>>,
    #[serde(default)]
    pub gates: Option<Vec<RawExpectGate>>,
    #[serde(default)]
    pub constraints: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pub overridable: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExpectGate {
    pub approvers: u32,
    pub roles: Vec<String>,
    #[serde(default)]
    pub rules: Option<Vec<String>>,
}

/// Parses a test suite with the same options as a policy.
pub fn parse_suite(source: &str) -> Result<RawSuite, serde_saphyr::Error> {
    serde_saphyr::from_str_with_options(source, options())
}
