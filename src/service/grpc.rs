//! The gRPC door: authenticate the bearer token, translate the request,
//! call the engine, translate the answer. No rule lives here.

use super::convert::{self, invalid, status};
use crate::engine::{ApprovalQuery, Approve, BindContent, Engine, ExportFilter};
use crate::identity::{Identity, NoCaller};
use crate::policy::Channel;
use crate::proto::v1 as pb;
use crate::proto::v1::approval_service_server::ApprovalService;
use crate::proto::v1::audit_service_server::AuditService;
use crate::proto::v1::decision_service_server::DecisionService;
use crate::proto::v1::policy_service_server::PolicyService;
use crate::refusal::{Reason, Refusal};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

/// The four gavel services over one engine.
#[derive(Clone)]
pub struct Grpc {
    engine: Arc<Engine>,
}

impl Grpc {
    pub fn new(engine: Arc<Engine>) -> Grpc {
        Grpc { engine }
    }

    /// The caller, from `authorization: Bearer <token>` or a verified
    /// client certificate; never from the body.
    fn caller<T>(&self, req: &Request<T>) -> Result<Identity, Status> {
        let unauthenticated = |m: &str| status(&Refusal::new(Reason::Unauthenticated, m));
        let value = match req.metadata().get("authorization") {
            None => None,
            Some(h) => Some(
                h.to_str()
                    .map_err(|_| unauthenticated("the authorization metadata is not text"))?,
            ),
        };
        let peer = req.extensions().get::<crate::tls::Peer>();
        self.engine
            .directory()
            .caller(
                value,
                peer.and_then(|p| p.cert.as_deref()),
                self.engine.now(),
            )
            .map_err(|e| match e {
                NoCaller::NoCredential => {
                    unauthenticated("missing `authorization: Bearer <token>` metadata")
                }
                NoCaller::NotBearer => {
                    unauthenticated("the authorization metadata must be `Bearer <token>`")
                }
                NoCaller::Refused(m) => unauthenticated(m),
            })
            .inspect(|who| crate::observe::identity(&who.name))
            .and_then(|who| {
                self.engine.admit(&who).map_err(|r| status(&r))?;
                Ok(who)
            })
    }
}

type Result2<T> = std::result::Result<Response<T>, Status>;
type EventStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send>>;

fn ok<T>(v: T) -> Result2<T> {
    Ok(Response::new(v))
}

/// An optional string field: empty means absent.
fn given(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[tonic::async_trait]
impl DecisionService for Grpc {
    async fn decide(&self, req: Request<pb::DecideRequest>) -> Result2<pb::DecideResponse> {
        let who = self.caller(&req)?;
        let input = convert::job_input(req.into_inner().job).map_err(|r| status(&r))?;
        let d = self
            .engine
            .decide(&who, input)
            .await
            .map_err(|r| status(&r))?;
        ok(convert::decide_response(&d.view, d.replayed))
    }

    async fn bind(&self, req: Request<pb::BindRequest>) -> Result2<pb::BindResponse> {
        let who = self.caller(&req)?;
        let r = req.into_inner();
        let content = match r.content {
            Some(pb::bind_request::Content::Job(j)) => BindContent::Job(Box::new(
                convert::job_input(Some(j)).map_err(|r| status(&r))?,
            )),
            Some(pb::bind_request::Content::JobHash(h)) => BindContent::Hash(h),
            None => {
                return Err(status(&invalid(
                    "content",
                    "send the job about to run (preferred) or its job_hash",
                )));
            }
        };
        let b = self
            .engine
            .bind(&who, &r.job_id, content, &r.policy_snapshot)
            .await
            .map_err(|r| status(&r))?;
        let rec = &b.view.record;
        ok(pb::BindResponse {
            bind_id: b.bind_id.clone(),
            job_id: rec.job_id.clone(),
            job_hash: rec.job_hash.to_string(),
            policy_snapshot: rec.snapshot_id.to_string(),
            decision: convert::decision_to_proto(rec.evaluation.decision),
            constraints: Some(convert::constraints(&rec.evaluation.constraints)),
            approvals: convert::approvals(&b.view),
            canonical_job: rec.canonical_job.clone(),
            receipt: b.receipt.clone(),
            bound_at: rec.bound_at.map(convert::timestamp),
            overridden: rec.overridden,
        })
    }

    async fn report_outcome(
        &self,
        req: Request<pb::ReportOutcomeRequest>,
    ) -> Result2<pb::ReportOutcomeResponse> {
        let who = self.caller(&req)?;
        let r = req.into_inner();
        let succeeded = match pb::Outcome::try_from(r.outcome) {
            Ok(pb::Outcome::Succeeded) => true,
            Ok(pb::Outcome::Failed) => false,
            _ => {
                return Err(status(&invalid(
                    "outcome",
                    "outcome must be SUCCEEDED or FAILED",
                )));
            }
        };
        let rec = self
            .engine
            .report_outcome(&who, &r.job_id, &r.bind_id, succeeded, &r.detail)
            .await
            .map_err(|r| status(&r))?;
        ok(pb::ReportOutcomeResponse {
            job: Some(convert::record(&rec)),
        })
    }

    async fn cancel(&self, req: Request<pb::CancelRequest>) -> Result2<pb::CancelResponse> {
        let who = self.caller(&req)?;
        let r = req.into_inner();
        let rec = self
            .engine
            .cancel(&who, &r.job_id, &r.reason)
            .await
            .map_err(|r| status(&r))?;
        ok(pb::CancelResponse {
            job: Some(convert::record(&rec)),
        })
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Result2<pb::GetJobResponse> {
        let who = self.caller(&req)?;
        let rec = self
            .engine
            .get_job(&who, &req.into_inner().job_id)
            .await
            .map_err(|r| status(&r))?;
        ok(pb::GetJobResponse {
            job: Some(convert::record(&rec)),
        })
    }

    async fn get_receipt_keys(
        &self,
        req: Request<pb::GetReceiptKeysRequest>,
    ) -> Result2<pb::GetReceiptKeysResponse> {
        self.caller(&req)?;
        ok(pb::GetReceiptKeysResponse {
            jwks: self.engine.jwks().to_string(),
        })
    }

    type WatchJobStream = EventStream<pb::JobEvent>;

    async fn watch_job(&self, req: Request<pb::WatchJobRequest>) -> Result2<Self::WatchJobStream> {
        let who = self.caller(&req)?;
        let events = self
            .engine
            .watch(&who, &req.into_inner().job_id)
            .await
            .map_err(|r| status(&r))?;
        ok(Box::pin(events.map(|e| {
            e.map(|e| pb::JobEvent {
                job: Some(convert::record(&e.view)),
                kind: e.kind.map_or("update", |k| k.as_str()).into(),
                at: Some(convert::timestamp(e.at)),
            })
            .map_err(|r| status(&r))
        })))
    }
}

#[tonic::async_trait]
impl ApprovalService for Grpc {
    async fn list_approvals(
        &self,
        req: Request<pb::ListApprovalsRequest>,
    ) -> Result2<pb::ListApprovalsResponse> {
        let who = self.caller(&req)?;
        let r = req.into_inner();
        let page = self
            .engine
            .list_approvals(
                &who,
                ApprovalQuery {
                    include_resolved: r.include_resolved,
                    tenant: given(r.tenant),
                    actionable_only: r.actionable_only,
                    unacknowledged_overrides: r.unacknowledged_overrides,
                    page_size: r.page_size,
                    page_token: r.page_token,
                    ..ApprovalQuery::default()
                },
            )
            .await
            .map_err(|r| status(&r))?;
        ok(pb::ListApprovalsResponse {
            items: page.items.iter().map(convert::record).collect(),
            next_page_token: page.next_page_token,
        })
    }

    async fn approve(&self, req: Request<pb::ApproveRequest>) -> Result2<pb::ApproveResponse> {
        let who = self.caller(&req)?;
        let r = req.into_inner();
        let rec = self
            .engine
            .approve(
                &who,
                &r.job_id,
                Approve {
                    reason: r.reason,
                    note: r.note,
                    channel: Channel::Grpc,
                    expected_job_hash: given(r.expected_job_hash),
                    expected_snapshot: given(r.expected_policy_snapshot),
                },
            )
            .await
            .map_err(|r| status(&r))?;
        ok(pb::ApproveResponse {
            job: Some(convert::record(&rec)),
        })
    }

    async fn reject(&self, req: Request<pb::RejectRequest>) -> Result2<pb::RejectResponse> {
        let who = self.caller(&req)?;
        let r = req.into_inner();
        let rec = self
            .engine
            .reject(&who, &r.job_id, &r.reason, &r.note)
            .await
            .map_err(|r| status(&r))?;
        ok(pb::RejectResponse {
            job: Some(convert::record(&rec)),
        })
    }

    async fn r#override(&self, req: Request<pb::OverrideRequest>) -> Result2<pb::OverrideResponse> {
        let who = self.caller(&req)?;
        let r = req.into_inner();
        let rec = self
            .engine
            .override_job(&who, &r.job_id, &r.reason, &r.note)
            .await
            .map_err(|r| status(&r))?;
        ok(pb::OverrideResponse {
            job: Some(convert::record(&rec)),
        })
    }

    async fn acknowledge_override(
        &self,
        req: Request<pb::AcknowledgeOverrideRequest>,
    ) -> Result2<pb::AcknowledgeOverrideResponse> {
        let who = self.caller(&req)?;
        let r = req.into_inner();
        let rec = self
            .engine
            .acknowledge_override(&who, &r.job_id, &r.note)
            .await
            .map_err(|r| status(&r))?;
        ok(pb::AcknowledgeOverrideResponse {
            job: Some(convert::record(&rec)),
        })
    }
}

#[tonic::async_trait]
impl PolicyService for Grpc {
    async fn reload_policy(
        &self,
        req: Request<pb::ReloadPolicyRequest>,
    ) -> Result2<pb::ReloadPolicyResponse> {
        let who = self.caller(&req)?;
        let r = req.into_inner();
        let file = if r.filename.is_empty() {
            "inline"
        } else {
            r.filename.as_str()
        };
        let out = self
            .engine
            .reload_policy(&who, &r.tenant, &r.source, file, r.dry_run)
            .await
            .map_err(|r| status(&r))?;
        ok(pb::ReloadPolicyResponse {
            snapshot: Some(convert::snapshot(&out.snapshot, out.active, false)),
            activated: out.activated,
            unchanged: out.unchanged,
            findings: out.warnings.iter().map(convert::finding).collect(),
        })
    }

    async fn get_policy(
        &self,
        req: Request<pb::GetPolicyRequest>,
    ) -> Result2<pb::GetPolicyResponse> {
        let who = self.caller(&req)?;
        let r = req.into_inner();
        let v = self
            .engine
            .get_policy(&who, &r.tenant, &r.snapshot_id)
            .await
            .map_err(|r| status(&r))?;
        ok(pb::GetPolicyResponse {
            snapshot: Some(convert::snapshot(&v.row, v.active, true)),
        })
    }

    async fn list_snapshots(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> Result2<pb::ListSnapshotsResponse> {
        let who = self.caller(&req)?;
        let r = req.into_inner();
        let page = self
            .engine
            .list_snapshots(
                &who,
                (!r.name.is_empty()).then_some(r.name.as_str()),
                r.page_size,
                &r.page_token,
            )
            .await
            .map_err(|r| status(&r))?;
        ok(pb::ListSnapshotsResponse {
            snapshots: page
                .items
                .iter()
                .map(|v| convert::snapshot(&v.row, v.active, false))
                .collect(),
            next_page_token: page.next_page_token,
        })
    }

    async fn revoke_snapshot(
        &self,
        req: Request<pb::RevokeSnapshotRequest>,
    ) -> Result2<pb::RevokeSnapshotResponse> {
        let who = self.caller(&req)?;
        let r = req.into_inner();
        let v = self
            .engine
            .revoke_snapshot(&who, &r.snapshot_id, &r.reason)
            .await
            .map_err(|r| status(&r))?;
        ok(pb::RevokeSnapshotResponse {
            snapshot: Some(convert::snapshot(&v.row, v.active, false)),
        })
    }

    async fn explain(&self, req: Request<pb::ExplainRequest>) -> Result2<pb::ExplainResponse> {
        let who = self.caller(&req)?;
        let r = req.into_inner();
        let input = convert::job_input(r.job).map_err(|r| status(&r))?;
        let (x, hash, snap) = self
            .engine
            .explain(&who, input, &r.principal, &r.snapshot_id)
            .await
            .map_err(|r| status(&r))?;
        ok(pb::ExplainResponse {
            decision: Some(convert::evaluation_response(
                &x.evaluation,
                hash.as_str(),
                snap.as_str(),
            )),
            rules: x
                .rules
                .iter()
                .map(|r| pb::RuleExplanation {
                    rule: r.rule.clone(),
                    decision: convert::decision_to_proto(r.decision),
                    matched: r.matched,
                    failures: r
                        .failures
                        .iter()
                        .map(|f| pb::MatcherResult {
                            matcher: f.matcher.clone(),
                            detail: f.detail.clone(),
                        })
                        .collect(),
                })
                .collect(),
            constraint_conflicts: x
                .evaluation
                .constraint_conflicts
                .iter()
                .map(|c| {
                    format!(
                        "{}: `{}` kept over `{}`",
                        c.key, c.kept_rule, c.ignored_rule
                    )
                })
                .collect(),
        })
    }
}

#[tonic::async_trait]
impl AuditService for Grpc {
    async fn get_job_history(
        &self,
        req: Request<pb::GetJobHistoryRequest>,
    ) -> Result2<pb::GetJobHistoryResponse> {
        let who = self.caller(&req)?;
        let r = req.into_inner();
        let entries = self
            .engine
            .job_history(&who, &r.job_id, given(r.tenant).as_deref())
            .await
            .map_err(|r| status(&r))?;
        ok(pb::GetJobHistoryResponse {
            entries: entries.iter().map(convert::audit_entry).collect(),
        })
    }

    async fn sign_checkpoints(
        &self,
        req: Request<pb::SignCheckpointsRequest>,
    ) -> Result2<pb::SignCheckpointsResponse> {
        let who = self.caller(&req)?;
        let checkpoints = self
            .engine
            .sign_checkpoints(&who)
            .await
            .map_err(|r| status(&r))?;
        ok(pb::SignCheckpointsResponse { checkpoints })
    }

    async fn verify_audit(
        &self,
        req: Request<pb::VerifyAuditRequest>,
    ) -> Result2<pb::VerifyAuditResponse> {
        let who = self.caller(&req)?;
        let v = self
            .engine
            .verify_audit(&who, &req.get_ref().checkpoints)
            .await
            .map_err(|r| status(&r))?;
        ok(pb::VerifyAuditResponse {
            ok: v.ok,
            entries_checked: v.entries,
            chains: v
                .chains
                .iter()
                .map(|c| pb::ChainReport {
                    chain: c.chain.clone(),
                    entries: c.entries,
                    head_hash: c.head_hash.clone(),
                    ok: c.ok,
                    first_bad_seq: c.first_bad_seq.unwrap_or(0) as u64,
                    problem: c.problem.clone().unwrap_or_default(),
                })
                .collect(),
        })
    }

    type ExportAuditStream = EventStream<pb::AuditEntry>;

    async fn export_audit(
        &self,
        req: Request<pb::ExportAuditRequest>,
    ) -> Result2<Self::ExportAuditStream> {
        let who = self.caller(&req)?;
        let r = req.into_inner();
        let entries = self
            .engine
            .export_audit(
                &who,
                ExportFilter {
                    chain: given(r.chain),
                    after_seq: i64::try_from(r.after_seq).unwrap_or(i64::MAX),
                    job_id: given(r.job_id),
                    tenant: given(r.tenant),
                },
            )
            .await
            .map_err(|r| status(&r))?;
        ok(Box::pin(entries.map(|e| {
            e.map(|e| convert::audit_entry(&e)).map_err(|r| status(&r))
        })))
    }

    async fn get_stats(&self, req: Request<pb::GetStatsRequest>) -> Result2<pb::GetStatsResponse> {
        let who = self.caller(&req)?;
        let r = req.into_inner();
        let report = self
            .engine
            .stats(&who, r.window_seconds, given(r.tenant).as_deref())
            .await
            .map_err(|r| status(&r))?;
        let report_json = serde_json::to_string(&report)
            .map_err(|e| Status::internal(format!("cannot write the report: {e}")))?;
        ok(pb::GetStatsResponse { report_json })
    }
}
