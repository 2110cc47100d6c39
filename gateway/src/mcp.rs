//! The MCP server (Streamable HTTP, on the official Rust SDK `rmcp`): one tool per configured
//! flow or actor of the caller's tenant. A call creates a task, reports one progress
//! notification per event (when the client sent a progress token) and returns the result, or
//! at once a task handle when the request's `_meta` says `"asya.sh/wait": false`.

use crate::auth::Tenant;
use crate::error::ApiError;
use crate::service::{CreateTask, Gateway};
use crate::view::TaskView;
use asya_host::message::task_event::{EventKind, TaskEvent, DEFAULT_PAUSE_PROMPT};
use futures::StreamExt;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ElicitRequestParams,
    ElicitationAction, ElicitationSchema, Implementation, ListToolsResult, PaginatedRequestParams,
    ProgressNotificationParam, ProgressToken, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The request `_meta` key that asks a call not to wait for the task to end.
pub const WAIT_META: &str = "asya.sh/wait";
/// How many times one call asks its client for a human's input (a route may pause more than
/// once); past that the call returns the paused task.
const MAX_ELICITATIONS: usize = 16;
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

/// Whether the client declared elicitation support when it initialized.
fn client_elicits(context: &RequestContext<RoleServer>) -> bool {
    context
        .peer
        .peer_info()
        .is_some_and(|info| info.capabilities.elicitation.is_some())
}

/// One progress notification for `event`, strictly above the last one reported.
async fn notify(
    context: &RequestContext<RoleServer>,
    token: &ProgressToken,
    event: &TaskEvent,
    reported: &mut f64,
) {
    let message = match (&event.kind, &event.actor) {
        (EventKind::Created, _) => format!("{}: created", event.task),
        (kind, Some(actor)) => format!("{}: {} {actor}", event.task, kind.as_str()),
        (kind, None) => format!("{}: {}", event.task, kind.as_str()),
    };
    let value = (event.hops as f64).max(*reported + 0.01);
    *reported = value;
    let total = (event.total_hops.max(event.hops) as f64).max(value);
    let progress = ProgressNotificationParam::new(token.clone(), value)
        .with_total(total)
        .with_message(message);
    if let Err(err) = context.peer.notify_progress(progress).await {
        tracing::debug!(error = %err, "progress notification not delivered");
    }
}

/// The schema a pause asks the human to fill: the pause's own when it is a flat object schema
/// an MCP client can render, else one free-text `response`.
fn pause_schema(paused: &TaskEvent) -> ElicitationSchema {
    paused
        .schema
        .clone()
        .and_then(|schema| serde_json::from_value::<ElicitationSchema>(schema).ok())
        .unwrap_or_else(|| {
            serde_json::from_value(json!({
                "type": "object",
                "properties": {"response": {
                    "type": "string",
                    "description": "Your answer (merged into the payload as `response`)",
                }},
            }))
            .expect("the default elicitation schema is valid")
        })
}

/// Asks the client for the human's input to a pause; `None` when declined or canceled.
async fn elicit(
    context: &RequestContext<RoleServer>,
    paused: &TaskEvent,
) -> Option<Map<String, Value>> {
    let request = ElicitRequestParams::FormElicitationParams {
        meta: None,
        message: paused
            .prompt
            .clone()
            .unwrap_or_else(|| DEFAULT_PAUSE_PROMPT.to_owned()),
        requested_schema: pause_schema(paused),
    };
    match context.peer.create_elicitation(request).await {
        Ok(answer) if answer.action == ElicitationAction::Accept => match answer.content {
            Some(Value::Object(input)) => Some(input),
            None => Some(Map::new()),
            Some(_) => None,
        },
        Ok(_) => None,
        Err(err) => {
            tracing::info!(task = %paused.task, error = %err, "elicitation failed; the task stays paused");
            None
        }
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
        let asks_human = client_elicits(&context);
        let give_up = tokio::time::sleep(max_wait);
        tokio::pin!(give_up);
        // MCP progress must increase with each notification: an event that does not advance
        // the hop count (a retry, a pause, a resume) moves it on by a hundredth.
        let mut reported = -1.0_f64;
        let mut after = 0;
        for _ in 0..MAX_ELICITATIONS {
            let mut events = self
                .gateway
                .events(&tenant, &created.id, after)
                .await
                .map_err(to_error)?;
            let mut paused = None;
            let follow = async {
                while let Some(event) = events.next().await {
                    after = event.seq;
                    if let Some(token) = &progress_token {
                        notify(&context, token, &event, &mut reported).await;
                    }
                    if event.kind == EventKind::Paused {
                        paused = Some(event);
                        break;
                    }
                    if event.kind.is_terminal() {
                        break;
                    }
                }
            };
            tokio::select! {
                _ = follow => {}
                _ = &mut give_up => break,
                _ = context.ct.cancelled() => break,
            }
            // A pause: ask the human through the client, if it can, and go on with the answer.
            let Some(paused) = paused.filter(|_| asks_human) else {
                break;
            };
            let answer = tokio::select! {
                answer = elicit(&context, &paused) => answer,
                _ = &mut give_up => break,
                _ = context.ct.cancelled() => break,
            };
            let Some(input) = answer else {
                break;
            };
            if let Err(err) = self.gateway.resume(&tenant, &created.id, input).await {
                tracing::info!(task = %created.id, error = %err, "resume after elicitation refused");
                break;
            }
        }
        let view = self
            .gateway
            .get(&tenant, &created.id)
            .await
            .map_err(to_error)?;
        Ok(outcome(&view).into())
    }
}
