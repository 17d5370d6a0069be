//! The JSON API. Each route is declared once, with `#[utoipa::path]`
//! beside its handler, and registered through `utoipa_axum`, so the
//! OpenAPI document is generated from the same routes and types the
//! handlers use. The operational routes keep the shapes of the article
//! gavel grew from: `GET /api/v1/approvals`, `POST
//! /api/v1/approvals/{job_id}/approve|reject`, `GET
//! /api/v1/jobs/{job_id}/decisions`. There is deliberately no `GET
//! /api/v1/approvals/{id}`: a job is read at `GET /api/v1/jobs/{id}`.

use super::{ApiError, Caller, ErrorBody, JsonBody, PathArg, QueryArgs, RequestBody, State};
use crate::approval::JobState;
use crate::engine::{ApprovalQuery, Approve, BindContent, JobView, SnapshotView};
use crate::job::JobInput;
use crate::policy::{Channel, Decision};
use crate::refusal::Refusal;
use axum::Json;
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Answer<T> = Result<Json<T>, ApiError>;

// ------------------------------------------------------------ shapes

/// A decision as the API names it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DecisionName {
    Allow,
    AllowWithConstraints,
    RequireApproval,
    Deny,
}

impl From<Decision> for DecisionName {
    fn from(d: Decision) -> Self {
        match d {
            Decision::Allow => DecisionName::Allow,
            Decision::AllowWithConstraints => DecisionName::AllowWithConstraints,
            Decision::RequireApproval => DecisionName::RequireApproval,
            Decision::Deny => DecisionName::Deny,
        }
    }
}

/// A job's state as the API names it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StateName {
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

impl From<JobState> for StateName {
    fn from(s: JobState) -> Self {
        match s {
            JobState::Allowed => StateName::Allowed,
            JobState::Denied => StateName::Denied,
            JobState::Pending => StateName::Pending,
            JobState::Approved => StateName::Approved,
            JobState::Rejected => StateName::Rejected,
            JobState::Expired => StateName::Expired,
            JobState::Cancelled => StateName::Cancelled,
            JobState::Bound => StateName::Bound,
            JobState::Succeeded => StateName::Succeeded,
            JobState::Failed => StateName::Failed,
        }
    }
}

impl StateName {
    fn state(self) -> JobState {
        JobState::ALL
            .into_iter()
            .find(|&s| StateName::from(s) == self)
            .unwrap_or(JobState::Pending)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobRef {
    pub id: String,
    pub state: StateName,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Summary {
    pub title: String,
    pub why: String,
    pub next_effect: String,
}

/// A gate and how its slots stand.
#[derive(Debug, Serialize, ToSchema)]
pub struct GateDoc {
    /// Distinct people needed.
    pub approvers: u32,
    /// Any of these roles fills a slot.
    pub roles: Vec<String>,
    pub rules: Vec<String>,
    pub filled: u32,
    /// Who fills its slots, in the order they approved.
    pub filled_by: Vec<String>,
    pub sla_seconds: u64,
    pub timeout_seconds: u64,
    pub bind_within_seconds: u64,
    /// Doors an approval may come through; empty: any.
    pub channels: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalDoc {
    pub approver: String,
    /// The role it fills; absent when it fills no slot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub reason: String,
    pub note: String,
    pub channel: String,
    pub at: String,
    pub job_hash: String,
    pub policy_snapshot: String,
}

/// A job: the article's queue item fields first, then everything else
/// gavel records.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobDoc {
    pub job: JobRef,
    pub decision: DecisionName,
    pub policy_snapshot: String,
    pub policy_rule_id: String,
    pub policy_reason: String,
    pub job_hash: String,
    pub approval_required: bool,
    pub decision_summary: Summary,
    /// Who resolved it (approved in full, rejected, cancelled, expired, overrode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_comment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    pub tenant: String,
    pub requester: String,
    pub matched_rules: Vec<String>,
    pub decision_id: String,
    pub gates: Vec<GateDoc>,
    pub approvals: Vec<ApprovalDoc>,
    #[schema(value_type = Object)]
    pub constraints: BTreeMap<String, Value>,
    /// The job exactly as decided (its canonical JSON, parsed).
    #[schema(value_type = Object)]
    pub content: Value,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalate_at: Option<String>,
    pub escalated: bool,
    pub overridable: bool,
    pub overridden: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub override_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub override_acknowledged_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome_detail: Option<String>,
}

fn summary(e: &crate::policy::Evaluation) -> Summary {
    Summary {
        title: e.decision_summary.title.clone(),
        why: e.decision_summary.why.clone(),
        next_effect: e.decision_summary.next_effect.clone(),
    }
}

fn time(ms: i64) -> String {
    crate::clock::rfc3339(ms)
}

pub(super) fn gates(v: &JobView) -> Vec<GateDoc> {
    v.gates()
        .map(|(g, gv)| GateDoc {
            approvers: g.approvers,
            roles: g.roles.clone(),
            rules: g.rules.clone(),
            filled: gv.filled,
            filled_by: gv.filled_by.clone(),
            sla_seconds: g.sla_seconds,
            timeout_seconds: g.timeout_seconds,
            bind_within_seconds: g.bind_within_seconds,
            channels: g.channels.iter().map(|c| c.as_str().to_owned()).collect(),
        })
        .collect()
}

pub(super) fn approvals(v: &JobView) -> Vec<ApprovalDoc> {
    v.approvals()
        .map(|(a, av)| ApprovalDoc {
            approver: a.approver.clone(),
            role: av.role.clone(),
            reason: a.reason.clone(),
            note: a.note.clone(),
            channel: a.channel.as_str().to_owned(),
            at: time(a.at),
            job_hash: a.job_hash.to_string(),
            policy_snapshot: a.snapshot_id.to_string(),
        })
        .collect()
}

pub(crate) fn job_doc(v: &JobView) -> JobDoc {
    let r = &v.record;
    let e = &r.evaluation;
    JobDoc {
        job: JobRef {
            id: r.job_id.clone(),
            state: v.state.into(),
        },
        decision: e.decision.into(),
        policy_snapshot: r.snapshot_id.to_string(),
        policy_rule_id: e.primary_rule.clone(),
        policy_reason: e.reason.clone(),
        job_hash: r.job_hash.to_string(),
        approval_required: e.approval_required,
        decision_summary: summary(e),
        resolved_by: r.resolved_by.clone(),
        resolved_comment: r.resolved_comment.clone(),
        resolution: r.resolution.clone(),
        tenant: r.tenant.clone(),
        requester: r.requester.clone(),
        matched_rules: e.matched_rules.clone(),
        decision_id: r.decision_id.clone(),
        gates: gates(v),
        approvals: approvals(v),
        constraints: e.constraints.clone(),
        content: serde_json::from_str(&r.canonical_job).unwrap_or(Value::Null),
        created_at: time(r.created_at),
        updated_at: time(r.updated_at),
        expires_at: r.expires_at.map(time),
        escalate_at: r.escalate_at.map(time),
        escalated: r.escalated,
        overridable: e.overridable,
        overridden: r.overridden,
        override_by: r.override_by.clone(),
        override_acknowledged_by: r.override_ack_by.clone(),
        bind_id: r.bind_id.clone(),
        outcome_detail: r.outcome_detail.clone(),
    }
}

/// A page of the approval queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalList {
    pub items: Vec<JobDoc>,
    /// Pass as `page_token` for the next page; empty on the last.
    pub next_page_token: String,
}

/// A string attribute value, a number or a boolean.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // documents the job form; the job parser reads it
pub enum ScalarSchema {
    String(String),
    Number(f64),
    Bool(bool),
}

/// What the agent tells the approvers. Part of the hash.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documents the job form; the job parser reads it
pub struct ProposalSchema {
    pub title: Option<String>,
    pub why: Option<String>,
    pub blast_radius: Option<String>,
    pub reversible: Option<bool>,
    pub estimated_cost_usd: Option<f64>,
}

/// A job, in the form of a job file (`gavel job hash FILE.json`). Every
/// field may be left out; `job_id` is generated when empty.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documents the job form; the job parser reads it
pub struct JobSchema {
    #[schema(pattern = "^[A-Za-z0-9._:-]{0,128}$")]
    pub job_id: Option<String>,
    pub tenant: Option<String>,
    pub topic: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub risk_tags: Option<Vec<String>>,
    pub attributes: Option<BTreeMap<String, ScalarSchema>>,
    /// The arguments the executor will run with: any JSON object.
    #[schema(value_type = Option<Object>)]
    pub params: Option<Value>,
    pub proposal: Option<ProposalSchema>,
}

/// The body of Decide and Explain's `job`: the job form, read by the same
/// parser as a job file.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct JobBody(pub Value);

impl RequestBody for JobBody {}

fn job_input(v: Value) -> Result<JobInput, ApiError> {
    JobInput::from_json_value(v).map_err(|e| ApiError::from(Refusal::from(e)))
}

/// Decide's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecideDoc {
    pub job_id: String,
    pub decision: DecisionName,
    pub state: StateName,
    pub policy_snapshot: String,
    pub policy_rule_id: String,
    pub matched_rules: Vec<String>,
    pub policy_reason: String,
    pub job_hash: String,
    pub approval_required: bool,
    pub gates: Vec<GateDoc>,
    pub decision_summary: Summary,
    #[schema(value_type = Object)]
    pub constraints: BTreeMap<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    pub decision_id: String,
    /// The stored decision for this job id and hash, returned again.
    pub replayed: bool,
    pub overridable: bool,
}

// ------------------------------------------------------------ approvals

/// A job id in a route.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // documents the path; `PathArg` reads it
pub struct JobPath {
    /// 1-128 characters of `[A-Za-z0-9._:-]`.
    #[param(pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    pub job_id: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ApprovalsQuery {
    /// Also list resolved jobs (history).
    #[serde(default)]
    pub include_resolved: bool,
    pub tenant: Option<String>,
    /// Only jobs the caller may approve now.
    #[serde(default)]
    pub actionable_only: bool,
    /// Only break-glass overrides not yet acknowledged.
    #[serde(default)]
    pub unacknowledged_overrides: bool,
    /// Only jobs in this state.
    pub state: Option<StateName>,
    /// Only jobs whose primary rule is this.
    pub rule: Option<String>,
    /// Only jobs this person approved or resolved.
    pub approver: Option<String>,
    /// Only jobs created on or after this day (`YYYY-MM-DD`, UTC).
    pub since: Option<String>,
    /// Only jobs created before this day (`YYYY-MM-DD`, UTC).
    pub until: Option<String>,
    /// At most 500; 0 or absent: 100.
    #[param(maximum = 4294967295u64)]
    pub page_size: Option<u32>,
    #[serde(default)]
    pub page_token: String,
}

fn day(field: &str, v: &Option<String>) -> Result<Option<i64>, ApiError> {
    v.as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            crate::clock::parse_date(s)
                .ok_or_else(|| ApiError::invalid(field, format!("`{s}` is not a YYYY-MM-DD date")))
        })
        .transpose()
}

impl ApprovalsQuery {
    pub(super) fn query(self) -> Result<ApprovalQuery, ApiError> {
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
        Ok(ApprovalQuery {
            include_resolved: self.include_resolved,
            created_from: day("since", &self.since)?,
            created_before: day("until", &self.until)?,
            tenant: nonempty(self.tenant),
            actionable_only: self.actionable_only,
            unacknowledged_overrides: self.unacknowledged_overrides,
            page_size: self.page_size.unwrap_or(0),
            page_token: self.page_token,
            state: self.state.map(StateName::state),
            rule: nonempty(self.rule),
            approver: nonempty(self.approver),
        })
    }
}

/// The approval queue: pending jobs oldest first, and with
/// `include_resolved=true` the resolved ones too.
#[utoipa::path(get, path = "/api/v1/approvals", tag = "approvals",
    params(ApprovalsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = ApprovalList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
async fn list_approvals(
    AxState(s): AxState<State>,
    Caller(who): Caller,
    QueryArgs(q): QueryArgs<ApprovalsQuery>,
) -> Answer<ApprovalList> {
    let page = s.engine.list_approvals(&who, q.query()?).await?;
    Ok(Json(ApprovalList {
        items: page.items.iter().map(job_doc).collect(),
        next_page_token: page.next_page_token,
    }))
}

/// An approval: a reason is required. Pass the hash and snapshot you
/// reviewed to be sure the approval lands on exactly that content.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    pub reason: String,
    #[serde(default)]
    pub note: String,
    pub expected_job_hash: Option<String>,
    pub expected_snapshot: Option<String>,
}

impl RequestBody for ApproveBody {}

/// A rejection (or an override): a reason is required.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    pub reason: String,
    #[serde(default)]
    pub note: String,
}

impl RequestBody for ReasonBody {}

/// An acknowledgement of a break-glass override.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteBody {
    #[serde(default)]
    pub note: String,
}

impl RequestBody for NoteBody {}

fn nonempty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

#[utoipa::path(post, path = "/api/v1/approvals/{job_id}/approve", tag = "approvals",
    params(JobPath),
    request_body = ApproveBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = JobDoc, description = "the job after the approval"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
async fn approve(
    AxState(s): AxState<State>,
    Caller(who): Caller,
    PathArg(job_id): PathArg,
    JsonBody(b): JsonBody<ApproveBody>,
) -> Answer<JobDoc> {
    let v = s
        .engine
        .approve(
            &who,
            &job_id,
            Approve {
                reason: b.reason,
                note: b.note,
                channel: Channel::Http,
                expected_job_hash: nonempty(b.expected_job_hash),
                expected_snapshot: nonempty(b.expected_snapshot),
            },
        )
        .await?;
    Ok(Json(job_doc(&v)))
}

#[utoipa::path(post, path = "/api/v1/approvals/{job_id}/reject", tag = "approvals",
    params(JobPath),
    request_body = ReasonBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = JobDoc, description = "the rejected job"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
async fn reject(
    AxState(s): AxState<State>,
    Caller(who): Caller,
    PathArg(job_id): PathArg,
    JsonBody(b): JsonBody<ReasonBody>,
) -> Answer<JobDoc> {
    let v = s.engine.reject(&who, &job_id, &b.reason, &b.note).await?;
    Ok(Json(job_doc(&v)))
}

/// Break-glass: approve a pending job (or an overridable deny) at once.
#[utoipa::path(post, path = "/api/v1/approvals/{job_id}/override", tag = "approvals",
    params(JobPath),
    request_body = ReasonBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = JobDoc),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
async fn override_job(
    AxState(s): AxState<State>,
    Caller(who): Caller,
    PathArg(job_id): PathArg,
    JsonBody(b): JsonBody<ReasonBody>,
) -> Answer<JobDoc> {
    let v = s
        .engine
        .override_job(&who, &job_id, &b.reason, &b.note)
        .await?;
    Ok(Json(job_doc(&v)))
}

/// Acknowledge a break-glass override (someone other than who overrode).
#[utoipa::path(post, path = "/api/v1/approvals/{job_id}/acknowledge", tag = "approvals",
    params(JobPath),
    request_body = NoteBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = JobDoc),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
async fn acknowledge(
    AxState(s): AxState<State>,
    Caller(who): Caller,
    PathArg(job_id): PathArg,
    JsonBody(b): JsonBody<NoteBody>,
) -> Answer<JobDoc> {
    let v = s
        .engine
        .acknowledge_override(&who, &job_id, &b.note)
        .await?;
    Ok(Json(job_doc(&v)))
}

// ------------------------------------------------------------ jobs

#[utoipa::path(post, path = "/api/v1/decide", tag = "jobs",
    request_body = JobSchema,
    security(("bearer" = [])),
    responses(
        (status = 200, body = DecideDoc),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
async fn decide(
    AxState(s): AxState<State>,
    Caller(who): Caller,
    JsonBody(b): JsonBody<JobBody>,
) -> Answer<DecideDoc> {
    let d = s.engine.decide(&who, job_input(b.0)?).await?;
    let v = &d.view;
    let r = &v.record;
    let e = &r.evaluation;
    Ok(Json(DecideDoc {
        job_id: r.job_id.clone(),
        decision: e.decision.into(),
        state: v.state.into(),
        policy_snapshot: r.snapshot_id.to_string(),
        policy_rule_id: e.primary_rule.clone(),
        matched_rules: e.matched_rules.clone(),
        policy_reason: e.reason.clone(),
        job_hash: r.job_hash.to_string(),
        approval_required: e.approval_required,
        gates: gates(v),
        decision_summary: summary(e),
        constraints: e.constraints.clone(),
        expires_at: r.expires_at.map(time),
        decision_id: r.decision_id.clone(),
        replayed: d.replayed,
        overridable: e.overridable,
    }))
}

/// Bind: send the job about to run (preferred) or its hash, and the
/// snapshot the decision named.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindBody {
    pub job_id: String,
    #[schema(value_type = Option<JobSchema>)]
    pub job: Option<Value>,
    pub job_hash: Option<String>,
    pub policy_snapshot: String,
}

impl RequestBody for BindBody {}

#[derive(Debug, Serialize, ToSchema)]
pub struct BindDoc {
    pub bind_id: String,
    pub job_id: String,
    pub job_hash: String,
    pub policy_snapshot: String,
    pub decision: DecisionName,
    #[schema(value_type = Object)]
    pub constraints: BTreeMap<String, Value>,
    pub approvals: Vec<ApprovalDoc>,
    /// The RFC 8785 JSON of the job as decided and approved: run these bytes.
    pub canonical_job: String,
    /// Compact JWS (EdDSA) over the binding; verify with `GET /api/v1/keys`.
    pub receipt: String,
    pub bound_at: String,
    pub overridden: bool,
}

#[utoipa::path(post, path = "/api/v1/bind", tag = "jobs",
    request_body = BindBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = BindDoc),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
async fn bind(
    AxState(s): AxState<State>,
    Caller(who): Caller,
    JsonBody(b): JsonBody<BindBody>,
) -> Answer<BindDoc> {
    let content = match (b.job, nonempty(b.job_hash)) {
        (Some(job), None) => BindContent::Job(Box::new(job_input(job)?)),
        (None, Some(hash)) => BindContent::Hash(hash),
        _ => {
            return Err(ApiError::invalid(
                "job",
                "send either the job about to run (preferred) or its job_hash, not both",
            ));
        }
    };
    let bound = s
        .engine
        .bind(&who, &b.job_id, content, &b.policy_snapshot)
        .await?;
    let r = &bound.view.record;
    Ok(Json(BindDoc {
        bind_id: bound.bind_id.clone(),
        job_id: r.job_id.clone(),
        job_hash: r.job_hash.to_string(),
        policy_snapshot: r.snapshot_id.to_string(),
        decision: r.evaluation.decision.into(),
        constraints: r.evaluation.constraints.clone(),
        approvals: approvals(&bound.view),
        canonical_job: r.canonical_job.clone(),
        receipt: bound.receipt.clone(),
        bound_at: time(r.bound_at.unwrap_or(bound.view.at)),
        overridden: r.overridden,
    }))
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutcomeName {
    Succeeded,
    Failed,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutcomeBody {
    pub bind_id: String,
    pub outcome: OutcomeName,
    #[serde(default)]
    pub detail: String,
}

impl RequestBody for OutcomeBody {}

#[utoipa::path(post, path = "/api/v1/jobs/{job_id}/outcome", tag = "jobs",
    params(JobPath),
    request_body = OutcomeBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = JobDoc),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
async fn outcome(
    AxState(s): AxState<State>,
    Caller(who): Caller,
    PathArg(job_id): PathArg,
    JsonBody(b): JsonBody<OutcomeBody>,
) -> Answer<JobDoc> {
    let succeeded = matches!(b.outcome, OutcomeName::Succeeded);
    let v = s
        .engine
        .report_outcome(&who, &job_id, &b.bind_id, succeeded, &b.detail)
        .await?;
    Ok(Json(job_doc(&v)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    #[serde(default)]
    pub reason: String,
}

impl RequestBody for CancelBody {}

#[utoipa::path(post, path = "/api/v1/jobs/{job_id}/cancel", tag = "jobs",
    params(JobPath),
    request_body = CancelBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = JobDoc),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
async fn cancel(
    AxState(s): AxState<State>,
    Caller(who): Caller,
    PathArg(job_id): PathArg,
    JsonBody(b): JsonBody<CancelBody>,
) -> Answer<JobDoc> {
    let v = s.engine.cancel(&who, &job_id, &b.reason).await?;
    Ok(Json(job_doc(&v)))
}

#[utoipa::path(get, path = "/api/v1/jobs/{job_id}", tag = "jobs",
    params(JobPath),
    security(("bearer" = [])),
    responses(
        (status = 200, body = JobDoc),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
async fn get_job(
    AxState(s): AxState<State>,
    Caller(who): Caller,
    PathArg(job_id): PathArg,
) -> Answer<JobDoc> {
    let v = s.engine.get_job(&who, &job_id).await?;
    Ok(Json(job_doc(&v)))
}

/// One decision about a job: the policy's, then each person's.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionEntry {
    /// `policy`, `approval`, `override`, or the final resolution:
    /// `rejection`, `cancel`, `expiry`.
    pub kind: String,
    pub by: String,
    pub at: String,
    /// The policy's decision, on the `policy` entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<DecisionName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
    pub policy_snapshot: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_rule_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_reason: Option<String>,
    pub job_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionList {
    pub job: JobRef,
    pub items: Vec<DecisionEntry>,
}

fn decisions_of(v: &JobView) -> DecisionList {
    let r = &v.record;
    let e = &r.evaluation;
    let entry = |kind: &str, by: &str, at: i64| DecisionEntry {
        kind: kind.to_owned(),
        by: by.to_owned(),
        at: time(at),
        decision: None,
        decision_id: None,
        policy_snapshot: r.snapshot_id.to_string(),
        policy_rule_id: None,
        policy_reason: None,
        job_hash: r.job_hash.to_string(),
        reason: None,
        note: None,
        channel: None,
    };
    let mut items = vec![DecisionEntry {
        decision: Some(e.decision.into()),
        decision_id: Some(r.decision_id.clone()),
        policy_rule_id: Some(e.primary_rule.clone()),
        policy_reason: Some(e.reason.clone()),
        ..entry("policy", "policy", r.created_at)
    }];
    for a in &r.approvals {
        items.push(DecisionEntry {
            reason: Some(a.reason.clone()),
            note: Some(a.note.clone()),
            channel: Some(a.channel.as_str().to_owned()),
            ..entry("approval", &a.approver, a.at)
        });
    }
    let closing = match v.state {
        JobState::Rejected => Some("rejection"),
        JobState::Cancelled => Some("cancel"),
        JobState::Expired if e.approval_required => Some("expiry"),
        _ => None,
    };
    if r.overridden {
        items.push(DecisionEntry {
            reason: r.resolved_comment.clone(),
            ..entry(
                "override",
                r.override_by.as_deref().unwrap_or(""),
                r.updated_at,
            )
        });
    } else if let Some(kind) = closing {
        items.push(DecisionEntry {
            reason: r.resolved_comment.clone(),
            ..entry(kind, r.resolved_by.as_deref().unwrap_or(""), r.updated_at)
        });
    }
    DecisionList {
        job: JobRef {
            id: r.job_id.clone(),
            state: v.state.into(),
        },
        items,
    }
}

/// The decisions attached to a job: the policy decision with its
/// snapshot and hash, then every approval, override or rejection.
#[utoipa::path(get, path = "/api/v1/jobs/{job_id}/decisions", tag = "jobs",
    params(JobPath),
    security(("bearer" = [])),
    responses(
        (status = 200, body = DecisionList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
async fn job_decisions(
    AxState(s): AxState<State>,
    Caller(who): Caller,
    PathArg(job_id): PathArg,
) -> Answer<DecisionList> {
    let v = s.engine.get_job(&who, &job_id).await?;
    Ok(Json(decisions_of(&v)))
}

// ------------------------------------------------------------ policy

#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotDoc {
    pub id: String,
    pub name: String,
    pub version: Option<i64>,
    pub sha256: String,
    pub rule_count: i64,
    pub active: bool,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activated_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoke_reason: Option<String>,
    /// The policy YAML, on `GET /api/v1/policy/snapshots/{id}` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

pub(super) fn snapshot_doc(v: &SnapshotView, with_source: bool) -> SnapshotDoc {
    let r = &v.row;
    SnapshotDoc {
        id: r.id.to_string(),
        name: r.name.clone(),
        version: r.version,
        sha256: r.sha256.clone(),
        rule_count: r.rule_count,
        active: v.active,
        created_at: time(r.created_at),
        activated_at: r.activated_at.map(time),
        activated_by: r.activated_by.clone(),
        revoked_at: r.revoked_at.map(time),
        revoked_by: r.revoked_by.clone(),
        revoke_reason: r.revoke_reason.clone(),
        source: with_source.then(|| r.source.clone()),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReloadBody {
    /// The policy YAML.
    pub source: String,
    /// The name findings are reported against.
    #[serde(default)]
    pub filename: String,
    /// Validate and compile only.
    #[serde(default)]
    pub dry_run: bool,
    /// The tenant whose policy this becomes; empty for the system policy.
    #[serde(default)]
    pub tenant: String,
}

impl RequestBody for ReloadBody {
    const POLICY_SIZED: bool = true;
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FindingDoc {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub file: String,
    pub line: u32,
    pub column: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReloadDoc {
    pub snapshot: SnapshotDoc,
    pub activated: bool,
    pub unchanged: bool,
    pub warnings: Vec<FindingDoc>,
}

#[utoipa::path(post, path = "/api/v1/policy/reload", tag = "policy",
    request_body = ReloadBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = ReloadDoc),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
async fn reload(
    AxState(s): AxState<State>,
    Caller(who): Caller,
    JsonBody(b): JsonBody<ReloadBody>,
) -> Answer<ReloadDoc> {
    let file = if b.filename.is_empty() {
        "inline"
    } else {
        b.filename.as_str()
    };
    let out = s
        .engine
        .reload_policy(&who, &b.tenant, &b.source, file, b.dry_run)
        .await?;
    Ok(Json(ReloadDoc {
        snapshot: snapshot_doc(
            &SnapshotView {
                row: out.snapshot,
                active: out.active,
            },
            false,
        ),
        activated: out.activated,
        unchanged: out.unchanged,
        warnings: out
            .warnings
            .iter()
            .map(|f| FindingDoc {
                severity: format!("{:?}", f.severity).to_ascii_lowercase(),
                code: f.code.to_owned(),
                message: f.message.clone(),
                file: f.file.clone(),
                line: f.line,
                column: f.column,
                rule: f.rule.clone(),
            })
            .collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainBody {
    #[schema(value_type = JobSchema)]
    pub job: Value,
    /// Evaluate as this principal (operators only); default: the caller.
    #[serde(default)]
    pub principal: String,
    /// Evaluate against this snapshot; default: the active one.
    #[serde(default)]
    pub snapshot_id: String,
}

impl RequestBody for ExplainBody {}

#[derive(Debug, Serialize, ToSchema)]
pub struct MatcherDoc {
    pub matcher: String,
    pub detail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleDoc {
    pub rule: String,
    pub decision: DecisionName,
    pub matched: bool,
    pub failures: Vec<MatcherDoc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExplainDoc {
    pub decision: DecisionName,
    pub policy_rule_id: String,
    pub matched_rules: Vec<String>,
    pub policy_reason: String,
    pub policy_snapshot: String,
    pub job_hash: String,
    pub approval_required: bool,
    pub decision_summary: Summary,
    #[schema(value_type = Object)]
    pub constraints: BTreeMap<String, Value>,
    pub rules: Vec<RuleDoc>,
}

#[utoipa::path(post, path = "/api/v1/policy/explain", tag = "policy",
    request_body = ExplainBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = ExplainDoc),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
async fn explain(
    AxState(s): AxState<State>,
    Caller(who): Caller,
    JsonBody(b): JsonBody<ExplainBody>,
) -> Answer<ExplainDoc> {
    let input = job_input(b.job)?;
    let (x, hash, snap) = s
        .engine
        .explain(&who, input, &b.principal, &b.snapshot_id)
        .await?;
    let e = &x.evaluation;
    Ok(Json(ExplainDoc {
        decision: e.decision.into(),
        policy_rule_id: e.primary_rule.clone(),
        matched_rules: e.matched_rules.clone(),
        policy_reason: e.reason.clone(),
        policy_snapshot: snap.to_string(),
        job_hash: hash.to_string(),
        approval_required: e.approval_required,
        decision_summary: summary(e),
        constraints: e.constraints.clone(),
        rules: x
            .rules
            .iter()
            .map(|r| RuleDoc {
                rule: r.rule.clone(),
                decision: r.decision.into(),
                matched: r.matched,
                failures: r
                    .failures
                    .iter()
                    .map(|f| MatcherDoc {
                        matcher: f.matcher.clone(),
                        detail: f.detail.clone(),
                    })
                    .collect(),
            })
            .collect(),
    }))
}

/// `?tenant=`: whose policy.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TenantQuery {
    pub tenant: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SnapshotsQuery {
    /// Only snapshots of this policy name.
    pub name: Option<String>,
    #[param(maximum = 4294967295u64)]
    pub page_size: Option<u32>,
    #[serde(default)]
    pub page_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotList {
    pub snapshots: Vec<SnapshotDoc>,
    pub next_page_token: String,
}

#[utoipa::path(get, path = "/api/v1/policy/snapshots", tag = "policy",
    params(SnapshotsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = SnapshotList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
async fn list_snapshots(
    AxState(s): AxState<State>,
    Caller(who): Caller,
    QueryArgs(q): QueryArgs<SnapshotsQuery>,
) -> Answer<SnapshotList> {
    let name = q.name.filter(|n| !n.is_empty());
    let page = s
        .engine
        .list_snapshots(
            &who,
            name.as_deref(),
            q.page_size.unwrap_or(0),
            &q.page_token,
        )
        .await?;
    Ok(Json(SnapshotList {
        snapshots: page.items.iter().map(|v| snapshot_doc(v, false)).collect(),
        next_page_token: page.next_page_token,
    }))
}

/// A snapshot with its source; `active` names the active one.
#[utoipa::path(get, path = "/api/v1/policy/snapshots/{snapshot_id}", tag = "policy",
    params(("snapshot_id" = String, Path, description = "a snapshot id, or `active`"),
        ("tenant" = Option<String>, Query, description = "with `active`: whose active snapshot (default: the system's)")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = SnapshotDoc),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
async fn get_snapshot(
    AxState(s): AxState<State>,
    Caller(who): Caller,
    PathArg(id): PathArg,
    QueryArgs(q): QueryArgs<TenantQuery>,
) -> Answer<SnapshotDoc> {
    let id = if id == "active" { String::new() } else { id };
    let v = s
        .engine
        .get_policy(&who, q.tenant.as_deref().unwrap_or(""), &id)
        .await?;
    Ok(Json(snapshot_doc(&v, true)))
}

#[utoipa::path(post, path = "/api/v1/policy/snapshots/{snapshot_id}/revoke", tag = "policy",
    params(("snapshot_id" = String, Path)),
    request_body = CancelBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = SnapshotDoc),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
async fn revoke_snapshot(
    AxState(s): AxState<State>,
    Caller(who): Caller,
    PathArg(id): PathArg,
    JsonBody(b): JsonBody<CancelBody>,
) -> Answer<SnapshotDoc> {
    let v = s.engine.revoke_snapshot(&who, &id, &b.reason).await?;
    Ok(Json(snapshot_doc(&v, false)))
}

// ------------------------------------------------------------ audit

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryDoc {
    pub chain: String,
    pub seq: i64,
    pub prev_hash: String,
    pub entry_hash: String,
    pub at: String,
    pub at_ms: i64,
    pub actor: String,
    pub job_id: String,
    pub snapshot_id: String,
    /// The tenant whose job or policy it is; empty for none.
    pub tenant: String,
    pub kind: String,
    #[schema(value_type = Object)]
    pub body: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditEntryDoc>,
}

/// One job's whole story from the audit log: decision, approvals, bind, outcome.
#[utoipa::path(get, path = "/api/v1/audit/jobs/{job_id}", tag = "audit",
    params(JobPath, TenantQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = AuditList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
async fn audit_job(
    AxState(s): AxState<State>,
    Caller(who): Caller,
    PathArg(job_id): PathArg,
    QueryArgs(q): QueryArgs<TenantQuery>,
) -> Answer<AuditList> {
    let entries = s
        .engine
        .job_history(&who, &job_id, q.tenant.as_deref())
        .await?;
    Ok(Json(AuditList {
        entries: entries
            .into_iter()
            .map(|e| AuditEntryDoc {
                at: time(e.at),
                at_ms: e.at,
                chain: e.chain,
                seq: e.seq,
                prev_hash: e.prev_hash,
                entry_hash: e.entry_hash,
                actor: e.actor,
                job_id: e.job_id,
                snapshot_id: e.snapshot_id,
                tenant: e.tenant,
                kind: e.kind,
                body: e.body,
            })
            .collect(),
    }))
}

// ------------------------------------------------------------ outbox

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OutboxQuery {
    /// `pending`, `delivered` or `dead`; absent: every state.
    pub state: Option<String>,
    /// At most 500; default 100.
    #[param(maximum = 4294967295u64)]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryDoc {
    /// `<idempotency key>@<channel>`.
    pub id: String,
    /// The message's idempotency key, `<job id>:<job version>:<kind>`.
    pub message_id: String,
    pub channel: String,
    pub kind: String,
    pub job_id: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
}

pub(crate) fn delivery_doc(d: &crate::store::DeliveryRow) -> DeliveryDoc {
    DeliveryDoc {
        id: d.id.clone(),
        message_id: d.message.id.clone(),
        channel: d.channel.clone(),
        kind: d.message.kind.as_str().to_owned(),
        job_id: d.message.job_id.clone(),
        state: d.state.clone(),
        attempts: d.attempts,
        next_attempt_at: time(d.next_attempt_at),
        last_error: d.last_error.clone(),
        created_at: time(d.created_at),
        delivered_at: d.delivered_at.map(time),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryDoc>,
}

/// Notification deliveries, newest first; `state=dead` lists the dead letters.
#[utoipa::path(get, path = "/api/v1/outbox", tag = "outbox",
    params(OutboxQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = DeliveryList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
async fn outbox(
    AxState(s): AxState<State>,
    Caller(who): Caller,
    QueryArgs(q): QueryArgs<OutboxQuery>,
) -> Answer<DeliveryList> {
    let rows = s
        .engine
        .deliveries(
            &who,
            q.state.as_deref().unwrap_or(""),
            q.limit.unwrap_or(100),
        )
        .await?;
    Ok(Json(DeliveryList {
        deliveries: rows.iter().map(delivery_doc).collect(),
    }))
}

// ------------------------------------------------------------ stats

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// The window, reaching back from now: `7d` (the default), `24h`, `90m`.
    pub since: Option<String>,
    /// Only this tenant's jobs.
    pub tenant: Option<String>,
}

/// The window a stats query names, in seconds.
pub(crate) fn stats_window(since: Option<&str>) -> Result<u64, Refusal> {
    crate::policy::model::Secs::parse(since.unwrap_or("7d"))
        .map(|s| s.0)
        .map_err(|e| Refusal::field(crate::refusal::Reason::InvalidArgument, "since", e))
}

/// Approval statistics of the jobs decided in the window, from the audit
/// log: decisions by tier, time to decision (overall, by rule, by gate
/// role), rejection reasons, expiries, escalations, overrides, and per
/// approver with the rubber-stamp flag (operators and auditors).
#[utoipa::path(get, path = "/api/v1/stats", tag = "audit",
    params(StatsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Object, description = "the report (docs/stats.md)"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
async fn stats(
    AxState(s): AxState<State>,
    Caller(who): Caller,
    QueryArgs(q): QueryArgs<StatsQuery>,
) -> Answer<crate::stats::Report> {
    let window = stats_window(q.since.as_deref())?;
    Ok(Json(
        s.engine.stats(&who, window, q.tenant.as_deref()).await?,
    ))
}

// ------------------------------------------------------------ keys and health

/// The receipt key as a JWKS, for verifying bind receipts offline.
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys",
    responses((status = 200, body = Object, description = "a JSON Web Key Set")))]
async fn keys(AxState(s): AxState<State>) -> Json<Value> {
    Json(s.engine.jwks())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// The database answers and a policy snapshot is active.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
async fn readyz(AxState(s): AxState<State>) -> Result<impl IntoResponse, ApiError> {
    s.engine.ready().await?;
    Ok((
        StatusCode::OK,
        Json(Health {
            status: "ready".into(),
        }),
    ))
}

// ------------------------------------------------------------ document

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "gavel",
        description = "Policy decisions with approval binding. Every route but health and keys takes `Authorization: Bearer <token>`. Errors are `{\"error\":{\"reason\",\"message\",\"field\"}}`."
    ),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// The API's routes and the document describing them.
pub(super) fn router() -> OpenApiRouter<State> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_approvals))
        .routes(routes!(approve))
        .routes(routes!(reject))
        .routes(routes!(override_job))
        .routes(routes!(acknowledge))
        .routes(routes!(decide))
        .routes(routes!(bind))
        .routes(routes!(outcome))
        .routes(routes!(cancel))
        .routes(routes!(get_job))
        .routes(routes!(job_decisions))
        .routes(routes!(reload))
        .routes(routes!(explain))
        .routes(routes!(list_snapshots))
        .routes(routes!(get_snapshot))
        .routes(routes!(revoke_snapshot))
        .routes(routes!(audit_job))
        .routes(routes!(outbox))
        .routes(routes!(stats))
        .routes(routes!(keys))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// The OpenAPI document, as served at `/api/v1/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    router().split_for_parts().1
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::PartialSchema;

    fn properties(
        schema: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    ) -> std::collections::BTreeSet<String> {
        let v = serde_json::to_value(schema).unwrap();
        v["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    fn set(fields: &[&str]) -> std::collections::BTreeSet<String> {
        fields.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn the_job_schema_documents_exactly_what_the_job_parser_reads() {
        assert_eq!(properties(JobSchema::schema()), set(&JobInput::FIELDS));
        assert_eq!(
            properties(ProposalSchema::schema()),
            set(&JobInput::PROPOSAL_FIELDS)
        );
        // And the parser refuses what the schema does not list.
        let e = JobInput::from_json_value(serde_json::json!({"colour": 1})).unwrap_err();
        assert_eq!(e.field, "job.colour");
        let e =
            JobInput::from_json_value(serde_json::json!({"proposal": {"colour": 1}})).unwrap_err();
        assert_eq!(e.field, "job.proposal.colour");
    }

    #[test]
    fn every_state_name_maps_back_to_its_state() {
        for s in JobState::ALL {
            assert_eq!(StateName::from(s).state(), s);
        }
    }
}
