//! The job state machine of SPEC §4 and the Bind checks of §5, as pure
//! functions: each takes the current record, the caller and the time, and
//! returns the next record plus its audit event, or a refusal. The store
//! runs them inside one transaction guarded by the record's version, so
//! every door (gRPC, HTTP, Slack, CLI) gets the same rules.

use crate::identity::{BREAKGLASS, Identity};
use crate::policy::{Channel, Decision, Evaluation, Gate};
use crate::refusal::{Reason, Refusal};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeSet;

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
    pub job_hash: String,
    pub snapshot_id: String,
}

/// The whole record of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: String,
    pub job_hash: String,
    /// RFC 8785 JSON of the job as decided: what an executor runs.
    pub canonical_job: String,
    pub tenant: String,
    pub requester: String,
    pub snapshot_id: String,
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
    pub approvals: Vec<ApprovalEntry>,
}

/// An audit event a transition asks the store to append in its transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub kind: &'static str,
    pub actor: String,
    pub job_id: String,
    pub snapshot_id: String,
    pub body: Value,
}

/// The result of a successful transition.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub record: JobRecord,
    /// An approval to insert with the record.
    pub approval: Option<ApprovalEntry>,
    pub audit: AuditEvent,
}

/// A refused transition, with the audit event to write anyway (refused binds
/// are audited).
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub refusal: Refusal,
    pub audit: Option<Box<AuditEvent>>,
}

impl From<Refusal> for Refused {
    fn from(refusal: Refusal) -> Refused {
        Refused {
            refusal,
            audit: None,
        }
    }
}

/// Builds the record of a freshly decided job.
#[allow(clippy::too_many_arguments)]
pub fn new_record(
    job_id: String,
    job_hash: String,
    canonical_job: String,
    tenant: String,
    requester: String,
    snapshot_id: String,
    decision_id: String,
    evaluation: Evaluation,
    default_bind_within_secs: u64,
    now: Millis,
) -> JobRecord {
    let secs = |s: u64| now.saturating_add((s as i64).saturating_mul(1000));
    let (state, expires_at, escalate_at) = match evaluation.decision {
        Decision::Allow | Decision::AllowWithConstraints => (
            JobState::Allowed,
            Some(secs(default_bind_within_secs)),
            None,
        ),
        Decision::Deny => (JobState::Denied, None, None),
        Decision::RequireApproval => {
            let t = evaluation.timing;
            (
                JobState::Pending,
                t.map(|t| secs(t.timeout_seconds)),
                t.map(|t| secs(t.sla_seconds)),
            )
        }
    };
    JobRecord {
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
    }
}

impl JobRecord {
    /// The state as of `now`: a pending or approved job whose deadline has
    /// passed is expired, even before the sweeper records it.
    pub fn effective_state(&self, now: Millis) -> JobState {
        match (self.state, self.expires_at) {
            (JobState::Pending | JobState::Approved | JobState::Allowed, Some(deadline))
                if now >= deadline =>
            {
                JobState::Expired
            }
            (s, _) => s,
        }
    }

    /// The decision event written when the job is recorded.
    pub fn decision_event(&self) -> AuditEvent {
        AuditEvent {
            kind: "decision",
            actor: self.requester.clone(),
            job_id: self.job_id.clone(),
            snapshot_id: self.snapshot_id.clone(),
            body: json!({
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
            }),
        }
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

    fn next(&self, now: Millis) -> JobRecord {
        let mut r = self.clone();
        r.version += 1;
        r.updated_at = now;
        r
    }

    fn event(&self, kind: &'static str, actor: &str, body: Value) -> AuditEvent {
        AuditEvent {
            kind,
            actor: actor.to_owned(),
            job_id: self.job_id.clone(),
            snapshot_id: self.snapshot_id.clone(),
            body,
        }
    }
}

/// A person as the slot matching sees them.
struct Candidate<'a> {
    roles: &'a [String],
    channel: Channel,
}

impl<'a> From<&'a ApprovalEntry> for Candidate<'a> {
    fn from(a: &'a ApprovalEntry) -> Self {
        Candidate {
            roles: &a.roles,
            channel: a.channel,
        }
    }
}

fn can_fill(p: &Candidate<'_>, g: &Gate) -> bool {
    (g.channels.is_empty() || g.channels.contains(&p.channel))
        && p.roles.iter().any(|r| g.roles.contains(r))
}

/// A maximum matching of people to gate slots (each gate has `approvers`
/// slots; one person fills at most one slot across all gates). Returns its
/// size and, per person, the gate they fill. Augmenting paths let an earlier
/// approval move to another gate when that lets a later one count.
fn max_assignment(gates: &[Gate], people: &[Candidate<'_>]) -> (usize, Vec<Option<usize>>) {
    let slots: Vec<usize> = gates
        .iter()
        .enumerate()
        .flat_map(|(g, gate)| std::iter::repeat_n(g, gate.approvers as usize))
        .collect();
    let mut slot_owner: Vec<Option<usize>> = vec![None; slots.len()];
    fn augment(
        p: usize,
        gates: &[Gate],
        people: &[Candidate<'_>],
        slots: &[usize],
        owner: &mut [Option<usize>],
        seen: &mut [bool],
    ) -> bool {
        for s in 0..slots.len() {
            if seen[s] || !can_fill(&people[p], &gates[slots[s]]) {
                continue;
            }
            seen[s] = true;
            let free = match owner[s] {
                None => true,
                Some(q) => augment(q, gates, people, slots, owner, seen),
            };
            if free {
                owner[s] = Some(p);
                return true;
            }
        }
        false
    }
    let mut size = 0;
    for p in 0..people.len() {
        let mut seen = vec![false; slots.len()];
        if augment(p, gates, people, &slots, &mut slot_owner, &mut seen) {
            size += 1;
        }
    }
    let mut per_person = vec![None; people.len()];
    for (s, owner) in slot_owner.iter().enumerate() {
        if let Some(p) = owner {
            per_person[*p] = Some(slots[s]);
        }
    }
    (size, per_person)
}

fn total_slots(gates: &[Gate]) -> usize {
    gates.iter().map(|g| g.approvers as usize).sum()
}

fn require_reason(reason: &str) -> Result<(), Refusal> {
    if reason.trim().is_empty() {
        return Err(Refusal::field(
            Reason::ReasonRequired,
            "reason",
            "a reason is required",
        ));
    }
    Ok(())
}

fn not_pending(r: &JobRecord, now: Millis) -> Refusal {
    let state = r.effective_state(now);
    let reason = if state == JobState::Expired {
        Reason::Expired
    } else {
        Reason::NotPending
    };
    Refusal::new(
        reason,
        format!("job `{}` is {}, not pending", r.job_id, state.as_str()),
    )
}

/// True when `who` requested the job or is configured as acting for its requester.
fn is_requester_side(r: &JobRecord, who: &Identity) -> bool {
    who.name == r.requester || who.acts_for.contains(&r.requester)
}

/// What an approver says with an approval.
pub struct ApproveInput<'a> {
    pub reason: &'a str,
    pub note: &'a str,
    pub channel: Channel,
    /// The hash and snapshot the approver reviewed, when they say so.
    pub expected_job_hash: Option<&'a str>,
    pub expected_snapshot: Option<&'a str>,
}

/// Approve: the caller fills a slot; when every slot of every gate is
/// filled by a different person, the job is approved.
pub fn approve(
    r: &JobRecord,
    who: &Identity,
    input: &ApproveInput<'_>,
    now: Millis,
) -> Result<Transition, Refused> {
    if r.effective_state(now) != JobState::Pending {
        return Err(not_pending(r, now).into());
    }
    require_reason(input.reason)?;
    if is_requester_side(r, who) {
        return Err(Refusal::new(
            Reason::SelfApproval,
            format!(
                "`{}` requested job `{}` (or acts for its requester) and cannot approve it",
                who.name, r.job_id
            ),
        )
        .into());
    }
    if r.approvals.iter().any(|a| a.approver == who.name) {
        return Err(Refusal::new(
            Reason::AlreadyApproved,
            format!("`{}` already approved job `{}`", who.name, r.job_id),
        )
        .into());
    }
    if let Some(h) = input.expected_job_hash
        && !h.is_empty()
        && !h.eq_ignore_ascii_case(&r.job_hash)
    {
        return Err(Refusal::field(
            Reason::StaleReview,
            "expected_job_hash",
            format!(
                "job `{}` has hash {}, not the {h} that was reviewed",
                r.job_id, r.job_hash
            ),
        )
        .into());
    }
    if let Some(s) = input.expected_snapshot
        && !s.is_empty()
        && s != r.snapshot_id
    {
        return Err(Refusal::field(
            Reason::StaleReview,
            "expected_policy_snapshot",
            format!(
                "job `{}` was decided under {}, not the {s} that was reviewed",
                r.job_id, r.snapshot_id
            ),
        )
        .into());
    }
    let gates = &r.evaluation.gates;
    let roles: Vec<String> = who.roles.iter().cloned().collect();
    let holds_role = gates
        .iter()
        .any(|g| roles.iter().any(|x| g.roles.contains(x)));
    if !holds_role {
        return Err(Refusal::new(
            Reason::NotEligible,
            format!(
                "`{}` holds none of the roles job `{}` needs ({})",
                who.name,
                r.job_id,
                gates
                    .iter()
                    .map(|g| g.roles.join("/"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .into());
    }
    let me = Candidate {
        roles: &roles,
        channel: input.channel,
    };
    if !gates.iter().any(|g| can_fill(&me, g)) {
        return Err(Refusal::new(
            Reason::ChannelNotAllowed,
            format!(
                "the gates `{}` could fill do not accept approvals through {}",
                who.name,
                input.channel.as_str()
            ),
        )
        .into());
    }
    let mut people: Vec<Candidate> = r.approvals.iter().map(Candidate::from).collect();
    let (before, _) = max_assignment(gates, &people);
    people.push(me);
    let (after, _) = max_assignment(gates, &people);
    if after <= before {
        return Err(Refusal::new(
            Reason::NotEligible,
            format!(
                "every slot `{}` could fill on job `{}` is already filled by someone else",
                who.name, r.job_id
            ),
        )
        .into());
    }
    let entry = ApprovalEntry {
        approver: who.name.clone(),
        roles,
        reason: input.reason.to_owned(),
        note: input.note.to_owned(),
        channel: input.channel,
        at: now,
        job_hash: r.job_hash.clone(),
        snapshot_id: r.snapshot_id.clone(),
    };
    let mut next = r.next(now);
    next.approvals.push(entry.clone());
    let complete = after == total_slots(gates);
    if complete {
        next.state = JobState::Approved;
        next.resolved_by = Some(who.name.clone());
        next.resolved_comment = Some(input.reason.to_owned());
        next.resolution = Some("approved".into());
        let bind_within = r.evaluation.timing.map_or(0, |t| t.bind_within_seconds);
        next.expires_at = Some(now.saturating_add(bind_within as i64 * 1000));
    }
    let audit = r.event(
        "approval",
        &who.name,
        json!({
            "reason": input.reason,
            "note": input.note,
            "channel": input.channel,
            "roles": entry.roles,
            "job_hash": r.job_hash,
            "filled": after,
            "slots": total_slots(gates),
            "state": next.state,
        }),
    );
    Ok(Transition {
        record: next,
        approval: Some(entry),
        audit,
    })
}

/// Reject: any eligible approver ends the job.
pub fn reject(
    r: &JobRecord,
    who: &Identity,
    reason: &str,
    note: &str,
    now: Millis,
) -> Result<Transition, Refused> {
    if r.effective_state(now) != JobState::Pending {
        return Err(not_pending(r, now).into());
    }
    require_reason(reason)?;
    if is_requester_side(r, who) {
        return Err(Refusal::new(
            Reason::SelfApproval,
            format!("`{}` requested job `{}` (or acts for its requester) and cannot reject it; cancel it instead", who.name, r.job_id),
        )
        .into());
    }
    let eligible = r
        .evaluation
        .gates
        .iter()
        .any(|g| who.roles.iter().any(|x| g.roles.contains(x)));
    if !eligible {
        return Err(Refusal::new(
            Reason::NotEligible,
            format!(
                "`{}` holds none of the roles job `{}` needs",
                who.name, r.job_id
            ),
        )
        .into());
    }
    let mut next = r.next(now);
    next.state = JobState::Rejected;
    next.expires_at = None;
    next.resolved_by = Some(who.name.clone());
    next.resolved_comment = Some(reason.to_owned());
    next.resolution = Some("rejected".into());
    let audit = r.event(
        "rejection",
        &who.name,
        json!({ "reason": reason, "note": note }),
    );
    Ok(Transition {
        record: next,
        approval: None,
        audit,
    })
}

/// Cancel: the requester withdraws a pending job.
pub fn cancel(
    r: &JobRecord,
    who: &Identity,
    reason: &str,
    now: Millis,
) -> Result<Transition, Refused> {
    if who.name != r.requester {
        return Err(Refusal::new(
            Reason::NotRequester,
            format!(
                "only `{}`, who requested job `{}`, may cancel it",
                r.requester, r.job_id
            ),
        )
        .into());
    }
    if r.effective_state(now) != JobState::Pending {
        return Err(not_pending(r, now).into());
    }
    let mut next = r.next(now);
    next.state = JobState::Cancelled;
    next.expires_at = None;
    next.resolved_by = Some(who.name.clone());
    next.resolved_comment = Some(reason.to_owned());
    next.resolution = Some("cancelled".into());
    let audit = r.event("cancel", &who.name, json!({ "reason": reason }));
    Ok(Transition {
        record: next,
        approval: None,
        audit,
    })
}

/// Break-glass: a `breakglass` caller approves a pending job, or an
/// overridable deny, at once. Flagged for post-hoc review.
pub fn override_job(
    r: &JobRecord,
    who: &Identity,
    reason: &str,
    note: &str,
    default_bind_within_secs: u64,
    now: Millis,
) -> Result<Transition, Refused> {
    if !who.roles.contains(BREAKGLASS) {
        return Err(Refusal::new(
            Reason::PermissionDenied,
            format!("`{}` does not hold the breakglass role", who.name),
        )
        .into());
    }
    require_reason(reason)?;
    if is_requester_side(r, who) {
        return Err(Refusal::new(
            Reason::SelfApproval,
            format!(
                "`{}` requested job `{}` (or acts for its requester) and cannot override it",
                who.name, r.job_id
            ),
        )
        .into());
    }
    let state = r.effective_state(now);
    let allowed =
        state == JobState::Pending || (state == JobState::Denied && r.evaluation.overridable);
    if !allowed {
        let reason = if state == JobState::Denied {
            Reason::NotOverridable
        } else if state == JobState::Expired {
            Reason::Expired
        } else {
            Reason::NotPending
        };
        return Err(Refusal::new(
            reason,
            format!(
                "job `{}` is {} and cannot be overridden",
                r.job_id,
                state.as_str()
            ),
        )
        .into());
    }
    let mut next = r.next(now);
    next.state = JobState::Approved;
    next.overridden = true;
    next.override_by = Some(who.name.clone());
    next.resolved_by = Some(who.name.clone());
    next.resolved_comment = Some(reason.to_owned());
    next.resolution = Some("overridden".into());
    let bind_within = r
        .evaluation
        .timing
        .map_or(default_bind_within_secs, |t| t.bind_within_seconds);
    next.expires_at = Some(now.saturating_add(bind_within as i64 * 1000));
    let audit = r.event(
        "override",
        &who.name,
        json!({ "reason": reason, "note": note, "from_state": state }),
    );
    Ok(Transition {
        record: next,
        approval: None,
        audit,
    })
}

/// Someone other than the overrider reviews an override.
pub fn acknowledge_override(
    r: &JobRecord,
    who: &Identity,
    note: &str,
    now: Millis,
) -> Result<Transition, Refused> {
    if !r.overridden {
        return Err(Refusal::new(
            Reason::NotOverridable,
            format!("job `{}` was not overridden", r.job_id),
        )
        .into());
    }
    if r.override_ack_by.is_some() {
        return Err(Refusal::new(
            Reason::NotPending,
            format!(
                "the override of job `{}` was already acknowledged",
                r.job_id
            ),
        )
        .into());
    }
    if r.override_by.as_deref() == Some(who.name.as_str()) {
        return Err(Refusal::new(
            Reason::SelfAcknowledge,
            format!(
                "`{}` overrode job `{}` and cannot acknowledge it",
                who.name, r.job_id
            ),
        )
        .into());
    }
    let mut next = r.next(now);
    next.override_ack_by = Some(who.name.clone());
    let audit = r.event("override_ack", &who.name, json!({ "note": note }));
    Ok(Transition {
        record: next,
        approval: None,
        audit,
    })
}

/// The sweeper: a pending or approved job past its deadline expires.
pub fn expire(r: &JobRecord, now: Millis) -> Result<Transition, Refused> {
    if r.effective_state(now) != JobState::Expired || r.state == JobState::Expired {
        return Err(Refusal::new(Reason::NotPending, "not due").into());
    }
    let mut next = r.next(now);
    let from = r.state;
    next.state = JobState::Expired;
    next.resolved_by = Some("system".into());
    next.resolution = Some("expired".into());
    next.resolved_comment = Some(match from {
        JobState::Pending => "not approved before the timeout".into(),
        _ => "not bound within bind_within".into(),
    });
    let audit = r.event(
        "expiry",
        "system",
        json!({ "from_state": from, "deadline": r.expires_at }),
    );
    Ok(Transition {
        record: next,
        approval: None,
        audit,
    })
}

/// The sweeper: a job pending past its SLA is escalated, once.
pub fn escalate(r: &JobRecord, now: Millis) -> Result<Transition, Refused> {
    let due = r.escalate_at.is_some_and(|at| now >= at);
    if r.effective_state(now) != JobState::Pending || r.escalated || !due {
        return Err(Refusal::new(Reason::NotPending, "not due").into());
    }
    let mut next = r.next(now);
    next.escalated = true;
    let filled = r.filled();
    let audit = r.event(
        "escalation",
        "system",
        json!({ "sla_deadline": r.escalate_at, "filled": filled, "gates": r.evaluation.gates }),
    );
    Ok(Transition {
        record: next,
        approval: None,
        audit,
    })
}

/// What an executor presents to Bind.
pub struct BindInput<'a> {
    pub job_hash: &'a str,
    pub snapshot_id: &'a str,
    /// Whether the job's snapshot has been revoked.
    pub snapshot_revoked: bool,
    /// When `bind.require_active_snapshot` is on: the active snapshot.
    pub require_active: Option<&'a str>,
    pub bind_id: String,
}

/// Bind: checks in the order of SPEC §5; on success the job is bound.
/// A refusal carries the `bind_refused` audit event.
pub fn bind(
    r: &JobRecord,
    who: &Identity,
    input: &BindInput<'_>,
    now: Millis,
) -> Result<Transition, Refused> {
    let refuse = |reason: Reason, message: String| -> Refused {
        Refused {
            audit: Some(Box::new(r.event(
                "bind_refused",
                &who.name,
                json!({ "reason": reason.as_str(), "presented_job_hash": input.job_hash, "presented_snapshot": input.snapshot_id }),
            ))),
            refusal: Refusal::new(reason, message),
        }
    };
    if !input.job_hash.eq_ignore_ascii_case(&r.job_hash) {
        return Err(refuse(
            Reason::HashMismatch,
            format!(
                "job `{}` was decided for hash {}, not {}",
                r.job_id, r.job_hash, input.job_hash
            ),
        ));
    }
    if input.snapshot_id != r.snapshot_id {
        return Err(refuse(
            Reason::SnapshotMismatch,
            format!(
                "job `{}` was decided under {}, not `{}`",
                r.job_id, r.snapshot_id, input.snapshot_id
            ),
        ));
    }
    if input.snapshot_revoked {
        return Err(refuse(
            Reason::SnapshotRevoked,
            format!("snapshot {} was revoked", r.snapshot_id),
        ));
    }
    if let Some(active) = input.require_active
        && active != r.snapshot_id
    {
        return Err(refuse(
            Reason::SnapshotStale,
            format!(
                "job `{}` was decided under {}, but {active} is active now",
                r.job_id, r.snapshot_id
            ),
        ));
    }
    let state = r.effective_state(now);
    let blocked = match state {
        JobState::Denied => Some(Reason::Denied),
        JobState::Pending => Some(Reason::Pending),
        JobState::Rejected => Some(Reason::Rejected),
        JobState::Expired => Some(Reason::Expired),
        JobState::Cancelled => Some(Reason::Cancelled),
        JobState::Bound | JobState::Succeeded | JobState::Failed => Some(Reason::AlreadyBound),
        JobState::Allowed | JobState::Approved => None,
    };
    if let Some(reason) = blocked {
        return Err(refuse(
            reason,
            format!("job `{}` is {}", r.job_id, state.as_str()),
        ));
    }
    let mut next = r.next(now);
    next.state = JobState::Bound;
    next.bind_id = Some(input.bind_id.clone());
    next.bound_at = Some(now);
    next.expires_at = None;
    let approvers: Vec<&str> = r.approvals.iter().map(|a| a.approver.as_str()).collect();
    let audit = r.event(
        "bind",
        &who.name,
        json!({
            "bind_id": input.bind_id,
            "job_hash": r.job_hash,
            "approvers": approvers,
            "overridden": r.overridden,
            "constraints": r.evaluation.constraints,
        }),
    );
    Ok(Transition {
        record: next,
        approval: None,
        audit,
    })
}

/// ReportOutcome: a bound job succeeded or failed.
pub fn report_outcome(
    r: &JobRecord,
    who: &Identity,
    bind_id: &str,
    succeeded: bool,
    detail: &str,
    now: Millis,
) -> Result<Transition, Refused> {
    if r.state != JobState::Bound {
        return Err(Refusal::new(
            Reason::NotBound,
            format!("job `{}` is {}, not bound", r.job_id, r.state.as_str()),
        )
        .into());
    }
    if r.bind_id.as_deref() != Some(bind_id) {
        return Err(Refusal::field(
            Reason::BindIdMismatch,
            "bind_id",
            format!("`{bind_id}` is not the bind id of job `{}`", r.job_id),
        )
        .into());
    }
    let mut next = r.next(now);
    next.state = if succeeded {
        JobState::Succeeded
    } else {
        JobState::Failed
    };
    next.outcome_detail = Some(detail.to_owned());
    let audit = r.event(
        "outcome",
        &who.name,
        json!({ "bind_id": bind_id, "succeeded": succeeded, "detail": detail }),
    );
    Ok(Transition {
        record: next,
        approval: None,
        audit,
    })
}

/// Roles that may approve something in a record (for list filters).
pub fn may_act_on(r: &JobRecord, who: &Identity, now: Millis) -> bool {
    if r.effective_state(now) != JobState::Pending
        || is_requester_side(r, who)
        || r.approvals.iter().any(|a| a.approver == who.name)
    {
        return false;
    }
    let roles: Vec<String> = who.roles.iter().cloned().collect();
    let mut people: Vec<Candidate> = r.approvals.iter().map(Candidate::from).collect();
    let (before, _) = max_assignment(&r.evaluation.gates, &people);
    // Any door: the best channel for this person.
    Channel::ALL.iter().any(|&channel| {
        people.push(Candidate {
            roles: &roles,
            channel,
        });
        let (after, _) = max_assignment(&r.evaluation.gates, &people);
        people.pop();
        after > before
    })
}

/// The set of approver names, for display.
pub fn approvers(r: &JobRecord) -> BTreeSet<&str> {
    r.approvals.iter().map(|a| a.approver.as_str()).collect()
}
