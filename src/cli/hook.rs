//! `gavel hook <agent>`: reads a coding agent's pre-tool hook payload on
//! stdin, decides the call (and binds it when allowed or approved) and
//! answers in the agent's protocol. The pure part is `crate::hook`; this
//! file only reads, calls the server and writes.
//!
//! It fails closed: whatever goes wrong (bad payload, unknown tool,
//! unreachable server, timeout, a refusal, even a panic) ends in the
//! agent's blocking answer and exit code 2, never in its "run anyway".

use super::client::Conn;
use super::gate::{DoorArgs, Gate, Outcome};
use crate::hook::{self, Agent, Mapping, Verdict};
use crate::job::{Job, Limits};
use clap::Args;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The largest hook payload read from stdin.
const MAX_PAYLOAD: u64 = 4 * 1024 * 1024;

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
    #[command(flatten)]
    pub door: DoorArgs,
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
    let gate = Gate::connect(conn, a.door.executor_token.as_deref()).await?;
    let outcome = gate
        .run(&job, |generation| {
            hook::job_id(a.agent, &call.session, hash.as_str(), generation)
        })
        .await?;
    Ok(match outcome {
        Outcome::Deny {
            job_id,
            rule,
            reason,
        } => Verdict::Deny {
            job_id,
            reason: format!("rule `{rule}`: {reason}"),
        },
        Outcome::Pending {
            job_id,
            rule,
            reason,
        } => Verdict::Pending {
            url: a.door.job_url(&job_id),
            reason: format!("rule `{rule}`: {reason}"),
            job_id,
        },
        Outcome::Rejected {
            job_id,
            by,
            comment,
        } => Verdict::Deny {
            job_id,
            reason: format!("rejected by {by}: {comment}"),
        },
        Outcome::Bound {
            job_id,
            bind_id,
            rule,
            params,
            ..
        } => Verdict::Allow {
            input: mapping.input_to_run(&call, &params),
            job_id,
            bind_id,
            rule,
        },
    })
}
