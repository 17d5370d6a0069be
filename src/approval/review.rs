//! The reviewer's side of the state machine: approve, reject, cancel,
//! break-glass override and its acknowledgement.

use super::commands::{ApproveInput, Step};
use super::slots::{Candidate, can_fill, max_assignment, total_slots};
use super::{ApprovalEntry, JobRecord, JobState, Millis, NotificationKind, Refused};
use crate::identity::{BREAKGLASS, Identity};
use crate::job::JobHash;
use crate::policy::Channel;
use crate::refusal::{Reason, Refusal};
use serde_json::json;

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

/// A job that needed approval notifies when it resolves; one allowed or
/// denied outright has nobody waiting on it.
pub(super) fn notify_if_gated(r: &JobRecord, kind: NotificationKind) -> Option<NotificationKind> {
    r.evaluation.approval_required.then_some(kind)
}

/// Approve: the caller fills a slot; when every slot of every gate is
/// filled by a different person, the job is approved.
pub(super) fn approve(r: &JobRecord, input: &ApproveInput, now: Millis) -> Result<Step, Refused> {
    let who = &input.by;
    if r.effective_state(now) != JobState::Pending {
        return Err(not_pending(r, now).into());
    }
    require_reason(&input.reason)?;
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
    if let Some(h) = input.expected_job_hash.as_deref().filter(|h| !h.is_empty())
        && JobHash::parse(h).ok().as_ref() != Some(&r.job_hash)
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
    if let Some(s) = input.expected_snapshot.as_deref().filter(|s| !s.is_empty())
        && s != r.snapshot_id.as_str()
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
        reason: input.reason.clone(),
        note: input.note.clone(),
        channel: input.channel,
        at: now,
        job_hash: r.job_hash.clone(),
        snapshot_id: r.snapshot_id.clone(),
    };
    let mut next = r.next(now);
    let complete = after == total_slots(gates);
    if complete {
        next.state = JobState::Approved;
        next.resolved_by = Some(who.name.clone());
        next.resolved_comment = Some(input.reason.clone());
        next.resolution = Some("approved".into());
        let bind_within = r
            .evaluation
            .timing
            .as_ref()
            .map_or(0, |t| t.bind_within_seconds);
        next.expires_at = Some(now.saturating_add(bind_within as i64 * 1000));
    }
    let body = json!({
        "reason": input.reason,
        "note": input.note,
        "channel": input.channel,
        "roles": entry.roles,
        "job_hash": r.job_hash,
        "filled": after,
        "slots": total_slots(gates),
        "state": next.state,
    });
    next.approvals.push(entry);
    Ok(Step {
        record: next,
        actor: who.name.clone(),
        body,
        notify: complete.then_some(NotificationKind::Resolved),
    })
}

/// Reject: any eligible approver ends the job.
pub(super) fn reject(
    r: &JobRecord,
    who: &Identity,
    reason: &str,
    note: &str,
    now: Millis,
) -> Result<Step, Refused> {
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
    Ok(Step {
        record: next,
        actor: who.name.clone(),
        body: json!({ "reason": reason, "note": note }),
        notify: Some(NotificationKind::Resolved),
    })
}

/// Cancel: the requester withdraws a pending job.
pub(super) fn cancel(
    r: &JobRecord,
    who: &Identity,
    reason: &str,
    now: Millis,
) -> Result<Step, Refused> {
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
    Ok(Step {
        record: next,
        actor: who.name.clone(),
        body: json!({ "reason": reason }),
        notify: Some(NotificationKind::Resolved),
    })
}

/// Break-glass: a `breakglass` caller approves a pending job, or an
/// overridable deny, at once. Flagged for post-hoc review.
pub(super) fn override_job(
    r: &JobRecord,
    who: &Identity,
    reason: &str,
    note: &str,
    default_bind_within_secs: u64,
    now: Millis,
) -> Result<Step, Refused> {
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
        .as_ref()
        .map_or(default_bind_within_secs, |t| t.bind_within_seconds);
    next.expires_at = Some(now.saturating_add(bind_within as i64 * 1000));
    Ok(Step {
        record: next,
        actor: who.name.clone(),
        body: json!({ "reason": reason, "note": note, "from_state": state }),
        notify: Some(NotificationKind::Overridden),
    })
}

/// Someone other than the overrider reviews an override.
pub(super) fn acknowledge_override(
    r: &JobRecord,
    who: &Identity,
    note: &str,
    now: Millis,
) -> Result<Step, Refused> {
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
    Ok(Step {
        record: next,
        actor: who.name.clone(),
        body: json!({ "note": note }),
        notify: None,
    })
}

/// Whether `who` could fill a slot of the job now, through any door (for
/// the queue's "only what I may act on" filter).
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
