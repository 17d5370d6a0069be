//! The decide → bind loop shared by the doors that gate a tool call on an
//! agent's behalf (`gavel hook`, `gavel mcp-proxy`).
//!
//! A tool call's job id is derived from its content, so the same call
//! retried finds its earlier decision: still pending, approved (then it is
//! bound and runs), rejected or denied. Once a job has been bound (or has
//! expired or been cancelled) an identical call is a new job, the next
//! *generation* of the same base id (`base`, `base.1`, `base.2`, …).

use super::client::{Conn, bearer_header, reason_of, refused};
use crate::job::Job;
use crate::proto::v1 as pb;
use crate::proto::v1::decision_service_client::DecisionServiceClient;
use crate::proto::v1::policy_service_client::PolicyServiceClient;
use crate::service::convert;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

/// The options every agent door (hook, MCP proxy) takes besides the
/// agent's own token.
#[derive(clap::Args, Clone, Debug)]
pub struct DoorArgs {
    /// The token Bind and ReportOutcome are called with (an executor's);
    /// `--token` when absent.
    #[arg(long, env = "GAVEL_EXECUTOR_TOKEN", hide_env_values = true)]
    pub executor_token: Option<String>,
    /// The approver page's base URL, for the pointer in "approval required".
    #[arg(
        long,
        env = "GAVEL_PAGE_URL",
        default_value = "http://127.0.0.1:8081/ui/"
    )]
    pub page_url: String,
}

impl DoorArgs {
    /// The page where `job_id` is approved.
    pub fn job_url(&self, job_id: &str) -> String {
        format!("{}/jobs/{job_id}", self.page_url.trim_end_matches('/'))
    }
}

/// Past this many generations of one call the loop gives up.
pub const MAX_GENERATIONS: u32 = 1000;

/// What became of one tool call.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Denied by the policy.
    Deny {
        job_id: String,
        rule: String,
        reason: String,
    },
    /// Waiting for approval.
    Pending {
        job_id: String,
        rule: String,
        reason: String,
    },
    /// An approver rejected it.
    Rejected {
        job_id: String,
        by: String,
        comment: String,
    },
    /// Bound: run exactly `params`, then report with `bind_id`.
    Bound {
        job_id: String,
        bind_id: String,
        rule: String,
        /// The job's params as Bind returned them (canonical).
        params: Map<String, Value>,
        /// The decision's constraints, as JSON.
        constraints: Map<String, Value>,
    },
}

/// A connection to gavel with the agent's and the executor's credentials.
#[derive(Clone)]
pub struct Gate {
    client: DecisionServiceClient<Channel>,
    policy: PolicyServiceClient<Channel>,
    /// `None`: the client certificate is the credential.
    agent: Option<MetadataValue<Ascii>>,
    executor: Option<MetadataValue<Ascii>>,
    /// Per base id, the first generation not known to be used up, so a
    /// long-lived caller does not walk the whole chain on every call.
    next_generation: Arc<Mutex<HashMap<String, u32>>>,
}

fn with_token<T>(msg: T, header: &Option<MetadataValue<Ascii>>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(h) = header {
        req.metadata_mut().insert("authorization", h.clone());
    }
    req
}

/// The agent's and the executor's `authorization` values; `None` where the
/// client certificate stands in.
type Headers = (Option<MetadataValue<Ascii>>, Option<MetadataValue<Ascii>>);

fn headers(conn: &Conn, executor_token: Option<&str>) -> Result<Headers, String> {
    let agent = conn.authorization().map_err(|e| e.0)?;
    let executor = match executor_token {
        Some(t) => Some(bearer_header(t).map_err(|e| e.0)?),
        None => agent.clone(),
    };
    Ok((agent, executor))
}

impl Gate {
    /// Connects to the server `conn` names; Decide is called with its token
    /// (or its client certificate), Bind and ReportOutcome with
    /// `executor_token` (the agent's credential when absent).
    pub async fn connect(conn: &Conn, executor_token: Option<&str>) -> Result<Gate, String> {
        let (agent, executor) = headers(conn, executor_token)?;
        let channel = conn
            .endpoint()
            .map_err(|e| e.0)?
            .connect()
            .await
            .map_err(|e| format!("cannot reach gavel at {}: {e}", conn.server))?;
        Ok(Gate::over(channel, agent, executor))
    }

    /// As [`Gate::connect`], over a channel that connects on first use
    /// (and reconnects after the server comes back).
    pub fn lazy(conn: &Conn, executor_token: Option<&str>) -> Result<Gate, String> {
        let (agent, executor) = headers(conn, executor_token)?;
        let channel = conn
            .endpoint()
            .map_err(|e| e.0)?
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy();
        Ok(Gate::over(channel, agent, executor))
    }

    fn over(
        channel: Channel,
        agent: Option<MetadataValue<Ascii>>,
        executor: Option<MetadataValue<Ascii>>,
    ) -> Gate {
        Gate {
            client: DecisionServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            policy: PolicyServiceClient::new(channel),
            agent,
            executor,
            next_generation: Arc::default(),
        }
    }

    /// Decides `job` under the first id `id_of(generation)` that is not used
    /// up, and binds it when allowed or approved.
    pub async fn run(&self, job: &Job, id_of: impl Fn(u32) -> String) -> Result<Outcome, String> {
        let canonical = job.canonical_json();
        let base = id_of(0);
        let first = self.first_generation(&base);
        let mut client = self.client.clone();
        for generation in first..MAX_GENERATIONS {
            let job_id = id_of(generation);
            let wire = convert::job_from_canonical(&job_id, &canonical);
            let d = client
                .decide(with_token(
                    pb::DecideRequest {
                        job: Some(wire.clone()),
                    },
                    &self.agent,
                ))
                .await
                .map_err(|s| refused(s).0)?
                .into_inner();
            if d.decision == pb::Decision::Deny as i32 {
                return Ok(Outcome::Deny {
                    job_id,
                    rule: d.primary_rule,
                    reason: d.reason,
                });
            }
            match pb::JobState::try_from(d.state) {
                Ok(pb::JobState::Pending) => {
                    return Ok(Outcome::Pending {
                        job_id,
                        rule: d.primary_rule,
                        reason: d.reason,
                    });
                }
                Ok(pb::JobState::Allowed | pb::JobState::Approved) => {
                    let bound = client
                        .bind(with_token(
                            pb::BindRequest {
                                job_id: job_id.clone(),
                                content: Some(pb::bind_request::Content::Job(wire)),
                                policy_snapshot: d.policy_snapshot.clone(),
                            },
                            &self.executor,
                        ))
                        .await;
                    match bound {
                        Ok(b) => {
                            self.used_up(&base, generation + 1);
                            let b = b.into_inner();
                            let bound_job: Value =
                                serde_json::from_str(&b.canonical_job).map_err(|e| {
                                    format!("Bind returned a job that is not JSON: {e}")
                                })?;
                            let params = bound_job
                                .get("params")
                                .and_then(Value::as_object)
                                .ok_or("Bind returned a job without params")?
                                .clone();
                            let constraints = match d.constraints.as_ref() {
                                Some(s) => convert::struct_to_map(s, "constraints")
                                    .map_err(|r| r.message)?,
                                None => Map::new(),
                            };
                            return Ok(Outcome::Bound {
                                job_id,
                                bind_id: b.bind_id,
                                rule: d.primary_rule,
                                params,
                                constraints,
                            });
                        }
                        // Another run of the same call won the bind: that one
                        // runs; this one is a new job.
                        Err(s) if reason_of(&s) == Some("ALREADY_BOUND") => {
                            self.used_up(&base, generation + 1);
                            continue;
                        }
                        Err(s) => return Err(refused(s).0),
                    }
                }
                Ok(pb::JobState::Rejected) => {
                    let rec = client
                        .get_job(with_token(
                            pb::GetJobRequest {
                                job_id: job_id.clone(),
                            },
                            &self.agent,
                        ))
                        .await
                        .map_err(|s| refused(s).0)?
                        .into_inner()
                        .job
                        .unwrap_or_default();
                    return Ok(Outcome::Rejected {
                        job_id,
                        by: rec.resolved_by,
                        comment: rec.resolved_comment,
                    });
                }
                // Run already, or no longer waiting: an identical call is a new job.
                Ok(
                    pb::JobState::Bound
                    | pb::JobState::Succeeded
                    | pb::JobState::Failed
                    | pb::JobState::Expired
                    | pb::JobState::Cancelled,
                ) => {
                    self.used_up(&base, generation + 1);
                    continue;
                }
                _ => {
                    return Err(format!(
                        "gavel answered job {job_id} with an unexpected state ({})",
                        d.state
                    ));
                }
            }
        }
        Err(format!(
            "this exact call already ran {MAX_GENERATIONS} times"
        ))
    }

    fn first_generation(&self, base: &str) -> u32 {
        let known = self
            .next_generation
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        known.get(base).copied().unwrap_or(0)
    }

    fn used_up(&self, base: &str, next: u32) {
        let mut known = self
            .next_generation
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let slot = known.entry(base.to_owned()).or_insert(0);
        *slot = (*slot).max(next);
    }

    /// Follows `job_id` until it is no longer pending: its record then, or
    /// `None` when the stream ended while it was still pending (the caller
    /// follows again).
    pub async fn wait_until_resolved(&self, job_id: &str) -> Result<Option<pb::JobRecord>, String> {
        let mut client = self.client.clone();
        let mut stream = client
            .watch_job(with_token(
                pb::WatchJobRequest {
                    job_id: job_id.to_owned(),
                },
                &self.agent,
            ))
            .await
            .map_err(|s| refused(s).0)?
            .into_inner();
        loop {
            match stream.message().await {
                Ok(Some(ev)) => {
                    if let Some(job) = ev.job
                        && job.state != pb::JobState::Pending as i32
                    {
                        return Ok(Some(job));
                    }
                }
                Ok(None) => return Ok(None),
                Err(s) => return Err(refused(s).0),
            }
        }
    }

    /// Reports how a bound call ended.
    pub async fn report(
        &self,
        job_id: &str,
        bind_id: &str,
        ok: bool,
        detail: &str,
    ) -> Result<(), String> {
        let outcome = if ok {
            pb::Outcome::Succeeded
        } else {
            pb::Outcome::Failed
        };
        let mut client = self.client.clone();
        client
            .report_outcome(with_token(
                pb::ReportOutcomeRequest {
                    job_id: job_id.to_owned(),
                    bind_id: bind_id.to_owned(),
                    outcome: outcome as i32,
                    detail: detail.to_owned(),
                },
                &self.executor,
            ))
            .await
            .map_err(|s| refused(s).0)?;
        Ok(())
    }

    /// The decision `job` would get now, without recording anything.
    pub async fn explain(&self, job: &Job) -> Result<pb::Decision, String> {
        let wire = convert::job_from_canonical("", &job.canonical_json());
        let mut client = self.policy.clone();
        let r = client
            .explain(with_token(
                pb::ExplainRequest {
                    job: Some(wire),
                    principal: String::new(),
                    snapshot_id: String::new(),
                },
                &self.agent,
            ))
            .await
            .map_err(|s| refused(s).0)?
            .into_inner();
        let d = r
            .decision
            .map_or(pb::Decision::Unspecified as i32, |d| d.decision);
        pb::Decision::try_from(d).map_err(|_| format!("gavel answered an unknown decision ({d})"))
    }
}
