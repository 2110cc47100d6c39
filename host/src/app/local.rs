//! A whole pipeline in one process on the embedded transport: every actor's sidecar, its WASM
//! executor, and the end actors. This is what `asya dev` runs, and what tests and benchmarks
//! drive.

use crate::actor::builder::{self, HandlerSource, SidecarParts};
use crate::actor::end_actors::run_end_actors;
use crate::actor::manifest::{self, ActorSettings, AsyncActor};
use crate::actor::pause::run_pause_actor;
use crate::actor::secrets;
use crate::actor::sidecar::SidecarSettings;
use crate::message::envelope::{now_rfc3339, Envelope, Route};
use crate::message::resiliency::Resiliency;
use crate::message::task_event::TaskReporter;
use crate::runtime::component_cache::ComponentCache;
use crate::runtime::executor::Mode;
use crate::runtime::python::SpawnSpec;
use crate::runtime::python::{PythonExecutor, PythonRuntimeConfig};
use crate::runtime::sandbox::{SandboxEngine, SandboxLimits};
use crate::runtime::wasm::WasmExecutor;
use crate::transport::embedded::{EmbeddedTransport, Hop};
use crate::transport::results::{Finished, MemoryResults, ResultStore};
use crate::transport::{Outbound, Transport};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// One actor to run: its name, component file and settings.
#[derive(Debug, Clone)]
pub struct ActorDef {
    /// Actor (queue) name.
    pub name: String,
    /// The component file.
    pub component: PathBuf,
    /// The mode the manifest declares, checked against the component's own.
    pub mode: Option<Mode>,
    /// Sandbox limits.
    pub limits: SandboxLimits,
    /// Sidecar settings.
    pub settings: SidecarSettings,
    /// Retry policies.
    pub resiliency: Resiliency,
    /// Run the handler in the native-Python runtime instead of the WASM component.
    pub python: Option<PythonRuntimeConfig>,
    /// If the component turns out to be an `async def` handler, take `maxInstances` ×
    /// `maxConcurrency` messages in flight (a manifest without `maxInFlight`).
    pub async_in_flight_default: bool,
}

impl ActorDef {
    /// An actor with default limits.
    pub fn new(name: impl Into<String>, component: impl Into<PathBuf>) -> Self {
        ActorDef {
            name: name.into(),
            component: component.into(),
            mode: None,
            limits: SandboxLimits::default(),
            settings: SidecarSettings::default(),
            resiliency: Resiliency::default(),
            python: None,
            async_in_flight_default: false,
        }
    }

    /// An actor from its manifest and a built component.
    pub fn from_manifest(manifest: &AsyncActor, component: impl Into<PathBuf>) -> Result<Self> {
        Ok(ActorDef {
            name: manifest.name().to_owned(),
            component: component.into(),
            mode: manifest.spec.mode,
            limits: manifest.sandbox_limits()?,
            settings: manifest.sidecar_settings()?,
            resiliency: manifest.resiliency()?,
            python: None,
            async_in_flight_default: manifest
                .spec
                .sandbox
                .as_ref()
                .is_none_or(|s| s.max_in_flight.is_none()),
        })
    }
}

/// The actors `asya dev` (and the gateway's dev mode) runs: AsyncActor manifests with a built
/// component or a native-Python source directory each.
/// Also the command-line flags of `asya-host dev` and `asya-gateway dev` (clap, flattened).
#[derive(Debug, Clone, clap::Args)]
pub struct DevActors {
    /// Directory of AsyncActor manifests (YAML); repeat for several (e.g. compiled flow routers).
    #[arg(long = "manifests", required = true)]
    pub manifest_dirs: Vec<PathBuf>,
    /// Built component of an actor, as NAME=PATH (repeat for each actor).
    #[arg(long = "component", value_name = "NAME=PATH")]
    pub components: Vec<String>,
    /// An actor with `runtime: python`, as NAME=SOURCE_DIR: the host starts
    /// `python -m asya.runtime` for it with the handler of its manifest.
    #[arg(long = "python-actor", value_name = "NAME=DIR")]
    pub python_actors: Vec<String>,
    /// The Python interpreter for python actors (needs the asya SDK importable).
    #[arg(long, default_value = "python3")]
    pub python: PathBuf,
    /// Where the Secrets of `spec.secretRefs` are, one directory per Secret and one file per
    /// key; the handler sees their keys as env.
    #[arg(long, env = "ASYA_SECRETS_DIR", default_value = secrets::DEFAULT_SECRETS_DIR)]
    pub secrets_dir: PathBuf,
}

/// Parses `NAME=PATH` arguments (`--component`, `--python-actor`, `--python-socket`).
pub fn parse_named_paths(specs: &[String]) -> Result<HashMap<String, PathBuf>> {
    specs
        .iter()
        .map(|spec| {
            let (name, path) = spec
                .split_once('=')
                .with_context(|| format!("'{spec}' is not NAME=PATH"))?;
            Ok((name.to_owned(), PathBuf::from(path)))
        })
        .collect()
}

/// The actor definitions of `dev`: every manifest that has a component or a Python source
/// directory, with the keys of its Secrets in its env (never printed). A component or source
/// directory named for no manifest is an error.
pub fn actor_defs(dev: &DevActors) -> Result<Vec<ActorDef>> {
    let mut components = parse_named_paths(&dev.components)?;
    let mut python_actors = parse_named_paths(&dev.python_actors)?;
    let mut manifests = Vec::new();
    for dir in &dev.manifest_dirs {
        manifests.extend(manifest::load_dir(dir)?);
    }
    let manifest_dirs = dev
        .manifest_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut actors = Vec::new();
    // The handler's env with the keys of its Secrets (never printed).
    let from_manifest = |actor: &manifest::AsyncActor, component: PathBuf| -> Result<ActorDef> {
        let mut def = ActorDef::from_manifest(actor, component)?;
        if !actor.spec.secret_refs.is_empty() {
            let secrets = secrets::read(&dev.secrets_dir, &actor.spec.secret_refs)
                .with_context(|| format!("actor '{}'", actor.name()))?;
            def.limits.env = secrets::with_secrets(std::mem::take(&mut def.limits.env), secrets);
        }
        Ok(def)
    };
    for (_, actor) in &manifests {
        if let Some(source_dir) = python_actors.remove(actor.name()) {
            let mut def = from_manifest(actor, PathBuf::new())?;
            let handler = actor
                .spec
                .handler
                .clone()
                .with_context(|| format!("actor '{}' has no spec.handler", actor.name()))?;
            def.python = Some(PythonRuntimeConfig {
                socket: std::env::temp_dir().join(format!(
                    "asya-{}-{}.sock",
                    std::process::id(),
                    actor.name()
                )),
                spawn: Some(SpawnSpec {
                    python: dev.python.clone(),
                    handler,
                    mode: actor.spec.mode.unwrap_or_default(),
                    source_dir,
                    env: def.limits.env.clone(),
                }),
                ready_timeout: Duration::from_secs(120),
                max_in_flight: def.limits.max_instances,
                max_output_bytes: def.limits.max_output_bytes,
            });
            actors.push(def);
            continue;
        }
        let Some(path) = components.remove(actor.name()) else {
            continue;
        };
        actors.push(from_manifest(actor, path)?);
    }
    if let Some(name) = python_actors.keys().next() {
        bail!("--python-actor {name}=...: no AsyncActor named '{name}' in {manifest_dirs}");
    }
    if let Some(name) = components.keys().next() {
        bail!("--component {name}=...: no AsyncActor named '{name}' in {manifest_dirs}");
    }
    Ok(actors)
}

/// How one actor was loaded.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Actor name.
    pub name: String,
    /// Handler reference reported by the component.
    pub handler: String,
    /// Mode reported by the component.
    pub mode: Mode,
    /// Component digest.
    pub digest: String,
    /// Whether the compiled form came from the cache.
    pub from_cache: bool,
    /// Time to compile or load, and instantiate the first instance.
    pub load_time: Duration,
}

/// A running pipeline host on the embedded transport.
pub struct LocalHost {
    transport: EmbeddedTransport,
    store: Arc<MemoryResults>,
    results: mpsc::UnboundedReceiver<Finished>,
    shutdown: CancellationToken,
    tasks: JoinSet<Result<()>>,
    executors: HashMap<String, Arc<WasmExecutor>>,
    python_executors: HashMap<String, Arc<PythonExecutor>>,
    /// How each actor was loaded.
    pub loaded: Vec<LoadReport>,
}

impl LocalHost {
    /// Loads every actor (compiling components, or loading them from `cache`) and starts their
    /// sidecars and the end actors.
    pub async fn start(actors: Vec<ActorDef>, cache: ComponentCache) -> Result<Self> {
        Self::start_with(actors, cache, None).await
    }

    /// Starts like [`LocalHost::start`], reporting the hops of gateway tasks to `tasks` (the
    /// in-process gateway's task log).
    pub async fn start_with(
        actors: Vec<ActorDef>,
        cache: ComponentCache,
        tasks: Option<Arc<dyn TaskReporter>>,
    ) -> Result<Self> {
        let engine = SandboxEngine::new()?;
        let transport = EmbeddedTransport::new();
        let shared: Arc<dyn Transport> = Arc::new(transport.clone());
        let shutdown = CancellationToken::new();
        let (store, results) = MemoryResults::new();
        let reporter = tasks;
        let mut tasks = JoinSet::new();
        tasks.spawn(run_end_actors(
            shared.clone(),
            store.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(run_pause_actor(
            shared.clone(),
            store.clone(),
            reporter.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(crate::actor::fanin::run_fanin(
            shared.clone(),
            Arc::new(crate::actor::fanin::MemoryFanIn::default()),
            crate::actor::fanin::DEFAULT_FANIN_TIMEOUT,
            shutdown.clone(),
        ));
        let mut executors = HashMap::new();
        let mut python_executors = HashMap::new();
        let mut loaded = Vec::new();
        for def in actors {
            let source = match &def.python {
                Some(config) => HandlerSource::Python(config.clone()),
                None => HandlerSource::Component(def.component.clone()),
            };
            let built = builder::load_executor(
                &engine,
                &cache,
                &def.name,
                source,
                def.limits.clone(),
                def.mode,
            )
            .await?;
            if let Some(wasm) = &built.wasm {
                executors.insert(def.name.clone(), wasm.clone());
            }
            if let Some(python) = &built.python {
                python_executors.insert(def.name.clone(), python.clone());
            }
            loaded.push(LoadReport {
                name: def.name.clone(),
                handler: built.descriptor.handler.clone(),
                mode: built.descriptor.mode,
                digest: built.digest.clone(),
                from_cache: built.from_cache,
                load_time: built.load_time,
            });
            let mut settings = def.settings.clone();
            if def.async_in_flight_default {
                builder::apply_async_in_flight(&built, &mut settings, &def.limits);
            }
            let parts = SidecarParts {
                settings,
                resiliency: def.resiliency.clone(),
                tasks: reporter.clone(),
                ..SidecarParts::default()
            };
            let sidecar = Arc::new(builder::sidecar(
                &def.name,
                built.executor,
                shared.clone(),
                parts,
            ));
            tasks.spawn(sidecar.run(shutdown.clone()));
        }
        Ok(LocalHost {
            transport,
            store,
            results,
            shutdown,
            tasks,
            executors,
            python_executors,
            loaded,
        })
    }

    /// The transport every actor of this host is on.
    pub fn transport(&self) -> Arc<dyn Transport> {
        Arc::new(self.transport.clone())
    }

    /// Where final (and paused) envelopes are kept, by id.
    pub fn results_store(&self) -> Arc<dyn ResultStore> {
        self.store.clone()
    }

    /// The executor of `actor` (pool statistics, descriptor).
    pub fn executor(&self, actor: &str) -> Option<&Arc<WasmExecutor>> {
        self.executors.get(actor)
    }

    /// The native-Python executor of `actor`, if it runs in one.
    pub fn python_executor(&self, actor: &str) -> Option<&Arc<PythonExecutor>> {
        self.python_executors.get(actor)
    }

    /// Copies every published message to the returned receiver (hop display, tests).
    pub fn tap(&self) -> mpsc::UnboundedReceiver<Hop> {
        self.transport.tap()
    }

    /// Sends `payload` along `route`; returns the new envelope's id.
    pub async fn send(&self, route: &[String], payload: Value) -> Result<String> {
        let route = Route::through(route).context("the route is empty")?;
        let envelope = Envelope::new(route, payload, &now_rfc3339());
        self.send_envelope(&envelope).await?;
        Ok(envelope.id)
    }

    /// Sends a prepared envelope to its `route.curr`.
    pub async fn send_envelope(&self, envelope: &Envelope) -> Result<()> {
        self.send_raw(&envelope.route.curr, envelope.to_bytes())
            .await
    }

    /// Puts raw bytes on `actor`'s queue (they need not be an envelope).
    pub async fn send_raw(&self, actor: &str, bytes: Vec<u8>) -> Result<()> {
        self.transport
            .publish(
                actor,
                Outbound {
                    bytes,
                    dedup_id: uuid::Uuid::new_v4().to_string(),
                },
            )
            .await
    }

    /// The next message to reach an end actor, waiting at most `timeout`.
    pub async fn next_result(&mut self, timeout: Duration) -> Result<Finished> {
        tokio::time::timeout(timeout, self.results.recv())
            .await
            .context("timed out waiting for a result")?
            .context("the end actors stopped")
    }

    /// Runs every payload through `route`, at most `window` in flight, and returns the final
    /// envelopes in input order.
    pub async fn run_batch(
        &mut self,
        route: &[String],
        payloads: Vec<Value>,
        window: usize,
        timeout: Duration,
    ) -> Result<Vec<Finished>> {
        let total = payloads.len();
        let mut order = HashMap::with_capacity(total);
        let mut out: Vec<Option<Finished>> = vec![None; total];
        let mut pending = payloads.into_iter().enumerate();
        let mut in_flight = 0usize;
        let mut done = 0usize;
        while done < total {
            while in_flight < window.max(1) {
                let Some((index, payload)) = pending.next() else {
                    break;
                };
                let id = self.send(route, payload).await?;
                order.insert(id, index);
                in_flight += 1;
            }
            let finished = self.next_result(timeout).await?;
            if let Some(index) = order.remove(&finished.envelope.id) {
                out[index] = Some(finished);
                in_flight -= 1;
                done += 1;
            }
        }
        Ok(out
            .into_iter()
            .map(|f| f.expect("every index filled"))
            .collect())
    }

    /// Stops pulling, lets in-flight messages finish, and stops every task.
    pub async fn shutdown(mut self) -> Result<()> {
        self.shutdown.cancel();
        while let Some(joined) = self.tasks.join_next().await {
            joined.context("a host task panicked")??;
        }
        Ok(())
    }
}

/// Loads an actor's component from a file or an `oci://` reference (the actor builder's).
pub use crate::actor::builder::load_component as load_component_from;
