//! Assembling one actor, the same way for `asya-host run` ([`crate::app::serve`]) and the
//! in-process pipeline ([`crate::app::local`]): load its executor (compile or map the component,
//! pulling `oci://` references; or connect to the native-Python runtime), check the mode the
//! manifest declares against the handler's own, and put the sidecar together around it.

use crate::actor::sidecar::{Sidecar, SidecarSettings};
use crate::message::resiliency::Resiliency;
use crate::message::task_event::TaskReporter;
use crate::ops::metrics::Metrics;
use crate::runtime::component_cache::{ComponentCache, LoadedComponent};
use crate::runtime::executor::{Executor, Mode};
use crate::runtime::oci::OciFetcher;
use crate::runtime::python::{PythonExecutor, PythonRuntimeConfig};
use crate::runtime::sandbox::{SandboxEngine, SandboxLimits};
use crate::runtime::wasm::{Descriptor, WasmExecutor};
use crate::transport::results::ResultStore;
use crate::transport::Transport;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where an actor's handler runs.
#[derive(Debug, Clone)]
pub enum HandlerSource {
    /// A WebAssembly component: a file, or an `oci://` reference (pulled, verified, cached).
    Component(PathBuf),
    /// The native-Python runtime over a Unix socket (spawned by the host, or already running
    /// in the actor's own container).
    Python(PythonRuntimeConfig),
}

/// An actor's loaded executor and how it was loaded.
pub struct LoadedExecutor {
    /// The executor the sidecar calls.
    pub executor: Arc<dyn Executor>,
    /// The handler reference and mode the handler reports.
    pub descriptor: Descriptor,
    /// The component's digest (`python-runtime` for the native runtime).
    pub digest: String,
    /// Whether the compiled component came from the cache.
    pub from_cache: bool,
    /// Time to load (compile or map, and instantiate the first instance; or connect).
    pub load_time: Duration,
    /// The WASM executor, when the handler is a component (pool statistics, parking).
    pub wasm: Option<Arc<WasmExecutor>>,
    /// The native-Python executor, when the handler runs there.
    pub python: Option<Arc<PythonExecutor>>,
}

/// Loads actor `name`'s executor from `source` under `limits`. When the manifest declares a
/// mode, the handler must have been built for it.
pub async fn load_executor(
    engine: &Arc<SandboxEngine>,
    cache: &ComponentCache,
    name: &str,
    source: HandlerSource,
    limits: SandboxLimits,
    declared_mode: Option<Mode>,
) -> Result<LoadedExecutor> {
    let started = Instant::now();
    let loaded = match source {
        HandlerSource::Python(config) => {
            let python = Arc::new(PythonExecutor::load(name, config).await?);
            LoadedExecutor {
                executor: python.clone(),
                descriptor: python.descriptor().clone(),
                digest: "python-runtime".to_owned(),
                from_cache: false,
                load_time: Duration::ZERO,
                wasm: None,
                python: Some(python),
            }
        }
        HandlerSource::Component(path) => {
            let component = load_component(engine, cache, name, path).await?;
            let wasm =
                Arc::new(WasmExecutor::load(name, engine.clone(), &component, limits).await?);
            wasm.start_reaper();
            LoadedExecutor {
                executor: wasm.clone(),
                descriptor: wasm.descriptor().clone(),
                digest: component.digest.clone(),
                from_cache: component.from_cache,
                load_time: Duration::ZERO,
                wasm: Some(wasm),
                python: None,
            }
        }
    };
    if let Some(mode) = declared_mode {
        if mode != loaded.descriptor.mode {
            bail!(
                "actor '{name}': the manifest says mode {mode:?} but the component was built for \
                 {:?} (rebuild with --mode)",
                loaded.descriptor.mode
            );
        }
    }
    Ok(LoadedExecutor {
        load_time: started.elapsed(),
        ..loaded
    })
}

/// An `async def` handler runs `maxConcurrency` calls in each of its `maxInstances` instances:
/// that many messages in flight, for an actor whose manifest does not set `maxInFlight`.
pub fn apply_async_in_flight(
    loaded: &LoadedExecutor,
    settings: &mut SidecarSettings,
    limits: &SandboxLimits,
) {
    if loaded.wasm.as_ref().is_some_and(|w| w.is_concurrent()) {
        settings.concurrency = limits.max_instances * limits.max_concurrency;
    }
}

/// What a sidecar needs besides its executor and transport.
#[derive(Clone, Default)]
pub struct SidecarParts {
    /// Timeout, concurrency and message size.
    pub settings: SidecarSettings,
    /// Retry policies.
    pub resiliency: Resiliency,
    /// Metrics to count into (none: not counted).
    pub metrics: Option<Arc<Metrics>>,
    /// Where a message that ends at this actor is stored directly (none: through the end
    /// actors' queues).
    pub results: Option<Arc<dyn ResultStore>>,
    /// Where the hops of gateway tasks are reported (none: not reported).
    pub tasks: Option<Arc<dyn TaskReporter>>,
    /// The actor's namespace (a label of its metrics).
    pub namespace: String,
}

/// The sidecar of actor `name`: `executor` behind its queue on `transport`.
pub fn sidecar(
    name: &str,
    executor: Arc<dyn Executor>,
    transport: Arc<dyn Transport>,
    parts: SidecarParts,
) -> Sidecar {
    let mut sidecar = Sidecar::new(name, executor, transport, parts.settings)
        .with_resiliency(parts.resiliency)
        .with_namespace(if parts.namespace.is_empty() {
            "default".to_owned()
        } else {
            parts.namespace
        });
    if let Some(metrics) = parts.metrics {
        sidecar = sidecar.with_metrics(metrics);
    }
    if let Some(results) = parts.results {
        sidecar = sidecar.with_results(results);
    }
    if let Some(tasks) = parts.tasks {
        sidecar = sidecar.with_tasks(tasks);
    }
    sidecar
}

/// Loads an actor's component from a file or an `oci://` reference (pulled, verified, cached),
/// compiling it or taking it from the compiled cache.
pub async fn load_component(
    engine: &Arc<SandboxEngine>,
    cache: &ComponentCache,
    name: &str,
    path: PathBuf,
) -> Result<LoadedComponent> {
    let engine = engine.clone();
    let cache = cache.clone();
    let name = name.to_owned();
    let reference = path
        .to_str()
        .filter(|p| p.starts_with("oci://"))
        .map(str::to_owned);
    if let Some(reference) = reference {
        let root = cache
            .root()
            .map(PathBuf::from)
            .or_else(crate::runtime::component_cache::default_cache_dir)
            .context("no cache directory for OCI blobs")?;
        let fetched = OciFetcher::new(&root)
            .fetch(&reference)
            .await
            .with_context(|| format!("actor '{name}'"))?;
        return tokio::task::spawn_blocking(move || {
            cache
                .load_verified_in(&engine, &fetched.path, &fetched.digest)
                .with_context(|| format!("actor '{name}'"))
        })
        .await
        .context("the component loader panicked")?;
    }
    tokio::task::spawn_blocking(move || {
        cache
            .load_file_in(&engine, &path)
            .with_context(|| format!("actor '{name}'"))
    })
    .await
    .context("the component loader panicked")?
}
