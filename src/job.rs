//! A job (one proposed action of an agent), its limits, its canonical
//! document and its hash. Pure: no IO.
//!
//! The job hash is what binds an approval to exact content: lowercase hex
//! sha256 of the RFC 8785 canonical JSON of
//! `{"tenant","topic","action","target","risk_tags","attributes","params","proposal"}`,
//! every key present. `job_id` is an idempotency key and is not hashed.

use crate::canonical;
use serde::Serialize;
use serde_json::{Map, Number, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Size limits a job must respect (SPEC §3). Each is configurable.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted request (a job as JSON), in bytes.
    pub max_request_bytes: usize,
    /// Deepest nesting of containers inside `params` (`{}` is depth 1).
    pub max_params_depth: usize,
    pub max_attributes: usize,
    pub max_risk_tags: usize,
    /// Longest string in bytes, for every string but those inside `params`.
    pub max_string_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 1024 * 1024,
            max_params_depth: 32,
            max_attributes: 256,
            max_risk_tags: 64,
            max_string_bytes: 4096,
        }
    }
}

/// Why a job was refused. `field` names the offending field with a dotted
/// path (`job.params`, `job.attributes.cost`), so every door can report it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct JobError {
    pub field: String,
    pub message: String,
}

impl JobError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        JobError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A client-chosen idempotency key: 1–128 chars of `[A-Za-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    pub fn parse(s: &str) -> Result<JobId, JobError> {
        if s.is_empty() || s.len() > 128 {
            return Err(JobError::new(
                "job.job_id",
                format!("must be 1-128 characters, got {}", s.chars().count()),
            ));
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
        {
            return Err(JobError::new(
                "job.job_id",
                format!(
                    "`{}` is not allowed; use [A-Za-z0-9._:-]",
                    bad.escape_default()
                ),
            ));
        }
        Ok(JobId(s.to_owned()))
    }

    /// A fresh UUIDv7 at `now_ms` (time-ordered), for jobs submitted without an id.
    pub fn generate(now_ms: i64) -> JobId {
        JobId(crate::clock::id_at(now_ms))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lowercase hex sha256 of a job's canonical document. Compared exactly:
/// parsing normalises case, so two equal hashes are equal strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct JobHash(String);

impl TryFrom<String> for JobHash {
    type Error = String;
    fn try_from(s: String) -> Result<JobHash, String> {
        JobHash::parse(&s).map_err(|e| e.message)
    }
}

impl From<JobHash> for String {
    fn from(h: JobHash) -> String {
        h.0
    }
}

impl JobHash {
    /// Accepts 64 hex digits in either case and normalises to lowercase.
    pub fn parse(s: &str) -> Result<JobHash, JobError> {
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(JobError::new(
                "job_hash",
                "must be 64 hex digits (sha256 of the canonical job)",
            ));
        }
        Ok(JobHash(s.to_ascii_lowercase()))
    }

    /// The hash of canonical job bytes already written by
    /// [`Job::canonical_json`].
    pub fn of_canonical(canonical_json: &str) -> JobHash {
        JobHash(canonical::sha256_hex(canonical_json.as_bytes()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An attribute value: a string, a finite number or a boolean.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Scalar {
    String(String),
    Number(Number),
    Bool(bool),
}

impl Scalar {
    /// The value as a number, when it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Scalar::Number(n) => n.as_f64(),
            _ => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Scalar::String(_) => "string",
            Scalar::Number(_) => "number",
            Scalar::Bool(_) => "boolean",
        }
    }

    fn to_value(&self) -> Value {
        match self {
            Scalar::String(s) => Value::String(s.clone()),
            Scalar::Number(n) => Value::Number(n.clone()),
            Scalar::Bool(b) => Value::Bool(*b),
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::String(s) => f.write_str(s),
            Scalar::Number(n) => write!(f, "{n}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// What the agent tells the approvers. Part of the hash.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Proposal {
    pub title: String,
    pub why: String,
    pub blast_radius: String,
    pub reversible: Option<bool>,
    pub estimated_cost_usd: Option<f64>,
}

impl Proposal {
    fn is_empty(&self) -> bool {
        self.title.is_empty()
            && self.why.is_empty()
            && self.blast_radius.is_empty()
            && self.reversible.is_none()
            && self.estimated_cost_usd.is_none()
    }
}

/// A job as a door received it, before validation. Every door (JSON file,
/// HTTP, gRPC) builds one of these and calls [`Job::from_input`], so the
/// limits and rules below hold whatever the door.
#[derive(Debug, Clone, Default)]
pub struct JobInput {
    pub job_id: String,
    pub tenant: String,
    pub topic: String,
    pub action: String,
    pub target: String,
    pub risk_tags: Vec<String>,
    pub attributes: Vec<(String, Value)>,
    pub params: Option<Value>,
    pub proposal: Option<Proposal>,
}

impl JobInput {
    /// The fields a job's JSON form has, in the order documented.
    pub const FIELDS: [&'static str; 9] = [
        "job_id",
        "tenant",
        "topic",
        "action",
        "target",
        "risk_tags",
        "attributes",
        "params",
        "proposal",
    ];
    /// The fields of its `proposal`.
    pub const PROPOSAL_FIELDS: [&'static str; 5] = [
        "title",
        "why",
        "blast_radius",
        "reversible",
        "estimated_cost_usd",
    ];

    /// Reads a job's JSON form (see [`Job::from_json`]) without checking
    /// limits yet: every door calls [`Job::from_input`] after.
    pub fn from_json_value(value: Value) -> Result<JobInput, JobError> {
        let Value::Object(map) = value else {
            return Err(JobError::new(
                "job",
                format!("must be a JSON object, got {}", json_type(&value)),
            ));
        };
        let mut input = JobInput::default();
        for (key, v) in map {
            let field = format!("job.{key}");
            match key.as_str() {
                "job_id" => input.job_id = opt_string(&field, v)?,
                "tenant" => input.tenant = opt_string(&field, v)?,
                "topic" => input.topic = opt_string(&field, v)?,
                "action" => input.action = opt_string(&field, v)?,
                "target" => input.target = opt_string(&field, v)?,
                "risk_tags" => match v {
                    Value::Null => {}
                    Value::Array(items) => {
                        for (i, item) in items.into_iter().enumerate() {
                            match item {
                                Value::String(s) => input.risk_tags.push(s),
                                other => {
                                    return Err(JobError::new(
                                        format!("{field}[{i}]"),
                                        format!("must be a string, got {}", json_type(&other)),
                                    ));
                                }
                            }
                        }
                    }
                    other => {
                        return Err(JobError::new(
                            field,
                            format!("must be a list of strings, got {}", json_type(&other)),
                        ));
                    }
                },
                "attributes" => match v {
                    Value::Null => {}
                    Value::Object(attrs) => input.attributes = attrs.into_iter().collect(),
                    other => {
                        return Err(JobError::new(
                            field,
                            format!("must be an object, got {}", json_type(&other)),
                        ));
                    }
                },
                "params" => input.params = Some(v),
                "proposal" => input.proposal = proposal_from_json(v)?,
                _ => {
                    return Err(JobError::new(
                        field,
                        "unknown field; expected one of job_id, tenant, topic, action, target, risk_tags, attributes, params, proposal",
                    ));
                }
            }
        }
        Ok(input)
    }
}

/// A validated job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// `None` until a server assigns one (see [`JobId::generate`]).
    pub job_id: Option<JobId>,
    pub tenant: String,
    pub topic: String,
    pub action: String,
    pub target: String,
    /// A set, kept sorted by code point.
    pub risk_tags: BTreeSet<String>,
    pub attributes: BTreeMap<String, Scalar>,
    pub params: Map<String, Value>,
    /// `None` when no proposal field was given.
    pub proposal: Option<Proposal>,
}

fn check_string(field: &str, s: &str, limits: &Limits) -> Result<(), JobError> {
    if s.len() > limits.max_string_bytes {
        return Err(JobError::new(
            field,
            format!(
                "string of {} bytes exceeds the limit of {} bytes",
                s.len(),
                limits.max_string_bytes
            ),
        ));
    }
    Ok(())
}

fn check_number(field: &str, n: &Number) -> Result<(), JobError> {
    let integer = match (n.as_u64(), n.as_i64()) {
        (Some(u), _) => Some(i128::from(u)),
        (None, Some(i)) => Some(i128::from(i)),
        _ => None,
    };
    match integer {
        Some(v) => crate::canonical::integer(v)
            .map(drop)
            .map_err(|m| JobError::new(field, m)),
        None => Ok(()),
    }
}

/// Checks numbers anywhere inside params, since doors other than JSON text
/// (gRPC Struct) skip the strict parser.
fn check_params_numbers(path: &mut String, v: &Value) -> Result<(), JobError> {
    match v {
        Value::Number(n) => check_number(path, n),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                check_params_numbers(path, item)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Object(map) => {
            for (k, item) in map {
                let len = path.len();
                path.push('.');
                path.push_str(k);
                check_params_numbers(path, item)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

impl Job {
    /// Validates a job received by any door.
    pub fn from_input(input: JobInput, limits: &Limits) -> Result<Job, JobError> {
        let job_id = if input.job_id.is_empty() {
            None
        } else {
            Some(JobId::parse(&input.job_id)?)
        };
        for (field, s) in [
            ("job.tenant", &input.tenant),
            ("job.topic", &input.topic),
            ("job.action", &input.action),
            ("job.target", &input.target),
        ] {
            check_string(field, s, limits)?;
        }

        if input.risk_tags.len() > limits.max_risk_tags {
            return Err(JobError::new(
                "job.risk_tags",
                format!(
                    "{} tags exceed the limit of {}",
                    input.risk_tags.len(),
                    limits.max_risk_tags
                ),
            ));
        }
        let mut risk_tags = BTreeSet::new();
        for (i, tag) in input.risk_tags.into_iter().enumerate() {
            let field = format!("job.risk_tags[{i}]");
            if tag.is_empty() {
                return Err(JobError::new(field, "a risk tag must not be empty"));
            }
            check_string(&field, &tag, limits)?;
            risk_tags.insert(tag);
        }

        if input.attributes.len() > limits.max_attributes {
            return Err(JobError::new(
                "job.attributes",
                format!(
                    "{} attributes exceed the limit of {}",
                    input.attributes.len(),
                    limits.max_attributes
                ),
            ));
        }
        let mut attributes = BTreeMap::new();
        for (key, value) in input.attributes {
            let field = format!("job.attributes.{key}");
            if key.is_empty() {
                return Err(JobError::new(
                    "job.attributes",
                    "attribute names must not be empty",
                ));
            }
            check_string(&field, &key, limits)?;
            let scalar = match value {
                Value::String(s) => {
                    check_string(&field, &s, limits)?;
                    Scalar::String(s)
                }
                Value::Number(n) => {
                    check_number(&field, &n)?;
                    Scalar::Number(n)
                }
                Value::Bool(b) => Scalar::Bool(b),
                other => {
                    return Err(JobError::new(
                        field,
                        format!(
                            "attribute values must be a string, number or boolean, got {}",
                            json_type(&other)
                        ),
                    ));
                }
            };
            if attributes.insert(key.clone(), scalar).is_some() {
                return Err(JobError::new(field, "duplicate attribute"));
            }
        }

        let params = match input.params {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map,
            Some(other) => {
                return Err(JobError::new(
                    "job.params",
                    format!("must be a JSON object, got {}", json_type(&other)),
                ));
            }
        };
        let params_value = Value::Object(params);
        let d = canonical::depth(&params_value);
        if d > limits.max_params_depth {
            return Err(JobError::new(
                "job.params",
                format!(
                    "nesting depth {d} exceeds the limit of {}",
                    limits.max_params_depth
                ),
            ));
        }
        check_params_numbers(&mut "job.params".to_owned(), &params_value)?;
        let Value::Object(params) = params_value else {
            unreachable!("params_value was built as an object above")
        };

        let proposal = match input.proposal {
            Some(p) => {
                for (field, s) in [
                    ("job.proposal.title", &p.title),
                    ("job.proposal.why", &p.why),
                    ("job.proposal.blast_radius", &p.blast_radius),
                ] {
                    check_string(field, s, limits)?;
                }
                if let Some(cost) = p.estimated_cost_usd
                    && !cost.is_finite()
                {
                    return Err(JobError::new(
                        "job.proposal.estimated_cost_usd",
                        "must be a finite number",
                    ));
                }
                (!p.is_empty()).then_some(p)
            }
            None => None,
        };

        Ok(Job {
            job_id,
            tenant: input.tenant,
            topic: input.topic,
            action: input.action,
            target: input.target,
            risk_tags,
            attributes,
            params,
            proposal,
        })
    }

    /// Reads a job from its JSON form (`job_id`, `tenant`, `topic`, `action`,
    /// `target`, `risk_tags`, `attributes`, `params`, `proposal`). Unknown
    /// fields, duplicate keys and wrong types are refused with the field named.
    pub fn from_json(text: &[u8], limits: &Limits) -> Result<Job, JobError> {
        if text.len() > limits.max_request_bytes {
            return Err(JobError::new(
                "job",
                format!(
                    "{} bytes exceed the request limit of {} bytes",
                    text.len(),
                    limits.max_request_bytes
                ),
            ));
        }
        // The job object and params add two levels above params' own limit.
        let value = canonical::parse_strict(text, limits.max_params_depth + 2)
            .map_err(|e| JobError::new("job", format!("invalid JSON: {e}")))?;
        Job::from_json_value(value, limits)
    }

    /// Like [`Job::from_json`], from an already parsed value.
    pub fn from_json_value(value: Value, limits: &Limits) -> Result<Job, JobError> {
        Job::from_input(JobInput::from_json_value(value)?, limits)
    }

    /// The canonical document whose JCS serialisation is hashed.
    pub fn canonical_value(&self) -> Value {
        let attributes: Map<String, Value> = self
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.to_value()))
            .collect();
        let proposal = match &self.proposal {
            None => Value::Null,
            Some(p) => json!({
                "title": p.title,
                "why": p.why,
                "blast_radius": p.blast_radius,
                "reversible": p.reversible,
                "estimated_cost_usd": p.estimated_cost_usd,
            }),
        };
        json!({
            "tenant": self.tenant,
            "topic": self.topic,
            "action": self.action,
            "target": self.target,
            "risk_tags": self.risk_tags,
            "attributes": attributes,
            "params": self.params,
            "proposal": proposal,
        })
    }

    /// The canonical job: RFC 8785 JSON of [`Job::canonical_value`]. These
    /// are the bytes an executor runs after Bind. Written field by field (keys
    /// in their sorted order) rather than through a cloned tree, since this
    /// runs on every Decide and Bind.
    pub fn canonical_json(&self) -> String {
        use canonical::{write_f64, write_object, write_string};
        let mut out = String::with_capacity(192);
        out.push_str("{\"action\":");
        write_string(&mut out, &self.action);
        out.push_str(",\"attributes\":{");
        // Attribute names are ordered like any JSON object's keys.
        let mut attrs: Vec<(&String, &Scalar)> = self.attributes.iter().collect();
        if attrs.iter().any(|(k, _)| k.bytes().any(|b| b >= 0xEE)) {
            attrs.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
        }
        for (i, (k, v)) in attrs.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_string(&mut out, k);
            out.push(':');
            match v {
                Scalar::String(s) => write_string(&mut out, s),
                Scalar::Number(n) => canonical::write_jcs(&mut out, &Value::Number(n.clone())),
                Scalar::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            }
        }
        out.push_str("},\"params\":");
        write_object(&mut out, &self.params);
        out.push_str(",\"proposal\":");
        match &self.proposal {
            None => out.push_str("null"),
            Some(p) => {
                out.push_str("{\"blast_radius\":");
                write_string(&mut out, &p.blast_radius);
                out.push_str(",\"estimated_cost_usd\":");
                match p.estimated_cost_usd {
                    Some(c) => write_f64(&mut out, c),
                    None => out.push_str("null"),
                }
                out.push_str(",\"reversible\":");
                out.push_str(match p.reversible {
                    Some(true) => "true",
                    Some(false) => "false",
                    None => "null",
                });
                out.push_str(",\"title\":");
                write_string(&mut out, &p.title);
                out.push_str(",\"why\":");
                write_string(&mut out, &p.why);
                out.push('}');
            }
        }
        out.push_str(",\"risk_tags\":[");
        for (i, t) in self.risk_tags.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_string(&mut out, t);
        }
        out.push_str("],\"target\":");
        write_string(&mut out, &self.target);
        out.push_str(",\"tenant\":");
        write_string(&mut out, &self.tenant);
        out.push_str(",\"topic\":");
        write_string(&mut out, &self.topic);
        out.push('}');
        out
    }

    /// sha256 of the canonical job.
    pub fn hash(&self) -> JobHash {
        JobHash::of_canonical(&self.canonical_json())
    }

    /// The job as JSON in the same shape [`Job::from_json`] reads, with
    /// `job_id` when known.
    pub fn to_json_value(&self) -> Value {
        let mut v = self.canonical_value();
        if let (Some(id), Value::Object(map)) = (&self.job_id, &mut v) {
            map.insert("job_id".into(), Value::String(id.to_string()));
        }
        v
    }
}

fn opt_string(field: &str, v: Value) -> Result<String, JobError> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s),
        other => Err(JobError::new(
            field,
            format!("must be a string, got {}", json_type(&other)),
        )),
    }
}

fn proposal_from_json(v: Value) -> Result<Option<Proposal>, JobError> {
    let map = match v {
        Value::Null => return Ok(None),
        Value::Object(map) => map,
        other => {
            return Err(JobError::new(
                "job.proposal",
                format!("must be an object, got {}", json_type(&other)),
            ));
        }
    };
    let mut p = Proposal::default();
    for (key, v) in map {
        let field = format!("job.proposal.{key}");
        match key.as_str() {
            "title" => p.title = opt_string(&field, v)?,
            "why" => p.why = opt_string(&field, v)?,
            "blast_radius" => p.blast_radius = opt_string(&field, v)?,
            "reversible" => {
                p.reversible = match v {
                    Value::Null => None,
                    Value::Bool(b) => Some(b),
                    other => {
                        return Err(JobError::new(
                            field,
                            format!("must be a boolean, got {}", json_type(&other)),
                        ));
                    }
                }
            }
            "estimated_cost_usd" => {
                p.estimated_cost_usd = match v {
                    Value::Null => None,
                    Value::Number(n) => n.as_f64(),
                    other => {
                        return Err(JobError::new(
                            field,
                            format!("must be a number, got {}", json_type(&other)),
                        ));
                    }
                }
            }
            _ => {
                return Err(JobError::new(
                    field,
                    "unknown field; expected one of title, why, blast_radius, reversible, estimated_cost_usd",
                ));
            }
        }
    }
    Ok(Some(p))
}

/// The JSON type name of a value, for error messages.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(text: &str) -> Result<Job, JobError> {
        Job::from_json(text.as_bytes(), &Limits::default())
    }

    #[test]
    fn missing_fields_take_their_empty_form() {
        let j = job("{}").unwrap();
        assert_eq!(
            j.canonical_json(),
            r#"{"action":"","attributes":{},"params":{},"proposal":null,"risk_tags":[],"target":"","tenant":"","topic":""}"#
        );
    }

    #[test]
    fn tags_are_a_sorted_set() {
        let a = job(r#"{"risk_tags":["write","prod","write"]}"#).unwrap();
        let b = job(r#"{"risk_tags":["prod","write"]}"#).unwrap();
        assert_eq!(a.hash(), b.hash());
        assert!(
            a.canonical_json()
                .contains(r#""risk_tags":["prod","write"]"#)
        );
    }

    #[test]
    fn job_id_is_not_hashed() {
        let a = job(r#"{"job_id":"a","topic":"t"}"#).unwrap();
        let b = job(r#"{"job_id":"b","topic":"t"}"#).unwrap();
        assert_eq!(a.hash(), b.hash());
    }

    #[test]
    fn empty_proposal_is_null() {
        let a = job(r#"{"proposal":{}}"#).unwrap();
        let b = job(r#"{"proposal":{"title":"","reversible":null}}"#).unwrap();
        let c = job(r#"{}"#).unwrap();
        assert_eq!(a.hash(), c.hash());
        assert_eq!(b.hash(), c.hash());
        let d = job(r#"{"proposal":{"reversible":false}}"#).unwrap();
        assert_ne!(d.hash(), c.hash());
        assert!(d.canonical_json().contains(
            r#""proposal":{"blast_radius":"","estimated_cost_usd":null,"reversible":false,"title":"","why":""}"#
        ));
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (r#"{"topic":1}"#, "job.topic"),
            (r#"{"risk_tags":"prod"}"#, "job.risk_tags"),
            (r#"{"risk_tags":["a",2]}"#, "job.risk_tags[1]"),
            (r#"{"risk_tags":[""]}"#, "job.risk_tags[0]"),
            (r#"{"attributes":{"x":[1]}}"#, "job.attributes.x"),
            (r#"{"attributes":{"x":null}}"#, "job.attributes.x"),
            (r#"{"params":[1]}"#, "job.params"),
            (r#"{"proposal":{"cost":1}}"#, "job.proposal.cost"),
            (
                r#"{"proposal":{"reversible":"no"}}"#,
                "job.proposal.reversible",
            ),
            (r#"{"risktags":[]}"#, "job.risktags"),
            (r#"{"job_id":"a b"}"#, "job.job_id"),
            (r#"[]"#, "job"),
            (r#"{"topic":"a","topic":"b"}"#, "job"),
        ];
        for (text, field) in cases {
            let err = job(text).unwrap_err();
            assert_eq!(err.field, field, "{text}: {err}");
        }
    }

    #[test]
    fn limits_are_enforced() {
        let limits = Limits {
            max_request_bytes: 200,
            max_params_depth: 2,
            max_attributes: 1,
            max_risk_tags: 1,
            max_string_bytes: 3,
        };
        let check = |text: &str, field: &str| {
            let err = Job::from_json(text.as_bytes(), &limits).unwrap_err();
            assert_eq!(err.field, field, "{text}: {err}");
        };
        check(&format!(r#"{{"topic":"{}"}}"#, "a".repeat(300)), "job");
        check(r#"{"topic":"abcd"}"#, "job.topic");
        check(r#"{"risk_tags":["a","b"]}"#, "job.risk_tags");
        check(r#"{"attributes":{"a":1,"b":2}}"#, "job.attributes");
        check(r#"{"attributes":{"a":"long"}}"#, "job.attributes.a");
        check(r#"{"params":{"a":{"b":{}}}}"#, "job.params");
        check(r#"{"proposal":{"title":"long"}}"#, "job.proposal.title");
        // params strings are exempt from the string limit
        assert!(Job::from_json(br#"{"params":{"a":"long string"}}"#, &limits).is_ok());
        assert!(Job::from_json(br#"{"params":{"a":{"b":1}}}"#, &limits).is_ok());
    }

    #[test]
    fn big_integers_in_params_are_refused_by_every_door() {
        let input = JobInput {
            params: Some(json!({"a": [1, {"b": 9007199254740993u64}]})),
            ..JobInput::default()
        };
        let err = Job::from_input(input, &Limits::default()).unwrap_err();
        assert_eq!(err.field, "job.params.a[1].b");
    }

    #[test]
    fn job_ids() {
        assert!(JobId::parse("job-1:a.b_c").is_ok());
        assert!(JobId::parse(&"a".repeat(128)).is_ok());
        assert!(JobId::parse(&"a".repeat(129)).is_err());
        assert!(JobId::parse("").is_err());
        assert!(JobId::parse("é").is_err());
        let at = 1_800_000_000_123;
        let g = JobId::generate(at);
        assert!(JobId::parse(g.as_str()).is_ok());
        assert_ne!(g, JobId::generate(at));
        // The id carries the injected time: UUIDv7 keeps milliseconds in
        // its first 48 bits.
        let ms = u64::from_str_radix(&g.as_str().replace('-', "")[..12], 16).unwrap();
        assert_eq!(ms, at as u64);
        assert!(JobId::generate(at + 1).as_str() > g.as_str());
    }

    #[test]
    fn job_hash_parsing() {
        let h = "A".repeat(64);
        assert_eq!(JobHash::parse(&h).unwrap().as_str(), "a".repeat(64));
        assert!(JobHash::parse("abc").is_err());
        assert!(JobHash::parse(&"g".repeat(64)).is_err());
    }
}
