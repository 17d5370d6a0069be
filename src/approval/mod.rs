//! The job state machine of SPEC §4 and the Bind checks of §5, as data and
//! pure functions. A [`Command`] applied to a record at a time gives a
//! [`Transition`]: the next record and its [`Effect`]s (the audit event and
//! the notifications to send), or a refusal, which may have effects of its
//! own (refused binds are audited). The store applies a command inside one
//! transaction guarded by the record's version and writes every effect in
//! that same transaction, so every door (gRPC, HTTP, Slack, CLI) gets the
//! same rules and nothing is notified that did not happen.

mod commands;
mod execute;
mod review;
mod slots;

pub use commands::{ApproveInput, BindInput, Command, apply, missing};
pub use review::may_act_on;

use crate::audit::{AuditEvent, Body, EventKind};
use crate::canonical::{write_jcs, write_map, write_string, write_strings};
use crate::job::JobHash;
use crate::policy::{Channel, Decision, Evaluation, SnapshotId};
use crate::refusal::Refusal;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use slots::{Candidate, max_assignment};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Allowed,
    Denied,
    Pending,
    Approved,
    Rejected,
    Expired,
    Cancelled,
    Bound,
    Succeeded,
    Failed,
}

impl JobState {
    pub const ALL: [JobState; 10] = [
        JobState::Allowed,
        JobState::Denied,
        JobState::Pending,
        JobState::Approved,
        JobState::Rejected,
        JobState::Expired,
        JobState::Cancelled,
        JobState::Bound,
        JobState::Succeeded,
        JobState::Failed,
    ];

    /// The states with a deadline (`expires_at`): pending until its
    /// timeout, approved or allowed until `bind_within` runs out. The
    /// store's sweep query is built from this list.
    pub const EXPIRING: [JobState; 3] = [JobState::Pending, JobState::Approved, JobState::Allowed];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Allowed => "allowed",
            JobState::Denied => "denied",
            JobState::Pending => "pending",
            JobState::Approved => "approved",
            JobState::Rejected => "rejected",
            JobState::Expired => "expired",
            JobState::Cancelled => "cancelled",
            JobState::Bound => "bound",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// No transition leaves a final state.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Denied
                | JobState::Rejected
                | JobState::Expired
                | JobState::Cancelled
                | JobState::Succeeded
                | JobState::Failed
        )
    }
}

/// The deadline rule, written once: a deadline (expiry or SLA) is reached
/// at its own millisecond. The store's sweep query says `<= now` to agree.
pub fn reached(deadline: Millis, now: Millis) -> bool {
    now >= deadline
}

/// One approval given to a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalEntry {
    pub approver: String,
    /// The approver's roles when they approved.
    pub roles: Vec<String>,
    pub reason: String,
    pub note: String,
    pub channel: Channel,
    pub at: Millis,
    /// What the approver approved: always the record's hash and snapshot.
    pub job_hash: JobHash,
    pub snapshot_id: SnapshotId,
}

/// The whole record of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: String,
    pub job_hash: JobHash,
    /// RFC 8785 JSON of the job as decided: what an executor runs.
    pub canonical_job: String,
    pub tenant: String,
    pub requester: String,
    pub snapshot_id: SnapshotId,
    pub decision_id: String,
    pub evaluation: Evaluation,
    pub state: JobState,
    /// Increases with every change; transitions are guarded by it.
    pub version: i64,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// The current deadline: timeout while pending, bind_within once allowed
    /// or approved.
    pub expires_at: Option<Millis>,
    pub escalate_at: Option<Millis>,
    pub escalated: bool,
    pub resolved_by: Option<String>,
    pub resolved_comment: Option<String>,
    pub resolution: Option<String>,
    pub overridden: bool,
    pub override_by: Option<String>,
    pub override_ack_by: Option<String>,
    pub bind_id: Option<String>,
    pub bound_at: Option<Millis>,
    pub outcome_detail: Option<String>,
    /// In the order given; a person appears at most once.
    pub approvals: Vec<ApprovalEntry>,
}

impl JobRecord {
    /// The escalation ladder the job was decided with (empty: none).
    pub fn ladder(&self) -> &[crate::policy::EscalationStep] {
        self.evaluation
            .timing
            .as_ref()
            .map_or(&[], |t| t.ladder.as_slice())
    }
}

// ------------------------------------------------------------ effects

/// What a notification is about (SPEC §11). The outbox delivers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// A job waits for approval.
    Pending,
    /// A pending job passed its SLA.
    Escalated,
    /// A job that needed approval was approved, rejected or cancelled.
    Resolved,
    /// A job that needed approval expired.
    Expired,
    /// Break-glass: someone overrode the gate.
    Overridden,
}

impl NotificationKind {
    pub const ALL: [NotificationKind; 5] = [
        NotificationKind::Pending,
        NotificationKind::Escalated,
        NotificationKind::Resolved,
        NotificationKind::Expired,
        NotificationKind::Overridden,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::Pending => "pending",
            NotificationKind::Escalated => "escalated",
            NotificationKind::Resolved => "resolved",
            NotificationKind::Expired => "expired",
            NotificationKind::Overridden => "overridden",
        }
    }

    pub fn parse(s: &str) -> Option<NotificationKind> {
        NotificationKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A message for the outbox, written in the transaction of the change it
/// reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub kind: NotificationKind,
    pub job_id: String,
    /// The job's version after the change: with the job id and the kind it
    /// makes the idempotency key.
    pub job_version: i64,
    pub tenant: String,
    pub body: Value,
}

impl Notification {
    /// What the change was, seen from the record after it. The row
    /// already names the kind, job, version and tenant; the body adds the
    /// state the change left and who made it. A message is rendered from
    /// the job as it stands when it is delivered.
    pub(crate) fn of(kind: NotificationKind, r: &JobRecord, actor: &str) -> Notification {
        Notification {
            kind,
            job_id: r.job_id.clone(),
            job_version: r.version,
            tenant: r.tenant.clone(),
            body: json!({ "state": r.state, "actor": actor }),
        }
    }

    /// The idempotency key receivers can use: one per change and kind,
    /// the same however often the message is delivered.
    pub fn key(&self) -> String {
        format!(
            "{}:{}:{}",
            self.job_id,
            self.job_version,
            self.kind.as_str()
        )
    }
}

/// Something a transition asks the store to write with the record.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Audit(AuditEvent),
    Notify(Notification),
}

/// The result of a successful transition.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The next record; approvals beyond the ones read are new.
    pub record: JobRecord,
    pub effects: Vec<Effect>,
}

impl Transition {
    /// The kind of change this was, from its audit event.
    pub fn kind(&self) -> Option<EventKind> {
        self.effects.iter().find_map(|e| match e {
            Effect::Audit(a) => Some(a.kind),
            Effect::Notify(_) => None,
        })
    }
}

/// A refused transition, with the effects to write anyway (refused binds
/// are audited).
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub refusal: Refusal,
    pub effects: Vec<Effect>,
}

impl From<Refusal> for Refused {
    fn from(refusal: Refusal) -> Refused {
        Refused {
            refusal,
            effects: Vec::new(),
        }
    }
}

// ------------------------------------------------------------ decisions

/// A freshly decided job, before it is recorded.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub job_id: String,
    pub job_hash: JobHash,
    pub canonical_job: String,
    pub tenant: String,
    pub requester: String,
    pub snapshot_id: SnapshotId,
    pub decision_id: String,
    pub evaluation: Evaluation,
    /// The policy's default `bind_within`, the deadline of allowed jobs.
    pub default_bind_within_secs: u64,
}

/// The record of a freshly decided job and its effects: the `decision`
/// audit event and, for a job that waits for approval, a `pending`
/// notification.
pub fn decided(new: NewJob, now: Millis) -> Transition {
    let secs = |s: u64| now.saturating_add((s as i64).saturating_mul(1000));
    let NewJob {
        job_id,
        job_hash,
        canonical_job,
        tenant,
        requester,
        snapshot_id,
        decision_id,
        evaluation,
        default_bind_within_secs,
    } = new;
    let (state, expires_at, escalate_at) = match evaluation.decision {
        Decision::Allow | Decision::AllowWithConstraints => (
            JobState::Allowed,
            Some(secs(default_bind_within_secs)),
            None,
        ),
        Decision::Deny => (JobState::Denied, None, None),
        Decision::RequireApproval => {
            let t = evaluation.timing.clone();
            (
                JobState::Pending,
                t.as_ref().map(|t| secs(t.timeout_seconds)),
                // A ladder replaces the single escalation at the SLA.
                t.as_ref()
                    .map(|t| secs(t.ladder.first().map_or(t.sla_seconds, |s| s.after_seconds))),
            )
        }
    };
    let record = JobRecord {
        job_id,
        job_hash,
        canonical_job,
        tenant,
        requester,
        snapshot_id,
        decision_id,
        evaluation,
        state,
        version: 1,
        created_at: now,
        updated_at: now,
        expires_at,
        escalate_at,
        escalated: false,
        resolved_by: None,
        resolved_comment: None,
        resolution: None,
        overridden: false,
        override_by: None,
        override_ack_by: None,
        bind_id: None,
        bound_at: None,
        outcome_detail: None,
        approvals: Vec::new(),
    };
    let mut effects = vec![Effect::Audit(record.decision_event())];
    if state == JobState::Pending {
        effects.push(Effect::Notify(Notification::of(
            NotificationKind::Pending,
            &record,
            &record.requester,
        )));
    }
    Transition { record, effects }
}

impl JobRecord {
    /// The state as of `now`: a job whose deadline has been reached in a
    /// state that has one is expired, even before the sweeper records it.
    pub fn effective_state(&self, now: Millis) -> JobState {
        match self.expires_at {
            Some(deadline)
                if JobState::EXPIRING.contains(&self.state) && reached(deadline, now) =>
            {
                JobState::Expired
            }
            _ => self.state,
        }
    }

    /// The `decision` event. Its body, which repeats the canonical job so
    /// the log alone shows what was decided, is written straight to RFC
    /// 8785 text: this runs on every Decide, and building a JSON value
    /// first, then canonicalising it, cost about 21,000 instructions more
    /// per decision (BENCHMARKS.md, issue 16). Tests in
    /// `tests/it/transitions.rs` check the text against the plain object
    /// canonicalised by the reference implementation.
    fn decision_event(&self) -> AuditEvent {
        let e = &self.evaluation;
        let gates = match e.gates.as_slice() {
            [] => Value::Array(Vec::new()),
            gates => match serde_json::to_value(gates) {
                Ok(v) => v,
                Err(_) => {
                    return self.event(EventKind::Decision, &self.requester, self.decision_body());
                }
            },
        };
        let mut b = String::with_capacity(2 * self.canonical_job.len() + 512);
        b.push_str("{\"canonical_job\":");
        write_string(&mut b, &self.canonical_job);
        b.push_str(",\"constraints\":");
        write_map(&mut b, &e.constraints);
        b.push_str(",\"decision\":");
        write_string(&mut b, e.decision.as_str());
        b.push_str(",\"decision_id\":");
        write_string(&mut b, &self.decision_id);
        b.push_str(",\"expires_at\":");
        match self.expires_at {
            Some(at) => write_jcs(&mut b, &Value::from(at)),
            None => b.push_str("null"),
        }
        b.push_str(",\"gates\":");
        write_jcs(&mut b, &gates);
        b.push_str(",\"job_hash\":");
        write_string(&mut b, self.job_hash.as_str());
        b.push_str(",\"matched_rules\":");
        write_strings(&mut b, &e.matched_rules);
        b.push_str(",\"primary_rule\":");
        write_string(&mut b, &e.primary_rule);
        b.push_str(",\"reason\":");
        write_string(&mut b, &e.reason);
        b.push_str(",\"state\":");
        write_string(&mut b, self.state.as_str());
        b.push('}');
        self.event(EventKind::Decision, &self.requester, Body::Canonical(b))
    }

    /// The same body as a JSON value, for [`JobRecord::decision_event`]
    /// should the gates fail to serialise (they do not: the store
    /// serialises them too, with the evaluation).
    fn decision_body(&self) -> Value {
        json!({
            "decision_id": self.decision_id,
            "job_hash": self.job_hash,
            "decision": self.evaluation.decision,
            "primary_rule": self.evaluation.primary_rule,
            "matched_rules": self.evaluation.matched_rules,
            "reason": self.evaluation.reason,
            "gates": self.evaluation.gates,
            "constraints": self.evaluation.constraints,
            "state": self.state,
            "expires_at": self.expires_at,
            "canonical_job": self.canonical_job,
        })
    }

    /// For each approval (in order), the gate it fills in a maximum
    /// assignment, or `None`.
    pub fn assignment(&self) -> Vec<Option<usize>> {
        let people: Vec<Candidate> = self.approvals.iter().map(Candidate::from).collect();
        max_assignment(&self.evaluation.gates, &people).1
    }

    /// Slots filled per gate, in the current assignment.
    pub fn filled(&self) -> Vec<u32> {
        let mut filled = vec![0u32; self.evaluation.gates.len()];
        for g in self.assignment().into_iter().flatten() {
            filled[g] += 1;
        }
        filled
    }

    pub(crate) fn next(&self, now: Millis) -> JobRecord {
        let mut r = self.clone();
        r.version += 1;
        r.updated_at = now;
        r
    }

    pub(crate) fn event(&self, kind: EventKind, actor: &str, body: impl Into<Body>) -> AuditEvent {
        AuditEvent {
            kind,
            actor: actor.to_owned(),
            job_id: self.job_id.clone(),
            snapshot_id: self.snapshot_id.to_string(),
            tenant: self.tenant.clone(),
            body: body.into(),
        }
    }
}
