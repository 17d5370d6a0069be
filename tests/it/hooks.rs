//! `gavel hook <agent>`: recorded hook payloads of Claude Code, Codex,
//! Gemini CLI and Cursor (hand-written from their documented schemas, in
//! tests/fixtures/hooks/) fed through the real binary against a real
//! server; the exact JSON and exit code of every answer are asserted.
//!
//! Expected job ids are computed here independently of the hook's code:
//! the job document is written out by hand, canonicalised with the test
//! oracle and hashed.

use crate::helpers::{TestApp, approve, job_of, token};
use gavel::proto::v1 as pb;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::process::Stdio;
use tokio::io::AsyncWriteExt;

const POLICY: &str = r#"
version: v1
name: hooks
defaults:
  decision: require_approval
  approval: { approvers: 1, roles: [reviewer], sla: 5m, timeout: 10m, bind_within: 5m }
rules:
  - id: look-around
    match: { topics: [agent.shell], target: ["git status", "git diff*", "ls", "ls *"], risk_tags_none: [shell-compound] }
    decision: allow
    reason: Looking around runs on its own
  - id: no-force-push
    match: { topics: [agent.shell], target: ["git push --force*", "git push -f*"] }
    decision: deny
    reason: Force pushes are never done by an agent
  - id: secrets-stop
    match: { topics: [agent.file], target: ["*/.env*"] }
    decision: deny
    reason: Agents never write secrets files
  - id: reads
    match: { topics: [agent.file], action: [read] }
    decision: allow
    reason: Reading files runs on its own
  - id: row-deletes
    match: { topics: ["mcp.*"], action: [delete_rows] }
    decision: require_approval
    reason: Deleting rows needs two reviewers
    approval: { approvers: 2, roles: [reviewer] }
"#;

async fn server() -> TestApp {
    crate::helpers::sqlite_with(POLICY).await
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/hooks/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// What one run of `gavel hook` printed and how it exited.
struct Ran {
    stdout: String,
    stderr: String,
    code: i32,
}

impl Ran {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?} / {}",
                self.stdout, self.stderr
            )
        })
    }
}

async fn run_raw(
    server: &str,
    page: &str,
    agent: &str,
    stdin: &[u8],
    caller: &str,
    extra: &[&str],
) -> Ran {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args(["hook", agent, "--server", server, "--page-url", page])
        .args(["--token", caller, "--executor-token", &token("executor")])
        .args(extra)
        .env_remove("GAVEL_TOKEN")
        .env_remove("GAVEL_EXECUTOR_TOKEN")
        .env_remove("GAVEL_HOOK_MAP")
        .env_remove("GAVEL_HOOK_HEADLESS")
        .env_remove("GAVEL_HOOK_TIMEOUT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // A hook that refuses its command line answers without reading its
    // input, and may have exited before it is written: a closed pipe then
    // is expected, and the answer is still asserted below.
    if let Err(e) = input.write_all(stdin).await {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    Ran {
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
        code: out.status.code().unwrap_or(-1),
    }
}

async fn run(app: &TestApp, agent: &str, payload: &Value, extra: &[&str]) -> Ran {
    run_raw(
        &format!("http://{}", app.addr),
        &format!("http://{}/ui/", app.http_addr),
        agent,
        payload.to_string().as_bytes(),
        &token("agent-1"),
        extra,
    )
    .await
}

/// The job id the hook must use for this job document in this session,
/// computed from the hand-written document with the RFC 8785 oracle.
fn expected_id(agent: &str, session: &str, doc: &Value, generation: u32) -> String {
    let canonical = serde_json_canonicalizer::to_string(doc).unwrap();
    let hash = hex::encode(Sha256::digest(canonical.as_bytes()));
    let key = hex::encode(Sha256::digest(
        format!("{agent}\0{session}\0{hash}").as_bytes(),
    ));
    let base = format!("hook-{agent}-{}", &key[..24]);
    if generation == 0 {
        base
    } else {
        format!("{base}.{generation}")
    }
}

/// Who makes the calls of a test: an agent's tool in one session (in the
/// fixtures' working directory).
struct Caller<'a> {
    agent: &'a str,
    tool: &'a str,
    session: &'a str,
}

impl Caller<'_> {
    /// The expected job id of this caller's call.
    fn id(&self, job: [&str; 3], tags: &[&str], params: Value, generation: u32) -> String {
        let [topic, action, target] = job;
        let at = attrs(self.agent, self.tool, "/home/dev/shop", self.session);
        let d = doc(topic, action, target, tags, at, params);
        expected_id(self.agent, self.session, &d, generation)
    }

    /// The expected job id of a shell command (its only param).
    fn shell(&self, command: &str, tags: &[&str], generation: u32) -> String {
        let job = ["agent.shell", "exec", command];
        self.id(job, tags, json!({ "command": command }), generation)
    }
}

/// The canonical job document of a call (every key present).
fn doc(
    topic: &str,
    action: &str,
    target: &str,
    tags: &[&str],
    attrs: Value,
    params: Value,
) -> Value {
    json!({
        "tenant": "", "topic": topic, "action": action, "target": target,
        "risk_tags": tags, "attributes": attrs, "params": params, "proposal": null,
    })
}

fn attrs(agent: &str, tool: &str, cwd: &str, session: &str) -> Value {
    json!({"agent": agent, "tool": tool, "cwd": cwd, "session": session})
}

fn claude(decision: &str, reason: &str, input: Option<Value>) -> Value {
    let mut out = json!({
        "hookEventName": "PreToolUse",
        "permissionDecision": decision,
        "permissionDecisionReason": reason,
    });
    if let Some(i) = input {
        out["updatedInput"] = i;
    }
    json!({ "hookSpecificOutput": out })
}

fn pending_text(id: &str, app: &TestApp, why: &str) -> String {
    format!(
        "gavel: approval required ({why}). Job {id} waits for approval at http://{}/ui/jobs/{id} ; retry the same call, unchanged, once it is approved.",
        app.http_addr
    )
}

fn allowed_text(id: &str, bind_id: &str, rule: &str) -> String {
    format!("gavel: allowed by rule `{rule}`; job {id} bound as {bind_id}")
}

const DEFAULT_WHY: &str =
    "rule `default`: no rule matched; the default decision is require_approval";

#[tokio::test]
async fn claude_code_allows_denies_defers_and_binds_the_approved_retry() {
    let app = server().await;
    let mut executor = app.as_("executor").await;
    let base = fixture("claude-code-bash.json");
    let session = base["session_id"].as_str().unwrap().to_owned();
    let bash = Caller {
        agent: "claude-code",
        tool: "Bash",
        session: &session,
    };
    let with_command = |cmd: &str, description: &str| {
        let mut p = base.clone();
        p["tool_input"] = json!({"command": cmd, "description": description});
        p
    };

    // Allowed: bound at once; the input to run is the bound params plus
    // the description the job left out.
    let r = run(&app, "claude-code", &base, &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let id = bash.shell("git status", &[], 0);
    let rec = job_of(&mut executor, &id).await;
    assert_eq!(rec.state, pb::JobState::Bound as i32);
    assert_eq!(
        r.json(),
        claude(
            "allow",
            &allowed_text(&id, &rec.bind_id, "look-around"),
            Some(json!({"command": "git status", "description": "Show working tree status"}))
        )
    );

    // Denied by policy: a JSON deny with the rule and reason, exit 0.
    let push = with_command("git push --force origin main", "Push");
    let r = run(&app, "claude-code", &push, &[]).await;
    let id = bash.shell("git push --force origin main", &[], 0);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
    assert_eq!(
        r.json(),
        claude(
            "deny",
            &format!(
                "gavel: denied (rule `no-force-push`: Force pushes are never done by an agent); job {id}"
            ),
            None
        )
    );

    // Approval required: interactive runs get a deny naming the approval,
    // headless runs a defer; both leave the same one pending job.
    let rm = with_command("rm -rf build", "Clean the build directory");
    let rm_id = bash.shell("rm -rf build", &[], 0);
    let r = run(&app, "claude-code", &rm, &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.json(),
        claude("deny", &pending_text(&rm_id, &app, DEFAULT_WHY), None)
    );
    let r = run(&app, "claude-code", &rm, &["--headless"]).await;
    assert_eq!(
        r.json(),
        claude("defer", &pending_text(&rm_id, &app, DEFAULT_WHY), None)
    );
    assert_eq!(
        job_of(&mut executor, &rm_id).await.state,
        pb::JobState::Pending as i32
    );

    // A reviewer approves; the retry (the model rewrote the description)
    // binds that job and allows exactly its input.
    approve(&mut app.as_("bob").await, &rm_id, "build dir only")
        .await
        .unwrap();
    let retry = with_command("rm -rf build", "Remove build output");
    let r = run(&app, "claude-code", &retry, &[]).await;
    let rec = job_of(&mut executor, &rm_id).await;
    assert_eq!(rec.state, pb::JobState::Bound as i32);
    assert_eq!(
        r.json(),
        claude(
            "allow",
            &allowed_text(&rm_id, &rec.bind_id, "default"),
            Some(json!({"command": "rm -rf build", "description": "Remove build output"}))
        )
    );

    // Single use: the same call once more is a new request.
    let r = run(&app, "claude-code", &retry, &[]).await;
    let again = bash.shell("rm -rf build", &[], 1);
    assert_eq!(
        r.json(),
        claude("deny", &pending_text(&again, &app, DEFAULT_WHY), None)
    );

    // Changed arguments are another job; compound commands never ride on
    // an allow rule for their first word.
    let other = with_command("rm -rf build/cache", "Clean");
    let r = run(&app, "claude-code", &other, &[]).await;
    let other_id = bash.shell("rm -rf build/cache", &[], 0);
    assert_eq!(
        r.json(),
        claude("deny", &pending_text(&other_id, &app, DEFAULT_WHY), None)
    );
    let sneaky = with_command("ls; rm -rf /", "List");
    let r = run(&app, "claude-code", &sneaky, &[]).await;
    let sneaky_id = bash.shell("ls; rm -rf /", &["shell-compound"], 0);
    assert_eq!(
        r.json(),
        claude("deny", &pending_text(&sneaky_id, &app, DEFAULT_WHY), None)
    );

    // Another session does not inherit this session's approvals.
    let mut elsewhere = retry.clone();
    elsewhere["session_id"] = json!("another-session");
    let r = run(&app, "claude-code", &elsewhere, &[]).await;
    assert_eq!(r.json()["hookSpecificOutput"]["permissionDecision"], "deny");
    assert!(r.stdout.contains("approval required"), "{}", r.stdout);
}

#[tokio::test]
async fn rejected_expired_and_half_approved_calls_never_run() {
    let app = server().await;
    let mut executor = app.as_("executor").await;

    // Two reviewers are needed; one approval is not enough.
    let mcp = fixture("claude-code-mcp.json");
    let session = mcp["session_id"].as_str().unwrap().to_owned();
    let mcp_caller = Caller {
        agent: "claude-code",
        tool: "mcp__orders_db__delete_rows",
        session: &session,
    };
    let job = ["mcp.orders_db.delete_rows", "delete_rows", ""];
    let id = mcp_caller.id(job, &[], mcp["tool_input"].clone(), 0);
    let why = "rule `row-deletes`: Deleting rows needs two reviewers";
    let r = run(&app, "claude-code", &mcp, &[]).await;
    assert_eq!(
        r.json(),
        claude("deny", &pending_text(&id, &app, why), None)
    );
    approve(&mut app.as_("alice").await, &id, "looks old")
        .await
        .unwrap();
    let r = run(&app, "claude-code", &mcp, &[]).await;
    assert_eq!(
        r.json(),
        claude("deny", &pending_text(&id, &app, why), None)
    );

    // The second reviewer rejects: the retry is denied with who and why.
    app.as_("bob")
        .await
        .approval
        .reject(pb::RejectRequest {
            job_id: id.clone(),
            reason: "orders are kept seven years".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let r = run(&app, "claude-code", &mcp, &[]).await;
    assert_eq!(
        r.json(),
        claude(
            "deny",
            &format!("gavel: denied (rejected by bob: orders are kept seven years); job {id}"),
            None
        )
    );
    assert_eq!(job_of(&mut executor, &id).await.bind_id, "");

    // Expired while pending: the retry is a new request, never a run.
    let patch = fixture("codex-apply-patch.json");
    let session = patch["session_id"].as_str().unwrap().to_owned();
    let patcher = Caller {
        agent: "codex",
        tool: "apply_patch",
        session: &session,
    };
    let patch_id = |generation| {
        let job = ["agent.file", "patch", "deploy/prod.yaml"];
        patcher.id(job, &[], patch["tool_input"].clone(), generation)
    };
    let first = patch_id(0);
    let r = run(&app, "codex", &patch, &[]).await;
    assert_eq!(
        r.json(),
        claude("deny", &pending_text(&first, &app, DEFAULT_WHY), None)
    );
    app.clock.advance_secs(11 * 60);
    app.engine.sweep().await.unwrap();
    assert_eq!(
        job_of(&mut executor, &first).await.state,
        pb::JobState::Expired as i32
    );
    let r = run(&app, "codex", &patch, &[]).await;
    let second = patch_id(1);
    assert_eq!(
        r.json(),
        claude("deny", &pending_text(&second, &app, DEFAULT_WHY), None)
    );

    // Approved, but not bound within bind_within: expired, not run.
    approve(&mut app.as_("carol").await, &second, "ok")
        .await
        .unwrap();
    app.clock.advance_secs(6 * 60);
    app.engine.sweep().await.unwrap();
    let r = run(&app, "codex", &patch, &[]).await;
    let third = patch_id(2);
    assert_eq!(
        r.json(),
        claude("deny", &pending_text(&third, &app, DEFAULT_WHY), None)
    );
    for id in [&first, &second, &third] {
        assert_eq!(job_of(&mut executor, id).await.bind_id, "", "{id}");
    }
}

#[tokio::test]
async fn codex_gemini_and_cursor_answer_in_their_own_protocols() {
    let app = server().await;
    let mut executor = app.as_("executor").await;

    // Codex: allow with the bound input.
    let codex = fixture("codex-bash.json");
    let s = codex["session_id"].as_str().unwrap().to_owned();
    let id = Caller {
        agent: "codex",
        tool: "Bash",
        session: &s,
    }
    .id(
        ["agent.shell", "exec", "git status"],
        &[],
        json!({"command": "git status"}),
        0,
    );
    let r = run(&app, "codex", &codex, &[]).await;
    let rec = job_of(&mut executor, &id).await;
    assert_eq!(
        r.json(),
        claude(
            "allow",
            &allowed_text(&id, &rec.bind_id, "look-around"),
            Some(json!({"command": "git status"}))
        )
    );

    // Gemini CLI: decision/reason, and the bound input as tool_input.
    let gemini = fixture("gemini-shell.json");
    let s = gemini["session_id"].as_str().unwrap().to_owned();
    let id = Caller {
        agent: "gemini",
        tool: "run_shell_command",
        session: &s,
    }
    .id(
        ["agent.shell", "exec", "git status"],
        &[],
        json!({"command": "git status", "directory": "."}),
        0,
    );
    let r = run(&app, "gemini", &gemini, &[]).await;
    let rec = job_of(&mut executor, &id).await;
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
    assert_eq!(
        r.json(),
        json!({
            "decision": "allow",
            "reason": allowed_text(&id, &rec.bind_id, "look-around"),
            "hookSpecificOutput": {"tool_input": gemini["tool_input"]},
        })
    );
    let secrets = fixture("gemini-write-file.json");
    let id = Caller {
        agent: "gemini",
        tool: "write_file",
        session: &s,
    }
    .id(
        ["agent.file", "write", "/home/dev/shop/.env.production"],
        &[],
        secrets["tool_input"].clone(),
        0,
    );
    let r = run(&app, "gemini", &secrets, &[]).await;
    assert_eq!(
        r.json(),
        json!({"decision": "deny", "reason": format!("gavel: denied (rule `secrets-stop`: Agents never write secrets files); job {id}")})
    );
    let mut fetch = gemini.clone();
    fetch["tool_input"] = json!({"command": "curl -X DELETE https://api.example.com/v1/users/7"});
    let r = run(&app, "gemini", &fetch, &[]).await;
    let id = Caller {
        agent: "gemini",
        tool: "run_shell_command",
        session: &s,
    }
    .id(
        [
            "agent.shell",
            "exec",
            "curl -X DELETE https://api.example.com/v1/users/7",
        ],
        &[],
        fetch["tool_input"].clone(),
        0,
    );
    assert_eq!(
        r.json(),
        json!({"decision": "deny", "reason": pending_text(&id, &app, DEFAULT_WHY)})
    );

    // Cursor: permission, user_message and agent_message.
    let shell = fixture("cursor-shell.json");
    let c = shell["conversation_id"].as_str().unwrap().to_owned();
    let id = Caller {
        agent: "cursor",
        tool: "Shell",
        session: &c,
    }
    .id(
        ["agent.shell", "exec", "git status"],
        &[],
        json!({"command": "git status"}),
        0,
    );
    let r = run(&app, "cursor", &shell, &[]).await;
    assert_eq!((r.code, r.json()), (0, json!({"permission": "allow"})));
    assert_eq!(
        job_of(&mut executor, &id).await.state,
        pb::JobState::Bound as i32
    );

    let mcp = fixture("cursor-mcp.json");
    let args: Value = serde_json::from_str(mcp["tool_input"].as_str().unwrap()).unwrap();
    let id = Caller {
        agent: "cursor",
        tool: "MCP:_:delete_rows",
        session: &c,
    }
    .id(["mcp._.delete_rows", "delete_rows", ""], &[], args, 0);
    let text = pending_text(
        &id,
        &app,
        "rule `row-deletes`: Deleting rows needs two reviewers",
    );
    let r = run(&app, "cursor", &mcp, &[]).await;
    assert_eq!(
        r.json(),
        json!({"permission": "deny", "user_message": text, "agent_message": text})
    );
    approve(&mut app.as_("alice").await, &id, "archived already")
        .await
        .unwrap();
    approve(&mut app.as_("bob").await, &id, "checked")
        .await
        .unwrap();
    let r = run(&app, "cursor", &mcp, &[]).await;
    assert_eq!(r.json(), json!({"permission": "allow"}));
    assert_eq!(
        job_of(&mut executor, &id).await.state,
        pb::JobState::Bound as i32
    );

    // A mapping file maps a tool the defaults do not know.
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("map.yaml");
    std::fs::write(
        &map,
        "tools:\n  - match: Read\n    agents: [claude-code]\n    topic: agent.file\n    action: read\n    target: file_path\n",
    )
    .unwrap();
    let mut read = fixture("claude-code-bash.json");
    read["tool_name"] = json!("Read");
    read["tool_input"] = json!({"file_path": "/home/dev/shop/README.md"});
    let r = run(
        &app,
        "claude-code",
        &read,
        &["--map", map.to_str().unwrap()],
    )
    .await;
    assert_eq!(
        r.json()["hookSpecificOutput"]["permissionDecision"],
        "allow",
        "{}",
        r.stderr
    );
    let r = run(&app, "claude-code", &read, &[]).await;
    assert_eq!(r.code, 2);
    assert_eq!(
        r.stderr,
        "gavel: blocked: no mapping for the claude-code tool `Read`; add one to the mapping file (--map)\n"
    );
}

#[tokio::test]
async fn every_agent_blocks_when_anything_goes_wrong() {
    let app = server().await;
    let payloads = [
        ("claude-code", fixture("claude-code-bash.json")),
        ("codex", fixture("codex-bash.json")),
        ("gemini", fixture("gemini-shell.json")),
        ("cursor", fixture("cursor-shell.json")),
    ];
    // Nothing listens on a port we bound and let go.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // A server that accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let bad_map = dir.path().join("bad.yaml");
    std::fs::write(&bad_map, "tools: [{match: Bash}]\n").unwrap();
    let page = format!("http://{}/ui/", app.http_addr);
    let here = format!("http://{}", app.addr);

    for (agent, payload) in &payloads {
        let text = payload.to_string();
        let cases: Vec<(String, Vec<u8>, Vec<&str>, &str)> = vec![
            (
                format!("http://{gone}"),
                text.clone().into_bytes(),
                vec![],
                "cannot reach gavel",
            ),
            (
                format!("http://{silent_addr}"),
                text.clone().into_bytes(),
                vec!["--timeout", "0.5"],
                "did not answer within 0.5s",
            ),
            (
                here.clone(),
                b"{\"not\": \"a hook\"".to_vec(),
                vec![],
                "not JSON",
            ),
            (here.clone(), b"".to_vec(), vec![], "not JSON"),
            (
                here.clone(),
                text.clone().into_bytes(),
                vec!["--as", "wrong"],
                "UNAUTHENTICATED",
            ),
            (
                here.clone(),
                text.clone().into_bytes(),
                vec!["--map", bad_map.to_str().unwrap()],
                "bad.yaml",
            ),
            (
                here.clone(),
                text.clone().into_bytes(),
                vec!["--timeout=-1"],
                "--timeout -1",
            ),
            (
                here.clone(),
                text.clone().into_bytes(),
                vec!["--timeout", "-1"],
                "bad command line: unexpected argument '-1'",
            ),
        ];
        for (server, stdin, extra, want) in cases {
            let (caller, extra) = match extra.as_slice() {
                ["--as", who] => (who.to_string(), vec![]),
                _ => (token("agent-1"), extra),
            };
            let r = run_raw(&server, &page, agent, &stdin, &caller, &extra).await;
            assert_eq!(r.code, 2, "{agent} {want}: {} {}", r.stdout, r.stderr);
            assert!(
                r.stderr.starts_with("gavel: blocked: "),
                "{agent}: {}",
                r.stderr
            );
            assert!(r.stderr.contains(want), "{agent} {want}: {}", r.stderr);
            if *agent == "cursor" {
                let msg = r.stderr.trim_end().to_owned();
                assert_eq!(
                    r.json(),
                    json!({"permission": "deny", "user_message": msg, "agent_message": msg})
                );
            } else {
                assert_eq!(r.stdout, "", "{agent}");
            }
        }
        // A tool nobody mapped.
        let mut odd = payload.clone();
        if *agent == "cursor" {
            odd["hook_event_name"] = json!("preToolUse");
            odd["tool_name"] = json!("Teleport");
            odd["tool_input"] = json!({});
        } else {
            odd["tool_name"] = json!("Teleport");
        }
        let r = run(&app, agent, &odd, &[]).await;
        assert_eq!(r.code, 2, "{agent}");
        assert!(r.stderr.contains("no mapping"), "{agent}: {}", r.stderr);
    }
    holder.abort();
}
