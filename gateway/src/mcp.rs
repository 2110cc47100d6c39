//! The MCP server (Streamable HTTP, on the official Rust SDK `rmcp`): one tool per configured
//! flow or actor of the caller's tenant. A call creates a task, reports one progress
//! notification per event (when the client sent a progress token) and returns the result, or
//! at once a task handle when the request's `_meta` says `"asya.sh/wait": false`.

use crate::auth::Tenant;
use crate::error::ApiError;
use crate::service::{CreateTask, Gateway};
use crate::view::TaskView;
use asya_host::message::task_event::EventKind;
use futures::StreamExt;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The request `_meta` key that asks a call not to wait for the task to end.
pub const WAIT_META: &str = "asya.sh/wait";
/// How long past a task's deadline a call waits for the host to report the expiry.
const DEADLINE_GRACE: Duration = Duration::from_secs(5);

/// The `/mcp` service.
pub fn service(
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
) -> StreamableHttpService<McpServer, LocalSessionManager> {
    let mut config = StreamableHttpServerConfig::default();
    config.cancellation_token = shutdown;
    // Authentication (Bearer keys) guards the endpoint, so any Host may reach it (the default
    // allows only loopback hosts, against DNS rebinding of unauthenticated local servers).
    config.allowed_hosts = Vec::new();
    config.sse_keep_alive = Some(Duration::from_secs(15));
    StreamableHttpService::new(
        move || {
            Ok(McpServer {
                gateway: gateway.clone(),
            })
        },
        Arc::new(LocalSessionManager::default()),
        config,
    )
}

/// One MCP session's handler.
#[derive(Clone)]
pub struct McpServer {
    gateway: Arc<Gateway>,
}

fn tenant(context: &RequestContext<RoleServer>) -> Result<Tenant, ErrorData> {
    context
        .extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Tenant>())
        .cloned()
        .ok_or_else(|| ErrorData::invalid_request("not authenticated", None))
}

fn to_error(err: ApiError) -> ErrorData {
    let data = Some(json!({"code": err.code, "status": err.status}));
    if err.status >= 500 {
        ErrorData::internal_error(err.message, data)
    } else {
        ErrorData::invalid_params(err.message, data)
    }
}

/// The structured content of a call's result.
fn outcome(view: &TaskView) -> CallToolResult {
    match view.phase.as_str() {
        "succeeded" => CallToolResult::structured(json!({
            "task_id": view.id, "phase": view.phase, "result": view.result,
        })),
        "failed" | "canceled" => CallToolResult::structured_error(json!({
            "task_id": view.id, "phase": view.phase, "reason": view.reason, "error": view.error,
        })),
        "paused" => CallToolResult::structured(json!({
            "task_id": view.id, "phase": view.phase, "pause": view.pause,
        })),
        _ => CallToolResult::structured(json!({
            "task_id": view.id, "phase": view.phase, "actor": view.actor,
            "message": "the task is still running; ask for its status with `asya mcp status ID`",
        })),
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build());
        info.server_info = Implementation::new("asya-gateway", env!("CARGO_PKG_VERSION"));
        info.instructions = Some(
            "Each tool runs an asya flow or actor; a call waits for the task to end and reports \
             progress per hop."
                .into(),
        );
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tenant = tenant(&context)?;
        let tools = self
            .gateway
            .tools(&tenant)
            .into_iter()
            .map(|t| {
                let schema = t.input_schema.as_object().cloned().unwrap_or_default();
                Tool::new(t.name.clone(), t.description.clone(), Arc::new(schema))
            })
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let tenant = tenant(&context)?;
        let tool = self
            .gateway
            .tool(&tenant, &request.name)
            .map_err(to_error)?
            .clone();
        // rmcp hands the request's `_meta` to the context.
        let wait = context
            .meta
            .get(WAIT_META)
            .or_else(|| request.meta.as_ref().and_then(|m| m.get(WAIT_META)))
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let payload = Value::Object(request.arguments.unwrap_or_default());
        let created = self
            .gateway
            .create(
                &tenant,
                CreateTask {
                    tool: Some(tool.name.clone()),
                    route: None,
                    payload,
                    timeout: None,
                },
            )
            .await
            .map_err(to_error)?;
        if !wait {
            return Ok(CallToolResult::structured(json!({
                "task_id": created.id, "phase": created.phase,
            }))
            .into());
        }
        let progress_token = context.meta.get_progress_token();
        let max_wait = tool
            .timeout
            .map(|t| t + DEADLINE_GRACE)
            .unwrap_or(self.gateway.config().limits.max_wait);
        let mut events = self
            .gateway
            .events(&tenant, &created.id, 0)
            .await
            .map_err(to_error)?;
        let follow = async {
            // MCP progress must increase with each notification: an event that does not advance
            // the hop count (a retry, a pause, a resume) moves it on by a hundredth.
            let mut reported = -1.0_f64;
            while let Some(event) = events.next().await {
                if let Some(token) = &progress_token {
                    let message = match (&event.kind, &event.actor) {
                        (EventKind::Created, _) => format!("{}: created", event.task),
                        (kind, Some(actor)) => {
                            format!("{}: {} {actor}", event.task, kind.as_str())
                        }
                        (kind, None) => format!("{}: {}", event.task, kind.as_str()),
                    };
                    let value = (event.hops as f64).max(reported + 0.01);
                    reported = value;
                    let total = (event.total_hops.max(event.hops) as f64).max(value);
                    let progress = ProgressNotificationParam::new(token.clone(), value)
                        .with_total(total)
                        .with_message(message);
                    if let Err(err) = context.peer.notify_progress(progress).await {
                        tracing::debug!(error = %err, "progress notification not delivered");
                    }
                }
                if event.kind == EventKind::Paused || event.kind.is_terminal() {
                    break;
                }
            }
        };
        tokio::select! {
            _ = follow => {}
            _ = tokio::time::sleep(max_wait) => {}
            _ = context.ct.cancelled() => {}
        }
        let view = self
            .gateway
            .get(&tenant, &created.id)
            .await
            .map_err(to_error)?;
        Ok(outcome(&view).into())
    }
}
