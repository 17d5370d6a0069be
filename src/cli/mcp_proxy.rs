//! `gavel mcp-proxy`: an MCP server to the agent and an MCP client to one
//! upstream server. Every `tools/call` is decided by gavel and reaches the
//! upstream only bound, with Bind's canonical arguments; everything else
//! passes through. The pure part (mapping, job ids, texts) is `crate::mcp`.
//!
//! It fails closed: a call gavel cannot decide or bind (unreachable,
//! timeout, refusal, malformed arguments) is answered with a tool error and
//! never forwarded.

use super::client::Conn;
use super::gate::{DoorArgs, Gate, Outcome};
use crate::job::{Job, Limits};
use crate::mcp::{self, Mapping};
use crate::proto::v1 as pb;
use clap::Args;
use rmcp::ClientServiceExt;
#[allow(deprecated)]
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams,
    CancelledNotificationParam, ClientRequest, CompleteRequestParams, CompleteResult, ContentBlock,
    CreateTaskResult, GetPromptRequestParams, GetPromptResponse, GetTaskParams, GetTaskResult,
    JsonObject, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult,
    ListToolsResult, LoggingMessageNotificationParam, PaginatedRequestParams,
    ProgressNotificationParam, ProgressToken, ReadResourceRequestParams, ReadResourceResponse,
    RequestMetaObject, ResourceUpdatedNotificationParam, ServerConfig, ServerResult,
    SetLevelRequestParams, SubscribeRequestParams, TASKS_EXTENSION_ID, UnsubscribeRequestParams,
};
use rmcp::service::{
    NotificationContext, Peer, PeerRequestOptions, RequestContext, RunningService, ServiceError,
};
use rmcp::task_manager::{TaskExit, TaskManager, TaskOptions};
use rmcp::{
    ClientHandler, ErrorData as McpError, RoleClient, RoleServer, ServerHandler, ServiceExt,
};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Args, Debug)]
pub struct McpProxyArgs {
    /// The upstream server's name in topics: calls are decided as
    /// `mcp.<name>.<tool>`. Chosen here, never by the upstream server.
    #[arg(long)]
    pub name: String,
    /// The mapping file (YAML): tenant, and per tool glob a target
    /// argument, risk tags and attributes.
    #[arg(long, env = "GAVEL_MCP_MAP")]
    pub map: Option<PathBuf>,
    /// Approvals are found again by content within one scope: the same
    /// call through a proxy with the same name and scope attaches to the
    /// same job.
    #[arg(long, default_value = "default")]
    pub scope: String,
    #[command(flatten)]
    pub door: DoorArgs,
    /// For a client without the Tasks extension: how long a call that needs
    /// approval is held (with progress notifications) before it is answered
    /// "approval pending". 0 answers at once.
    #[arg(long, default_value_t = 25.0)]
    pub hold: f64,
    /// A call gavel has not decided within this many seconds is refused.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Show tools the policy always denies in `tools/list` (hidden by default).
    #[arg(long)]
    pub show_denied: bool,
    /// Serve streamable HTTP at `http://<addr>/mcp` (a loopback address)
    /// instead of stdio.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The upstream server's streamable HTTP endpoint, instead of a command.
    #[arg(long)]
    pub upstream_url: Option<String>,
    /// The upstream server's command line (after `--`), spoken to over stdio.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// Settings checked once at start.
struct Settings {
    hold: Duration,
    timeout: Duration,
    door: DoorArgs,
    scope: String,
    hide_denied: bool,
}

fn seconds(flag: &str, v: f64, min: f64) -> Result<Duration, String> {
    if v.is_finite() && v >= min && v <= 3600.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!(
            "{flag} {v}: must be a number of seconds from {min} to 3600"
        ))
    }
}

pub async fn run(conn: &Conn, a: McpProxyArgs) -> Result<ExitCode, super::CliError> {
    let err = |m: String| super::CliError(m);
    let mapping = match &a.map {
        None => Mapping::plain(&a.name),
        Some(path) => {
            let text = super::read_text(path, 1024 * 1024)?;
            Mapping::from_yaml(&a.name, &text, &path.display().to_string())
        }
    }
    .map_err(|e| err(e.0))?;
    let settings = Settings {
        hold: seconds("--hold", a.hold, 0.0).map_err(err)?,
        timeout: seconds("--timeout", a.timeout, 0.001).map_err(err)?,
        door: a.door.clone(),
        scope: a.scope.clone(),
        hide_denied: !a.show_denied,
    };
    if let Some(addr) = a.listen
        && !addr.ip().is_loopback()
    {
        return Err(err(format!(
            "--listen {addr}: the proxy acts with the agent's token for anyone who reaches it, so it listens on loopback only"
        )));
    }
    let gate = Gate::lazy(conn, a.door.executor_token.as_deref()).map_err(err)?;

    let downstream = Downstream::default();
    let progress = Relay::default();
    let upstream = connect_upstream(&a, downstream.clone(), progress.clone())
        .await
        .map_err(err)?;
    let peer_info = upstream
        .peer()
        .peer_info()
        .ok_or_else(|| err("the upstream server did not complete the handshake".into()))?;
    let mut info = ServerConfig::new(peer_info.capabilities.clone());
    if let Some(implementation) = &peer_info.server_info {
        info.server_info = implementation.clone();
    }
    info.instructions = peer_info.instructions.clone();
    let proxy = Proxy(Arc::new(Shared {
        gate,
        mapping,
        settings,
        upstream: upstream.peer().clone(),
        info,
        tasks: TaskManager::new(),
        downstream,
        progress,
    }));

    let result = match a.listen {
        Some(addr) => serve_http(proxy, addr).await,
        None => serve_stdio(proxy).await,
    };
    let _ = upstream.cancel().await;
    result.map_err(err)?;
    Ok(ExitCode::SUCCESS)
}

async fn connect_upstream(
    a: &McpProxyArgs,
    downstream: Downstream,
    progress: Relay,
) -> Result<RunningService<RoleClient, Upstream>, String> {
    let handler = Upstream {
        downstream,
        progress,
    };
    match (&a.upstream_url, a.command.split_first()) {
        (Some(url), None) => {
            use rmcp::transport::StreamableHttpClientTransport;
            use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
            let client = crate::notify::outbound_client()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
            let transport = StreamableHttpClientTransport::with_client(
                client,
                StreamableHttpClientTransportConfig::with_uri(url.as_str()),
            );
            handler
                .serve_with_lifecycle(transport, lifecycle())
                .await
                .map_err(|e| format!("cannot connect to the upstream server at {url}: {e}"))
        }
        (None, Some((program, rest))) => {
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(rest);
            let (transport, _) = rmcp::transport::TokioChildProcess::builder(cmd)
                .stderr(std::process::Stdio::inherit())
                .spawn()
                .map_err(|e| format!("cannot start the upstream server `{program}`: {e}"))?;
            handler
                .serve_with_lifecycle(transport, lifecycle())
                .await
                .map_err(|e| format!("cannot start an MCP session with `{program}`: {e}"))
        }
        (Some(_), Some(_)) => {
            Err("give the upstream server as --upstream-url or as a command after --, not both".into())
        }
        (None, None) => Err(
            "no upstream server: give --upstream-url URL or a command after -- (gavel mcp-proxy --name db -- my-server --flag)"
                .into(),
        ),
    }
}

/// Upstream: the stateless 2026-07-28 revision (`server/discover`) when the
/// server speaks it, else the `initialize` handshake.
fn lifecycle() -> rmcp::ClientLifecycleMode {
    rmcp::ClientLifecycleMode::Auto {
        preferred_versions: vec![rmcp::model::ProtocolVersion::V_2026_07_28],
        legacy_version: None,
    }
}

async fn serve_stdio(proxy: Proxy) -> Result<(), String> {
    let running = proxy
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("cannot start the MCP session on stdio: {e}"))?;
    running
        .waiting()
        .await
        .map_err(|e| format!("the MCP session on stdio ended badly: {e}"))?;
    Ok(())
}

async fn serve_http(proxy: Proxy, addr: SocketAddr) -> Result<(), String> {
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    };
    let config = StreamableHttpServerConfig::default();
    let ct = config.cancellation_token.clone();
    let service: StreamableHttpService<Proxy, LocalSessionManager> =
        StreamableHttpService::new(move || Ok(proxy.clone()), Default::default(), config);
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("--listen {addr}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("--listen {addr}: {e}"))?;
    eprintln!("gavel mcp-proxy listening on http://{bound}/mcp");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            crate::server::shutdown_signal().await;
            ct.cancel();
        })
        .await
        .map_err(|e| format!("serving {bound}: {e}"))
}

// ------------------------------------------------------------ downstream peers

/// The agents connected to this proxy, for notifications from upstream.
#[derive(Clone, Default)]
struct Downstream(Arc<Mutex<Vec<Peer<RoleServer>>>>);

impl Downstream {
    fn add(&self, peer: Peer<RoleServer>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(peer);
    }

    fn peers(&self) -> Vec<Peer<RoleServer>> {
        let mut peers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        peers.retain(|p| !p.is_transport_closed());
        peers.clone()
    }
}

/// Which agent's request each upstream call in flight serves: the proxy's
/// progress token upstream → the agent and the agent's own token.
#[derive(Clone, Default)]
struct Relay(Arc<Mutex<HashMap<ProgressToken, Recipient>>>);

/// An agent and its progress token for one call.
type Recipient = (Peer<RoleServer>, ProgressToken);

impl Relay {
    fn insert(&self, upstream: ProgressToken, peer: Peer<RoleServer>, theirs: ProgressToken) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(upstream, (peer, theirs));
    }

    fn remove(&self, upstream: &ProgressToken) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(upstream);
    }

    fn get(&self, upstream: &ProgressToken) -> Option<Recipient> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(upstream).cloned()
    }
}

/// The client side: relays progress to the agent whose call it is about,
/// and the upstream server's other notifications to every connected agent.
struct Upstream {
    downstream: Downstream,
    progress: Relay,
}

#[allow(deprecated)]
impl ClientHandler for Upstream {
    async fn on_progress(
        &self,
        mut params: ProgressNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        if let Some((peer, theirs)) = self.progress.get(&params.progress_token) {
            params.progress_token = theirs;
            let _ = peer.notify_progress(params).await;
        }
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        for p in self.downstream.peers() {
            let _ = p.notify_logging_message(params.clone()).await;
        }
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        for p in self.downstream.peers() {
            let _ = p.notify_resource_updated(params.clone()).await;
        }
    }

    async fn on_resource_list_changed(&self, _: NotificationContext<RoleClient>) {
        for p in self.downstream.peers() {
            let _ = p.notify_resource_list_changed().await;
        }
    }

    async fn on_tool_list_changed(&self, _: NotificationContext<RoleClient>) {
        for p in self.downstream.peers() {
            let _ = p.notify_tool_list_changed().await;
        }
    }

    async fn on_prompt_list_changed(&self, _: NotificationContext<RoleClient>) {
        for p in self.downstream.peers() {
            let _ = p.notify_prompt_list_changed().await;
        }
    }
}

// ------------------------------------------------------------ the server side

struct Shared {
    gate: Gate,
    mapping: Mapping,
    settings: Settings,
    upstream: Peer<RoleClient>,
    /// What the upstream server said of itself: capabilities, name, instructions.
    info: ServerConfig,
    tasks: TaskManager,
    downstream: Downstream,
    progress: Relay,
}

#[derive(Clone)]
struct Proxy(Arc<Shared>);

fn upstream_error(e: ServiceError) -> McpError {
    match e {
        ServiceError::McpError(e) => e,
        other => McpError::internal_error(format!("the upstream server: {other}"), None),
    }
}

fn tool_error(text: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text)])
}

/// The request's `_meta` without the protocol's own keys (they describe
/// the agent's session with the proxy, not the proxy's with upstream).
fn forwarded_meta(meta: Option<RequestMetaObject>) -> Option<RequestMetaObject> {
    let mut meta = meta?;
    meta.0
        .0
        .retain(|k, _| !k.starts_with("io.modelcontextprotocol/"));
    (!meta.0.0.is_empty()).then_some(meta)
}

/// The `_meta` key the decision's constraints travel under to the upstream
/// server, for a server that can apply them.
const CONSTRAINTS_META: &str = "dev.gavel/constraints";

/// How long a task is kept: approvals may take hours, so longer than the
/// SDK's five-minute default. The job's own expiry ends the wait sooner.
const TASK_TTL_MS: u64 = 24 * 3600 * 1000;

/// A bound call, ready to forward.
struct Bound {
    job_id: String,
    bind_id: String,
    params: Map<String, Value>,
    constraints: Map<String, Value>,
}

/// Where a job stands after waiting for it.
enum Waited {
    /// It left PENDING: run the gate again to bind it, or answer why not.
    Moved(Box<pb::JobRecord>),
    /// Still pending when the wait ended.
    StillPending,
}

impl Proxy {
    fn job_for(&self, tool: &str, args: &Map<String, Value>) -> Result<Job, String> {
        let value = self.0.mapping.job(tool, args).map_err(|e| e.0)?;
        Job::from_json_value(value, &Limits::default())
            .map_err(|e| format!("the call does not make a valid job: {e}"))
    }

    /// One pass of the gate, within `--timeout`.
    async fn decide(&self, job: &Job) -> Result<Outcome, String> {
        let s = &self.0;
        let hash = job.hash();
        let run = s.gate.run(job, |generation| {
            mcp::job_id(
                s.mapping.server(),
                &s.settings.scope,
                hash.as_str(),
                generation,
            )
        });
        match tokio::time::timeout(s.settings.timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "gavel did not answer within {:?}",
                s.settings.timeout
            )),
        }
    }

    /// Follows `job_id` until it leaves PENDING or `until` passes.
    async fn wait(&self, job_id: &str, until: tokio::time::Instant) -> Result<Waited, String> {
        loop {
            match tokio::time::timeout_at(until, self.0.gate.wait_until_resolved(job_id)).await {
                Err(_) => return Ok(Waited::StillPending),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(Some(record))) => return Ok(Waited::Moved(Box::new(record))),
                // The stream ended while pending (a server restart): follow again.
                Ok(Ok(None)) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    fn pending_result(&self, job_id: &str, rule: &str, reason: &str) -> CallToolResult {
        let url = self.0.settings.door.job_url(job_id);
        tool_error(mcp::pending_text(job_id, rule, reason, &url))
    }

    /// The answer for a job that left PENDING without being approved, or
    /// `None` when it was approved (then the gate binds it).
    fn unapproved(job_id: &str, record: &pb::JobRecord) -> Option<String> {
        match pb::JobState::try_from(record.state) {
            Ok(pb::JobState::Approved) => None,
            Ok(pb::JobState::Rejected) => Some(mcp::rejected_text(
                job_id,
                &record.resolved_by,
                &record.resolved_comment,
            )),
            Ok(pb::JobState::Expired) => Some(format!(
                "gavel: the approval request for this call (job {}) expired before enough people approved. It did not run; call again to ask anew.",
                job_id
            )),
            Ok(pb::JobState::Cancelled) => Some(format!(
                "gavel: the approval request for this call (job {}) was withdrawn. It did not run.",
                job_id
            )),
            _ => None,
        }
    }

    /// Answers an outcome: forwards a bound call, or says why it did not run.
    async fn finish(
        &self,
        outcome: Outcome,
        req: &CallToolRequestParams,
        via: Option<&RequestContext<RoleServer>>,
    ) -> CallToolResult {
        match outcome {
            Outcome::Deny {
                job_id,
                rule,
                reason,
            } => tool_error(mcp::denied_text(&job_id, &rule, &reason)),
            Outcome::Rejected {
                job_id,
                by,
                comment,
            } => tool_error(mcp::rejected_text(&job_id, &by, &comment)),
            Outcome::Pending {
                job_id,
                rule,
                reason,
            } => self.pending_result(&job_id, &rule, &reason),
            Outcome::Bound {
                job_id,
                bind_id,
                params,
                constraints,
                ..
            } => {
                let bound = Bound {
                    job_id,
                    bind_id,
                    params,
                    constraints,
                };
                self.forward(bound, req, via).await
            }
        }
    }

    /// Sends the bound call upstream with Bind's canonical arguments and
    /// reports how it ended. The decision's `max_runtime_sec` bounds the
    /// call (then it is cancelled upstream); the agent's progress token is
    /// relayed; an agent that cancels cancels the upstream call.
    async fn forward(
        &self,
        bound: Bound,
        req: &CallToolRequestParams,
        via: Option<&RequestContext<RoleServer>>,
    ) -> CallToolResult {
        let Bound {
            job_id,
            bind_id,
            params,
            constraints,
        } = bound;
        let call = CallToolRequestParams::new(req.name.clone()).with_arguments(params);
        let mut meta = forwarded_meta(via.map(|c| c.meta.clone())).unwrap_or_default();
        if !constraints.is_empty() {
            meta.0.0.insert(
                CONSTRAINTS_META.to_owned(),
                Value::Object(constraints.clone()),
            );
        }

        let max_runtime = constraints
            .get("max_runtime_sec")
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|s| Duration::from_secs_f64(s.min(7.0 * 24.0 * 3600.0)));
        // The SDK carries `_meta` in the options (it sets its own progress
        // token there, which the relay maps back to the agent's).
        let mut options = PeerRequestOptions::no_options();
        options.timeout = max_runtime;
        options.meta = (!meta.0.0.is_empty()).then_some(meta);
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(call));
        let answer = match self
            .0
            .upstream
            .send_request_with_option(request, options)
            .await
        {
            Err(e) => Err(e),
            Ok(handle) => {
                let upstream_token = handle.progress_token.clone();
                let request_id = handle.id.clone();
                if let Some(ctx) = via
                    && let Some(theirs) = ctx.meta.get_progress_token()
                {
                    self.0
                        .progress
                        .insert(upstream_token.clone(), ctx.peer.clone(), theirs);
                }
                let cancelled = async {
                    match via {
                        Some(ctx) => ctx.ct.cancelled().await,
                        None => std::future::pending().await,
                    }
                };
                let answer = tokio::select! {
                    r = handle.await_response() => r,
                    _ = cancelled => {
                        let why = "the agent cancelled the call";
                        let _ = self
                            .0
                            .upstream
                            .notify_cancelled(CancelledNotificationParam::new(
                                Some(request_id),
                                Some(why.to_owned()),
                            ))
                            .await;
                        Err(ServiceError::McpError(McpError::internal_error(why, None)))
                    }
                };
                self.0.progress.remove(&upstream_token);
                answer
            }
        };
        let (result, ok, detail) = match answer {
            Ok(ServerResult::CallToolResult(r)) => {
                let ok = r.is_error != Some(true);
                let detail = if ok {
                    ""
                } else {
                    "the tool answered with an error"
                };
                (r, ok, detail.to_owned())
            }
            Ok(_) => {
                let why = "the upstream server answered with a task, an input request or something else than a tool result, which the proxy does not relay";
                (tool_error(mcp::failed_text(why)), false, why.to_owned())
            }
            Err(ServiceError::Timeout { timeout }) => {
                let why = format!(
                    "the call ran longer than its max_runtime_sec ({}s) and was cancelled",
                    timeout.as_secs_f64()
                );
                (tool_error(why.clone()), false, why)
            }
            Err(e) => {
                let why = format!("the upstream server failed: {e}");
                (tool_error(why.clone()), false, why)
            }
        };
        if let Err(e) = self.0.gate.report(&job_id, &bind_id, ok, &detail).await {
            tracing::warn!(job_id, "could not report the outcome: {e}");
        }
        result
    }

    /// Holds a pending call for up to `--hold`, telling the agent it waits.
    async fn hold(
        &self,
        job: &Job,
        pending: Outcome,
        req: &CallToolRequestParams,
        ctx: &RequestContext<RoleServer>,
    ) -> CallToolResult {
        let Outcome::Pending {
            job_id,
            rule,
            reason,
        } = &pending
        else {
            return self.finish(pending, req, Some(ctx)).await;
        };
        let until = tokio::time::Instant::now() + self.0.settings.hold;
        let token = ctx.meta.get_progress_token();
        let url = self.0.settings.door.job_url(job_id);
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        let mut sent = 0u32;
        let wait = self.wait(job_id, until);
        tokio::pin!(wait);
        let waited = loop {
            tokio::select! {
                w = &mut wait => break w,
                _ = ctx.ct.cancelled() => break Ok(Waited::StillPending),
                _ = tick.tick(), if token.is_some() && !self.0.settings.hold.is_zero() => {
                    if let Some(t) = &token {
                        let mut p = ProgressNotificationParam::new(t.clone(), f64::from(sent));
                        p.message = Some(format!("waiting for approval of job {job_id}: {url}"));
                        let _ = ctx.peer.notify_progress(p).await;
                        sent += 1;
                    }
                }
            }
        };
        match waited {
            Ok(Waited::StillPending) => self.pending_result(job_id, rule, reason),
            Ok(Waited::Moved(record)) => match Self::unapproved(job_id, &record) {
                Some(text) => tool_error(text),
                None => match self.decide(job).await {
                    Ok(o) => self.finish(o, req, Some(ctx)).await,
                    Err(e) => tool_error(mcp::failed_text(&e)),
                },
            },
            Err(e) => tool_error(mcp::failed_text(&e)),
        }
    }

    /// For a client with the Tasks extension: the call becomes a task that
    /// completes once the job is approved and the call has run, and fails
    /// when it is rejected or expires.
    fn as_task(&self, job: Job, job_id: String, req: CallToolRequestParams) -> CreateTaskResult {
        let me = self.clone();
        let options = TaskOptions::new()
            .with_ttl_ms(TASK_TTL_MS)
            .with_poll_interval_ms(1000)
            .with_status_message(format!(
                "waiting for approval of job {job_id}: {}",
                self.0.settings.door.job_url(&job_id)
            ));
        let task = self.0.tasks.spawn(options, move |ctx| {
            Box::pin(async move {
                let far = tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
                let waited = tokio::select! {
                    w = me.wait(&job_id, far) => w,
                    _ = ctx.cancelled() => return Err(TaskExit::Cancelled),
                };
                let fail = |text: String| TaskExit::Error(McpError::internal_error(text, None));
                let record = match waited {
                    Ok(Waited::Moved(r)) => r,
                    Ok(Waited::StillPending) => {
                        return Err(fail(format!("job {job_id} is still pending")));
                    }
                    Err(e) => return Err(fail(mcp::failed_text(&e))),
                };
                if let Some(text) = Self::unapproved(&job_id, &record) {
                    return Err(fail(text));
                }
                match me.decide(&job).await {
                    Ok(o @ Outcome::Bound { .. }) => Ok(me.finish(o, &req, None).await),
                    Ok(o) => {
                        let r = me.finish(o, &req, None).await;
                        Err(fail(first_text(&r)))
                    }
                    Err(e) => Err(fail(mcp::failed_text(&e))),
                }
            })
        });
        CreateTaskResult::new(task)
    }

    async fn list_tools_shown(
        &self,
        request: Option<PaginatedRequestParams>,
    ) -> Result<ListToolsResult, McpError> {
        let mut list = self
            .0
            .upstream
            .list_tools(request)
            .await
            .map_err(upstream_error)?;
        if !self.0.settings.hide_denied {
            return Ok(list);
        }
        let mut probes = tokio::task::JoinSet::new();
        for (i, tool) in list.tools.iter().enumerate() {
            if !self.0.mapping.decided_by_name(&tool.name) {
                continue;
            }
            let Ok(job) = self.job_for(&tool.name, &Map::new()) else {
                continue;
            };
            let gate = self.0.gate.clone();
            let limit = self.0.settings.timeout;
            probes.spawn(async move {
                let d = tokio::time::timeout(limit, gate.explain(&job)).await;
                (i, matches!(d, Ok(Ok(pb::Decision::Deny))))
            });
        }
        let mut denied = vec![false; list.tools.len()];
        while let Some(Ok((i, deny))) = probes.join_next().await {
            denied[i] = deny;
        }
        let mut i = 0;
        list.tools.retain(|_| {
            i += 1;
            !denied[i - 1]
        });
        Ok(list)
    }
}

fn first_text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .find_map(|c| c.as_text().map(|t| t.text.clone()))
        .unwrap_or_else(|| "the call did not run".into())
}

impl ServerHandler for Proxy {
    fn get_info(&self) -> ServerConfig {
        let mut info = self.0.info.clone();
        info.capabilities
            .extensions
            .get_or_insert_with(Default::default)
            .insert(TASKS_EXTENSION_ID.to_owned(), JsonObject::new());
        info
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        self.0.downstream.add(context.peer);
    }

    async fn call_tool(
        &self,
        req: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        if req.input_responses.is_some() || req.request_state.is_some() {
            return Ok(CallToolResponse::Complete(tool_error(mcp::failed_text(
                "input rounds (inputResponses, requestState) are not relayed through gavel",
            ))));
        }
        // Decided and bound only when it can be delivered: an approval is
        // not spent on a call the upstream can no longer receive.
        if self.0.upstream.is_transport_closed() {
            return Ok(CallToolResponse::Complete(tool_error(mcp::failed_text(
                "the upstream server has gone away",
            ))));
        }
        let args = req.arguments.clone().unwrap_or_default();
        let job = match self.job_for(&req.name, &args) {
            Ok(j) => j,
            Err(e) => return Ok(CallToolResponse::Complete(tool_error(mcp::failed_text(&e)))),
        };
        let outcome = match self.decide(&job).await {
            Ok(o) => o,
            Err(e) => return Ok(CallToolResponse::Complete(tool_error(mcp::failed_text(&e)))),
        };
        let tasks = ctx
            .client_capabilities()
            .is_some_and(|c| c.supports_tasks());
        match outcome {
            Outcome::Pending { job_id, .. } if tasks => {
                Ok(CallToolResponse::Task(self.as_task(job, job_id, req)))
            }
            pending @ Outcome::Pending { .. } => Ok(CallToolResponse::Complete(
                self.hold(&job, pending, &req, &ctx).await,
            )),
            other => Ok(CallToolResponse::Complete(
                self.finish(other, &req, Some(&ctx)).await,
            )),
        }
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        self.list_tools_shown(request).await
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        _: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        Ok(GetTaskResult::new(self.0.tasks.get_task(&request.task_id)?))
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.0.tasks.cancel_task(&request.task_id)
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        self.0
            .upstream
            .list_resources(request)
            .await
            .map_err(upstream_error)
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        self.0
            .upstream
            .list_resource_templates(request)
            .await
            .map_err(upstream_error)
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        self.0
            .upstream
            .read_resource_once(request)
            .await
            .map_err(upstream_error)
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.0
            .upstream
            .subscribe(request)
            .await
            .map_err(upstream_error)
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.0
            .upstream
            .unsubscribe(request)
            .await
            .map_err(upstream_error)
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        self.0
            .upstream
            .list_prompts(request)
            .await
            .map_err(upstream_error)
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        self.0
            .upstream
            .get_prompt_once(request)
            .await
            .map_err(upstream_error)
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        self.0
            .upstream
            .complete(request)
            .await
            .map_err(upstream_error)
    }

    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.0
            .upstream
            .set_level(request)
            .await
            .map_err(upstream_error)
    }
}
