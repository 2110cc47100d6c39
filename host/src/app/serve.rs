//! The long-running host on a broker (`asya-host run`; NATS JetStream, RabbitMQ or SQS, see
//! [`crate::transport::backend`]): every actor of a directory of
//! manifests, the end actors per namespace, and the HTTP endpoints `/metrics`, `/healthz` and
//! `/readyz`. Shutdown is graceful: stop pulling, finish in-flight messages, ack, return.

use crate::actor::builder::{self, HandlerSource, SidecarParts};
use crate::actor::end_actors::run_end_actors;
use crate::actor::manifest::{self, ActorSettings, AsyncActor, Runtime};
use crate::actor::pause::run_pause_actor;
use crate::actor::secrets;
use crate::actor::sidecar::Sidecar;
use crate::message::task_event::TaskReporter;
use crate::ops::metrics::Metrics;
use crate::ops::supervisor::{supervise, Health};
use crate::runtime::component_cache::ComponentCache;
use crate::runtime::python::PythonRuntimeConfig;
use crate::runtime::sandbox::SandboxEngine;
use crate::runtime::wasm::WasmExecutor;
use crate::transport::backend::{Backend, BackendConfig};
use crate::transport::results::ResultStore;
use crate::transport::Transport;
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
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Everything `asya-host run` needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The broker and state store.
    pub backend: BackendConfig,
    /// Directory of AsyncActor manifests.
    pub manifests: PathBuf,
    /// Component files by actor name (override `spec.component`).
    pub components: HashMap<String, PathBuf>,
    /// A fan-out whose children have not all arrived this long after its first part ends
    /// with `FanInTimeout`.
    pub fanin_timeout: Duration,
    /// `/healthz` fails once a supervised task has been down this long.
    pub unhealthy_after: Duration,
    /// Results TTL of particular namespaces (others: `backend.nats.results_ttl`).
    pub results_ttl_for: HashMap<String, Duration>,
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
    /// How often the manifest directory is checked for changes (`None`: never).
    pub reload_interval: Option<Duration>,
    /// Publish messages that end to the `x-sink` / `x-sump` queues for the end actors to store,
    /// instead of storing them in the hop that ends them (the default, one queue hop less).
    pub end_queues: bool,
    /// Where the Secrets of `spec.secretRefs` are mounted (`<dir>/<secret>/<key>`), read when
    /// a wasm actor starts for its handler's environment.
    pub secrets_dir: PathBuf,
    /// The host serves a shared pool (`namespace/name`): an actor whose manifest or component
    /// does not load is reported (log, `asya_host_actors_broken`) and left out, and every
    /// other actor starts and keeps serving; an empty directory is a pool with no members yet.
    /// Without a pool, the first load must succeed as a whole.
    pub pool: Option<String>,
}

/// Where a python actor's runtime listens unless told otherwise.
pub const DEFAULT_RUNTIME_SOCKET: &str = "/var/run/asya/runtime.sock";

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    health: Arc<Health>,
    backend: Arc<std::sync::OnceLock<Arc<Backend>>>,
    unhealthy_after: Duration,
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

/// Ready: started, connected to the broker, and every queue loop, end actor and fan-in running.
async fn ready_endpoint(State(state): State<HttpState>) -> (StatusCode, String) {
    if !state.ready.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting\n".into(),
        );
    }
    let connected = match state.backend.get() {
        Some(backend) => backend.ready(),
        None => Err("connecting to the broker".to_owned()),
    };
    if let Err(why) = connected {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        );
    }
    let report = state.health.report(state.unhealthy_after);
    if !report.all_up {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", report.down.join("\n")),
        );
    }
    (StatusCode::OK, "ready\n".into())
}

/// Healthy unless a supervised task has stayed down past `--unhealthy-after` (then Kubernetes
/// restarts the pod); a broker outage alone is not unhealthy (the host reconnects by itself).
async fn health_endpoint(State(state): State<HttpState>) -> (StatusCode, String) {
    let report = state.health.report(state.unhealthy_after);
    if report.failing.is_empty() {
        (StatusCode::OK, "ok\n".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy:\n{}\n", report.failing.join("\n")),
        )
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
///
/// The manifest directory is re-read every `config.reload_interval`: actors that appear are
/// started, actors whose manifest (or component file) changed are replaced in place (the queue's
/// subscription stays open and switches to the new version once it has loaded; messages in
/// flight finish on the old one), and actors that disappear finish
/// their in-flight messages and stop. Other actors are not touched. A manifest that does not load
/// is reported and the running set is kept.
pub async fn run(config: RunConfig, shutdown: CancellationToken) -> Result<()> {
    let manifests = if config.pool.is_some() {
        let (good, broken) = manifest::load_dir_each(&config.manifests)?;
        report_broken(&broken);
        good
    } else {
        manifest::load_dir(&config.manifests)?
    };
    if manifests.is_empty() && config.pool.is_none() {
        bail!("no AsyncActor manifests in {}", config.manifests.display());
    }
    let metrics = Arc::new(Metrics::new());
    metrics.know(manifests.iter().map(|(_, actor)| actor.name()));
    let ready = Arc::new(AtomicBool::new(false));
    let health = Health::new();
    let backend_slot = Arc::new(std::sync::OnceLock::new());
    if let Some(addr) = config.http_addr {
        let state = HttpState {
            metrics: metrics.clone(),
            ready: ready.clone(),
            health: health.clone(),
            backend: backend_slot.clone(),
            unhealthy_after: config.unhealthy_after,
        };
        let app = axum::Router::new()
            .route("/metrics", get(metrics_endpoint))
            .route("/healthz", get(health_endpoint))
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

    let backend = Arc::new(Backend::connect(&config.backend).await?);
    let _ = backend_slot.set(backend.clone());
    let workers = CancellationToken::new();
    let mut fleet = Fleet {
        health,
        engine: SandboxEngine::new()?,
        backend: backend.clone(),
        metrics: metrics.clone(),
        workers: workers.clone(),
        tasks: JoinSet::new(),
        namespaces: HashMap::new(),
        actors: BTreeMap::new(),
        wasm: Arc::default(),
    };
    // The first load must succeed as a whole: a host that cannot start an actor does not start.
    // A pool's host starts every actor that loads and reports the others.
    let started_at = std::time::Instant::now();
    let count = manifests.len();
    for (file, actor) in manifests {
        let key = (actor.namespace().to_owned(), actor.name().to_owned());
        match fleet.start_actor(&config, file, actor).await {
            Ok(()) => {}
            Err(err) if config.pool.is_some() => {
                tracing::error!(actor = %key.1, namespace = %key.0, error = %format!("{err:#}"),
                    "actor not started; the pool's other actors are unaffected");
                metrics.broken(&key.0, &key.1, true);
            }
            Err(err) => return Err(err),
        }
    }
    tracing::info!(
        actors = count,
        elapsed_ms = started_at.elapsed().as_millis() as u64,
        "actors registered"
    );
    let mut listing = manifest_listing(&config);
    {
        let (metrics, stop, wasm) = (metrics.clone(), shutdown.clone(), fleet.wasm.clone());
        tokio::spawn(async move {
            loop {
                let executors: Vec<_> = wasm
                    .lock()
                    .expect("executors")
                    .iter()
                    .map(|(key, executor)| (key.clone(), executor.clone()))
                    .collect();
                for ((namespace, name), executor) in executors {
                    let stats = executor.stats();
                    let made = stats.instantiated.load(Ordering::Relaxed);
                    metrics.pool(
                        &namespace,
                        &name,
                        made,
                        made.saturating_sub(stats.discarded.load(Ordering::Relaxed)),
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
    tracing::info!(actors = fleet.actors.len(), "asya host ready");

    loop {
        let tick = async {
            match config.reload_interval {
                Some(every) => tokio::time::sleep(every).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick => {}
        }
        while let Some(joined) = fleet.tasks.try_join_next() {
            if let Err(err) = joined.context("a host task panicked").and_then(|r| r) {
                tracing::warn!(error = %format!("{err:#}"), "task ended with an error");
            }
        }
        let now = manifest_listing(&config);
        if now == listing {
            continue;
        }
        listing = now;
        fleet.reconcile(&config).await;
    }

    let mut tasks = std::mem::take(&mut fleet.tasks);
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
    backend.close().await;
    tracing::info!("asya host stopped");
    Ok(())
}

/// Logs the manifest files of a pool that do not load (each once per reload).
fn report_broken(broken: &[(PathBuf, anyhow::Error)]) {
    for (file, err) in broken {
        tracing::error!(file = %file.display(), error = %format!("{err:#}"),
            "manifest does not load; the pool's other actors are unaffected");
    }
}

/// The file names, sizes and modification times of every manifest and component the host uses:
/// the cheap check that decides whether a reload is needed.
fn manifest_listing(config: &RunConfig) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64, Option<std::time::SystemTime>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if let Ok(meta) = entry.metadata() {
                out.push((path, meta.len(), meta.modified().ok()));
            }
        }
    }
    let mut out = Vec::new();
    walk(&config.manifests, &mut out);
    for path in config.components.values() {
        if let Ok(meta) = std::fs::metadata(path) {
            out.push((path.clone(), meta.len(), meta.modified().ok()));
        }
    }
    out.sort();
    out
}

/// One namespace's shared parts: its transport, end actors and fan-in aggregator.
struct NamespaceRuntime {
    transport: Arc<dyn Transport>,
    results: Arc<dyn ResultStore>,
    tasks: Option<Arc<dyn TaskReporter>>,
}

/// What the actors of one namespace share.
type NamespaceShared = (
    Arc<dyn Transport>,
    Arc<dyn ResultStore>,
    Option<Arc<dyn TaskReporter>>,
);

/// A running actor.
struct RunningActor {
    /// The manifest file it came from.
    file: PathBuf,
    /// What it was started from; a different fingerprint means "changed".
    fingerprint: String,
    /// Cancels this actor's queue loop only.
    stop: CancellationToken,
    /// Hands the queue loop a replacement sidecar when the actor changes.
    current: watch::Sender<Arc<Sidecar>>,
}

/// The WASM executors of the running actors by (namespace, name), shared with the metrics task.
type WasmExecutors = Arc<std::sync::Mutex<HashMap<(String, String), Arc<WasmExecutor>>>>;

/// Every running actor of the host, keyed by (namespace, name).
struct Fleet {
    health: Arc<Health>,
    engine: Arc<SandboxEngine>,
    backend: Arc<Backend>,
    metrics: Arc<Metrics>,
    workers: CancellationToken,
    tasks: JoinSet<Result<()>>,
    namespaces: HashMap<String, NamespaceRuntime>,
    actors: BTreeMap<(String, String), RunningActor>,
    wasm: WasmExecutors,
}

fn fingerprint(config: &RunConfig, file: &Path, actor: &AsyncActor) -> String {
    let base = file.parent().unwrap_or(Path::new("."));
    let component = component_path(actor, &config.components, base).ok();
    let stamp = component
        .as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| (m.len(), m.modified().ok()));
    format!("{actor:?}|{component:?}|{stamp:?}")
}

impl Fleet {
    async fn namespace(&mut self, config: &RunConfig, namespace: &str) -> Result<NamespaceShared> {
        if let Some(ns) = self.namespaces.get(namespace) {
            return Ok((ns.transport.clone(), ns.results.clone(), ns.tasks.clone()));
        }
        let results_ttl = config
            .results_ttl_for
            .get(namespace)
            .copied()
            .unwrap_or(config.backend.nats.results_ttl);
        let parts = self.backend.namespace(namespace, results_ttl).await?;
        let (results, fanin, tasks) = (parts.results, parts.fanin, parts.tasks);
        let shared: Arc<dyn Transport> = parts.transport;
        // The end actors and the fan-in are supervised: restarted with backoff after an error.
        let (transport, store, stop) = (shared.clone(), results.clone(), self.workers.clone());
        self.tasks.spawn(supervise(
            format!("{namespace}/end-actors"),
            self.health.clone(),
            self.workers.clone(),
            move || run_end_actors(transport.clone(), store.clone(), stop.clone()),
        ));
        let (transport, store, reporter, stop) = (
            shared.clone(),
            results.clone(),
            tasks.clone(),
            self.workers.clone(),
        );
        self.tasks.spawn(supervise(
            format!("{namespace}/x-pause"),
            self.health.clone(),
            self.workers.clone(),
            move || {
                run_pause_actor(
                    transport.clone(),
                    store.clone(),
                    reporter.clone(),
                    stop.clone(),
                )
            },
        ));
        let (transport, stop) = (shared.clone(), self.workers.clone());
        let fanin_timeout = config.fanin_timeout;
        self.tasks.spawn(supervise(
            format!("{namespace}/x-fanin"),
            self.health.clone(),
            self.workers.clone(),
            move || {
                crate::actor::fanin::run_fanin(
                    transport.clone(),
                    fanin.clone(),
                    fanin_timeout,
                    stop.clone(),
                )
            },
        ));
        self.namespaces.insert(
            namespace.to_owned(),
            NamespaceRuntime {
                transport: shared.clone(),
                results: results.clone(),
                tasks: tasks.clone(),
            },
        );
        Ok((shared, results, tasks))
    }

    /// Loads and starts one actor (or, for a running one of the same name, loads the new version
    /// and switches its queue over to it).
    async fn start_actor(
        &mut self,
        config: &RunConfig,
        file: PathBuf,
        actor: AsyncActor,
    ) -> Result<()> {
        let namespace = actor.namespace().to_owned();
        let key = (namespace.clone(), actor.name().to_owned());
        let print = fingerprint(config, &file, &actor);
        let (shared, results, tasks) = self.namespace(config, &namespace).await?;
        let mut settings = actor.sidecar_settings()?;
        if let Some(max) = config.max_message_bytes {
            settings.max_message_bytes = max;
        }
        let mut limits = actor.sandbox_limits()?;
        if let Some(max) = shared.max_message_bytes() {
            // The server's limit (NATS max_payload) is the host's too, the smaller one winning:
            // a result the transport cannot carry fails at once with OutputTooLarge instead of
            // failing to publish.
            limits.max_output_bytes = limits.max_output_bytes.min(max);
            settings.max_message_bytes = settings.max_message_bytes.min(max);
        }
        let python = asya_spec::workload::effective_runtime(&actor.spec) == Runtime::Python;
        if !python && !actor.spec.secret_refs.is_empty() {
            // A python actor's Secrets are its runtime container's env (the operator's envFrom).
            let secrets = secrets::read(&config.secrets_dir, &actor.spec.secret_refs)
                .with_context(|| format!("actor '{}'", actor.name()))?;
            limits.env = secrets::with_secrets(limits.env, secrets);
        }
        let source = if python {
            let socket = config
                .python_sockets
                .get(actor.name())
                .cloned()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_RUNTIME_SOCKET));
            // The user's container runs the runtime; the host waits for it before pulling.
            HandlerSource::Python(PythonRuntimeConfig {
                socket,
                spawn: None,
                ready_timeout: Duration::from_secs(600),
                max_in_flight: limits.max_instances,
                max_output_bytes: limits.max_output_bytes,
            })
        } else {
            let base = file.parent().unwrap_or(Path::new("."));
            HandlerSource::Component(component_path(&actor, &config.components, base)?)
        };
        let sandbox_limits = limits.clone();
        let built = builder::load_executor(
            &self.engine,
            &config.cache,
            actor.name(),
            source,
            limits,
            actor.spec.mode,
        )
        .await?;
        let in_flight_given = actor
            .spec
            .sandbox
            .as_ref()
            .is_some_and(|s| s.max_in_flight.is_some());
        if !in_flight_given {
            builder::apply_async_in_flight(&built, &mut settings, &sandbox_limits);
        }
        tracing::info!(actor = actor.name(), namespace = %namespace,
            handler = %built.descriptor.handler, digest = %built.digest,
            cached = built.from_cache, "actor loaded");
        if let Some(wasm) = &built.wasm {
            self.wasm
                .lock()
                .expect("executors")
                .insert(key.clone(), wasm.clone());
        }
        let parts = SidecarParts {
            settings,
            resiliency: actor.resiliency()?,
            metrics: Some(self.metrics.clone()),
            results: (!config.end_queues).then_some(results),
            tasks,
            namespace: namespace.clone(),
        };
        let sidecar = builder::sidecar(actor.name(), built.executor, shared, parts);
        let sidecar = Arc::new(sidecar);
        if let Some(running) = self.actors.get_mut(&key) {
            // Changed: the running queue loop switches to the new sidecar; in-flight messages
            // finish on the old one, and the subscription is never interrupted. (A loop that has
            // ended, say its subscription failed, has dropped its receiver: start a new one.)
            if !running.current.is_closed() {
                running.current.send_replace(sidecar);
                running.fingerprint = print;
                running.file = file;
                return Ok(());
            }
        }
        let stop = self.workers.child_token();
        let (current, receiver) = watch::channel(sidecar);
        let queue_stop = stop.clone();
        self.tasks.spawn(supervise(
            format!("{}/{}", key.0, key.1),
            self.health.clone(),
            stop.clone(),
            move || crate::actor::sidecar::serve_queue(receiver.clone(), queue_stop.clone()),
        ));
        self.actors.insert(
            key,
            RunningActor {
                file,
                fingerprint: print,
                stop,
                current,
            },
        );
        Ok(())
    }

    /// Brings the running set in line with the manifest directory.
    async fn reconcile(&mut self, config: &RunConfig) {
        // A pool member whose manifest file broke keeps its running version.
        let mut keep = std::collections::HashSet::new();
        let loaded = if config.pool.is_some() {
            manifest::load_dir_each(&config.manifests).map(|(good, broken)| {
                report_broken(&broken);
                for (file, _) in &broken {
                    keep.extend(
                        self.actors
                            .iter()
                            .filter(|(_, running)| &running.file == file)
                            .map(|(key, _)| key.clone()),
                    );
                }
                good
            })
        } else {
            manifest::load_dir(&config.manifests)
        };
        let manifests = match loaded {
            Ok(m) => m,
            Err(err) => {
                tracing::error!(error = %format!("{err:#}"),
                    "manifests do not load; keeping the running actors as they are");
                return;
            }
        };
        let started_at = std::time::Instant::now();
        let (mut started, mut failed) = (0usize, 0usize);
        let mut wanted = std::collections::HashSet::new();
        for (file, actor) in manifests {
            let key = (actor.namespace().to_owned(), actor.name().to_owned());
            wanted.insert(key.clone());
            let print = fingerprint(config, &file, &actor);
            let change = match self.actors.get(&key) {
                Some(running) if running.fingerprint == print => continue,
                Some(_) => "changed",
                None => "added",
            };
            match self.start_actor(config, file, actor).await {
                Ok(()) => {
                    tracing::info!(actor = %key.1, namespace = %key.0, change, "actor (re)started");
                    self.metrics.broken(&key.0, &key.1, false);
                    started += 1;
                }
                Err(err) => {
                    tracing::error!(actor = %key.1, namespace = %key.0, change,
                        error = %format!("{err:#}"), "actor not started; the running version (if any) stays");
                    self.metrics.broken(&key.0, &key.1, true);
                    failed += 1;
                }
            }
        }
        let gone: Vec<_> = self
            .actors
            .keys()
            .filter(|k| !wanted.contains(*k) && !keep.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(running) = self.actors.remove(&key) {
                running.stop.cancel();
                self.wasm.lock().expect("executors").remove(&key);
                tracing::info!(actor = %key.1, namespace = %key.0, "actor removed");
            }
        }
        tracing::info!(
            started,
            failed,
            elapsed_ms = started_at.elapsed().as_secs_f64() * 1e3,
            "manifests reloaded"
        );
    }
}
