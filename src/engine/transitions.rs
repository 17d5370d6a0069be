//! The operations that change a decided job: each checks the caller's
//! role, builds a [`Command`] and runs it through the store, which applies
//! it to the record it reads and writes the result with its effects in one
//! transaction. Also reading jobs and the approval queue.

use super::access::{
    job_id_arg, may_see, not_found, oversees_approvals, require, require_approver,
};
use super::{Engine, JobView, Page, store_refusal};
use crate::approval::{self, ApproveInput, BindInput, Command, JobState};
use crate::audit::EventKind;
use crate::identity::{AGENT, BREAKGLASS, EXECUTOR, Identity};
use crate::job::{Job, JobHash, JobInput};
use crate::policy::{Channel, Scope, SnapshotId};
use crate::refusal::{Reason, Refusal};
use crate::store::{AuditPosition, JobFilter, TransitionError};
use crate::tenant::Tenants;

/// What an executor presents to Bind: the job (preferred) or its hash.
pub enum BindContent {
    Job(Box<JobInput>),
    Hash(String),
}

/// The result of Bind.
#[derive(Debug, Clone)]
pub struct Bound {
    pub view: JobView,
    pub bind_id: String,
    /// Compact JWS signed by the server's receipt key.
    pub receipt: String,
}

/// What an approver sends with an approval.
#[derive(Debug, Clone)]
pub struct Approve {
    pub reason: String,
    pub note: String,
    /// The door it came through.
    pub channel: Channel,
    /// The hash and snapshot the approver reviewed, when given.
    pub expected_job_hash: Option<String>,
    pub expected_snapshot: Option<String>,
}

/// Which jobs the approval queue lists.
#[derive(Debug, Clone, Default)]
pub struct ApprovalQuery {
    pub include_resolved: bool,
    pub tenant: Option<String>,
    /// Only jobs the caller may approve now.
    pub actionable_only: bool,
    /// Only overrides still waiting for acknowledgement.
    pub unacknowledged_overrides: bool,
    /// At most [`MAX_PAGE`]; 0 means [`DEFAULT_PAGE`].
    pub page_size: u32,
    /// From a previous page; empty for the first.
    pub page_token: String,
    /// History filters (they apply to resolved jobs as well): only jobs
    /// in this (effective) state, whose primary rule is this, that this
    /// person approved or resolved, created in `[created_from, created_before)`.
    pub state: Option<JobState>,
    pub rule: Option<String>,
    pub approver: Option<String>,
    pub created_from: Option<i64>,
    pub created_before: Option<i64>,
}

impl ApprovalQuery {
    fn matches(&self, r: &approval::JobRecord, state: JobState) -> bool {
        self.state.is_none_or(|s| s == state)
            && self
                .rule
                .as_ref()
                .is_none_or(|rule| &r.evaluation.primary_rule == rule)
            && self.approver.as_ref().is_none_or(|p| {
                r.approvals.iter().any(|a| &a.approver == p) || r.resolved_by.as_ref() == Some(p)
            })
            && self.created_from.is_none_or(|t| r.created_at >= t)
    }
}

/// The most items one page holds.
pub const MAX_PAGE: u32 = 500;
/// The page size when none is asked for.
pub const DEFAULT_PAGE: u32 = 100;

pub(super) fn page_size(asked: u32) -> u32 {
    if asked == 0 {
        DEFAULT_PAGE
    } else {
        asked.min(MAX_PAGE)
    }
}

pub(super) fn bad_page_token() -> Refusal {
    Refusal::field(
        Reason::InvalidArgument,
        "page_token",
        "not a page token this server issued",
    )
}

/// An approval-queue page token: the (created_at, job_id) of the last job shown.
fn queue_token(cursor: &Option<(i64, String)>) -> String {
    cursor
        .as_ref()
        .map_or(String::new(), |(at, id)| format!("{at}:{id}"))
}

fn parse_queue_token(t: &str) -> Result<Option<(i64, String)>, Refusal> {
    if t.is_empty() {
        return Ok(None);
    }
    let (at, id) = t.split_once(':').ok_or_else(bad_page_token)?;
    Ok(Some((
        at.parse().map_err(|_| bad_page_token())?,
        id.to_owned(),
    )))
}

impl Engine {
    /// Runs a command on a job through the store and tells watchers.
    async fn run(&self, job_id: &str, command: Command) -> Result<JobView, Refusal> {
        self.run_logged(job_id, command).await.map(|(view, _)| view)
    }

    /// [`Engine::run`], with where the transition's last audit entry stands.
    async fn run_logged(
        &self,
        job_id: &str,
        command: Command,
    ) -> Result<(JobView, Option<AuditPosition>), Refusal> {
        let started = std::time::Instant::now();
        // Bind logs its own line, refusals before the transition included.
        let log = (command.kind() != EventKind::Bind)
            .then(|| (command.kind(), command.actor().map(|a| a.name.clone())));
        let out = self.transition(job_id, command).await;
        if let Some((kind, who)) = log {
            let result = out.as_ref().map(|(v, _)| v.state.as_str());
            let who = who.as_deref().unwrap_or("sweeper");
            super::metrics::log_request(kind.as_str(), who, job_id, started, result);
        }
        out
    }

    async fn transition(
        &self,
        job_id: &str,
        command: Command,
    ) -> Result<(JobView, Option<AuditPosition>), Refusal> {
        job_id_arg(job_id)?;
        let now = self.now();
        let kind = command.kind();
        match self.store.transition_logged(job_id, command, now).await {
            Ok((record, entry)) => {
                self.changed_here(kind, &record);
                Ok((JobView::new(record, now), entry))
            }
            Err(TransitionError::NotFound) => Err(not_found(job_id)),
            Err(TransitionError::Refused(r)) => Err(r.refusal),
            Err(TransitionError::Store(e)) => Err(store_refusal(e)),
        }
    }

    /// A job as its requester, an approver, an executor, an operator or an auditor may see it.
    pub async fn get_job(&self, who: &Identity, job_id: &str) -> Result<JobView, Refusal> {
        crate::observe::job(job_id);
        job_id_arg(job_id)?;
        let record = self
            .store
            .job(job_id)
            .await
            .map_err(store_refusal)?
            .ok_or_else(|| not_found(job_id))?;
        may_see(who, &record)?;
        Ok(JobView::new(record, self.now()))
    }

    pub async fn cancel(
        &self,
        who: &Identity,
        job_id: &str,
        reason: &str,
    ) -> Result<JobView, Refusal> {
        require(who, AGENT, "Cancel")?;
        self.run(
            job_id,
            Command::Cancel {
                by: who.clone(),
                reason: reason.to_owned(),
            },
        )
        .await
    }

    pub async fn approve(
        &self,
        who: &Identity,
        job_id: &str,
        a: Approve,
    ) -> Result<JobView, Refusal> {
        require_approver(who)?;
        self.run(
            job_id,
            Command::Approve(ApproveInput {
                by: who.clone(),
                reason: a.reason,
                note: a.note,
                channel: a.channel,
                expected_job_hash: a.expected_job_hash,
                expected_snapshot: a.expected_snapshot,
            }),
        )
        .await
    }

    pub async fn reject(
        &self,
        who: &Identity,
        job_id: &str,
        reason: &str,
        note: &str,
    ) -> Result<JobView, Refusal> {
        require_approver(who)?;
        self.run(
            job_id,
            Command::Reject {
                by: who.clone(),
                reason: reason.to_owned(),
                note: note.to_owned(),
            },
        )
        .await
    }

    pub async fn override_job(
        &self,
        who: &Identity,
        job_id: &str,
        reason: &str,
        note: &str,
    ) -> Result<JobView, Refusal> {
        require(who, BREAKGLASS, "Override")?;
        let default_bind_within_secs = self
            .active()
            .map_or(30 * 60, |s| s.policy.doc().default_gate.bind_within.0);
        let view = self
            .run(
                job_id,
                Command::Override {
                    by: who.clone(),
                    reason: reason.to_owned(),
                    note: note.to_owned(),
                    default_bind_within_secs,
                },
            )
            .await?;
        tracing::warn!(job_id, by = %who.name, "break-glass override");
        Ok(view)
    }

    pub async fn acknowledge_override(
        &self,
        who: &Identity,
        job_id: &str,
        note: &str,
    ) -> Result<JobView, Refusal> {
        if !oversees_approvals(who) {
            return Err(Refusal::new(
                Reason::PermissionDenied,
                format!("`{}` may not acknowledge overrides", who.name),
            ));
        }
        self.run(
            job_id,
            Command::Acknowledge {
                by: who.clone(),
                note: note.to_owned(),
            },
        )
        .await
    }

    /// Bind: the executor's single-use claim to run exactly this job.
    pub async fn bind(
        &self,
        who: &Identity,
        job_id: &str,
        content: BindContent,
        snapshot_id: &str,
    ) -> Result<Bound, Refusal> {
        let started = std::time::Instant::now();
        let out = self.bind_timed(who, job_id, content, snapshot_id).await;
        self.metrics.bind_took(started.elapsed().as_secs_f64());
        if let Err(r) = &out {
            self.metrics.bind_refused(r.reason);
        }
        let result = out.as_ref().map(|_| "bound");
        super::metrics::log_request("bind", &who.name, job_id, started, result);
        out
    }

    async fn bind_timed(
        &self,
        who: &Identity,
        job_id: &str,
        content: BindContent,
        snapshot_id: &str,
    ) -> Result<Bound, Refusal> {
        require(who, EXECUTOR, "Bind")?;
        job_id_arg(job_id)?;
        let job_hash = match content {
            BindContent::Job(input) => Job::from_input(*input, &self.options.limits)?.hash(),
            BindContent::Hash(h) => JobHash::parse(&h)
                .map_err(|e| Refusal::field(Reason::InvalidArgument, "job_hash", e.message))?,
        };
        // Only the snapshot the job was decided under can pass (any other is
        // refused as a mismatch before revocation counts), so the named
        // snapshot's revocation is read without reading the job first.
        let snapshot_revoked = self
            .store
            .snapshot_revoked(snapshot_id)
            .await
            .map_err(store_refusal)?;
        let require_active = if self.options.require_active_snapshot {
            self.active_for_job(job_id).await?
        } else {
            None
        };
        let bind_id = crate::clock::id_at(self.now());
        let (view, entry) = self
            .run_logged(
                job_id,
                Command::Bind(BindInput {
                    by: who.clone(),
                    job_hash,
                    snapshot_id: snapshot_id.to_owned(),
                    snapshot_revoked,
                    require_active,
                    bind_id: bind_id.clone(),
                }),
            )
            .await?;
        let r = &view.record;
        // Where the bind's entry stands in the log (the store appended it
        // in the bind's own transaction), so the receipt also proves the
        // entry: a checkpoint at or after it covers it.
        let receipt = self
            .signer
            .sign(&crate::receipt::payload(&crate::receipt::Claims {
                job_id: &r.job_id,
                job_hash: r.job_hash.as_str(),
                policy_snapshot: r.snapshot_id.as_str(),
                decision: r.evaluation.decision.as_str(),
                bind_id: &bind_id,
                approvers: r.approvals.iter().map(|a| a.approver.as_str()).collect(),
                constraints: &serde_json::to_value(&r.evaluation.constraints).unwrap_or_default(),
                iat: view.at.div_euclid(1000),
                audit: entry
                    .as_ref()
                    .map(|e| (e.chain.as_str(), e.seq, e.entry_hash.as_str())),
            }));
        Ok(Bound {
            view,
            bind_id,
            receipt,
        })
    }

    /// The snapshot now active for a job's tenant (its tenant's, else the
    /// system's). The tenant never changes, so it is read outside the
    /// bind's transaction.
    async fn active_for_job(&self, job_id: &str) -> Result<Option<SnapshotId>, Refusal> {
        let tenant = self
            .store
            .job(job_id)
            .await
            .map_err(store_refusal)?
            .map(|r| r.tenant)
            .unwrap_or_default();
        let scope = self
            .options
            .tenancy
            .scope_for(&tenant, |s| self.active_in(s).is_some())
            .unwrap_or_else(|_| Scope::system());
        Ok(self.active_in(&scope).map(|s| s.id.clone()))
    }

    pub async fn report_outcome(
        &self,
        who: &Identity,
        job_id: &str,
        bind_id: &str,
        succeeded: bool,
        detail: &str,
    ) -> Result<JobView, Refusal> {
        require(who, EXECUTOR, "ReportOutcome")?;
        self.run(
            job_id,
            Command::Report {
                by: who.clone(),
                bind_id: bind_id.to_owned(),
                succeeded,
                detail: detail.to_owned(),
            },
        )
        .await
    }

    /// Jobs for the approval queue: pending (and, when asked, resolved).
    pub async fn list_approvals(
        &self,
        who: &Identity,
        q: ApprovalQuery,
    ) -> Result<Page<JobView>, Refusal> {
        if !oversees_approvals(who) {
            return Err(Refusal::new(
                Reason::PermissionDenied,
                format!("`{}` holds no approver role", who.name),
            ));
        }
        // Only the caller's tenants: another tenant asked for is an empty
        // queue, as if it had no jobs.
        let tenant = match (&q.tenant, &who.tenants) {
            (Some(t), _) if !who.in_tenant(t) => {
                return Ok(Page {
                    items: Vec::new(),
                    next_page_token: String::new(),
                });
            }
            (Some(t), _) => Some(t.clone()),
            (None, Tenants::Only(set)) if set.len() == 1 => set.first().cloned(),
            (None, _) => None,
        };
        let mut cursor = parse_queue_token(&q.page_token)?;
        if cursor.is_none()
            && let Some(from) = q.created_from
        {
            cursor = Some((from.saturating_sub(1), String::new()));
        }
        let limit = i64::from(page_size(q.page_size));
        let everything = q.include_resolved || q.unacknowledged_overrides;
        let states = if everything {
            vec![]
        } else {
            vec![JobState::Pending]
        };
        let now = self.now();
        let mut items = Vec::new();
        // Filtering happens after the query (effective expiry, eligibility),
        // so read until a page is full or the table is exhausted.
        loop {
            let batch = self
                .store
                .jobs(&JobFilter {
                    states: states.clone(),
                    tenant: tenant.clone(),
                    after: cursor.clone(),
                    limit,
                    unacknowledged_overrides: q.unacknowledged_overrides,
                })
                .await
                .map_err(store_refusal)?;
            let exhausted = (batch.len() as i64) < limit;
            for r in batch {
                if q.created_before.is_some_and(|t| r.created_at >= t) {
                    return Ok(Page {
                        items,
                        next_page_token: String::new(),
                    });
                }
                cursor = Some((r.created_at, r.job_id.clone()));
                let keep = who.in_tenant(&r.tenant)
                    && q.matches(&r, r.effective_state(now))
                    && (everything
                        || (r.effective_state(now) == JobState::Pending
                            && r.evaluation.approval_required))
                    && (!q.actionable_only || approval::may_act_on(&r, who, now));
                if keep {
                    items.push(JobView::new(r, now));
                    if items.len() as i64 == limit {
                        return Ok(Page {
                            items,
                            next_page_token: queue_token(&cursor),
                        });
                    }
                }
            }
            if exhausted {
                return Ok(Page {
                    items,
                    next_page_token: String::new(),
                });
            }
        }
    }
}
