//! What the gateway does, whatever the protocol (HTTP or MCP): authenticate a caller, create a
//! task, read its status and events, cancel it, resume a paused one. Every operation is scoped
//! to the caller's tenant: another tenant's task is "not found".

use crate::auth::{Authenticator, RateLimiter, Tenant};
use crate::config::{check_route, Config, Tool};
use crate::error::ApiError;
use crate::log::{AppendError, TaskLog};
use crate::view::TaskView;
use anyhow::Result;
use asya_host::message::envelope::{
    now_rfc3339, parse_rfc3339, Envelope, ErrorInfo, Phase, Reason, Route, SINK, SUMP,
};
use asya_host::message::status;
use asya_host::message::task_event::{
    EventKind, TaskEvent, PAUSE, PAUSE_PROMPT_HEADER, PAUSE_PROMPT_KEY, PAUSE_SCHEMA_HEADER,
    TASK_HEADER,
};
use asya_host::transport::nats::{NatsSettings, NatsTransport};
use asya_host::transport::results::ResultStore;
use asya_host::transport::{Outbound, Transport};
use asya_spec::names::dedup_id;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How often a guarded append is tried again when a host's event lands between the read and the
/// write (a cancel of a task still moving).
const APPEND_TRIES: usize = 5;

/// Where one namespace's messages go and its results are.
#[derive(Clone)]
pub struct Namespace {
    /// The namespace's queues.
    pub transport: Arc<dyn Transport>,
    /// Its final (and paused) envelopes.
    pub results: Arc<dyn ResultStore>,
}

/// Where the gateway puts work: one in-process mesh, or a NATS server's namespaces.
#[allow(clippy::large_enum_variant)] // one per process
pub enum Backends {
    /// Every namespace on one in-process transport (`asya-gateway dev`).
    Local(Namespace),
    /// JetStream namespaces, opened on first use.
    Nats {
        /// The client.
        client: async_nats::Client,
        /// Opened namespaces.
        opened: tokio::sync::Mutex<HashMap<String, Namespace>>,
    },
}

impl Backends {
    /// The namespace's transport and results store.
    pub async fn namespace(&self, namespace: &str) -> Result<Namespace> {
        match self {
            Backends::Local(ns) => Ok(ns.clone()),
            Backends::Nats { client, opened } => {
                let mut opened = opened.lock().await;
                if let Some(ns) = opened.get(namespace) {
                    return Ok(ns.clone());
                }
                let transport =
                    NatsTransport::new(client.clone(), namespace, NatsSettings::default()).await?;
                let results = Arc::new(transport.results().await?);
                let ns = Namespace {
                    transport: Arc::new(transport),
                    results,
                };
                opened.insert(namespace.to_owned(), ns.clone());
                Ok(ns)
            }
        }
    }
}

/// `POST /v1/tasks`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// A tool of the tenant (its route and timeout).
    #[serde(default)]
    pub tool: Option<String>,
    /// Or a route of the tenant's actors.
    #[serde(default)]
    pub route: Option<Vec<String>>,
    /// The payload (a JSON object).
    pub payload: Value,
    /// A deadline (`30s`, `5m`); with a tool, the shorter of the two.
    #[serde(default)]
    pub timeout: Option<String>,
}

/// The gateway.
pub struct Gateway {
    config: Config,
    /// Each tool's `inputSchema`, compiled, by (namespace, name).
    schemas: HashMap<(String, String), jsonschema::Validator>,
    auth: Authenticator,
    limiter: RateLimiter,
    log: Arc<dyn TaskLog>,
    backends: Backends,
}

impl Gateway {
    /// A gateway for `config` over `log` and `backends`.
    pub fn new(config: Config, log: Arc<dyn TaskLog>, backends: Backends) -> Self {
        let schemas = config
            .tools
            .iter()
            .filter_map(|t| {
                // Config::check compiled each schema already; one that fails here is skipped.
                let validator = jsonschema::validator_for(&t.input_schema).ok()?;
                Some(((t.namespace.clone(), t.name.clone()), validator))
            })
            .collect();
        Gateway {
            schemas,
            auth: Authenticator::new(&config),
            limiter: RateLimiter::new(config.limits.rate_per_second, config.limits.burst),
            config,
            log,
            backends,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The tenant of an `Authorization` header, charged one request of its rate limit.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Tenant, ApiError> {
        let tenant = self.auth.tenant(authorization).ok_or_else(|| {
            ApiError::unauthorized(if authorization.is_none() {
                "missing Authorization: Bearer <api key>"
            } else {
                "unknown API key"
            })
        })?;
        self.limiter
            .check(&tenant.namespace)
            .map_err(|wait| ApiError::rate_limited(&tenant.namespace, wait))?;
        Ok(tenant)
    }

    /// The tenant's tools.
    pub fn tools<'a>(&'a self, tenant: &'a Tenant) -> Vec<&'a Tool> {
        self.config.tools_of(&tenant.namespace).collect()
    }

    /// The tenant's tool `name`.
    pub fn tool(&self, tenant: &Tenant, name: &str) -> Result<&Tool, ApiError> {
        self.config
            .tool(&tenant.namespace, name)
            .ok_or_else(|| ApiError::unknown_tool(name))
    }

    /// Creates a task: publishes its first message and logs `created`.
    pub async fn create(&self, tenant: &Tenant, request: CreateTask) -> Result<TaskView, ApiError> {
        let Value::Object(_) = &request.payload else {
            return Err(ApiError::bad_request(
                "payload: must be a JSON object (a handler's dict)",
            ));
        };
        let (tool, route, tool_timeout) = match (&request.tool, &request.route) {
            (Some(name), None) => {
                let tool = self.tool(tenant, name)?;
                let key = (tool.namespace.clone(), tool.name.clone());
                if let Some(schema) = self.schemas.get(&key) {
                    if let Err(err) = schema.validate(&request.payload) {
                        return Err(ApiError::bad_request(format!(
                            "payload{}: {err} (the tool's inputSchema)",
                            err.instance_path()
                        )));
                    }
                }
                (Some(tool.name.clone()), tool.route.clone(), tool.timeout)
            }
            (None, Some(route)) => {
                check_route(route).map_err(|e| ApiError::bad_request(format!("route: {e}")))?;
                (None, route.clone(), None)
            }
            _ => {
                return Err(ApiError::bad_request(
                    "give exactly one of `tool` (a tool name) or `route` (actor names)",
                ))
            }
        };
        let asked = request
            .timeout
            .as_deref()
            .map(|t| {
                humantime::parse_duration(t).map_err(|e| {
                    ApiError::bad_request(format!("timeout: {t:?} is not a duration ({e})"))
                })
            })
            .transpose()?;
        let timeout = match (tool_timeout, asked) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let now_at = time::OffsetDateTime::now_utc();
        let now = format_time(now_at);
        let mut env = Envelope::new(
            Route::through(&route).expect("a checked route is not empty"),
            request.payload,
            &now,
        );
        env.headers
            .insert(TASK_HEADER.into(), Value::String(env.id.clone()));
        let deadline_at = timeout.map(|t| format_time(now_at + t));
        env.status_mut(&now).deadline_at = deadline_at.clone();
        let mut created = TaskEvent::about(EventKind::Created, &env, Some(&env.route.curr), &now);
        created.tool = tool;
        created.route = Some(route);
        created.deadline_at = deadline_at;
        let ns = self.namespace(tenant).await?;
        self.log
            .append(&tenant.namespace, created.clone(), Some(0))
            .await
            .map_err(append_failed)?;
        let first = env.route.curr.clone();
        let published = ns
            .transport
            .publish(
                &first,
                Outbound {
                    bytes: env.to_bytes(),
                    dedup_id: dedup_id(&env.id, 0, &first),
                },
            )
            .await;
        if let Err(err) = published {
            tracing::warn!(task = %env.id, error = %format!("{err:#}"), "publishing a new task failed");
            let mut failed =
                TaskEvent::about(EventKind::Failed, &env, Some(&first), &now_rfc3339());
            failed.reason = Some("Unavailable".into());
            failed.error = serde_json::to_value(ErrorInfo::host(
                "Unavailable",
                format!("the task could not be published: {err:#}"),
            ))
            .ok();
            let _ = self.log.append(&tenant.namespace, failed, None).await;
            return Err(ApiError::unavailable(format!(
                "the transport did not take the task: {err:#}"
            )));
        }
        tracing::info!(task = %env.id, tenant = %tenant.namespace, key = %tenant.key_name, "task created");
        Ok(TaskView::fold(&tenant.namespace, [&created]).expect("a created event folds"))
    }

    /// The task's status.
    pub async fn get(&self, tenant: &Tenant, id: &str) -> Result<TaskView, ApiError> {
        let history = self
            .log
            .history(&tenant.namespace, id)
            .await
            .map_err(ApiError::unavailable_from)?;
        TaskView::fold(&tenant.namespace, &history).ok_or_else(|| ApiError::not_found(id))
    }

    /// The tenant's tasks, newest first (`phase`: only those in it).
    pub async fn list(
        &self,
        tenant: &Tenant,
        phase: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TaskView>, ApiError> {
        let events = self
            .log
            .namespace_events(&tenant.namespace)
            .await
            .map_err(ApiError::unavailable_from)?;
        let mut by_task: HashMap<&str, Vec<&TaskEvent>> = HashMap::new();
        for event in &events {
            by_task.entry(event.task.as_str()).or_default().push(event);
        }
        let mut views: Vec<TaskView> = by_task
            .values()
            .filter_map(|events| TaskView::fold(&tenant.namespace, events.iter().copied()))
            .filter(|v| phase.is_none_or(|p| v.phase == p))
            .collect();
        views.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        views.truncate(limit);
        Ok(views)
    }

    /// Cancels a task that has not ended (its message, if still moving, is no longer reported).
    pub async fn cancel(&self, tenant: &Tenant, id: &str) -> Result<TaskView, ApiError> {
        for _ in 0..APPEND_TRIES {
            let view = self.get(tenant, id).await?;
            if view.is_terminal() {
                return Err(ApiError::conflict(
                    "conflict",
                    format!("task {id} already ended ({})", view.phase),
                ));
            }
            let event = view_event(&view, EventKind::Canceled, Some("Canceled"));
            match self
                .log
                .append(&tenant.namespace, event, Some(view.last_seq))
                .await
            {
                Ok(_) => return self.get(tenant, id).await,
                Err(AppendError::Conflict) => continue,
                Err(err) => return Err(append_failed(err)),
            }
        }
        Err(ApiError::conflict(
            "conflict",
            format!("task {id} kept changing; try again"),
        ))
    }

    /// Resumes a paused task: merges `input` into its payload and sends it to the step after
    /// `x-pause` (or ends it at `x-sink` when none is left).
    pub async fn resume(
        &self,
        tenant: &Tenant,
        id: &str,
        input: Map<String, Value>,
    ) -> Result<TaskView, ApiError> {
        let view = self.get(tenant, id).await?;
        if view.phase != "paused" {
            return Err(ApiError::conflict(
                "not_paused",
                format!("task {id} is {}, not paused", view.phase),
            ));
        }
        let ns = self.namespace(tenant).await?;
        let stored = ns
            .results
            .get(id)
            .await
            .map_err(ApiError::unavailable_from)?
            .filter(|env| {
                env.route.curr == PAUSE
                    && env
                        .status
                        .as_ref()
                        .is_some_and(|s| s.phase == Phase::Paused)
            })
            .ok_or_else(|| {
                ApiError::conflict(
                    "not_paused",
                    format!(
                        "task {id}'s paused message is no longer stored (its results TTL passed)"
                    ),
                )
            })?;
        let now_at = time::OffsetDateTime::now_utc();
        let now = format_time(now_at);
        let expired = stored
            .status
            .as_ref()
            .and_then(|s| s.deadline_at.as_deref())
            .and_then(parse_rfc3339)
            .is_some_and(|deadline| deadline <= now_at);
        if expired {
            self.expire(tenant, &ns, stored, &view, &now).await?;
            return Err(ApiError::conflict(
                "deadline_expired",
                format!(
                    "task {id} passed its deadline while paused; it ended with DeadlineExpired"
                ),
            ));
        }
        let mut env = stored;
        if let Value::Object(payload) = &mut env.payload {
            payload.remove(PAUSE_PROMPT_KEY);
            payload.extend(input);
        } else {
            env.payload = Value::Object(input);
        }
        env.headers.remove(PAUSE_PROMPT_HEADER);
        env.headers.remove(PAUSE_SCHEMA_HEADER);
        let dispatch = match env.route.advanced() {
            Some(route) => {
                env.route = route;
                status::to_current_step(env, &now)
            }
            None => status::finish(env, PAUSE, &now),
        };
        let kind = if dispatch.destination == SINK {
            EventKind::Succeeded
        } else {
            EventKind::Resumed
        };
        let mut event =
            TaskEvent::about(kind, &dispatch.envelope, Some(&dispatch.destination), &now);
        if kind == EventKind::Succeeded {
            event.result = Some(dispatch.envelope.payload.clone());
            event.progress = 1.0;
        }
        // Claim the task first: of two resumes, one wins and the other gets 409.
        match self
            .log
            .append(&tenant.namespace, event, Some(view.last_seq))
            .await
        {
            Ok(_) => {}
            Err(AppendError::Conflict) => {
                return Err(ApiError::conflict(
                    "not_paused",
                    format!("task {id} was resumed or canceled by another request"),
                ))
            }
            Err(err) => return Err(append_failed(err)),
        }
        let env = &dispatch.envelope;
        let sent = if dispatch.destination == SINK {
            ns.results.put(SINK, env).await
        } else {
            ns.transport
                .publish(
                    &dispatch.destination,
                    Outbound {
                        bytes: env.to_bytes(),
                        dedup_id: dedup_id(&env.id, env.route.prev.len(), &dispatch.destination),
                    },
                )
                .await
        };
        if let Err(err) = sent {
            // Hand the task back to the human: paused again, with the same prompt.
            let mut again = view_event(&view, EventKind::Paused, Some("Paused"));
            if let Some(pause) = &view.pause {
                again.prompt = Some(pause.prompt.clone());
                again.schema = pause.schema.clone();
            }
            let _ = self.log.append(&tenant.namespace, again, None).await;
            return Err(ApiError::unavailable(format!(
                "the transport did not take the resumed task (it is paused again): {err:#}"
            )));
        }
        tracing::info!(task = %id, tenant = %tenant.namespace, "task resumed");
        self.get(tenant, id).await
    }

    /// Ends a paused task whose deadline passed at `x-sump` with `DeadlineExpired`.
    async fn expire(
        &self,
        tenant: &Tenant,
        ns: &Namespace,
        mut env: Envelope,
        view: &TaskView,
        now: &str,
    ) -> Result<(), ApiError> {
        env.route = env.route.ended_at(SUMP);
        let error = ErrorInfo::host(
            "DeadlineExpired",
            "the task's deadline passed while it was paused",
        );
        status::fail_status(
            env.status_mut(now),
            PAUSE,
            Reason::DeadlineExpired,
            error,
            now,
        );
        let mut event = TaskEvent::about(EventKind::Failed, &env, Some(PAUSE), now);
        event.hops = view.hops;
        match self
            .log
            .append(&tenant.namespace, event, Some(view.last_seq))
            .await
        {
            Ok(_) | Err(AppendError::Conflict) => {}
            Err(err) => return Err(append_failed(err)),
        }
        ns.results
            .put(SUMP, &env)
            .await
            .map_err(ApiError::unavailable_from)
    }

    /// The task's events after `after` (replayed), then live ones, ending after a terminal one.
    pub async fn events(
        &self,
        tenant: &Tenant,
        id: &str,
        after: u64,
    ) -> Result<BoxStream<'static, TaskEvent>, ApiError> {
        let view = self.get(tenant, id).await?;
        let live = self
            .log
            .follow(&tenant.namespace, id, after)
            .await
            .map_err(ApiError::unavailable_from)?;
        // A task that ended before `after` has nothing more to send.
        let ended = view.is_terminal() && view.last_seq <= after;
        Ok(until_terminal(live, ended))
    }

    /// Waits for a task to end or pause (at most `max_wait`), calling `on_event` with each event
    /// (replayed ones included); returns its status then.
    pub async fn wait(
        &self,
        tenant: &Tenant,
        id: &str,
        max_wait: Duration,
        mut on_event: impl FnMut(&TaskEvent),
    ) -> Result<TaskView, ApiError> {
        let mut events = self.events(tenant, id, 0).await?;
        let waited = tokio::time::timeout(max_wait, async {
            while let Some(event) = events.next().await {
                on_event(&event);
                if event.kind == EventKind::Paused || event.kind.is_terminal() {
                    break;
                }
            }
        })
        .await;
        if waited.is_err() {
            tracing::debug!(task = %id, "stopped waiting for the task");
        }
        self.get(tenant, id).await
    }

    async fn namespace(&self, tenant: &Tenant) -> Result<Namespace, ApiError> {
        self.backends
            .namespace(&tenant.namespace)
            .await
            .map_err(ApiError::unavailable_from)
    }
}

/// `live` until (and with) its first terminal event; errors end it.
fn until_terminal(
    live: BoxStream<'static, Result<TaskEvent>>,
    ended: bool,
) -> BoxStream<'static, TaskEvent> {
    futures::stream::unfold((live, ended), |(mut live, ended)| async move {
        if ended {
            return None;
        }
        match live.next().await? {
            Ok(event) => {
                let ended = event.kind.is_terminal();
                Some((event, (live, ended)))
            }
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "reading task events failed");
                None
            }
        }
    })
    .boxed()
}

/// An event written by the gateway about a task it only has the status of.
fn view_event(view: &TaskView, kind: EventKind, reason: Option<&str>) -> TaskEvent {
    TaskEvent {
        task: view.id.clone(),
        seq: 0,
        kind,
        at: now_rfc3339(),
        actor: view.actor.clone(),
        hops: view.hops,
        total_hops: view.total_hops,
        progress: view.progress,
        attempt: view.attempt,
        result: None,
        reason: reason.map(str::to_owned),
        error: None,
        prompt: None,
        schema: None,
        tool: None,
        route: None,
        deadline_at: None,
    }
}

fn append_failed(err: AppendError) -> ApiError {
    match err {
        AppendError::Conflict => ApiError::conflict("conflict", "the task already exists"),
        AppendError::Failed(err) => ApiError::unavailable_from(err),
    }
}

fn format_time(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .expect("a UTC time formats as RFC 3339")
}
