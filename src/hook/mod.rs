//! `gavel hook <agent>`: the pure part. A coding agent's pre-tool hook
//! payload becomes a [`ToolCall`], the mapping turns it into a job, the
//! shell (`cli::hook`) decides and binds it, and the [`Verdict`] is written
//! back in the agent's own protocol by [`answer`].
//!
//! Every path that is not a clear "allow" ends in the agent's *blocking*
//! answer: a payload that does not parse, a tool with no mapping, a server
//! that cannot be reached or a refusal all become [`Verdict::Block`].

mod mapping;

pub(crate) use mapping::check_attributes;
pub use mapping::{MapError, Mapping};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::fmt;

/// The coding agents `gavel hook` speaks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Agent {
    /// Claude Code, `PreToolUse` command hooks.
    ClaudeCode,
    /// OpenAI Codex, `PreToolUse` command hooks.
    Codex,
    /// Gemini CLI, `BeforeTool` command hooks.
    Gemini,
    /// Cursor, `beforeShellExecution`, `beforeMCPExecution` and `preToolUse` hooks.
    Cursor,
}

impl Agent {
    pub fn as_str(self) -> &'static str {
        match self {
            Agent::ClaudeCode => "claude-code",
            Agent::Codex => "codex",
            Agent::Gemini => "gemini",
            Agent::Cursor => "cursor",
        }
    }
}

impl fmt::Display for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One tool call as the agent described it, in a form common to all agents.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub agent: Agent,
    /// The tool's name as the agent calls it (`Bash`, `write_file`,
    /// `mcp__github__create_issue`, …).
    pub tool: String,
    /// The tool's arguments, exactly as the agent will run them.
    pub input: Map<String, Value>,
    pub cwd: String,
    /// The agent's session (Cursor: conversation) id; approvals are scoped to it.
    pub session: String,
    /// For MCP tools: (server, tool).
    pub mcp: Option<(String, String)>,
}

/// Why a hook payload was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadError(pub String);

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(msg: impl Into<String>) -> PayloadError {
    PayloadError(msg.into())
}

fn str_field<'a>(v: &'a Map<String, Value>, key: &str) -> Result<&'a str, PayloadError> {
    match v.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(bad(format!(
            "payload.{key}: expected a string, got {}",
            crate::job::json_type(other)
        ))),
        None => Err(bad(format!("payload.{key}: missing"))),
    }
}

fn opt_str(v: &Map<String, Value>, key: &str) -> Result<String, PayloadError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(_) => str_field(v, key).map(str::to_owned),
    }
}

fn object_field(v: &Map<String, Value>, key: &str) -> Result<Map<String, Value>, PayloadError> {
    match v.get(key) {
        Some(Value::Object(m)) => Ok(m.clone()),
        // Cursor's beforeMCPExecution sends the arguments as a JSON string.
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(other) => Err(bad(format!(
                "payload.{key}: the JSON string holds {}, not an object",
                crate::job::json_type(&other)
            ))),
            Err(e) => Err(bad(format!("payload.{key}: not JSON: {e}"))),
        },
        Some(other) => Err(bad(format!(
            "payload.{key}: expected an object, got {}",
            crate::job::json_type(other)
        ))),
        None => Err(bad(format!("payload.{key}: missing"))),
    }
}

/// `mcp__server__tool` (Claude Code, Codex, Gemini CLI) or
/// `MCP:server:tool` (Cursor) as (server, tool).
fn mcp_name(tool: &str) -> Option<(String, String)> {
    if let Some(rest) = tool.strip_prefix("mcp__") {
        let (server, name) = rest.split_once("__")?;
        return (!server.is_empty() && !name.is_empty()).then(|| (server.into(), name.into()));
    }
    let rest = tool.strip_prefix("MCP:")?;
    let (server, name) = rest.split_once(':')?;
    (!server.is_empty() && !name.is_empty()).then(|| (server.into(), name.into()))
}

/// Reads one hook payload of `agent`.
pub fn parse(agent: Agent, bytes: &[u8]) -> Result<ToolCall, PayloadError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| bad(format!("the hook payload is not JSON: {e}")))?;
    let Value::Object(p) = v else {
        return Err(bad("the hook payload is not a JSON object"));
    };
    let event = opt_str(&p, "hook_event_name")?;
    let (tool, input, cwd, session) = match agent {
        Agent::ClaudeCode | Agent::Codex => {
            if event != "PreToolUse" {
                return Err(bad(format!(
                    "payload.hook_event_name: `{event}`; gavel answers PreToolUse only"
                )));
            }
            (
                str_field(&p, "tool_name")?.to_owned(),
                object_field(&p, "tool_input")?,
                opt_str(&p, "cwd")?,
                str_field(&p, "session_id")?.to_owned(),
            )
        }
        Agent::Gemini => {
            if event != "BeforeTool" {
                return Err(bad(format!(
                    "payload.hook_event_name: `{event}`; gavel answers BeforeTool only"
                )));
            }
            (
                str_field(&p, "tool_name")?.to_owned(),
                object_field(&p, "tool_input")?,
                opt_str(&p, "cwd")?,
                str_field(&p, "session_id")?.to_owned(),
            )
        }
        Agent::Cursor => {
            let session = str_field(&p, "conversation_id")?.to_owned();
            let root = match p.get("workspace_roots") {
                Some(Value::Array(a)) => a.first().and_then(Value::as_str).unwrap_or(""),
                _ => "",
            }
            .to_owned();
            match event.as_str() {
                "beforeShellExecution" => {
                    let command = str_field(&p, "command")?.to_owned();
                    let cwd = opt_str(&p, "cwd")?;
                    let mut input = Map::new();
                    input.insert("command".into(), Value::String(command));
                    (
                        "Shell".to_owned(),
                        input,
                        if cwd.is_empty() { root } else { cwd },
                        session,
                    )
                }
                "beforeMCPExecution" | "preToolUse" => {
                    let tool = str_field(&p, "tool_name")?.to_owned();
                    let input = object_field(&p, "tool_input")?;
                    let cwd = opt_str(&p, "cwd")?;
                    let tool = if event == "beforeMCPExecution" && mcp_name(&tool).is_none() {
                        // Cursor names the tool alone; the server is not named.
                        format!("MCP:_:{tool}")
                    } else {
                        tool
                    };
                    (
                        tool,
                        input,
                        if cwd.is_empty() { root } else { cwd },
                        session,
                    )
                }
                other => {
                    return Err(bad(format!(
                        "payload.hook_event_name: `{other}`; gavel answers beforeShellExecution, beforeMCPExecution and preToolUse"
                    )));
                }
            }
        }
    };
    if tool.is_empty() {
        return Err(bad("payload.tool_name: empty"));
    }
    if session.is_empty() {
        return Err(bad("the payload names no session"));
    }
    let mcp = mcp_name(&tool);
    Ok(ToolCall {
        agent,
        tool,
        input,
        cwd,
        session,
        mcp,
    })
}

/// The job id a call is decided under: derived from the agent, the session
/// and the job hash, so the same call retried in the same session finds the
/// same job. `generation` counts identical calls already run (`.1`, `.2`, …).
pub fn job_id(agent: Agent, session: &str, job_hash: &str, generation: u32) -> String {
    let mut h = Sha256::new();
    h.update(agent.as_str().as_bytes());
    h.update([0]);
    h.update(session.as_bytes());
    h.update([0]);
    h.update(job_hash.as_bytes());
    let digest = hex::encode(h.finalize());
    let base = format!("hook-{}-{}", agent.as_str(), &digest[..24]);
    if generation == 0 {
        base
    } else {
        format!("{base}.{generation}")
    }
}

/// What gavel says about one call.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Decided (and approved) and bound: run exactly `input`.
    Allow {
        input: Map<String, Value>,
        job_id: String,
        bind_id: String,
        rule: String,
    },
    /// The policy says no, or a person rejected this exact call.
    Deny { job_id: String, reason: String },
    /// Waiting for people: retry the same call once approved.
    Pending {
        job_id: String,
        url: String,
        reason: String,
    },
    /// Anything else: the call must not run.
    Block { reason: String },
}

/// What the hook process writes and how it exits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub stdout: String,
    pub stderr: String,
    pub exit: u8,
}

impl Answer {
    fn json(v: Value) -> Answer {
        Answer {
            stdout: format!("{v}\n"),
            stderr: String::new(),
            exit: 0,
        }
    }
}

fn pending_text(job_id: &str, url: &str, reason: &str) -> String {
    format!(
        "gavel: approval required ({reason}). Job {job_id} waits for approval at {url} ; retry the same call, unchanged, once it is approved."
    )
}

fn claude_like(decision: &str, reason: &str, updated: Option<&Map<String, Value>>) -> Answer {
    let mut out = json!({
        "hookEventName": "PreToolUse",
        "permissionDecision": decision,
        "permissionDecisionReason": reason,
    });
    if let Some(input) = updated {
        out["updatedInput"] = Value::Object(input.clone());
    }
    Answer::json(json!({ "hookSpecificOutput": out }))
}

/// A call that does not run now, told in `agent`'s protocol: `deny` for
/// every agent, or (Claude Code only) `defer`.
fn refusal(agent: Agent, claude_decision: &str, text: &str) -> Answer {
    match agent {
        Agent::ClaudeCode => claude_like(claude_decision, text, None),
        Agent::Codex => claude_like("deny", text, None),
        Agent::Gemini => Answer::json(json!({"decision": "deny", "reason": text})),
        Agent::Cursor => {
            Answer::json(json!({"permission": "deny", "user_message": text, "agent_message": text}))
        }
    }
}

/// The verdict in `agent`'s protocol. `headless`: Claude Code runs with
/// `-p`, where `defer` pauses the session for an out-of-band approval.
pub fn answer(agent: Agent, verdict: &Verdict, headless: bool) -> Answer {
    let allow_reason = |job_id: &str, bind_id: &str, rule: &str| {
        format!("gavel: allowed by rule `{rule}`; job {job_id} bound as {bind_id}")
    };
    match verdict {
        Verdict::Block { reason } => {
            let text = format!("gavel: blocked: {reason}");
            // Cursor reads stdout even on failure paths: a deny there too.
            let stdout = match agent {
                Agent::Cursor => refusal(agent, "deny", &text).stdout,
                _ => String::new(),
            };
            Answer {
                stdout,
                stderr: format!("{text}\n"),
                exit: 2,
            }
        }
        Verdict::Deny { job_id, reason } => refusal(
            agent,
            "deny",
            &format!("gavel: denied ({reason}); job {job_id}"),
        ),
        Verdict::Pending {
            job_id,
            url,
            reason,
        } => {
            let text = pending_text(job_id, url, reason);
            let decision = if headless { "defer" } else { "deny" };
            refusal(agent, decision, &text)
        }
        Verdict::Allow {
            input,
            job_id,
            bind_id,
            rule,
        } => {
            let text = allow_reason(job_id, bind_id, rule);
            match agent {
                Agent::ClaudeCode | Agent::Codex => claude_like("allow", &text, Some(input)),
                Agent::Gemini => Answer::json(json!({
                    "decision": "allow",
                    "reason": text,
                    "hookSpecificOutput": { "tool_input": input },
                })),
                Agent::Cursor => Answer::json(json!({"permission": "allow"})),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcp_names_of_every_agent() {
        assert_eq!(
            mcp_name("mcp__github__create_issue"),
            Some(("github".into(), "create_issue".into()))
        );
        assert_eq!(
            mcp_name("MCP:db:delete_rows"),
            Some(("db".into(), "delete_rows".into()))
        );
        assert_eq!(mcp_name("mcp__github"), None);
        assert_eq!(mcp_name("mcp____x"), None);
        assert_eq!(mcp_name("Bash"), None);
    }

    #[test]
    fn job_ids_are_stable_valid_and_scoped_to_the_session() {
        let a = job_id(Agent::ClaudeCode, "s1", "ab", 0);
        assert_eq!(a, job_id(Agent::ClaudeCode, "s1", "ab", 0));
        assert_ne!(a, job_id(Agent::ClaudeCode, "s2", "ab", 0));
        assert_ne!(a, job_id(Agent::Codex, "s1", "ab", 0));
        assert_eq!(job_id(Agent::ClaudeCode, "s1", "ab", 3), format!("{a}.3"));
        assert!(crate::job::JobId::parse(&format!("{a}.4294967295")).is_ok());
    }

    #[test]
    fn payloads_that_do_not_parse_are_refused_with_the_field() {
        let cases: &[(Agent, &str, &str)] = &[
            (Agent::ClaudeCode, "nope", "not JSON"),
            (Agent::ClaudeCode, "[]", "not a JSON object"),
            (
                Agent::ClaudeCode,
                r#"{"hook_event_name":"PostToolUse"}"#,
                "PreToolUse only",
            ),
            (
                Agent::ClaudeCode,
                r#"{"hook_event_name":"PreToolUse","tool_name":"Bash","tool_input":"x","session_id":"s"}"#,
                "payload.tool_input: not JSON",
            ),
            (
                Agent::Codex,
                r#"{"hook_event_name":"PreToolUse","tool_name":1,"tool_input":{},"session_id":"s"}"#,
                "payload.tool_name: expected a string",
            ),
            (
                Agent::Gemini,
                r#"{"hook_event_name":"BeforeTool","tool_name":"x","tool_input":{}}"#,
                "payload.session_id: missing",
            ),
            (
                Agent::Cursor,
                r#"{"hook_event_name":"stop","conversation_id":"c"}"#,
                "`stop`",
            ),
        ];
        for (agent, text, want) in cases {
            let e = parse(*agent, text.as_bytes()).unwrap_err();
            assert!(e.0.contains(want), "{agent} {text}: {e}");
        }
    }

    #[test]
    fn cursor_mcp_arguments_arrive_as_a_json_string() {
        let call = parse(
            Agent::Cursor,
            br#"{"hook_event_name":"beforeMCPExecution","conversation_id":"c","workspace_roots":["/w"],"tool_name":"delete_rows","tool_input":"{\"table\":\"orders\"}","url":"http://x"}"#,
        )
        .unwrap();
        assert_eq!(call.mcp, Some(("_".into(), "delete_rows".into())));
        assert_eq!(call.input["table"], "orders");
        assert_eq!(call.cwd, "/w");
    }

    #[test]
    fn every_agent_blocks_with_exit_2_and_a_reason() {
        for agent in [
            Agent::ClaudeCode,
            Agent::Codex,
            Agent::Gemini,
            Agent::Cursor,
        ] {
            let a = answer(agent, &Verdict::Block { reason: "x".into() }, false);
            assert_eq!(a.exit, 2, "{agent}");
            assert!(a.stderr.contains("gavel: blocked: x"), "{agent}");
        }
    }
}
