//! The executor's and the sweeper's side: Bind with every check of SPEC §5
//! in order, the outcome report, expiry and escalation.

use super::commands::{BindInput, Step, bind_refused};
use super::review::notify_if_gated;
use super::{Effect, JobRecord, JobState, Millis, NotificationKind, Refused, reached};
use crate::identity::Identity;
use crate::refusal::{Reason, Refusal};
use serde_json::json;

/// The sweeper: a job past its deadline expires.
pub(super) fn expire(r: &JobRecord, now: Millis) -> Result<Step, Refused> {
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
    Ok(Step {
        record: next,
        actor: "system".into(),
        body: json!({ "from_state": from, "deadline": r.expires_at }),
        notify: notify_if_gated(r, NotificationKind::Expired),
    })
}

/// The sweeper: a job pending past its SLA is escalated, once.
pub(super) fn escalate(r: &JobRecord, now: Millis) -> Result<Step, Refused> {
    let due = r.escalate_at.is_some_and(|at| reached(at, now));
    if r.effective_state(now) != JobState::Pending || r.escalated || !due {
        return Err(Refusal::new(Reason::NotPending, "not due").into());
    }
    let mut next = r.next(now);
    let step = ladder_step(r);
    match step {
        // The ladder's next rung, if any, is the next escalation; after
        // the last one the job is escalated for good.
        Some((i, _)) => match r.ladder().get(i + 1) {
            Some(following) => {
                next.escalate_at = Some(
                    r.created_at
                        .saturating_add(following.after_seconds as i64 * 1000),
                );
            }
            None => next.escalated = true,
        },
        None => next.escalated = true,
    }
    let filled = r.filled();
    let mut body =
        json!({ "sla_deadline": r.escalate_at, "filled": filled, "gates": r.evaluation.gates });
    if let Some((i, st)) = step {
        body["step"] = json!(i + 1);
        body["notify"] = json!(st.notify);
    }
    Ok(Step {
        record: next,
        actor: "system".into(),
        body,
        notify: Some(NotificationKind::Escalated),
    })
}

/// The ladder rung a pending escalation of `r` is for: the step due at its
/// `escalate_at` (`None` without a ladder).
pub(crate) fn ladder_step(r: &JobRecord) -> Option<(usize, &crate::policy::EscalationStep)> {
    let at = r.escalate_at?;
    r.ladder()
        .iter()
        .enumerate()
        .find(|(_, st)| r.created_at.saturating_add(st.after_seconds as i64 * 1000) == at)
}

/// Bind: checks in the order of SPEC §5; on success the job is bound.
/// A refusal carries the `bind_refused` audit event.
pub(super) fn bind(r: &JobRecord, input: &BindInput, now: Millis) -> Result<Step, Refused> {
    let refuse = |reason: Reason, message: String| -> Refused {
        Refused {
            effects: vec![Effect::Audit(bind_refused(
                &input.by.name,
                &r.job_id,
                r.snapshot_id.as_str(),
                &r.tenant,
                reason,
                input,
            ))],
            refusal: Refusal::new(reason, message),
        }
    };
    if input.job_hash != r.job_hash {
        return Err(refuse(
            Reason::HashMismatch,
            format!(
                "job `{}` was decided for hash {}, not {}",
                r.job_id, r.job_hash, input.job_hash
            ),
        ));
    }
    if input.snapshot_id != r.snapshot_id.as_str() {
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
    if let Some(active) = &input.require_active
        && *active != r.snapshot_id
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
    Ok(Step {
        body: json!({
            "bind_id": input.bind_id,
            "job_hash": r.job_hash,
            "approvers": approvers,
            "overridden": r.overridden,
            "constraints": r.evaluation.constraints,
        }),
        record: next,
        actor: input.by.name.clone(),
        notify: None,
    })
}

/// ReportOutcome: a bound job succeeded or failed.
pub(super) fn report_outcome(
    r: &JobRecord,
    who: &Identity,
    bind_id: &str,
    succeeded: bool,
    detail: &str,
    now: Millis,
) -> Result<Step, Refused> {
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
    Ok(Step {
        record: next,
        actor: who.name.clone(),
        body: json!({ "bind_id": bind_id, "succeeded": succeeded, "detail": detail }),
        notify: None,
    })
}
