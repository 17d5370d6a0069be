//! Commands, the changes a decided job can go through, and the one
//! function that applies them: every check of SPEC §4 and §5, in order.

use super::execute::{bind, escalate, expire, report_outcome};
use super::review::{acknowledge_override, approve, cancel, override_job, reject};
use super::{Effect, JobRecord, Millis, Notification, NotificationKind, Refused, Transition};
use crate::audit::{AuditEvent, EventKind};
use crate::identity::Identity;
use crate::job::JobHash;
use crate::policy::{Channel, SnapshotId};
use crate::refusal::Reason;
use serde_json::{Value, json};

/// Every change a job can go through after it is decided, as data: the
/// store runs [`apply`] on the record it read.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Approve(ApproveInput),
    Reject {
        by: Identity,
        reason: String,
        note: String,
    },
    Cancel {
        by: Identity,
        reason: String,
    },
    Override {
        by: Identity,
        reason: String,
        note: String,
        /// Used when the job has no gate timing (an overridden deny).
        default_bind_within_secs: u64,
    },
    Acknowledge {
        by: Identity,
        note: String,
    },
    Bind(BindInput),
    Report {
        by: Identity,
        bind_id: String,
        succeeded: bool,
        detail: String,
    },
    /// The sweeper: a job past its deadline.
    Expire,
    /// The sweeper: a pending job past its SLA.
    Escalate,
}

impl Command {
    /// The person giving the command; none for the sweeper's.
    pub fn actor(&self) -> Option<&Identity> {
        match self {
            Command::Approve(ApproveInput { by, .. })
            | Command::Bind(BindInput { by, .. })
            | Command::Reject { by, .. }
            | Command::Cancel { by, .. }
            | Command::Override { by, .. }
            | Command::Acknowledge { by, .. }
            | Command::Report { by, .. } => Some(by),
            Command::Expire | Command::Escalate => None,
        }
    }

    /// Whether the command's actor may see a job of `tenant` at all: a
    /// job of another tenant is treated as missing.
    pub fn sees_tenant(&self, tenant: &str) -> bool {
        self.actor().is_none_or(|by| by.in_tenant(tenant))
    }

    /// The audit kind of the change this command makes; watchers and other
    /// replicas see the same kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Command::Approve(_) => EventKind::Approval,
            Command::Reject { .. } => EventKind::Rejection,
            Command::Cancel { .. } => EventKind::Cancel,
            Command::Override { .. } => EventKind::Override,
            Command::Acknowledge { .. } => EventKind::OverrideAck,
            Command::Bind(_) => EventKind::Bind,
            Command::Report { .. } => EventKind::Outcome,
            Command::Expire => EventKind::Expiry,
            Command::Escalate => EventKind::Escalation,
        }
    }
}

/// What an approver says with an approval.
#[derive(Debug, Clone, PartialEq)]
pub struct ApproveInput {
    pub by: Identity,
    pub reason: String,
    pub note: String,
    /// The door it came through.
    pub channel: Channel,
    /// The hash and snapshot the approver reviewed, when they say so.
    pub expected_job_hash: Option<String>,
    pub expected_snapshot: Option<String>,
}

/// What an executor presents to Bind, and what the engine knows about it.
#[derive(Debug, Clone, PartialEq)]
pub struct BindInput {
    pub by: Identity,
    pub job_hash: JobHash,
    /// As presented: compared with the record, never parsed.
    pub snapshot_id: String,
    /// Whether the presented snapshot has been revoked.
    pub snapshot_revoked: bool,
    /// When `bind.require_active_snapshot` is on: the active snapshot.
    pub require_active: Option<SnapshotId>,
    pub bind_id: String,
}

/// A change the command makes, before it becomes effects.
pub(super) struct Step {
    pub(super) record: JobRecord,
    pub(super) actor: String,
    pub(super) body: Value,
    pub(super) notify: Option<NotificationKind>,
}

/// Applies a command to the current record at `now`.
pub fn apply(r: &JobRecord, command: &Command, now: Millis) -> Result<Transition, Refused> {
    let step = match command {
        Command::Approve(input) => approve(r, input, now),
        Command::Reject { by, reason, note } => reject(r, by, reason, note, now),
        Command::Cancel { by, reason } => cancel(r, by, reason, now),
        Command::Override {
            by,
            reason,
            note,
            default_bind_within_secs,
        } => override_job(r, by, reason, note, *default_bind_within_secs, now),
        Command::Acknowledge { by, note } => acknowledge_override(r, by, note, now),
        Command::Bind(input) => bind(r, input, now),
        Command::Report {
            by,
            bind_id,
            succeeded,
            detail,
        } => report_outcome(r, by, bind_id, *succeeded, detail, now),
        Command::Expire => expire(r, now),
        Command::Escalate => escalate(r, now),
    }?;
    let mut effects = vec![Effect::Audit(r.event(
        command.kind(),
        &step.actor,
        step.body,
    ))];
    if let Some(kind) = step.notify {
        let mut n = Notification::of(kind, &step.record, &step.actor);
        // A ladder rung names the channel it notifies.
        if matches!(command, Command::Escalate)
            && let Some((i, st)) = super::execute::ladder_step(r)
        {
            n.body["step"] = serde_json::json!(i + 1);
            n.body["notify"] = serde_json::json!(st.notify);
        }
        effects.push(Effect::Notify(n));
    }
    Ok(Transition {
        record: step.record,
        effects,
    })
}

/// The effects of a command on a job that does not exist: a refused bind
/// is audited even then.
pub fn missing(job_id: &str, command: &Command) -> Vec<Effect> {
    match command {
        Command::Bind(input) => vec![Effect::Audit(bind_refused(
            &input.by.name,
            job_id,
            &input.snapshot_id,
            "",
            Reason::NotFound,
            input,
        ))],
        _ => Vec::new(),
    }
}

/// The one shape of a `bind_refused` event.
pub(super) fn bind_refused(
    actor: &str,
    job_id: &str,
    snapshot_id: &str,
    tenant: &str,
    reason: Reason,
    input: &BindInput,
) -> AuditEvent {
    AuditEvent {
        kind: EventKind::BindRefused,
        actor: actor.to_owned(),
        job_id: job_id.to_owned(),
        snapshot_id: snapshot_id.to_owned(),
        tenant: tenant.to_owned(),
        body: json!({
            "reason": reason.as_str(),
            "presented_job_hash": input.job_hash,
            "presented_snapshot": input.snapshot_id,
        })
        .into(),
    }
}
