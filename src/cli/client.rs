//! Commands that talk to a running server over gRPC: decide, approve,
//! reject, override, acknowledge, cancel, bind, report, get, watch, list,
//! policy reload/show/list/revoke and audit verify/job/export.
//!
//! A refusal prints its machine-readable reason (`HASH_MISMATCH`,
//! `ALREADY_BOUND`, `PERMISSION_DENIED` …) and exits 1.

use super::{CliError, Output, print_json, read_input};
use crate::job::{Job, Limits};
use crate::proto::v1 as pb;
use crate::proto::v1::approval_service_client::ApprovalServiceClient;
use crate::proto::v1::audit_service_client::AuditServiceClient;
use crate::proto::v1::decision_service_client::DecisionServiceClient;
use crate::proto::v1::policy_service_client::PolicyServiceClient;
use crate::service::convert;
use clap::Args;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Where the server is and who is calling.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// The gavel server's gRPC address.
    #[arg(
        long,
        env = "GAVEL_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub server: String,
    /// The bearer token to call with.
    #[arg(long, env = "GAVEL_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// For an https:// server: the CA (PEM) its certificate is checked
    /// against (the system's roots when absent).
    #[arg(long, env = "GAVEL_CA", global = true)]
    pub ca: Option<std::path::PathBuf>,
    /// A client certificate (PEM) to present: it may stand in for --token.
    #[arg(long, env = "GAVEL_CERT", global = true, requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, env = "GAVEL_KEY", global = true, requires = "cert")]
    pub key: Option<std::path::PathBuf>,
}

/// Adds `authorization: Bearer <token>` to every call, when there is a token
/// (a client certificate may stand in for it).
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(h) = &self.0 {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

type Svc = InterceptedService<Channel, Bearer>;

/// Connected clients.
pub struct Clients {
    pub decision: DecisionServiceClient<Svc>,
    pub approval: ApprovalServiceClient<Svc>,
    pub policy: PolicyServiceClient<Svc>,
    pub audit: AuditServiceClient<Svc>,
}

/// `Bearer <token>` as a metadata value.
pub fn bearer_header(token: &str) -> Result<MetadataValue<Ascii>, CliError> {
    format!("Bearer {}", token.trim())
        .parse()
        .map_err(|_| CliError("the token contains characters a header cannot carry".into()))
}

impl Conn {
    /// The client TLS files given.
    pub fn tls_files(&self) -> crate::tls::ClientFiles {
        crate::tls::ClientFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }

    /// The server's endpoint, with TLS for an https:// server.
    pub fn endpoint(&self) -> Result<tonic::transport::Endpoint, CliError> {
        crate::tls::endpoint(&self.server, &self.tls_files()).map_err(CliError)
    }

    /// The `authorization` value to call with: the token's, or none when a
    /// client certificate stands in for it.
    pub fn authorization(&self) -> Result<Option<MetadataValue<Ascii>>, CliError> {
        match (&self.token, &self.cert) {
            (Some(t), _) => Ok(Some(bearer_header(t)?)),
            (None, Some(_)) => Ok(None),
            (None, None) => Err(CliError(
                "no token: pass --token or set GAVEL_TOKEN (gavel serve --dev prints some), or a client certificate (--cert, --key)".into(),
            )),
        }
    }

    pub async fn connect(&self) -> Result<Clients, CliError> {
        let header = self.authorization()?;
        let channel = self
            .endpoint()?
            .connect()
            .await
            .map_err(|e| CliError(format!("cannot reach {}: {e}", self.server)))?;
        let b = Bearer(header);
        Ok(Clients {
            decision: DecisionServiceClient::with_interceptor(channel.clone(), b.clone())
                .max_decoding_message_size(64 * 1024 * 1024),
            approval: ApprovalServiceClient::with_interceptor(channel.clone(), b.clone())
                .max_decoding_message_size(64 * 1024 * 1024),
            policy: PolicyServiceClient::with_interceptor(channel.clone(), b.clone())
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024),
            audit: AuditServiceClient::with_interceptor(channel, b)
                .max_decoding_message_size(64 * 1024 * 1024),
        })
    }
}

/// The machine-readable reason of a refused call, if it carries one.
pub fn reason_of(s: &tonic::Status) -> Option<&'static str> {
    convert::error_detail(s)
        .and_then(|d| crate::service::status::reason_from_proto(d.reason))
        .map(|r| r.as_str())
}

/// A refused call as a CLI error naming its reason.
pub fn refused(s: tonic::Status) -> CliError {
    let reason =
        reason_of(&s).map_or_else(|| format!("{:?}", s.code()).to_uppercase(), str::to_owned);
    CliError(format!("{reason}: {}", s.message()))
}

fn ts(t: &Option<prost_types::Timestamp>) -> Value {
    match t {
        None => Value::Null,
        Some(t) => json!(t.seconds * 1000 + i64::from(t.nanos) / 1_000_000),
    }
}

fn struct_json(s: &Option<prost_types::Struct>) -> Value {
    s.as_ref()
        .and_then(|s| convert::struct_to_map(s, "").ok())
        .map(Value::Object)
        .unwrap_or(Value::Object(Default::default()))
}

fn decision_name(d: i32) -> &'static str {
    match pb::Decision::try_from(d) {
        Ok(pb::Decision::Allow) => "allow",
        Ok(pb::Decision::AllowWithConstraints) => "allow_with_constraints",
        Ok(pb::Decision::RequireApproval) => "require_approval",
        Ok(pb::Decision::Deny) => "deny",
        _ => "unspecified",
    }
}

fn state_name(s: i32) -> &'static str {
    convert::state_from_proto(s).map_or("unspecified", |s| s.as_str())
}

fn gates_json(g: &[pb::Gate]) -> Value {
    Value::Array(
        g.iter()
            .map(|g| {
                json!({
                    "approvers": g.approvers,
                    "roles": g.roles,
                    "rules": g.rules,
                    "filled": g.filled,
                    "sla_seconds": g.sla.as_ref().map_or(0, |d| d.seconds),
                    "timeout_seconds": g.timeout.as_ref().map_or(0, |d| d.seconds),
                    "bind_within_seconds": g.bind_within.as_ref().map_or(0, |d| d.seconds),
                })
            })
            .collect(),
    )
}

fn approvals_json(a: &[pb::Approval]) -> Value {
    Value::Array(
        a.iter()
            .map(|a| {
                json!({
                    "approver": a.approver, "role": a.role, "reason": a.reason, "note": a.note,
                    "at": ts(&a.at), "job_hash": a.job_hash, "policy_snapshot": a.policy_snapshot,
                })
            })
            .collect(),
    )
}

/// The job record as JSON.
pub fn record_json(r: &pb::JobRecord) -> Value {
    let job_id = r.job.as_ref().map_or("", |j| j.job_id.as_str());
    json!({
        "job_id": job_id,
        "state": state_name(r.state),
        "decision": decision_name(r.decision),
        "primary_rule": r.primary_rule,
        "matched_rules": r.matched_rules,
        "reason": r.reason,
        "policy_snapshot": r.policy_snapshot,
        "job_hash": r.job_hash,
        "approval_required": r.approval_required,
        "gates": gates_json(&r.gates),
        "decision_summary": r.decision_summary.as_ref().map(|s| json!({"title": s.title, "why": s.why, "next_effect": s.next_effect})),
        "constraints": struct_json(&r.constraints),
        "requester": r.requester,
        "approvals": approvals_json(&r.approvals),
        "created_at": ts(&r.created_at),
        "expires_at": ts(&r.expires_at),
        "escalated": r.escalated,
        "resolved_by": r.resolved_by,
        "resolved_comment": r.resolved_comment,
        "resolution": r.resolution,
        "overridden": r.overridden,
        "override_acknowledged_by": r.override_acknowledged_by,
        "bind_id": r.bind_id,
        "outcome_detail": r.outcome_detail,
        "decision_id": r.decision_id,
    })
}

fn print_record(r: &pb::JobRecord, output: Output) {
    match output {
        Output::Json => print_json(&record_json(r)),
        Output::Text => {
            let job_id = r.job.as_ref().map_or("", |j| j.job_id.as_str());
            say!("job:      {job_id}");
            say!("state:    {}", state_name(r.state));
            say!(
                "decision: {} (rule `{}`): {}",
                decision_name(r.decision),
                r.primary_rule,
                r.reason
            );
            if let Some(s) = &r.decision_summary {
                say!("summary:  {} / {}", s.title, s.next_effect);
            }
            for g in &r.gates {
                say!(
                    "gate:     {}/{} of [{}]",
                    g.filled,
                    g.approvers,
                    g.roles.join(", ")
                );
            }
            for a in &r.approvals {
                say!("approved: {} as {}: {}", a.approver, a.role, a.reason);
            }
            if !r.resolved_by.is_empty() {
                say!(
                    "resolved: {} by {}: {}",
                    r.resolution,
                    r.resolved_by,
                    r.resolved_comment
                );
            }
            if !r.bind_id.is_empty() {
                say!("bind id:  {}", r.bind_id);
            }
            say!("hash:     {}", r.job_hash);
            say!("snapshot: {}", r.policy_snapshot);
        }
    }
}

/// Reads a job file (or stdin) and turns it into a wire job, validated
/// locally first so mistakes are named before anything is sent.
fn wire_job(path: &Path) -> Result<pb::Job, CliError> {
    let limits = Limits::default();
    let bytes = read_input(path, limits.max_request_bytes as u64)?;
    let job = Job::from_json(&bytes, &limits)
        .map_err(|e| CliError(format!("{}: {e}", path.display())))?;
    let id = job.job_id.as_ref().map_or(String::new(), |i| i.to_string());
    Ok(convert::job_from_canonical(&id, &job.canonical_json()))
}

#[derive(Args, Debug)]
pub struct DecideArgs {
    /// The job as JSON, or `-` for stdin.
    #[arg(long)]
    pub job: PathBuf,
}

pub async fn decide(conn: &Conn, a: DecideArgs, output: Output) -> Result<ExitCode, CliError> {
    let job = wire_job(&a.job)?;
    let mut c = conn.connect().await?;
    let d = c
        .decision
        .decide(pb::DecideRequest { job: Some(job) })
        .await
        .map_err(refused)?
        .into_inner();
    match output {
        Output::Json => print_json(&json!({
            "job_id": d.job_id,
            "decision": decision_name(d.decision),
            "state": state_name(d.state),
            "primary_rule": d.primary_rule,
            "matched_rules": d.matched_rules,
            "reason": d.reason,
            "policy_snapshot": d.policy_snapshot,
            "job_hash": d.job_hash,
            "approval_required": d.approval_required,
            "gates": gates_json(&d.gates),
            "decision_summary": d.decision_summary.as_ref().map(|s| json!({"title": s.title, "why": s.why, "next_effect": s.next_effect})),
            "constraints": struct_json(&d.constraints),
            "expires_at": ts(&d.expires_at),
            "decision_id": d.decision_id,
            "replayed": d.replayed,
        })),
        Output::Text => {
            say!("job:      {}", d.job_id);
            say!(
                "decision: {} (rule `{}`): {}",
                decision_name(d.decision),
                d.primary_rule,
                d.reason
            );
            say!("state:    {}", state_name(d.state));
            for g in &d.gates {
                say!("gate:     {} of [{}]", g.approvers, g.roles.join(", "));
            }
            say!("hash:     {}", d.job_hash);
            say!("snapshot: {}", d.policy_snapshot);
            if d.replayed {
                say!("(the stored decision for this job id, returned again)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct ApproveArgs {
    pub job_id: String,
    #[arg(long)]
    pub reason: String,
    #[arg(long, default_value = "")]
    pub note: String,
    /// The job hash you reviewed: refused if the job differs.
    #[arg(long)]
    pub expect_hash: Option<String>,
    /// The snapshot you reviewed under: refused if the job's differs.
    #[arg(long)]
    pub expect_snapshot: Option<String>,
}

pub async fn approve(conn: &Conn, a: ApproveArgs, output: Output) -> Result<ExitCode, CliError> {
    let mut c = conn.connect().await?;
    let r = c
        .approval
        .approve(pb::ApproveRequest {
            job_id: a.job_id,
            reason: a.reason,
            note: a.note,
            expected_job_hash: a.expect_hash.unwrap_or_default(),
            expected_policy_snapshot: a.expect_snapshot.unwrap_or_default(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    print_record(&r.job.unwrap_or_default(), output);
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct ReasonArgs {
    pub job_id: String,
    #[arg(long, default_value = "")]
    pub reason: String,
    #[arg(long, default_value = "")]
    pub note: String,
}

pub async fn reject(conn: &Conn, a: ReasonArgs, output: Output) -> Result<ExitCode, CliError> {
    let mut c = conn.connect().await?;
    let r = c
        .approval
        .reject(pb::RejectRequest {
            job_id: a.job_id,
            reason: a.reason,
            note: a.note,
        })
        .await
        .map_err(refused)?
        .into_inner();
    print_record(&r.job.unwrap_or_default(), output);
    Ok(ExitCode::SUCCESS)
}

pub async fn override_job(
    conn: &Conn,
    a: ReasonArgs,
    output: Output,
) -> Result<ExitCode, CliError> {
    let mut c = conn.connect().await?;
    let r = c
        .approval
        .r#override(pb::OverrideRequest {
            job_id: a.job_id,
            reason: a.reason,
            note: a.note,
        })
        .await
        .map_err(refused)?
        .into_inner();
    print_record(&r.job.unwrap_or_default(), output);
    Ok(ExitCode::SUCCESS)
}

pub async fn acknowledge(conn: &Conn, a: ReasonArgs, output: Output) -> Result<ExitCode, CliError> {
    let mut c = conn.connect().await?;
    let r = c
        .approval
        .acknowledge_override(pb::AcknowledgeOverrideRequest {
            job_id: a.job_id,
            note: if a.note.is_empty() { a.reason } else { a.note },
        })
        .await
        .map_err(refused)?
        .into_inner();
    print_record(&r.job.unwrap_or_default(), output);
    Ok(ExitCode::SUCCESS)
}

pub async fn cancel(conn: &Conn, a: ReasonArgs, output: Output) -> Result<ExitCode, CliError> {
    let mut c = conn.connect().await?;
    let r = c
        .decision
        .cancel(pb::CancelRequest {
            job_id: a.job_id,
            reason: a.reason,
        })
        .await
        .map_err(refused)?
        .into_inner();
    print_record(&r.job.unwrap_or_default(), output);
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("content").required(true).args(["job", "job_hash"])))]
pub struct BindArgs {
    pub job_id: String,
    /// The job about to run, as JSON (gavel recomputes its hash).
    #[arg(long)]
    pub job: Option<PathBuf>,
    /// Or only its hash.
    #[arg(long)]
    pub job_hash: Option<String>,
    /// The snapshot id the decision named.
    #[arg(long)]
    pub snapshot: String,
}

pub async fn bind(conn: &Conn, a: BindArgs, output: Output) -> Result<ExitCode, CliError> {
    let content = match (&a.job, a.job_hash) {
        (Some(path), _) => {
            let mut j = wire_job(path)?;
            j.job_id = a.job_id.clone();
            pb::bind_request::Content::Job(j)
        }
        (None, Some(h)) => pb::bind_request::Content::JobHash(h),
        (None, None) => return Err(CliError("pass --job FILE or --job-hash HEX".into())),
    };
    let mut c = conn.connect().await?;
    let b = c
        .decision
        .bind(pb::BindRequest {
            job_id: a.job_id,
            content: Some(content),
            policy_snapshot: a.snapshot,
        })
        .await
        .map_err(refused)?
        .into_inner();
    match output {
        Output::Json => print_json(&json!({
            "bind_id": b.bind_id,
            "job_id": b.job_id,
            "job_hash": b.job_hash,
            "policy_snapshot": b.policy_snapshot,
            "decision": decision_name(b.decision),
            "constraints": struct_json(&b.constraints),
            "approvals": approvals_json(&b.approvals),
            "canonical_job": b.canonical_job,
            "overridden": b.overridden,
            "bound_at": ts(&b.bound_at),
            "receipt": b.receipt,
        })),
        Output::Text => {
            say!("bound:       {} (bind id {})", b.job_id, b.bind_id);
            for a in &b.approvals {
                say!("approved by: {} as {}: {}", a.approver, a.role, a.reason);
            }
            say!("constraints: {}", struct_json(&b.constraints));
            say!("run exactly: {}", b.canonical_job);
            say!("receipt:     {}", b.receipt);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("outcome").required(true).args(["succeeded", "failed"])))]
pub struct ReportArgs {
    pub job_id: String,
    #[arg(long)]
    pub bind_id: String,
    #[arg(long)]
    pub succeeded: bool,
    #[arg(long)]
    pub failed: bool,
    #[arg(long, default_value = "")]
    pub detail: String,
}

pub async fn report(conn: &Conn, a: ReportArgs, output: Output) -> Result<ExitCode, CliError> {
    let mut c = conn.connect().await?;
    let outcome = if a.succeeded {
        pb::Outcome::Succeeded
    } else {
        pb::Outcome::Failed
    };
    let r = c
        .decision
        .report_outcome(pb::ReportOutcomeRequest {
            job_id: a.job_id,
            bind_id: a.bind_id,
            outcome: outcome as i32,
            detail: a.detail,
        })
        .await
        .map_err(refused)?
        .into_inner();
    print_record(&r.job.unwrap_or_default(), output);
    Ok(ExitCode::SUCCESS)
}

pub async fn get(
    conn: &Conn,
    job_id: String,
    field: Option<String>,
    output: Output,
) -> Result<ExitCode, CliError> {
    let mut c = conn.connect().await?;
    let r = c
        .decision
        .get_job(pb::GetJobRequest { job_id })
        .await
        .map_err(refused)?
        .into_inner()
        .job
        .unwrap_or_default();
    match field {
        Some(f) => {
            let v = record_json(&r);
            let value = v
                .get(&f)
                .ok_or_else(|| CliError(format!("no field `{f}` in a job record")))?;
            match value {
                Value::String(s) => say!("{s}"),
                other => say!("{other}"),
            }
        }
        None => print_record(&r, output),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn watch(conn: &Conn, job_id: String, output: Output) -> Result<ExitCode, CliError> {
    let mut c = conn.connect().await?;
    let mut stream = c
        .decision
        .watch_job(pb::WatchJobRequest { job_id })
        .await
        .map_err(refused)?
        .into_inner();
    while let Some(ev) = stream.message().await.map_err(refused)? {
        let r = ev.job.unwrap_or_default();
        match output {
            Output::Json => {
                let mut v = record_json(&r);
                v["event"] = json!(ev.kind);
                say!("{v}");
            }
            Output::Text => say!(
                "{:<12} {:<10} {}",
                ev.kind,
                state_name(r.state),
                r.approvals
                    .iter()
                    .map(|a| a.approver.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Also list resolved jobs.
    #[arg(long)]
    pub include_resolved: bool,
    /// Only jobs you may act on now.
    #[arg(long)]
    pub actionable: bool,
    /// Only overrides waiting for acknowledgement.
    #[arg(long)]
    pub overrides: bool,
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

pub async fn list(conn: &Conn, a: ListArgs, output: Output) -> Result<ExitCode, CliError> {
    let mut c = conn.connect().await?;
    let r = c
        .approval
        .list_approvals(pb::ListApprovalsRequest {
            include_resolved: a.include_resolved,
            tenant: a.tenant.unwrap_or_default(),
            actionable_only: a.actionable,
            unacknowledged_overrides: a.overrides,
            page_size: a.limit,
            page_token: String::new(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    match output {
        Output::Json => print_json(&json!({
            "items": r.items.iter().map(record_json).collect::<Vec<_>>(),
            "next_page_token": r.next_page_token,
        })),
        Output::Text => {
            for i in &r.items {
                let id = i.job.as_ref().map_or("", |j| j.job_id.as_str());
                let filled: u32 = i.gates.iter().map(|g| g.filled).sum();
                let need: u32 = i.gates.iter().map(|g| g.approvers).sum();
                let title = i.decision_summary.as_ref().map_or("", |s| s.title.as_str());
                say!(
                    "{id:<38} {:<10} {filled}/{need}  {title}",
                    state_name(i.state)
                );
            }
            if r.items.is_empty() {
                say!("(nothing waiting)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

// ------------------------------------------------------------ policy

pub async fn policy_reload(
    conn: &Conn,
    file: &Path,
    tenant: Option<String>,
    dry_run: bool,
    output: Output,
) -> Result<ExitCode, CliError> {
    let source = super::read_text(file, super::MAX_POLICY_BYTES)?;
    let mut c = conn.connect().await?;
    let r = c
        .policy
        .reload_policy(pb::ReloadPolicyRequest {
            source,
            filename: file.display().to_string(),
            dry_run,
            tenant: tenant.unwrap_or_default(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    let s = r.snapshot.unwrap_or_default();
    match output {
        Output::Json => print_json(&json!({
            "policy_snapshot": s.id, "version": s.version, "activated": r.activated,
            "unchanged": r.unchanged,
            "warnings": r.findings.iter().map(|f| format!("{}:{}:{}: warning[{}]: {}", f.file, f.line, f.column, f.code, f.message)).collect::<Vec<_>>(),
        })),
        Output::Text => {
            for f in &r.findings {
                say!(
                    "{}:{}:{}: warning[{}]: {}",
                    f.file,
                    f.line,
                    f.column,
                    f.code,
                    f.message
                );
            }
            let what = if dry_run {
                "valid (dry run, not activated)"
            } else if r.unchanged {
                "already active"
            } else {
                "activated"
            };
            say!("{}: {what}", s.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn snapshot_json(s: &pb::Snapshot) -> Value {
    json!({
        "id": s.id, "name": s.name, "version": s.version, "active": s.active, "revoked": s.revoked,
        "rules": s.rule_count, "activated_at": ts(&s.activated_at), "activated_by": s.activated_by,
        "revoke_reason": s.revoke_reason,
    })
}

pub async fn policy_show(
    conn: &Conn,
    id: Option<String>,
    tenant: Option<String>,
    output: Output,
) -> Result<ExitCode, CliError> {
    let mut c = conn.connect().await?;
    let s = c
        .policy
        .get_policy(pb::GetPolicyRequest {
            snapshot_id: id.unwrap_or_default(),
            tenant: tenant.unwrap_or_default(),
        })
        .await
        .map_err(refused)?
        .into_inner()
        .snapshot
        .unwrap_or_default();
    match output {
        Output::Json => {
            let mut v = snapshot_json(&s);
            v["source"] = json!(s.source);
            print_json(&v);
        }
        Output::Text => {
            say!(
                "# {} (version {}{})",
                s.id,
                s.version,
                if s.active { ", active" } else { "" }
            );
            say_raw!("{}", s.source);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn policy_list(conn: &Conn, output: Output) -> Result<ExitCode, CliError> {
    let mut c = conn.connect().await?;
    let r = c
        .policy
        .list_snapshots(pb::ListSnapshotsRequest {
            name: String::new(),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    match output {
        Output::Json => print_json(
            &json!({ "snapshots": r.snapshots.iter().map(snapshot_json).collect::<Vec<_>>() }),
        ),
        Output::Text => {
            for s in &r.snapshots {
                let mark = if s.active {
                    "active"
                } else if s.revoked {
                    "revoked"
                } else {
                    ""
                };
                say!("{:>3}  {:<7} {}", s.version, mark, s.id);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn policy_revoke(
    conn: &Conn,
    id: String,
    reason: String,
    output: Output,
) -> Result<ExitCode, CliError> {
    let mut c = conn.connect().await?;
    let s = c
        .policy
        .revoke_snapshot(pb::RevokeSnapshotRequest {
            snapshot_id: id,
            reason,
        })
        .await
        .map_err(refused)?
        .into_inner()
        .snapshot
        .unwrap_or_default();
    match output {
        Output::Json => print_json(&snapshot_json(&s)),
        Output::Text => say!("{}: revoked", s.id),
    }
    Ok(ExitCode::SUCCESS)
}

// ------------------------------------------------------------ audit

fn entry_json(e: &pb::AuditEntry) -> Value {
    json!({
        "chain": e.chain, "seq": e.seq, "at": ts(&e.at), "kind": e.kind, "actor": e.actor,
        "job_id": e.job_id, "snapshot_id": e.snapshot_id, "tenant": e.tenant,
        "body": serde_json::from_str::<Value>(&e.body).unwrap_or(Value::Null),
        "prev_hash": e.prev_hash, "entry_hash": e.entry_hash,
    })
}

pub async fn audit_verify(
    conn: &Conn,
    checkpoints: Vec<String>,
    output: Output,
) -> Result<ExitCode, CliError> {
    let mut c = conn.connect().await?;
    let v = c
        .audit
        .verify_audit(pb::VerifyAuditRequest { checkpoints })
        .await
        .map_err(refused)?
        .into_inner();
    let reports: Vec<crate::audit::ChainReport> = v
        .chains
        .iter()
        .map(|c| crate::audit::ChainReport {
            chain: c.chain.clone(),
            entries: c.entries,
            head_hash: c.head_hash.clone(),
            ok: c.ok,
            first_bad_seq: (!c.ok).then_some(c.first_bad_seq as i64),
            problem: (!c.problem.is_empty()).then(|| c.problem.clone()),
        })
        .collect();
    Ok(print_verification(&reports, output))
}

/// Signs every chain's head now; prints one checkpoint per line (JSON:
/// each with its decoded payload).
pub async fn audit_checkpoints(conn: &Conn, output: Output) -> Result<ExitCode, CliError> {
    let mut c = conn.connect().await?;
    let signed = c
        .audit
        .sign_checkpoints(pb::SignCheckpointsRequest {})
        .await
        .map_err(refused)?
        .into_inner()
        .checkpoints;
    match output {
        Output::Text => {
            for jws in &signed {
                say!("{jws}");
            }
        }
        Output::Json => {
            let decoded: Vec<Value> = signed
                .iter()
                .map(|jws| {
                    let payload = jws
                        .split('.')
                        .nth(1)
                        .and_then(|p| {
                            base64::Engine::decode(
                                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                                p,
                            )
                            .ok()
                        })
                        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                        .unwrap_or(Value::Null);
                    json!({ "checkpoint": jws, "payload": payload })
                })
                .collect();
            print_json(&json!({ "checkpoints": decoded }));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints chain reports; exit 1 when any chain fails.
pub fn print_verification(reports: &[crate::audit::ChainReport], output: Output) -> ExitCode {
    let ok = reports.iter().all(|c| c.ok);
    match output {
        Output::Json => print_json(&json!({
            "ok": ok,
            "entries": reports.iter().map(|c| c.entries).sum::<u64>(),
            "chains": reports,
        })),
        Output::Text => {
            for c in reports {
                if c.ok {
                    say!(
                        "chain {}: {} entries, ok (head {})",
                        c.chain,
                        c.entries,
                        c.head_hash
                    );
                } else {
                    say!(
                        "chain {}: TAMPERED at seq {}: {}",
                        c.chain,
                        c.first_bad_seq.unwrap_or(0),
                        c.problem.as_deref().unwrap_or("")
                    );
                }
            }
            if reports.is_empty() {
                say!("no audit entries");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub async fn audit_job(
    conn: &Conn,
    job_id: String,
    tenant: Option<String>,
    output: Output,
) -> Result<ExitCode, CliError> {
    let mut c = conn.connect().await?;
    let entries = c
        .audit
        .get_job_history(pb::GetJobHistoryRequest {
            job_id,
            tenant: tenant.unwrap_or_default(),
        })
        .await
        .map_err(refused)?
        .into_inner()
        .entries;
    match output {
        Output::Json => {
            print_json(&json!({ "entries": entries.iter().map(entry_json).collect::<Vec<_>>() }))
        }
        Output::Text => {
            for e in &entries {
                let body: Value = serde_json::from_str(&e.body).unwrap_or(Value::Null);
                let detail = match e.kind.as_str() {
                    "decision" => format!(
                        "{} by rule `{}`, state {}",
                        body["decision"].as_str().unwrap_or(""),
                        body["primary_rule"].as_str().unwrap_or(""),
                        body["state"].as_str().unwrap_or("")
                    ),
                    "approval" | "rejection" | "override" | "cancel" => {
                        format!("\"{}\"", body["reason"].as_str().unwrap_or(""))
                    }
                    "bind" => format!("bind id {}", body["bind_id"].as_str().unwrap_or("")),
                    "bind_refused" => body["reason"].as_str().unwrap_or("").to_owned(),
                    "outcome" => format!(
                        "{} {}",
                        if body["succeeded"].as_bool() == Some(true) {
                            "succeeded"
                        } else {
                            "failed"
                        },
                        body["detail"].as_str().unwrap_or("")
                    ),
                    _ => String::new(),
                };
                let at = e.at.as_ref().map_or(0, |t| t.seconds);
                say!("{at}  {:<13} {:<14} {detail}", e.kind, e.actor);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn audit_export(
    conn: &Conn,
    chain: Option<String>,
    after_seq: u64,
    job_id: Option<String>,
    tenant: Option<String>,
) -> Result<ExitCode, CliError> {
    let mut c = conn.connect().await?;
    let mut stream = c
        .audit
        .export_audit(pb::ExportAuditRequest {
            tenant: tenant.unwrap_or_default(),
            chain: chain.unwrap_or_default(),
            after_seq,
            job_id: job_id.unwrap_or_default(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    while let Some(e) = stream.message().await.map_err(refused)? {
        say!("{}", entry_json(&e));
    }
    Ok(ExitCode::SUCCESS)
}
