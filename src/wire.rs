//! Jobs and JSON values on the wire: protobuf `Value`/`Struct` to JSON and
//! back, and a wire job to the `JobInput` every door hands the core.
//! Pure, so the fuzz targets can decode requests the way the gRPC door
//! does.

use crate::job::{JobInput, Proposal};
use crate::proto::v1 as pb;
use crate::refusal::{Reason, Refusal};
use prost_types::value::Kind;
use serde_json::{Map, Number, Value};

/// A refusal of `field` as an invalid argument.
pub fn invalid(field: &str, message: impl Into<String>) -> Refusal {
    Refusal::field(Reason::InvalidArgument, field, message)
}

// ------------------------------------------------------------ JSON <-> protobuf Value

pub fn value_to_json(v: &prost_types::Value, field: &str) -> Result<Value, Refusal> {
    Ok(match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            // Protobuf numbers are doubles; integral ones within ±2^53 are
            // written as integers (the canonical form is the same).
            if n.fract() == 0.0 && n.abs() <= crate::canonical::MAX_EXACT_INTEGER as f64 {
                Value::Number(Number::from(*n as i64))
            } else {
                Value::Number(
                    Number::from_f64(*n).ok_or_else(|| invalid(field, "numbers must be finite"))?,
                )
            }
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(
            l.values
                .iter()
                .enumerate()
                .map(|(i, x)| value_to_json(x, &format!("{field}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_map(s, field)?),
    })
}

pub fn struct_to_map(s: &prost_types::Struct, field: &str) -> Result<Map<String, Value>, Refusal> {
    s.fields
        .iter()
        .map(|(k, v)| Ok((k.clone(), value_to_json(v, &format!("{field}.{k}"))?)))
        .collect()
}

pub fn json_to_value(v: &Value) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        Value::Object(m) => Kind::StructValue(map_to_struct(m.iter())),
    };
    prost_types::Value { kind: Some(kind) }
}

pub fn map_to_struct<'a>(m: impl Iterator<Item = (&'a String, &'a Value)>) -> prost_types::Struct {
    prost_types::Struct {
        fields: m.map(|(k, v)| (k.clone(), json_to_value(v))).collect(),
    }
}

// ------------------------------------------------------------ jobs

/// A wire job as a door's `JobInput` (validated later by `Job::from_input`).
pub fn job_input(j: Option<pb::Job>) -> Result<JobInput, Refusal> {
    let j = j.ok_or_else(|| invalid("job", "a job is required"))?;
    let attributes = j
        .attributes
        .iter()
        .map(|(k, v)| Ok((k.clone(), value_to_json(v, &format!("job.attributes.{k}"))?)))
        .collect::<Result<Vec<_>, Refusal>>()?;
    let params = match &j.params {
        None => None,
        Some(s) => Some(Value::Object(struct_to_map(s, "job.params")?)),
    };
    let proposal = j.proposal.map(|p| Proposal {
        title: p.title,
        why: p.why,
        blast_radius: p.blast_radius,
        reversible: p.reversible,
        estimated_cost_usd: p.estimated_cost_usd,
    });
    Ok(JobInput {
        job_id: j.job_id,
        tenant: j.tenant,
        topic: j.topic,
        action: j.action,
        target: j.target,
        risk_tags: j.risk_tags,
        attributes,
        params,
        proposal,
    })
}
