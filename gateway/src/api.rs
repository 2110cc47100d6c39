//! The HTTP API (axum): tools, tasks, their events over SSE, cancel and resume, the OpenAPI
//! document, and the MCP endpoint mounted at `/mcp` behind the same authentication.

use crate::auth::Tenant;
use crate::error::ApiError;
use crate::mcp;
use crate::service::{CreateTask, Gateway};
use crate::view::TaskView;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::convert::Infallible;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Phases a task can be in (the `phase` filter of the list).
const PHASES: [&str; 7] = [
    "pending",
    "processing",
    "retrying",
    "paused",
    "succeeded",
    "failed",
    "canceled",
];

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (
            status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response();
        let headers = response.headers_mut();
        if self.status == 401 {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"asya\""),
            );
        }
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                headers.insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// The whole service: the API, `/mcp`, health and the OpenAPI document.
pub fn router(gateway: Arc<Gateway>, shutdown: CancellationToken) -> Router {
    let limit = gateway.config().limits.max_body_bytes;
    let authenticated = Router::new()
        .route("/v1/tools", get(list_tools))
        .route("/v1/tasks", post(create_task).get(list_tasks))
        .route("/v1/tasks/{id}", get(get_task))
        .route("/v1/tasks/{id}/events", get(task_events))
        .route("/v1/tasks/{id}/cancel", post(cancel_task))
        .route("/v1/tasks/{id}/resume", post(resume_task))
        .nest_service("/mcp", mcp::service(gateway.clone(), shutdown))
        .layer(middleware::from_fn_with_state(
            gateway.clone(),
            authenticate,
        ));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .merge(authenticated)
        .fallback(|| async { ApiError::new_not_found_route() })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(gateway)
}

impl ApiError {
    fn new_not_found_route() -> ApiError {
        let mut err = ApiError::bad_request("no such endpoint; see /openapi.json");
        err.status = 404;
        err.code = "not_found";
        err
    }
}

/// Resolves the caller's tenant (and charges its rate limit) before any authenticated route.
async fn authenticate(
    State(gateway): State<Arc<Gateway>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    let tenant = gateway.authenticate(authorization)?;
    request.extensions_mut().insert(tenant);
    Ok(next.run(request).await)
}

/// A JSON body: 413 over the limit, 400 naming what is wrong.
fn parse_body<T: DeserializeOwned>(
    gateway: &Gateway,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(gateway.config().limits.max_body_bytes)
        } else {
            ApiError::bad_request(rejection.body_text())
        }
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid: {e}")))
}

async fn list_tools(
    State(gateway): State<Arc<Gateway>>,
    axum::Extension(tenant): axum::Extension<Tenant>,
) -> Json<Value> {
    let tools: Vec<Value> = gateway
        .tools(&tenant)
        .into_iter()
        .map(|t| {
            json!({
                "name": t.name,
                "description": t.description,
                "route": t.route,
                "timeout": t.timeout.map(|d| humantime::format_duration(d).to_string()),
                "inputSchema": t.input_schema,
            })
        })
        .collect();
    Json(json!({ "tools": tools }))
}

async fn create_task(
    State(gateway): State<Arc<Gateway>>,
    axum::Extension(tenant): axum::Extension<Tenant>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<TaskView>), ApiError> {
    let request: CreateTask = parse_body(&gateway, body)?;
    let view = gateway.create(&tenant, request).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    phase: Option<String>,
    limit: Option<usize>,
}

async fn list_tasks(
    State(gateway): State<Arc<Gateway>>,
    axum::Extension(tenant): axum::Extension<Tenant>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if let Some(phase) = &query.phase {
        if !PHASES.contains(&phase.as_str()) {
            return Err(ApiError::bad_request(format!(
                "phase: {phase:?} is not one of {}",
                PHASES.join(", ")
            )));
        }
    }
    let limit = query.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit: must be 1..=1000"));
    }
    let tasks = gateway.list(&tenant, query.phase.as_deref(), limit).await?;
    Ok(Json(json!({ "tasks": tasks })))
}

async fn get_task(
    State(gateway): State<Arc<Gateway>>,
    axum::Extension(tenant): axum::Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    Ok(Json(gateway.get(&tenant, &id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    after: Option<u64>,
}

async fn task_events(
    State(gateway): State<Arc<Gateway>>,
    axum::Extension(tenant): axum::Extension<Tenant>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| {
                ApiError::bad_request("Last-Event-ID: must be an event's id (a number)")
            })
        })
        .transpose()?;
    let after = last_event_id.or(query.after).unwrap_or(0);
    let events = gateway.events(&tenant, &id, after).await?;
    let stream = events.map(|event| {
        Ok::<_, Infallible>(
            Event::default()
                .id(event.seq.to_string())
                .event(event.kind.as_str())
                .json_data(&event)
                .unwrap_or_else(|_| Event::default().comment("unencodable event")),
        )
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn cancel_task(
    State(gateway): State<Arc<Gateway>>,
    axum::Extension(tenant): axum::Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    Ok(Json(gateway.cancel(&tenant, &id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumeTask {
    #[serde(default)]
    input: Option<Value>,
}

async fn resume_task(
    State(gateway): State<Arc<Gateway>>,
    axum::Extension(tenant): axum::Extension<Tenant>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TaskView>, ApiError> {
    let request: ResumeTask = parse_body(&gateway, body)?;
    let input = match request.input {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(ApiError::bad_request("input: must be a JSON object")),
    };
    Ok(Json(gateway.resume(&tenant, &id, input).await?))
}
