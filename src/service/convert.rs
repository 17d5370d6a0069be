//! Conversions between the wire types of `gavel.v1` and the engine's
//! door-neutral values, and the one encoding of refusals as gRPC statuses.

use super::status::{grpc_code, reason_to_proto};
use crate::approval::{ApprovalEntry, JobState};
use crate::audit::AuditEntry;
use crate::engine::{ApprovalView, JobView};
use crate::policy::{Channel, Decision, Evaluation, Finding, Gate, Severity};
use crate::proto::rpc;
use crate::proto::v1 as pb;
use crate::refusal::Refusal;
use crate::store::SnapshotRow;
use prost::Message;
use serde_json::Value;
use std::collections::BTreeMap;

/// The type URL of `gavel.v1.ErrorDetail` inside `google.rpc.Status`.
pub const ERROR_DETAIL_TYPE: &str = "type.googleapis.com/gavel.v1.ErrorDetail";

/// A refusal as a gRPC status: the code for its reason, the message, and a
/// `google.rpc.Status` with one `gavel.v1.ErrorDetail` in the details.
pub fn status(r: &Refusal) -> tonic::Status {
    crate::observe::refused(r.reason.as_str());
    let code = grpc_code(r.reason);
    let detail = pb::ErrorDetail {
        reason: reason_to_proto(r.reason),
        field: r.field.clone().unwrap_or_default(),
        message: r.message.clone(),
        state: 0,
    };
    let rich = rpc::Status {
        code: code as i32,
        message: r.message.clone(),
        details: vec![prost_types::Any {
            type_url: ERROR_DETAIL_TYPE.into(),
            value: detail.encode_to_vec(),
        }],
    };
    tonic::Status::with_details(code, r.message.clone(), rich.encode_to_vec().into())
}

/// The `ErrorDetail` inside a status from a gavel server, when there is one.
pub fn error_detail(s: &tonic::Status) -> Option<pb::ErrorDetail> {
    let rich = rpc::Status::decode(s.details()).ok()?;
    rich.details
        .iter()
        .find(|a| a.type_url == ERROR_DETAIL_TYPE)
        .and_then(|a| pb::ErrorDetail::decode(a.value.as_slice()).ok())
}

pub use crate::wire::{
    invalid, job_input, json_to_value, map_to_struct, struct_to_map, value_to_json,
};

/// The wire job for a stored canonical job.
pub fn job_from_canonical(job_id: &str, canonical: &str) -> pb::Job {
    let v: Value = serde_json::from_str(canonical).unwrap_or(Value::Null);
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let proposal = v
        .get("proposal")
        .filter(|p| p.is_object())
        .map(|p| pb::Proposal {
            title: p.get("title").and_then(Value::as_str).unwrap_or("").into(),
            why: p.get("why").and_then(Value::as_str).unwrap_or("").into(),
            blast_radius: p
                .get("blast_radius")
                .and_then(Value::as_str)
                .unwrap_or("")
                .into(),
            reversible: p.get("reversible").and_then(Value::as_bool),
            estimated_cost_usd: p.get("estimated_cost_usd").and_then(Value::as_f64),
        });
    pb::Job {
        job_id: job_id.to_owned(),
        tenant: s("tenant"),
        topic: s("topic"),
        action: s("action"),
        target: s("target"),
        risk_tags: v
            .get("risk_tags")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        attributes: v
            .get("attributes")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, x)| (k.clone(), json_to_value(x)))
                    .collect()
            })
            .unwrap_or_default(),
        params: v
            .get("params")
            .and_then(Value::as_object)
            .map(|m| map_to_struct(m.iter())),
        proposal,
    }
}

// ------------------------------------------------------------ enums and times

pub fn decision_to_proto(d: Decision) -> i32 {
    (match d {
        Decision::Allow => pb::Decision::Allow,
        Decision::AllowWithConstraints => pb::Decision::AllowWithConstraints,
        Decision::RequireApproval => pb::Decision::RequireApproval,
        Decision::Deny => pb::Decision::Deny,
    }) as i32
}

pub fn state_to_proto(s: JobState) -> i32 {
    (match s {
        JobState::Allowed => pb::JobState::Allowed,
        JobState::Denied => pb::JobState::Denied,
        JobState::Pending => pb::JobState::Pending,
        JobState::Approved => pb::JobState::Approved,
        JobState::Rejected => pb::JobState::Rejected,
        JobState::Expired => pb::JobState::Expired,
        JobState::Cancelled => pb::JobState::Cancelled,
        JobState::Bound => pb::JobState::Bound,
        JobState::Succeeded => pb::JobState::Succeeded,
        JobState::Failed => pb::JobState::Failed,
    }) as i32
}

pub fn state_from_proto(v: i32) -> Option<JobState> {
    JobState::ALL.into_iter().find(|s| state_to_proto(*s) == v)
}

pub fn channel_to_proto(c: Channel) -> i32 {
    (match c {
        Channel::Ui => pb::Channel::Ui,
        Channel::Http => pb::Channel::Http,
        Channel::Grpc => pb::Channel::Grpc,
        Channel::Slack => pb::Channel::Slack,
    }) as i32
}

pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn duration(secs: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: secs as i64,
        nanos: 0,
    }
}

pub fn gate(g: &Gate, filled: u32) -> pb::Gate {
    pb::Gate {
        approvers: g.approvers,
        roles: g.roles.clone(),
        rules: g.rules.clone(),
        sla: Some(duration(g.sla_seconds)),
        timeout: Some(duration(g.timeout_seconds)),
        bind_within: Some(duration(g.bind_within_seconds)),
        channels: g.channels.iter().map(|c| channel_to_proto(*c)).collect(),
        filled,
    }
}

pub fn constraints(c: &BTreeMap<String, Value>) -> prost_types::Struct {
    map_to_struct(c.iter())
}

pub fn summary(e: &Evaluation) -> pb::DecisionSummary {
    pb::DecisionSummary {
        title: e.decision_summary.title.clone(),
        why: e.decision_summary.why.clone(),
        next_effect: e.decision_summary.next_effect.clone(),
    }
}

pub fn approval(a: &ApprovalEntry, v: &ApprovalView) -> pb::Approval {
    pb::Approval {
        approver: a.approver.clone(),
        reason: a.reason.clone(),
        note: a.note.clone(),
        at: Some(timestamp(a.at)),
        channel: channel_to_proto(a.channel),
        role: v.role.clone().unwrap_or_default(),
        job_hash: a.job_hash.to_string(),
        policy_snapshot: a.snapshot_id.to_string(),
    }
}

/// The approvals of a job, each with the role it fills in the current assignment.
pub fn approvals(v: &JobView) -> Vec<pb::Approval> {
    v.approvals().map(|(a, av)| approval(a, av)).collect()
}

fn gates(v: &JobView) -> Vec<pb::Gate> {
    v.gates().map(|(g, gv)| gate(g, gv.filled)).collect()
}

/// The wire record of a job as the view read it (a job past its deadline
/// reads as expired even before the sweeper records it).
pub fn record(v: &JobView) -> pb::JobRecord {
    let r = &v.record;
    let e = &r.evaluation;
    pb::JobRecord {
        job: Some(job_from_canonical(&r.job_id, &r.canonical_job)),
        job_hash: r.job_hash.to_string(),
        state: state_to_proto(v.state),
        decision: decision_to_proto(e.decision),
        primary_rule: e.primary_rule.clone(),
        matched_rules: e.matched_rules.clone(),
        reason: e.reason.clone(),
        policy_snapshot: r.snapshot_id.to_string(),
        approval_required: e.approval_required,
        gates: gates(v),
        decision_summary: Some(summary(e)),
        constraints: Some(constraints(&e.constraints)),
        requester: r.requester.clone(),
        approvals: approvals(v),
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
        expires_at: r.expires_at.map(timestamp),
        escalate_at: r.escalate_at.map(timestamp),
        escalated: r.escalated,
        resolved_by: r.resolved_by.clone().unwrap_or_default(),
        resolved_comment: r.resolved_comment.clone().unwrap_or_default(),
        resolution: r.resolution.clone().unwrap_or_default(),
        overridden: r.overridden,
        override_acknowledged_by: r.override_ack_by.clone().unwrap_or_default(),
        bind_id: r.bind_id.clone().unwrap_or_default(),
        outcome_detail: r.outcome_detail.clone().unwrap_or_default(),
        decision_id: r.decision_id.clone(),
        overridable: e.overridable,
    }
}

pub fn decide_response(v: &JobView, replayed: bool) -> pb::DecideResponse {
    let r = &v.record;
    let e = &r.evaluation;
    pb::DecideResponse {
        decision: decision_to_proto(e.decision),
        primary_rule: e.primary_rule.clone(),
        matched_rules: e.matched_rules.clone(),
        reason: e.reason.clone(),
        policy_snapshot: r.snapshot_id.to_string(),
        job_hash: r.job_hash.to_string(),
        job_id: r.job_id.clone(),
        state: state_to_proto(v.state),
        approval_required: e.approval_required,
        gates: gates(v),
        decision_summary: Some(summary(e)),
        constraints: Some(constraints(&e.constraints)),
        expires_at: r.expires_at.map(timestamp),
        decision_id: r.decision_id.clone(),
        replayed,
        overridable: e.overridable,
    }
}

pub fn evaluation_response(e: &Evaluation, job_hash: &str, snapshot: &str) -> pb::DecideResponse {
    pb::DecideResponse {
        decision: decision_to_proto(e.decision),
        primary_rule: e.primary_rule.clone(),
        matched_rules: e.matched_rules.clone(),
        reason: e.reason.clone(),
        policy_snapshot: snapshot.to_owned(),
        job_hash: job_hash.to_owned(),
        job_id: String::new(),
        state: 0,
        approval_required: e.approval_required,
        gates: e.gates.iter().map(|g| gate(g, 0)).collect(),
        decision_summary: Some(summary(e)),
        constraints: Some(constraints(&e.constraints)),
        expires_at: None,
        decision_id: String::new(),
        replayed: false,
        overridable: e.overridable,
    }
}

pub fn snapshot(row: &SnapshotRow, active: bool, with_source: bool) -> pb::Snapshot {
    pb::Snapshot {
        id: row.id.to_string(),
        name: row.name.clone(),
        version: row.version.unwrap_or(0) as u64,
        sha256: row.sha256.clone(),
        source: if with_source {
            row.source.clone()
        } else {
            String::new()
        },
        active,
        revoked: row.revoked_at.is_some(),
        created_at: Some(timestamp(row.created_at)),
        activated_at: row.activated_at.map(timestamp),
        activated_by: row.activated_by.clone().unwrap_or_default(),
        revoked_at: row.revoked_at.map(timestamp),
        revoked_by: row.revoked_by.clone().unwrap_or_default(),
        revoke_reason: row.revoke_reason.clone().unwrap_or_default(),
        rule_count: row.rule_count as u32,
    }
}

pub fn finding(f: &Finding) -> pb::Finding {
    pb::Finding {
        severity: match f.severity {
            Severity::Error => pb::Severity::Error,
            Severity::Warning => pb::Severity::Warning,
        } as i32,
        code: f.code.to_owned(),
        message: f.message.clone(),
        file: f.file.clone(),
        line: f.line,
        column: f.column,
        rule: f.rule.clone().unwrap_or_default(),
    }
}

pub fn audit_entry(e: &AuditEntry) -> pb::AuditEntry {
    pb::AuditEntry {
        chain: e.chain.clone(),
        seq: e.seq as u64,
        prev_hash: e.prev_hash.clone(),
        entry_hash: e.entry_hash.clone(),
        at: Some(timestamp(e.at)),
        actor: e.actor.clone(),
        job_id: e.job_id.clone(),
        snapshot_id: e.snapshot_id.clone(),
        kind: e.kind.clone(),
        body: crate::canonical::to_jcs(&e.body),
        tenant: e.tenant.clone(),
    }
}
