//! Rows, written once for both backends: the column lists, how a stored
//! row becomes a record, and which values a write binds in which order.

use super::conn::{Arg, Columns};
use super::{OutboxRow, SnapshotRow, StoreError};
use crate::approval::{ApprovalEntry, JobRecord, JobState, Notification, NotificationKind};
use crate::audit::{Appended, AuditEntry};
use crate::job::JobHash;
use crate::policy::SnapshotId;

/// The job columns every job query selects, in this order.
macro_rules! job_columns {
    () => {
        "job_id, job_hash, canonical_job, tenant, requester, snapshot_id, decision_id, evaluation, state, version, created_at, updated_at, expires_at, escalate_at, escalated, resolved_by, resolved_comment, resolution, overridden, override_by, override_ack_by, bind_id, bound_at, outcome_detail"
    };
}
pub(crate) use job_columns;

macro_rules! snapshot_columns {
    () => {
        "id, name, sha256, version, source, canonical_json, rule_count, created_at, activated_at, activated_by, revoked_at, revoked_by, revoke_reason"
    };
}
pub(crate) use snapshot_columns;

macro_rules! audit_columns {
    () => {
        "chain, seq, prev_hash, entry_hash, at, actor, job_id, snapshot_id, kind, body, tenant"
    };
}
pub(crate) use audit_columns;

macro_rules! outbox_columns {
    () => {
        "id, kind, job_id, job_version, tenant, body, created_at, state, attempts, next_attempt_at"
    };
}
pub(crate) use outbox_columns;

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

pub(crate) fn json_text<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| corrupt("unserialisable value", e))
}

pub(crate) fn snapshot_id(text: &str) -> Result<SnapshotId, StoreError> {
    SnapshotId::parse(text).map_err(|e| corrupt("snapshot id", e))
}

/// A job row, with its approvals as the JSON array column `approvals_json`
/// (each dialect builds it in the same statement, so a job is one read).
pub(crate) fn job(row: &impl Columns) -> Result<JobRecord, StoreError> {
    let state = row.text("state")?;
    let evaluation = row.text("evaluation")?;
    let approvals: Vec<ApprovalEntry> = match row.opt_text("approvals_json")? {
        Some(text) => serde_json::from_str(&text).map_err(|e| corrupt("approvals of a job", e))?,
        None => Vec::new(),
    };
    Ok(JobRecord {
        job_id: row.text("job_id")?,
        job_hash: JobHash::parse(&row.text("job_hash")?)
            .map_err(|e| corrupt("job hash", e.message))?,
        canonical_job: row.text("canonical_job")?,
        tenant: row.text("tenant")?,
        requester: row.text("requester")?,
        snapshot_id: snapshot_id(&row.text("snapshot_id")?)?,
        decision_id: row.text("decision_id")?,
        evaluation: serde_json::from_str(&evaluation)
            .map_err(|e| corrupt("evaluation of a job", e))?,
        state: JobState::parse(&state).ok_or_else(|| corrupt("job state", &state))?,
        version: row.int("version")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
        expires_at: row.opt_int("expires_at")?,
        escalate_at: row.opt_int("escalate_at")?,
        escalated: row.flag("escalated")?,
        resolved_by: row.opt_text("resolved_by")?,
        resolved_comment: row.opt_text("resolved_comment")?,
        resolution: row.opt_text("resolution")?,
        overridden: row.flag("overridden")?,
        override_by: row.opt_text("override_by")?,
        override_ack_by: row.opt_text("override_ack_by")?,
        bind_id: row.opt_text("bind_id")?,
        bound_at: row.opt_int("bound_at")?,
        outcome_detail: row.opt_text("outcome_detail")?,
        approvals,
    })
}

pub(crate) fn snapshot(row: &impl Columns) -> Result<SnapshotRow, StoreError> {
    Ok(SnapshotRow {
        id: snapshot_id(&row.text("id")?)?,
        name: row.text("name")?,
        sha256: row.text("sha256")?,
        version: row.opt_int("version")?,
        source: row.text("source")?,
        canonical_json: row.text("canonical_json")?,
        rule_count: row.int("rule_count")?,
        created_at: row.int("created_at")?,
        activated_at: row.opt_int("activated_at")?,
        activated_by: row.opt_text("activated_by")?,
        revoked_at: row.opt_int("revoked_at")?,
        revoked_by: row.opt_text("revoked_by")?,
        revoke_reason: row.opt_text("revoke_reason")?,
    })
}

pub(crate) fn audit(row: &impl Columns) -> Result<AuditEntry, StoreError> {
    let body = row.text("body")?;
    Ok(AuditEntry {
        chain: row.text("chain")?,
        seq: row.int("seq")?,
        prev_hash: row.text("prev_hash")?,
        entry_hash: row.text("entry_hash")?,
        at: row.int("at")?,
        actor: row.text("actor")?,
        job_id: row.text("job_id")?,
        snapshot_id: row.text("snapshot_id")?,
        kind: row.text("kind")?,
        tenant: row.text("tenant")?,
        body: serde_json::from_str(&body).map_err(|e| corrupt("audit body", e))?,
    })
}

pub(crate) fn outbox(row: &impl Columns) -> Result<OutboxRow, StoreError> {
    let kind = row.text("kind")?;
    let body = row.text("body")?;
    Ok(OutboxRow {
        id: row.text("id")?,
        kind: NotificationKind::parse(&kind).ok_or_else(|| corrupt("outbox kind", &kind))?,
        job_id: row.text("job_id")?,
        job_version: row.int("job_version")?,
        tenant: row.text("tenant")?,
        body: serde_json::from_str(&body).map_err(|e| corrupt("outbox body", e))?,
        created_at: row.int("created_at")?,
        state: row.text("state")?,
        attempts: row.int("attempts")?,
        next_attempt_at: row.int("next_attempt_at")?,
    })
}

// ------------------------------------------------------------ values written

pub(crate) const INSERT_JOBS: &str = "INSERT INTO jobs (job_id, job_hash, canonical_job, tenant, requester, snapshot_id, decision_id, decision, evaluation, state, version, created_at, updated_at, expires_at, escalate_at) ";

/// One row of [`INSERT_JOBS`]; `evaluation` is the record's evaluation as JSON.
pub(crate) fn job_insert<'a>(r: &'a JobRecord, evaluation: &'a str) -> Vec<Arg<'a>> {
    vec![
        Arg::Text(&r.job_id),
        Arg::Text(r.job_hash.as_str()),
        Arg::Text(&r.canonical_job),
        Arg::Text(&r.tenant),
        Arg::Text(&r.requester),
        Arg::Text(r.snapshot_id.as_str()),
        Arg::Text(&r.decision_id),
        Arg::Text(r.evaluation.decision.as_str()),
        Arg::Text(evaluation),
        Arg::Text(r.state.as_str()),
        Arg::Int(r.version),
        Arg::Int(r.created_at),
        Arg::Int(r.updated_at),
        Arg::OptInt(r.expires_at),
        Arg::OptInt(r.escalate_at),
    ]
}

/// Writes a transition's record, guarded by the version it was read at.
pub(crate) const UPDATE_JOB: &str = "UPDATE jobs SET state = $1, version = $2, updated_at = $3, expires_at = $4, escalate_at = $5, escalated = $6, resolved_by = $7, resolved_comment = $8, resolution = $9, overridden = $10, override_by = $11, override_ack_by = $12, bind_id = $13, bound_at = $14, outcome_detail = $15 \
     WHERE job_id = $16 AND version = $17";

pub(crate) fn job_update(r: &JobRecord, read_version: i64) -> Vec<Arg<'_>> {
    vec![
        Arg::Text(r.state.as_str()),
        Arg::Int(r.version),
        Arg::Int(r.updated_at),
        Arg::OptInt(r.expires_at),
        Arg::OptInt(r.escalate_at),
        Arg::Bool(r.escalated),
        Arg::opt(&r.resolved_by),
        Arg::opt(&r.resolved_comment),
        Arg::opt(&r.resolution),
        Arg::Bool(r.overridden),
        Arg::opt(&r.override_by),
        Arg::opt(&r.override_ack_by),
        Arg::opt(&r.bind_id),
        Arg::OptInt(r.bound_at),
        Arg::opt(&r.outcome_detail),
        Arg::Text(&r.job_id),
        Arg::Int(read_version),
    ]
}

pub(crate) const INSERT_APPROVALS: &str = "INSERT INTO approvals (job_id, approver, roles, reason, note, channel, at, job_hash, snapshot_id) ";

/// One row of [`INSERT_APPROVALS`]; `roles` is the approver's roles as JSON.
pub(crate) fn approval_insert<'a>(
    job_id: &'a str,
    a: &'a ApprovalEntry,
    roles: &'a str,
) -> Vec<Arg<'a>> {
    vec![
        Arg::Text(job_id),
        Arg::Text(&a.approver),
        Arg::Text(roles),
        Arg::Text(&a.reason),
        Arg::Text(&a.note),
        Arg::Text(a.channel.as_str()),
        Arg::Int(a.at),
        Arg::Text(a.job_hash.as_str()),
        Arg::Text(a.snapshot_id.as_str()),
    ]
}

pub(crate) const INSERT_AUDIT: &str = concat!("INSERT INTO audit (", audit_columns!(), ") ");

/// One row of [`INSERT_AUDIT`]: an appended entry, its body as RFC 8785 text.
pub(crate) fn audit_insert(e: &Appended) -> Vec<Arg<'_>> {
    vec![
        Arg::Text(&e.chain),
        Arg::Int(e.seq),
        Arg::Text(&e.prev_hash),
        Arg::Text(&e.entry_hash),
        Arg::Int(e.at),
        Arg::Text(&e.actor),
        Arg::Text(&e.job_id),
        Arg::Text(&e.snapshot_id),
        Arg::Text(&e.kind),
        Arg::Text(&e.body),
        Arg::Text(&e.tenant),
    ]
}

pub(crate) const INSERT_OUTBOX: &str = "INSERT INTO outbox (id, kind, job_id, job_version, tenant, body, created_at, next_attempt_at) ";

/// A notification with its key and body text, ready for [`INSERT_OUTBOX`].
pub(crate) struct OutboxInsert {
    pub(crate) key: String,
    pub(crate) body: String,
    pub(crate) notification: Notification,
    pub(crate) at: i64,
}

pub(crate) fn outbox_insert(m: &OutboxInsert) -> Vec<Arg<'_>> {
    vec![
        Arg::Text(&m.key),
        Arg::Text(m.notification.kind.as_str()),
        Arg::Text(&m.notification.job_id),
        Arg::Int(m.notification.job_version),
        Arg::Text(&m.notification.tenant),
        Arg::Text(&m.body),
        Arg::Int(m.at),
        Arg::Int(m.at),
    ]
}
