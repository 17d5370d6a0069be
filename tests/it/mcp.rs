//! `gavel mcp-proxy` between a real MCP client (rmcp) and a real upstream
//! MCP server (`examples/mcp_rows.rs`, which appends every tool call it
//! receives to a record file), against a real gavel server; approvals and
//! rejections are given through the `gavel` CLI. Stdio and streamable
//! HTTP are covered on both sides.

use crate::helpers::{TestApp, job_of, token};
use gavel::proto::v1 as pb;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities,
    ClientConfig, ClientRequest, GetTaskParams, Implementation, NumberOrString,
    ProgressNotificationParam, ProtocolVersion, ReadResourceRequestParams, ServerResult,
    TaskPayload, TaskStatus,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RunningService};
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt, RoleClient, ServiceExt};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};

const POLICY: &str = r#"
version: v1
name: mcp
defaults:
  decision: require_approval
  approval: { approvers: 1, roles: [reviewer], sla: 5m, timeout: 10m, bind_within: 5m }
rules:
  - id: reads
    match: { topics: ["mcp.rows.read_*"] }
    decision: allow
    reason: Reads run on their own
  - id: row-deletes
    match: { topics: ["mcp.rows.delete_rows"] }
    decision: require_approval
    reason: Deleting rows needs two reviewers
    approval: { approvers: 2, roles: [reviewer], timeout: 10m }
  - id: stalls
    match: { topics: ["mcp.rows.stall_rows"] }
    decision: allow_with_constraints
    reason: Stalls run, briefly
    constraints: { max_runtime_sec: 1 }
  - id: no-drops
    match: { topics: ["mcp.rows.drop_table"] }
    decision: deny
    reason: Tables are never dropped by an agent
"#;

async fn server() -> TestApp {
    crate::helpers::sqlite_with(POLICY).await
}

/// The example upstream server, built by `cargo test` next to the binary.
fn rows_bin() -> PathBuf {
    let gavel = Path::new(env!("CARGO_BIN_EXE_gavel"));
    let bin = gavel.parent().unwrap().join("examples").join("mcp_rows");
    assert!(
        bin.exists(),
        "{} is missing: `cargo test` builds it (or `cargo build --example mcp_rows`)",
        bin.display()
    );
    bin
}

/// The calls the upstream server received, in order.
fn received(record: &Path) -> Vec<Value> {
    match std::fs::read_to_string(record) {
        Err(_) => vec![],
        Ok(text) => text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
    }
}

fn args(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn call(tool: &'static str, arguments: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(tool).with_arguments(args(arguments))
}

fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The job id the proxy must use, computed here from the job document
/// written out by hand (RFC 8785 by the test oracle, then SHA-256).
fn expected_id(tool: &str, params: Value, generation: u32) -> String {
    let doc = json!({
        "tenant": "", "topic": format!("mcp.rows.{tool}"), "action": tool, "target": "",
        "risk_tags": [], "proposal": null, "params": params,
        "attributes": {"agent": "mcp-proxy", "mcp_server": "rows", "mcp_tool": tool},
    });
    let canonical = serde_json_canonicalizer::to_string(&doc).unwrap();
    let hash = hex::encode(Sha256::digest(canonical.as_bytes()));
    let key = hex::encode(Sha256::digest(
        format!("mcp-proxy\0rows\0default\0{hash}").as_bytes(),
    ));
    let base = format!("mcp-rows-{}", &key[..24]);
    if generation == 0 {
        base
    } else {
        format!("{base}.{generation}")
    }
}

/// The job id named in a tool error.
fn job_in(text: &str) -> String {
    let start = text.find("job ").expect("a job id") + 4;
    text[start..]
        .split([',', ')', ' '])
        .next()
        .unwrap()
        .to_owned()
}

/// `gavel approve|reject <id>` as `who`, through the CLI.
async fn cli(app: &TestApp, verb: &str, who: &str, id: &str, reason: &str) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args([verb, id, "--reason", reason])
        .args(["--server", &format!("http://{}", app.addr)])
        .args(["--token", &token(who)])
        .env_remove("GAVEL_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "gavel {verb} {id} as {who}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The proxy's arguments before the upstream part.
fn proxy_args(app: &TestApp, server: &str, hold: &str) -> Vec<String> {
    [
        "mcp-proxy",
        "--name",
        "rows",
        "--server",
        server,
        "--token",
        &token("agent-1"),
        "--executor-token",
        &token("executor"),
        "--page-url",
        &format!("http://{}/ui/", app.http_addr),
        "--hold",
        hold,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn gavel_cmd() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_gavel"));
    for v in ["GAVEL_TOKEN", "GAVEL_EXECUTOR_TOKEN", "GAVEL_MCP_MAP"] {
        cmd.env_remove(v);
    }
    cmd.kill_on_drop(true);
    cmd
}

/// An MCP client talking to `gavel mcp-proxy … -- mcp_rows` over stdio.
async fn stdio_proxy(
    app: &TestApp,
    server: &str,
    hold: &str,
    record: &Path,
) -> RunningService<RoleClient, ()> {
    let mut cmd = gavel_cmd();
    cmd.args(proxy_args(app, server, hold))
        .arg("--")
        .arg(rows_bin())
        .arg("--record")
        .arg(record);
    let transport = rmcp::transport::TokioChildProcess::new(cmd).unwrap();
    ().serve(transport)
        .await
        .expect("MCP session with the proxy")
}

/// Starts a child and returns it with the first line of `stdout` or
/// `stderr` that starts with `prefix` (the address it listens on).
async fn spawn_listening(
    mut cmd: tokio::process::Command,
    on_stderr: bool,
    prefix: &str,
) -> (tokio::process::Child, String) {
    if on_stderr {
        cmd.stderr(Stdio::piped());
    } else {
        cmd.stdout(Stdio::piped());
    }
    let mut child = cmd.stdin(Stdio::null()).spawn().unwrap();
    let mut lines: Box<dyn tokio::io::AsyncBufRead + Unpin + Send> = if on_stderr {
        Box::new(BufReader::new(child.stderr.take().unwrap()))
    } else {
        Box::new(BufReader::new(child.stdout.take().unwrap()))
    };
    let mut line = String::new();
    loop {
        line.clear();
        let n = lines.read_line(&mut line).await.unwrap();
        assert!(n > 0, "the child ended before printing `{prefix}`");
        if let Some(rest) = line.trim().strip_prefix(prefix) {
            let url = rest.to_owned();
            // Keep draining so the child never blocks on a full pipe.
            tokio::spawn(async move {
                let mut sink = String::new();
                while lines.read_line(&mut sink).await.unwrap_or(0) > 0 {
                    sink.clear();
                }
            });
            return (child, url);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_calls_are_decided_approved_and_bound_once() {
    let app = server().await;
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("calls.jsonl");
    let grpc = format!("http://{}", app.addr);
    let client = stdio_proxy(&app, &grpc, "0", &record).await;
    let mut executor = app.as_("executor").await;

    // tools/list hides what the policy always denies.
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(
        names,
        ["read_rows", "delete_rows", "stall_rows", "read_follow"]
    );

    // Resources and prompts pass through unchanged.
    let res = client.list_all_resources().await.unwrap();
    assert_eq!(res[0].uri, "rows://users");
    let read = client
        .read_resource(ReadResourceRequestParams::new("rows://users"))
        .await
        .unwrap();
    let read = serde_json::to_value(&read).unwrap();
    assert_eq!(read["contents"][0]["text"], "id,name\n1,ada\n");
    let prompts = client.list_all_prompts().await.unwrap();
    assert_eq!(prompts[0].name, "cleanup");

    // A read is allowed: forwarded at once, bound, reported.
    let r = client
        .call_tool(call("read_rows", json!({"table": "users"})))
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    assert_eq!(
        received(&record),
        [json!({"tool": "read_rows", "arguments": {"table": "users"}})]
    );
    let read_id = expected_id("read_rows", json!({"table": "users"}), 0);
    assert_eq!(
        job_of(&mut executor, &read_id).await.state,
        pb::JobState::Succeeded as i32
    );

    // A denied tool (hidden, but called anyway) never reaches upstream.
    let r = client
        .call_tool(call("drop_table", json!({"table": "users"})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(
        text(&r).contains("rule `no-drops`: Tables are never dropped by an agent"),
        "{}",
        text(&r)
    );
    assert_eq!(received(&record).len(), 1);

    // A delete waits for two approvals: with --hold 0 the call answers
    // "pending" with its job id and page URL, and nothing is forwarded.
    let delete = json!({"table": "users", "where": {"id": 5}});
    let id = expected_id("delete_rows", delete.clone(), 0);
    let r = client
        .call_tool(call("delete_rows", delete.clone()))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    let t = text(&r);
    assert!(t.contains(&format!("job {id}")), "{t}");
    assert!(
        t.contains(&format!("http://{}/ui/jobs/{id}", app.http_addr)),
        "{t}"
    );
    assert_eq!(received(&record).len(), 1);
    assert_eq!(
        job_of(&mut executor, &id).await.state,
        pb::JobState::Pending as i32
    );

    // One approval is not enough; the same call still waits.
    cli(&app, "approve", "alice", &id, "stale test rows").await;
    let r = client
        .call_tool(call("delete_rows", delete.clone()))
        .await
        .unwrap();
    assert_eq!(job_in(&text(&r)), id);
    assert_eq!(received(&record).len(), 1);

    // Changed arguments on a retry are a new request, not the approved one.
    cli(&app, "approve", "bob", &id, "checked").await;
    let changed = json!({"table": "users", "where": {"id": 6}});
    let r = client
        .call_tool(call("delete_rows", changed.clone()))
        .await
        .unwrap();
    assert_eq!(job_in(&text(&r)), expected_id("delete_rows", changed, 0));
    assert_eq!(received(&record).len(), 1);

    // The same call retried goes through once approved, with exactly the
    // approved arguments.
    let r = client
        .call_tool(call("delete_rows", delete.clone()))
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    let got = received(&record);
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[1],
        json!({"tool": "delete_rows", "arguments": delete.clone()})
    );
    assert_eq!(
        job_of(&mut executor, &id).await.state,
        pb::JobState::Succeeded as i32
    );

    // Replayed after it ran: not forwarded again, a new request instead.
    let r = client
        .call_tool(call("delete_rows", delete.clone()))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert_eq!(
        job_in(&text(&r)),
        expected_id("delete_rows", delete.clone(), 1)
    );
    assert_eq!(received(&record).len(), 2);

    // Rejected: the retry says who rejected it and never forwards.
    let other = json!({"table": "users", "where": {"id": 7}});
    let r = client
        .call_tool(call("delete_rows", other.clone()))
        .await
        .unwrap();
    let rejected = job_in(&text(&r));
    cli(&app, "reject", "carol", &rejected, "id 7 is a customer").await;
    let r = client
        .call_tool(call("delete_rows", other.clone()))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(
        text(&r).contains("carol rejected this call") && text(&r).contains("id 7 is a customer"),
        "{}",
        text(&r)
    );
    assert_eq!(received(&record).len(), 2);

    // Expired while pending: the retry is a new request, never a run.
    let late = json!({"table": "users", "where": {"id": 8}});
    let r = client
        .call_tool(call("delete_rows", late.clone()))
        .await
        .unwrap();
    let first = job_in(&text(&r));
    cli(&app, "approve", "alice", &first, "fine").await;
    app.clock.advance_secs(11 * 60);
    app.engine.sweep().await.unwrap();
    assert_eq!(
        job_of(&mut executor, &first).await.state,
        pb::JobState::Expired as i32
    );
    let r = client
        .call_tool(call("delete_rows", late.clone()))
        .await
        .unwrap();
    assert_eq!(job_in(&text(&r)), expected_id("delete_rows", late, 1));
    assert_eq!(received(&record).len(), 2);

    // Malformed arguments for the mapping (none here) and an unknown tool
    // are still decided: the unknown tool waits for approval by default.
    let r = client.call_tool(call("truncate", json!({}))).await.unwrap();
    assert_eq!(r.is_error, Some(true));
    assert_eq!(received(&record).len(), 2);

    // Allowed with constraints: the constraints travel in `_meta`, and
    // max_runtime_sec bounds the call: past it the call is cancelled
    // upstream, answered with an error and reported as failed.
    let r = client
        .call_tool(call("stall_rows", json!({"table": "users"})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("max_runtime_sec (1s)"), "{}", text(&r));
    assert_eq!(
        received(&record)[2],
        json!({"tool": "stall_rows", "arguments": {"table": "users"},
               "constraints": {"max_runtime_sec": 1}})
    );
    let stalled = expected_id("stall_rows", json!({"table": "users"}), 0);
    assert_eq!(
        job_of(&mut executor, &stalled).await.state,
        pb::JobState::Failed as i32
    );
    client.cancel().await.unwrap();

    // gavel unreachable: an error result, never a forwarded call.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let blind = stdio_proxy(&app, &dead, "0", &record).await;
    let r = blind
        .call_tool(call("read_rows", json!({"table": "users"})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(
        text(&r).starts_with("gavel could not clear this call"),
        "{}",
        text(&r)
    );
    assert_eq!(received(&record).len(), 3);
    blind.cancel().await.unwrap();
}

/// The one pending job of `topic` in alice's queue.
async fn pending_job(app: &TestApp, topic: &str) -> String {
    let list = app
        .as_("alice")
        .await
        .approval
        .list_approvals(pb::ListApprovalsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut pending = list
        .items
        .iter()
        .filter_map(|r| r.job.as_ref())
        .filter(|job| job.topic == topic);
    let job = pending.next().expect("a pending job");
    assert!(pending.next().is_none(), "one pending job of {topic}");
    job.job_id.clone()
}

/// A progress token as text.
fn token_text(t: &rmcp::model::ProgressToken) -> String {
    match &t.0 {
        NumberOrString::String(s) => s.to_string(),
        NumberOrString::Number(n) => n.to_string(),
    }
}

/// A client that passes on the progress it is sent: (token, message).
struct Progress(tokio::sync::mpsc::UnboundedSender<(String, String)>);

impl ClientHandler for Progress {
    async fn on_progress(&self, p: ProgressNotificationParam, _: NotificationContext<RoleClient>) {
        let token = token_text(&p.progress_token);
        let _ = self.0.send((token, p.message.unwrap_or_default()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_calls_are_held_or_run_as_tasks_until_approved() {
    let app = server().await;
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("calls.jsonl");

    // The upstream server over streamable HTTP.
    let mut rows = tokio::process::Command::new(rows_bin());
    rows.arg("--record")
        .arg(&record)
        .args(["--listen", "127.0.0.1:0"])
        .kill_on_drop(true);
    let (_rows, upstream) = spawn_listening(rows, false, "listening on ").await;

    // The proxy over streamable HTTP, holding pending calls up to 60 s.
    let mut proxy = gavel_cmd();
    proxy
        .args(proxy_args(&app, &format!("http://{}", app.addr), "60"))
        .args(["--listen", "127.0.0.1:0", "--upstream-url", &upstream]);
    let (_proxy, url) = spawn_listening(proxy, true, "gavel mcp-proxy listening on ").await;

    // A client of the 2025-11-25 revision (initialize), without tasks,
    // that follows progress.
    let (tx, mut progress) = tokio::sync::mpsc::unbounded_channel();
    let plain = Progress(tx)
        .serve(rmcp::transport::StreamableHttpClientTransport::from_uri(
            url.clone(),
        ))
        .await
        .expect("MCP session over HTTP");
    assert_eq!(
        plain.peer().peer_info().unwrap().protocol_version,
        ProtocolVersion::V_2025_11_25
    );

    // A read passes at once.
    let r = plain
        .call_tool(call("read_rows", json!({"table": "users"})))
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    assert_eq!(received(&record).len(), 1);

    // The delete is held: the client hears "waiting for approval of job …"
    // as progress while two people approve through the CLI; then it runs
    // with exactly the approved arguments.
    let held = json!({"table": "users", "where": {"id": 9}});
    let handle = plain
        .peer()
        .send_request_with_option(
            ClientRequest::CallToolRequest(CallToolRequest::new(call("delete_rows", held.clone()))),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    let ours = token_text(&handle.progress_token);
    let waiting = tokio::spawn(handle.await_response());
    let id = expected_id("delete_rows", held.clone(), 0);
    // (The read's own progress, relayed, may come first.)
    let waiting_for = format!("waiting for approval of job {id}");
    let token = loop {
        let (token, said) = progress.recv().await.unwrap();
        if said.contains(&waiting_for) {
            break token;
        }
    };
    assert_eq!(token, ours);
    assert_eq!(received(&record).len(), 1);
    cli(&app, "approve", "alice", &id, "ok").await;
    cli(&app, "approve", "bob", &id, "ok").await;
    let r = match waiting.await.unwrap().unwrap() {
        ServerResult::CallToolResult(r) => r,
        other => panic!("expected a tool result, got {other:?}"),
    };
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    assert_eq!(
        received(&record)[1],
        json!({"tool": "delete_rows", "arguments": held})
    );
    // The upstream's own progress about a call in flight reaches the agent
    // under the agent's token; the agent cancelling the call cancels it
    // upstream, and its job is reported failed. (The guard only turns a
    // missing relay into a failure instead of a hang.)
    let follow = json!({"table": "users"});
    let handle = plain
        .peer()
        .send_request_with_option(
            ClientRequest::CallToolRequest(CallToolRequest::new(call(
                "read_follow",
                follow.clone(),
            ))),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    let ours = token_text(&handle.progress_token);
    let relayed = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            let (token, said) = progress.recv().await.unwrap();
            if said == "read_follow started" {
                return token;
            }
        }
    })
    .await
    .expect("the upstream's progress relayed");
    assert_eq!(relayed, ours);
    handle.cancel(Some("enough".into())).await.unwrap();
    let following = expected_id("read_follow", follow, 0);
    let mut executor = app.as_("executor").await;
    let mut events = executor
        .decision
        .watch_job(pb::WatchJobRequest {
            job_id: following.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let last = loop {
        let ev = events.message().await.unwrap().expect("the job ends");
        let state = ev.job.unwrap().state;
        if state != pb::JobState::Bound as i32 {
            break state;
        }
    };
    assert_eq!(last, pb::JobState::Failed as i32);
    plain.cancel().await.unwrap();

    // A client with the Tasks extension gets a task at once; it completes
    // once approved, with the upstream's result.
    // A client of the stateless 2026-07-28 revision (server/discover) with
    // the Tasks extension.
    let info = ClientConfig::new(
        ClientCapabilities::builder().enable_tasks().build(),
        Implementation::new("test", "1"),
    );
    let tasked = info
        .serve_with_lifecycle(
            rmcp::transport::StreamableHttpClientTransport::from_uri(url.clone()),
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        )
        .await
        .expect("stateless MCP session over HTTP");
    assert_eq!(
        tasked.peer().peer_info().unwrap().protocol_version,
        ProtocolVersion::V_2026_07_28
    );
    let approved = json!({"table": "users", "where": {"id": 10}});
    let created = match tasked
        .peer()
        .call_tool_once(call("delete_rows", approved.clone()))
        .await
        .unwrap()
    {
        CallToolResponse::Task(t) => t,
        other => panic!("expected a task, got {other:?}"),
    };
    let task_id = created.task.task_id.clone();
    let id = expected_id("delete_rows", approved.clone(), 0);
    assert_eq!(pending_job(&app, "mcp.rows.delete_rows").await, id);
    cli(&app, "approve", "alice", &id, "ok").await;
    cli(&app, "approve", "carol", &id, "ok").await;
    let done = poll_task(&tasked, &task_id).await;
    match done {
        TaskPayload::Completed { result } => {
            let r: CallToolResult = serde_json::from_value(Value::Object(result)).unwrap();
            assert_ne!(r.is_error, Some(true), "{}", text(&r));
        }
        other => panic!("expected completed, got {other:?}"),
    }
    assert_eq!(
        received(&record)[3],
        json!({"tool": "delete_rows", "arguments": approved})
    );

    // Rejected: the task fails and nothing is forwarded.
    let refused = json!({"table": "users", "where": {"id": 11}});
    let created = match tasked
        .peer()
        .call_tool_once(call("delete_rows", refused.clone()))
        .await
        .unwrap()
    {
        CallToolResponse::Task(t) => t,
        other => panic!("expected a task, got {other:?}"),
    };
    let id = expected_id("delete_rows", refused, 0);
    assert_eq!(pending_job(&app, "mcp.rows.delete_rows").await, id);
    cli(&app, "reject", "bob", &id, "no").await;
    let done = poll_task(&tasked, &created.task.task_id).await;
    match done {
        TaskPayload::Failed { error } => {
            assert!(
                error["message"].as_str().unwrap().contains("bob rejected"),
                "{error:?}"
            );
        }
        other => panic!("expected failed, got {other:?}"),
    }
    assert_eq!(received(&record).len(), 4);
    tasked.cancel().await.unwrap();
}

/// Polls `tasks/get` (as the protocol has clients do) until the task ends.
async fn poll_task(
    client: &RunningService<RoleClient, rmcp::model::ClientConfig>,
    id: &str,
) -> TaskPayload {
    loop {
        let t = client
            .peer()
            .get_task(GetTaskParams::new(id.to_owned()))
            .await
            .unwrap();
        if t.task.status() != TaskStatus::Working {
            return t.task.payload;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapped_calls_carry_their_target_and_anything_unclear_is_refused() {
    let app = server().await;
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("calls.jsonl");
    let map = dir.path().join("map.yaml");
    std::fs::write(
        &map,
        "tools:\n  - match: \"delete_*\"\n    target: table\n    risk_tags: [destructive]\n    attributes: { env: prod }\n",
    )
    .unwrap();
    let spawn = |executor: &'static str, extra: Vec<String>| {
        let mut cmd = gavel_cmd();
        let mut args = proxy_args(&app, &format!("http://{}", app.addr), "0");
        let at = args.iter().position(|a| a == "--executor-token").unwrap();
        args[at + 1] = token(executor);
        cmd.args(args)
            .args(extra)
            .arg("--")
            .arg(rows_bin())
            .arg("--record")
            .arg(&record);
        async move {
            let transport = rmcp::transport::TokioChildProcess::new(cmd).unwrap();
            ().serve(transport)
                .await
                .expect("MCP session with the proxy")
        }
    };
    let client = spawn("executor", vec!["--map".into(), map.display().to_string()]).await;

    // The mapping names the target and adds tags and attributes.
    let r = client
        .call_tool(call("delete_rows", json!({"table": "users", "where": {}})))
        .await
        .unwrap();
    let id = job_in(&text(&r));
    let job = job_of(&mut app.as_("alice").await, &id).await.job.unwrap();
    assert_eq!(job.target, "users");
    assert_eq!(job.risk_tags, ["destructive"]);
    assert_eq!(
        job.attributes["env"],
        prost_types::Value::from("prod".to_owned())
    );

    // Arguments the mapping cannot read, or too deep to be a job: refused
    // with the place, nothing decided, nothing forwarded.
    let r = client
        .call_tool(call("delete_rows", json!({"table": 5})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("arguments.table"), "{}", text(&r));
    let mut deep = json!(1);
    for _ in 0..100 {
        deep = json!({ "a": deep });
    }
    let r = client
        .call_tool(call("read_rows", json!({ "where": deep })))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(
        text(&r).contains("does not make a valid job"),
        "{}",
        text(&r)
    );
    assert!(received(&record).is_empty());
    client.cancel().await.unwrap();

    // A Bind refusal (here: the "executor" is an agent) forwards nothing.
    let client = spawn("agent-2", vec![]).await;
    let r = client
        .call_tool(call("read_rows", json!({"table": "users"})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("PERMISSION_DENIED"), "{}", text(&r));
    assert!(received(&record).is_empty());
    client.cancel().await.unwrap();

    // The proxy listens on loopback only.
    let out = gavel_cmd()
        .args(proxy_args(&app, "http://127.0.0.1:1", "0"))
        .args([
            "--listen",
            "0.0.0.0:0",
            "--upstream-url",
            "http://127.0.0.1:1/mcp",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("loopback only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
