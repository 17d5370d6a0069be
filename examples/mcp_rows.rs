//! A small MCP server to put `gavel mcp-proxy` in front of: tools over a
//! pretend table (`read_rows`, `delete_rows`, `drop_table`, and
//! `stall_rows` and `read_follow`, which never finish unless cancelled),
//! one resource and
//! one prompt. Every tool call it receives is appended to the record file
//! as one JSON line (`{"tool":…, "arguments":…}`, plus `"constraints"` when
//! gavel's constraints came along in `_meta`), so a test can see exactly
//! what reached it. A call with a progress token gets one progress
//! notification.
//!
//! ```text
//! mcp_rows --record calls.jsonl                         # stdio
//! mcp_rows --record calls.jsonl --listen 127.0.0.1:0    # streamable HTTP at /mcp
//! ```

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, GetPromptRequestParams,
    GetPromptResponse, Implementation, ListPromptsResult, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ReadResourceRequestParams,
    ReadResourceResponse, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
struct Rows {
    record: Arc<Mutex<PathBuf>>,
}

fn schema(props: Value) -> Arc<serde_json::Map<String, Value>> {
    let v = json!({"type": "object", "properties": props});
    Arc::new(v.as_object().cloned().unwrap_or_default())
}

fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, McpError> {
    serde_json::from_value(v).map_err(|e| McpError::internal_error(e.to_string(), None))
}

impl Rows {
    fn record(&self, tool: &str, arguments: &Value, meta: &Value) -> Result<(), McpError> {
        let path = self.record.lock().unwrap_or_else(|e| e.into_inner());
        let mut line = json!({"tool": tool, "arguments": arguments});
        if let Some(c) = meta.get("dev.gavel/constraints") {
            line["constraints"] = c.clone();
        }
        let line = line.to_string();
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&*path)
            .and_then(|mut f| writeln!(f, "{line}"))
            .map_err(|e| McpError::internal_error(format!("cannot record: {e}"), None))
    }
}

impl ServerHandler for Rows {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_prompts()
                .build(),
        )
        .with_server_info(Implementation::new("rows", "1.0.0"))
        .with_instructions("A pretend table of users.")
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let table = json!({"table": {"type": "string"}});
        let filter = json!({"table": {"type": "string"}, "where": {"type": "object"}});
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new("read_rows", "Read rows of a table", schema(filter.clone())),
            Tool::new(
                "delete_rows",
                "Delete the rows matching `where`",
                schema(filter),
            ),
            Tool::new("drop_table", "Drop a whole table", schema(table.clone())),
            Tool::new("stall_rows", "Wait until cancelled", schema(table.clone())),
            Tool::new(
                "read_follow",
                "Follow a table until cancelled",
                schema(table),
            ),
        ]))
    }

    async fn call_tool(
        &self,
        req: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let args = Value::Object(req.arguments.clone().unwrap_or_default());
        let meta = serde_json::to_value(&ctx.meta).unwrap_or(Value::Null);
        if let Some(token) = ctx.meta.get_progress_token() {
            let mut p = ProgressNotificationParam::new(token, 1.0);
            p.message = Some(format!("{} started", req.name));
            let _ = ctx.peer.notify_progress(p).await;
        }
        let text = match req.name.as_ref() {
            "stall_rows" | "read_follow" => {
                self.record(&req.name, &args, &meta)?;
                ctx.ct.cancelled().await;
                return Err(McpError::internal_error("cancelled", None));
            }
            "read_rows" => "1 row: {\"id\": 1, \"name\": \"ada\"}".to_owned(),
            "delete_rows" => format!("deleted the rows matching {}", args["where"]),
            "drop_table" => format!("dropped {}", args["table"]),
            other => {
                return Ok(CallToolResponse::Complete(CallToolResult::error(vec![
                    ContentBlock::text(format!("no tool {other}")),
                ])));
            }
        };
        self.record(&req.name, &args, &meta)?;
        Ok(CallToolResponse::Complete(CallToolResult::success(vec![
            ContentBlock::text(text),
        ])))
    }

    async fn list_resources(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        from_json(json!({"resources": [{"uri": "rows://users", "name": "users"}]}))
    }

    async fn read_resource(
        &self,
        req: ReadResourceRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        if req.uri != "rows://users" {
            return Err(McpError::resource_not_found(req.uri, None));
        }
        Ok(ReadResourceResponse::Complete(from_json(json!({
            "contents": [{"uri": "rows://users", "mimeType": "text/csv", "text": "id,name\n1,ada\n"}]
        }))?))
    }

    async fn list_prompts(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        from_json(json!({"prompts": [{"name": "cleanup", "description": "Tidy a table"}]}))
    }

    async fn get_prompt(
        &self,
        req: GetPromptRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        if req.name != "cleanup" {
            return Err(McpError::invalid_params(
                format!("no prompt {}", req.name),
                None,
            ));
        }
        Ok(GetPromptResponse::Complete(from_json(json!({
            "messages": [{"role": "user", "content": {"type": "text", "text": "Remove stale rows."}}]
        }))?))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (mut record, mut listen) = (None, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--record" => record = args.next().map(PathBuf::from),
            "--listen" => listen = args.next(),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let rows = Rows {
        record: Arc::new(Mutex::new(record.ok_or("--record FILE is required")?)),
    };
    match listen {
        None => {
            // A client of the stateless revision may end the stream without
            // ever sending `initialize`: that is a normal end, not an error.
            if let Ok(running) = rows.serve(rmcp::transport::stdio()).await {
                running.waiting().await.map_err(|e| e.to_string())?;
            }
        }
        Some(addr) => {
            use rmcp::transport::streamable_http_server::{
                StreamableHttpServerConfig, StreamableHttpService,
                session::local::LocalSessionManager,
            };
            let service: StreamableHttpService<Rows, LocalSessionManager> =
                StreamableHttpService::new(
                    move || Ok(rows.clone()),
                    Default::default(),
                    StreamableHttpServerConfig::default(),
                );
            let router = axum::Router::new().nest_service("/mcp", service);
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .map_err(|e| format!("{addr}: {e}"))?;
            let bound = listener.local_addr().map_err(|e| e.to_string())?;
            println!("listening on http://{bound}/mcp");
            std::io::stdout().flush().map_err(|e| e.to_string())?;
            axum::serve(listener, router)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
