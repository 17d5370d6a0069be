//! Who may do what: the role checks every operation makes before it
//! touches anything. Per-job rules (the requester never approves, one
//! person one slot) live in `approval`; these are the door-independent
//! checks on the caller alone.

use crate::approval::JobRecord;
use crate::identity::{AUDITOR, BREAKGLASS, EXECUTOR, Identity, OPERATOR};
use crate::job::JobId;
use crate::refusal::{Reason, Refusal};

/// The caller holds `role`, or is refused naming it.
pub(super) fn require(who: &Identity, role: &str, what: &str) -> Result<(), Refusal> {
    if who.has(role) {
        Ok(())
    } else {
        Err(Refusal::new(
            Reason::PermissionDenied,
            format!(
                "{what} needs the `{role}` role, which `{}` does not hold",
                who.name
            ),
        ))
    }
}

fn is_approver(who: &Identity) -> bool {
    who.approver_roles().next().is_some()
}

pub(super) fn require_approver(who: &Identity) -> Result<(), Refusal> {
    if is_approver(who) {
        Ok(())
    } else {
        Err(Refusal::new(
            Reason::PermissionDenied,
            format!("`{}` holds no approver role", who.name),
        ))
    }
}

/// Approvers and the people who oversee them: operators, auditors and
/// break-glass holders. They see the queue and acknowledge overrides.
pub(super) fn oversees_approvals(who: &Identity) -> bool {
    is_approver(who) || who.has(OPERATOR) || who.has(AUDITOR) || who.has(BREAKGLASS)
}

/// A job is seen by its requester (and whoever acts for it), by those who
/// oversee approvals, and by executors, in the job's tenant. A job of
/// another tenant is not found: its existence is not said.
pub(super) fn may_see(who: &Identity, r: &JobRecord) -> Result<(), Refusal> {
    if !who.in_tenant(&r.tenant) {
        return Err(not_found(&r.job_id));
    }
    if oversees_approvals(who)
        || who.has(EXECUTOR)
        || who.name == r.requester
        || who.acts_for.contains(&r.requester)
    {
        Ok(())
    } else {
        Err(Refusal::new(
            Reason::PermissionDenied,
            format!("`{}` may only see its own jobs", who.name),
        ))
    }
}

/// Validates a job id the way `JobId::parse` does, as a refusal.
pub(super) fn job_id_arg(job_id: &str) -> Result<(), Refusal> {
    JobId::parse(job_id).map(|_| ()).map_err(Refusal::from)
}

pub(super) fn not_found(job_id: &str) -> Refusal {
    Refusal::new(Reason::NotFound, format!("no job `{job_id}`"))
}
