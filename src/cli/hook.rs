//! `gavel hook <agent>`: reads a coding agent's pre-tool hook payload on
//! stdin, decides the call (and binds it when allowed or approved) and
//! answers in the agent's protocol. The pure part is `crate::hook`; this
//! file only reads, calls the server and writes.
//!
//! It fails closed: whatever goes wrong (bad payload, unknown tool,
//! unreachable server, timeout, a refusal, even a panic) ends in the
//! agent's blocking answer and exit code 2, never in its "run anyway".

use super::client::{Conn, bearer_header, reason_of, refused};
use crate::hook::{self, Agent, Mapping, Verdict};
use crate::job::{Job, Limits};
use crate::proto::v1 as pb;
use crate::proto::v1::decision_service_client::DecisionServiceClient;
use crate::service::convert;
use clap::Args;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

/// The largest hook payload read from stdin.
const MAX_PAYLOAD: u64 = 4 * 1024 * 1024;

/// Identical calls in one session get job ids `base`, `base.1`, …; past
/// this many the call is blocked rather than searched further.
const MAX_GENERATIONS: u32 = 1000;

#[derive(Args, Debug)]
pub struct HookArgs {
    /// The agent whose hook protocol to speak.
    #[arg(value_enum)]
    pub agent: Agent,
    /// The mapping file (YAML) from tool calls to jobs; the built-in rules
    /// for shell commands, file writes and edits, web fetches and MCP tools
    /// when absent.
    #[arg(long, env = "GAVEL_HOOK_MAP")]
    pub map: Option<PathBuf>,
    /// The token Bind is called with (an executor's); `--token` when absent.
    #[arg(long, env = "GAVEL_EXECUTOR_TOKEN", hide_env_values = true)]
    pub executor_token: Option<String>,
    /// The approver page's base URL, for the pointer in "approval required".
    #[arg(
        long,
        env = "GAVEL_PAGE_URL",
        default_value = "http://127.0.0.1:8081/ui/"
    )]
    pub page_url: String,
    /// Block when gavel has not answered within this many seconds.
    #[arg(long, env = "GAVEL_HOOK_TIMEOUT", default_value_t = 10.0)]
    pub timeout: f64,
    /// Claude Code runs headless (`claude -p`): answer `defer` instead of a
    /// deny when approval is required, so the caller can resume the session.
    #[arg(long, env = "GAVEL_HOOK_HEADLESS")]
    pub headless: bool,
}

/// Runs the hook; every outcome, including a panic, is an answer.
pub fn run(conn: &Conn, a: HookArgs) -> ExitCode {
    let agent = a.agent;
    std::panic::set_hook(Box::new(move |info| {
        block(agent, format!("internal error: {info}"));
        std::process::exit(2);
    }));
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(answer_call(conn, a)),
        Err(e) => block(agent, format!("cannot start the async runtime: {e}")),
    }
}

/// Reads the payload, decides, writes the answer; returns the exit code.
pub async fn answer_call(conn: &Conn, a: HookArgs) -> ExitCode {
    let verdict = match read_payload() {
        Err(reason) => Verdict::Block { reason },
        Ok(bytes) => decide_with_deadline(conn, &a, &bytes).await,
    };
    let answer = hook::answer(a.agent, &verdict, a.headless);
    emit(&answer);
    ExitCode::from(answer.exit)
}

/// A command line clap refused. For `gavel hook <agent>` that is still an
/// answer in the agent's protocol (a block); otherwise clap's usual exit.
pub fn usage_error(e: clap::Error) -> ExitCode {
    use clap::ValueEnum;
    use clap::error::ErrorKind;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let is_hook = args.first().is_some_and(|a| a == "hook");
    if !is_hook || matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit()
    }
    let agent = args
        .get(1)
        .and_then(|a| Agent::from_str(a, false).ok())
        .unwrap_or(Agent::ClaudeCode);
    let first = e.to_string();
    let first = first
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("error: ");
    block(agent, format!("bad command line: {first}"))
}

/// Writes the agent's block answer; its exit code.
fn block(agent: Agent, reason: String) -> ExitCode {
    let answer = hook::answer(agent, &Verdict::Block { reason }, false);
    emit(&answer);
    ExitCode::from(answer.exit)
}

fn emit(answer: &hook::Answer) {
    let _ = std::io::stdout().lock().write_all(answer.stdout.as_bytes());
    let _ = std::io::stderr().lock().write_all(answer.stderr.as_bytes());
}

fn read_payload() -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    std::io::stdin()
        .take(MAX_PAYLOAD + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read the hook payload on stdin: {e}"))?;
    if buf.len() as u64 > MAX_PAYLOAD {
        return Err(format!(
            "the hook payload is larger than {MAX_PAYLOAD} bytes"
        ));
    }
    Ok(buf)
}

async fn decide_with_deadline(conn: &Conn, a: &HookArgs, payload: &[u8]) -> Verdict {
    if !(a.timeout.is_finite() && a.timeout > 0.0 && a.timeout <= 3600.0) {
        return Verdict::Block {
            reason: format!(
                "--timeout {}: must be a number of seconds above 0, at most 3600",
                a.timeout
            ),
        };
    }
    let limit = Duration::from_secs_f64(a.timeout);
    match tokio::time::timeout(limit, decide(conn, a, payload)).await {
        Ok(Ok(v)) => v,
        Ok(Err(reason)) => Verdict::Block { reason },
        Err(_) => Verdict::Block {
            reason: format!(
                "gavel at {} did not answer within {}s",
                conn.server, a.timeout
            ),
        },
    }
}

fn with_token<T>(msg: T, header: &MetadataValue<Ascii>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("authorization", header.clone());
    req
}

async fn decide(conn: &Conn, a: &HookArgs, payload: &[u8]) -> Result<Verdict, String> {
    let call = hook::parse(a.agent, payload).map_err(|e| e.0)?;
    let mapping = match &a.map {
        None => Mapping::builtin(),
        Some(path) => {
            let text = super::read_text(path, 1024 * 1024).map_err(|e| e.0)?;
            Mapping::from_yaml(&text, &path.display().to_string()).map_err(|e| e.0)?
        }
    };
    let job = Job::from_json_value(mapping.job(&call).map_err(|e| e.0)?, &Limits::default())
        .map_err(|e| format!("the tool call does not make a valid job: {e}"))?;
    let hash = job.hash();
    let canonical = job.canonical_json();

    let agent_token = conn
        .token
        .as_deref()
        .ok_or("no token: pass --token or set GAVEL_TOKEN")?;
    let agent_header = bearer_header(agent_token).map_err(|e| e.0)?;
    let executor_header =
        bearer_header(a.executor_token.as_deref().unwrap_or(agent_token)).map_err(|e| e.0)?;
    let channel = Channel::from_shared(conn.server.clone())
        .map_err(|e| format!("--server `{}`: {e}", conn.server))?
        .connect()
        .await
        .map_err(|e| format!("cannot reach gavel at {}: {e}", conn.server))?;
    let mut client = DecisionServiceClient::new(channel).max_decoding_message_size(64 << 20);

    for generation in 0..MAX_GENERATIONS {
        let job_id = hook::job_id(a.agent, &call.session, hash.as_str(), generation);
        let wire = convert::job_from_canonical(&job_id, &canonical);
        let d = client
            .decide(with_token(
                pb::DecideRequest {
                    job: Some(wire.clone()),
                },
                &agent_header,
            ))
            .await
            .map_err(|s| refused(s).0)?
            .into_inner();
        if d.decision == pb::Decision::Deny as i32 {
            return Ok(Verdict::Deny {
                job_id,
                reason: format!("rule `{}`: {}", d.primary_rule, d.reason),
            });
        }
        match pb::JobState::try_from(d.state) {
            Ok(pb::JobState::Pending) => {
                let base = a.page_url.trim_end_matches('/');
                return Ok(Verdict::Pending {
                    url: format!("{base}/jobs/{job_id}"),
                    reason: format!("rule `{}`: {}", d.primary_rule, d.reason),
                    job_id,
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
                        &executor_header,
                    ))
                    .await;
                match bound {
                    Ok(b) => {
                        let b = b.into_inner();
                        let bound_job: Value = serde_json::from_str(&b.canonical_job)
                            .map_err(|e| format!("Bind returned a job that is not JSON: {e}"))?;
                        let params = bound_job
                            .get("params")
                            .and_then(Value::as_object)
                            .ok_or("Bind returned a job without params")?;
                        return Ok(Verdict::Allow {
                            input: mapping.input_to_run(&call, params),
                            job_id,
                            bind_id: b.bind_id,
                            rule: d.primary_rule,
                        });
                    }
                    // Another run of the same call won the bind: that one
                    // runs; this one is a new job.
                    Err(s) if reason_of(&s) == Some("ALREADY_BOUND") => continue,
                    Err(s) => return Err(refused(s).0),
                }
            }
            Ok(pb::JobState::Rejected) => {
                let rec = client
                    .get_job(with_token(
                        pb::GetJobRequest {
                            job_id: job_id.clone(),
                        },
                        &agent_header,
                    ))
                    .await
                    .map_err(|s| refused(s).0)?
                    .into_inner()
                    .job
                    .unwrap_or_default();
                return Ok(Verdict::Deny {
                    job_id,
                    reason: format!("rejected by {}: {}", rec.resolved_by, rec.resolved_comment),
                });
            }
            // Run already, or no longer waiting: an identical call is a new job.
            Ok(
                pb::JobState::Bound
                | pb::JobState::Succeeded
                | pb::JobState::Failed
                | pb::JobState::Expired
                | pb::JobState::Cancelled,
            ) => continue,
            _ => {
                return Err(format!(
                    "gavel answered job {job_id} with an unexpected state ({})",
                    d.state
                ));
            }
        }
    }
    Err(format!(
        "this exact call already ran {MAX_GENERATIONS} times in this session"
    ))
}
