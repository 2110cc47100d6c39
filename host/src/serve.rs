//! The long-running host on NATS JetStream (`asya-host run`): every actor of a directory of
//! manifests, the end actors per namespace, and the HTTP endpoints `/metrics`, `/healthz` and
//! `/readyz`. Shutdown is graceful: stop pulling, finish in-flight messages, ack, return.

use crate::component_cache::ComponentCache;
use crate::end_actors::run_end_actors;
use crate::executor::Executor;
use crate::manifest::{self, AsyncActor, Runtime};
use crate::metrics::Metrics;
use crate::python::{PythonExecutor, PythonRuntimeConfig};
use crate::sandbox::SandboxEngine;
use crate::sidecar::Sidecar;
use crate::transport::nats::{connect, NatsSettings, NatsTransport};
use crate::transport::Transport;
use crate::wasm::WasmExecutor;
use anyhow::{bail, Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Everything `asya-host run` needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// NATS server URL.
    pub nats_url: String,
    /// Directory of AsyncActor manifests.
    pub manifests: PathBuf,
    /// Component files by actor name (override `spec.component`).
    pub components: HashMap<String, PathBuf>,
    /// JetStream settings.
    pub nats: NatsSettings,
    /// Where to serve `/metrics`, `/healthz`, `/readyz` (none: no HTTP server).
    pub http_addr: Option<SocketAddr>,
    /// How long in-flight messages may take to finish after a shutdown signal.
    pub grace: Duration,
    /// Inputs larger than this are rejected (overrides the default per actor).
    pub max_message_bytes: Option<usize>,
    /// Compiled-component cache.
    pub cache: ComponentCache,
    /// Runtime sockets of `runtime: python` actors by name (default
    /// `/var/run/asya/runtime.sock`, the shared emptyDir of the actor's pod).
    pub python_sockets: HashMap<String, PathBuf>,
}

/// Where a python actor's runtime listens unless told otherwise.
pub const DEFAULT_RUNTIME_SOCKET: &str = "/var/run/asya/runtime.sock";

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

async fn metrics_endpoint(
    State(state): State<HttpState>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (
        StatusCode::OK,
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn ready_endpoint(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Where an actor's component comes from: `--component`, else a local `spec.component`.
fn component_path(
    actor: &AsyncActor,
    overrides: &HashMap<String, PathBuf>,
    base: &Path,
) -> Result<PathBuf> {
    if let Some(path) = overrides.get(actor.name()) {
        return Ok(path.clone());
    }
    match actor.spec.component.as_deref() {
        None => bail!(
            "actor '{}' has no spec.component and no --component {0}=PATH",
            actor.name()
        ),
        Some(reference) if reference.starts_with("oci://") => Ok(PathBuf::from(reference)),
        Some(reference) => {
            let path = PathBuf::from(reference.trim_start_matches("file://"));
            Ok(if path.is_absolute() {
                path
            } else {
                base.join(path)
            })
        }
    }
}

/// Runs the host until `shutdown` is cancelled.
pub async fn run(config: RunConfig, shutdown: CancellationToken) -> Result<()> {
    let manifests = manifest::load_dir(&config.manifests)?;
    if manifests.is_empty() {
        bail!("no AsyncActor manifests in {}", config.manifests.display());
    }
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    if let Some(addr) = config.http_addr {
        let state = HttpState {
            metrics: metrics.clone(),
            ready: ready.clone(),
        };
        let app = axum::Router::new()
            .route("/metrics", get(metrics_endpoint))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(ready_endpoint))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the HTTP endpoint {addr}"))?;
        tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
    }

    let engine = SandboxEngine::new()?;
    let client = connect(&config.nats_url).await?;
    let mut by_namespace: BTreeMap<String, Vec<(PathBuf, AsyncActor)>> = BTreeMap::new();
    for (file, actor) in manifests {
        by_namespace
            .entry(actor.namespace().to_owned())
            .or_default()
            .push((file, actor));
    }
    let workers = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut executors = Vec::new();
    for (namespace, actors) in by_namespace {
        let transport = NatsTransport::new(client.clone(), &namespace, config.nats.clone()).await?;
        let results = Arc::new(transport.results().await?);
        let fanin =
            Arc::new(crate::fanin::NatsFanIn::open(transport.jetstream(), &namespace).await?);
        let shared: Arc<dyn Transport> = Arc::new(transport);
        tasks.spawn(run_end_actors(shared.clone(), results, workers.clone()));
        tasks.spawn(crate::fanin::run_fanin(
            shared.clone(),
            fanin,
            workers.clone(),
        ));
        for (file, actor) in actors {
            let mut settings = actor.sidecar_settings()?;
            if let Some(max) = config.max_message_bytes {
                settings.max_message_bytes = max;
            }
            let executor: Arc<dyn Executor> = if actor.spec.runtime == Runtime::Python {
                let limits = actor.sandbox_limits()?;
                let socket = config
                    .python_sockets
                    .get(actor.name())
                    .cloned()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_RUNTIME_SOCKET));
                // The user's container runs the runtime; the host waits for it before pulling.
                let python = PythonExecutor::load(
                    actor.name(),
                    PythonRuntimeConfig {
                        socket,
                        spawn: None,
                        ready_timeout: Duration::from_secs(600),
                        max_in_flight: limits.max_instances,
                        max_output_bytes: limits.max_output_bytes,
                    },
                )
                .await?;
                tracing::info!(actor = actor.name(), namespace = %namespace,
                    handler = %python.descriptor().handler, "python actor connected");
                Arc::new(python)
            } else {
                let base = file.parent().unwrap_or(Path::new("."));
                let path = component_path(&actor, &config.components, base)?;
                let loaded = crate::local::load_component_from(
                    &engine,
                    &config.cache,
                    actor.name(),
                    path.clone(),
                )
                .await?;
                let wasm = Arc::new(
                    WasmExecutor::load(
                        actor.name(),
                        engine.clone(),
                        &loaded,
                        actor.sandbox_limits()?,
                    )
                    .await?,
                );
                tracing::info!(actor = actor.name(), namespace = %namespace, handler = %wasm.descriptor().handler,
                    digest = %loaded.digest, cached = loaded.from_cache, "actor loaded");
                wasm.start_reaper();
                executors.push((actor.name().to_owned(), wasm.clone()));
                wasm
            };
            let sidecar = Arc::new(
                Sidecar::new(actor.name(), executor, shared.clone(), settings)
                    .with_resiliency(actor.resiliency()?)
                    .with_metrics(metrics.clone()),
            );
            tasks.spawn(sidecar.run(workers.clone()));
        }
    }
    {
        let (metrics, stop) = (metrics.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                for (name, executor) in &executors {
                    let stats = executor.stats();
                    metrics.pool(
                        name,
                        stats.instantiated.load(Ordering::Relaxed),
                        stats.memory_peak_bytes.load(Ordering::Relaxed),
                    );
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
    }
    ready.store(true, Ordering::Relaxed);
    tracing::info!("asya host ready");

    shutdown.cancelled().await;
    ready.store(false, Ordering::Relaxed);
    tracing::info!(grace = ?config.grace, "shutting down: no new messages, finishing in-flight ones");
    workers.cancel();
    let drained = tokio::time::timeout(config.grace, async {
        while let Some(joined) = tasks.join_next().await {
            if let Err(err) = joined.context("a host task panicked").and_then(|r| r) {
                tracing::warn!(error = %format!("{err:#}"), "task ended with an error");
            }
        }
    })
    .await;
    if drained.is_err() {
        bail!("in-flight messages did not finish within the {:?} grace period; they will be redelivered", config.grace);
    }
    client.flush().await.ok();
    tracing::info!("asya host stopped");
    Ok(())
}
