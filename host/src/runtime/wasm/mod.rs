//! The WASM executor: a warm pool of component instances for one actor.
//!
//! Instances are reused across messages (a call on a warm instance costs microseconds). An
//! instance is discarded after a trap, a timeout, a refused memory growth, when its memory grew
//! past the recycle mark, or after a configured number of calls.
//!
//! An idle actor holds no instance, and (when its compiled artifact is in the cache) not its
//! compiled component either: it is *parked*, costing the host a few kilobytes, and maps the
//! artifact again on its next message. `sandbox.keepLoaded` keeps the compiled component mapped;
//! `sandbox.keepWarm` keeps it and one instance.
//!
//! A plain function's component runs one call per instance. An `async def` handler's component
//! (world `actor-async`, its `handle` a component-model async export) runs many calls in each
//! instance at once: see [`concurrent`].

mod concurrent;

use crate::message::envelope::{ErrorInfo, Reason};
use crate::runtime::component_cache::{LoadedComponent, Reloadable};
use crate::runtime::executor::Executor;
use crate::runtime::executor::{CallOutcome, Failure, Mode};
use crate::runtime::sandbox::{
    configure_store, GuestState, SandboxEngine, SandboxLimits, Stream, WasmtimeResultExt,
    OUTPUT_OVERFLOW_TRAP,
};
use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use wasmtime::Store;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "asya:actor/actor",
        exports: { default: async },
        // The host side of the imports is wasmtime-wasi(-http)'s; reuse their types.
        with: {
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

use bindings::asya::actor::types as wit;

/// Host calls blocked in WASI (a guest sleeping) are not interrupted by epochs; the outer
/// timeout allows this much beyond the CPU deadline before it abandons the instance.
const HOST_CALL_GRACE: Duration = Duration::from_millis(50);

/// What a component says about itself (`describe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// `module.func` or `module.Class.method`.
    pub handler: String,
    /// The mode the adapter was generated for.
    pub mode: Mode,
    /// The asya SDK version that generated the adapter.
    pub sdk_version: String,
}

/// Counters of one actor's instance pool.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Instances created (including the first).
    pub instantiated: AtomicU64,
    /// Instances thrown away (trap, timeout, memory, recycling, idle reclaim, the load probe).
    pub discarded: AtomicU64,
    /// Calls made.
    pub calls: AtomicU64,
    /// Traps by kind are counted by the caller; this is the total.
    pub traps: AtomicU64,
    /// Largest linear memory seen in any instance of this actor (bytes).
    pub memory_peak_bytes: AtomicU64,
    /// Times the compiled component was mapped again after the actor was parked.
    pub reloads: AtomicU64,
    /// Times the idle actor let go of its compiled component.
    pub parks: AtomicU64,
}

struct Guest {
    store: Store<GuestState>,
    actor: bindings::Actor,
    calls: u64,
    last_used: Instant,
}

/// The compiled component of an actor while it is mapped, linked and ready to instantiate.
struct Resident {
    // Holding the component keeps it shared in the cache's map while this actor uses it.
    _component: Arc<wasmtime::component::Component>,
    linked: Linked,
}

/// A linked component, by how its `handle` export is called.
#[derive(Clone)]
enum Linked {
    /// World `actor`: one call per instance at a time.
    Sync(bindings::ActorPre<GuestState>),
    /// World `actor-async`: `handle` is an async export, many calls per instance.
    Concurrent(wasmtime::component::InstancePre<GuestState>),
}

/// Whether the component's `handle` export is a component-model async function.
fn exports_async_handle(component: &wasmtime::component::Component) -> bool {
    let ty = component.component_type();
    matches!(
        ty.get_export(component.engine(), "handle").map(|e| e.ty),
        Some(wasmtime::component::types::ComponentItem::ComponentFunc(f)) if f.async_()
    )
}

/// The instance pool of one actor's component.
pub struct WasmExecutor {
    actor: String,
    engine: Arc<SandboxEngine>,
    resident: Mutex<Option<Resident>>,
    /// Where to map the component from after parking; `None`: never parked.
    reload: Option<Reloadable>,
    reloading: tokio::sync::Mutex<()>,
    last_active: Mutex<Instant>,
    limits: SandboxLimits,
    descriptor: Descriptor,
    idle: Mutex<Vec<Guest>>,
    permits: Semaphore,
    stats: Arc<PoolStats>,
    /// The instances of an `async def` handler; `None` for a plain function.
    concurrent: Option<concurrent::ConcurrentPool>,
}

/// What components (by digest) said of themselves when first described in this process, and
/// whether their handler is `async def`: a content-addressed fact, so any actor of the same
/// component may reuse it.
static DESCRIBED: std::sync::LazyLock<
    Mutex<std::collections::HashMap<String, (Descriptor, bool)>>,
> = std::sync::LazyLock::new(Mutex::default);

fn described(digest: &str) -> Option<(Descriptor, bool)> {
    DESCRIBED
        .lock()
        .expect("described lock")
        .get(digest)
        .cloned()
}

fn remember_described(digest: &str, descriptor: &Descriptor, concurrent: bool) {
    DESCRIBED
        .lock()
        .expect("described lock")
        .insert(digest.to_owned(), (descriptor.clone(), concurrent));
}

fn link(actor: &str, engine: &SandboxEngine, component: &LoadedComponent) -> Result<Resident> {
    let instance_pre = engine
        .linker_for(component.component.engine())
        .instantiate_pre(&component.component)
        .anyhow()
        .with_context(|| {
            format!(
                "actor '{actor}': the component does not fit the asya:actor world with WASI \
                 (was it built by `asya build`?)"
            )
        })?;
    let linked = if exports_async_handle(&component.component) {
        Linked::Concurrent(instance_pre)
    } else {
        Linked::Sync(
            bindings::ActorPre::new(instance_pre)
                .anyhow()
                .with_context(|| {
                    format!("actor '{actor}': the component lacks asya:actor exports")
                })?,
        )
    };
    Ok(Resident {
        _component: component.component.clone(),
        linked,
    })
}

impl WasmExecutor {
    /// Prepares `component` for `actor`: links it, instantiates one warm instance and asks it to
    /// describe itself.
    pub async fn load(
        actor: &str,
        engine: Arc<SandboxEngine>,
        component: &LoadedComponent,
        limits: SandboxLimits,
    ) -> Result<Self> {
        if limits.max_instances == 0 {
            bail!("actor '{actor}': sandbox.maxInstances must be at least 1");
        }
        // A component already linked and described in this process (another actor of it) is
        // not again: the actor starts parked, mapped and instantiated on its first message.
        // This is what makes registering an actor in a pool cost well under a millisecond.
        let parks = component.reload.is_some() && !limits.keep_warm && !limits.keep_loaded;
        if let Some((descriptor, is_concurrent)) =
            parks.then(|| described(&component.digest)).flatten()
        {
            let executor = WasmExecutor {
                actor: actor.to_owned(),
                engine,
                resident: Mutex::new(None),
                reload: component.reload.clone(),
                reloading: tokio::sync::Mutex::new(()),
                last_active: Mutex::new(Instant::now()),
                permits: Semaphore::new(limits.max_instances),
                concurrent: is_concurrent.then(|| concurrent::ConcurrentPool::new(&limits)),
                limits,
                descriptor,
                idle: Mutex::new(Vec::new()),
                stats: Arc::default(),
            };
            executor.stats.parks.fetch_add(1, Ordering::Relaxed);
            return Ok(executor);
        }
        let resident = link(actor, &engine, component)?;
        let is_concurrent = matches!(resident.linked, Linked::Concurrent(_));
        let mut executor = WasmExecutor {
            actor: actor.to_owned(),
            engine,
            resident: Mutex::new(Some(resident)),
            reload: component.reload.clone(),
            reloading: tokio::sync::Mutex::new(()),
            last_active: Mutex::new(Instant::now()),
            permits: Semaphore::new(limits.max_instances),
            limits,
            descriptor: Descriptor {
                handler: String::new(),
                mode: Mode::Payload,
                sdk_version: String::new(),
            },
            idle: Mutex::new(Vec::new()),
            stats: Arc::default(),
            concurrent: None,
        };
        if is_concurrent {
            executor.descriptor = concurrent::describe(&executor)
                .await
                .with_context(|| format!("actor '{actor}': describe() failed"))?;
            executor.concurrent = Some(concurrent::ConcurrentPool::new(&executor.limits));
            remember_described(&component.digest, &executor.descriptor, true);
            executor.park();
            return Ok(executor);
        }
        let mut guest = executor
            .instantiate()
            .await
            .map_err(|f| anyhow::anyhow!("actor '{actor}': {}", f.error.message))?;
        let described = guest
            .actor
            .call_describe(&mut guest.store)
            .await
            .anyhow()
            .with_context(|| format!("actor '{actor}': describe() failed"))?;
        executor.descriptor = Descriptor {
            handler: described.handler,
            mode: match described.mode {
                wit::Mode::Payload => Mode::Payload,
                wit::Mode::Envelope => Mode::Envelope,
            },
            sdk_version: described.sdk_version,
        };
        remember_described(&component.digest, &executor.descriptor, false);
        if executor.limits.keep_warm {
            executor.idle.lock().expect("pool lock").push(guest);
        } else {
            // Idle actors hold no instance, nor their compiled code when it can be mapped again
            // from the cache: the first message maps and instantiates (milliseconds).
            drop(guest);
            executor.stats.discarded.fetch_add(1, Ordering::Relaxed);
            executor.park();
        }
        Ok(executor)
    }

    /// Lets go of the compiled component when it can be mapped again; returns whether it did.
    fn park(&self) -> bool {
        if self.reload.is_none() || self.limits.keep_warm || self.limits.keep_loaded {
            return false;
        }
        let parked = self
            .resident
            .lock()
            .expect("resident lock")
            .take()
            .is_some();
        if parked {
            self.stats.parks.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(actor = %self.actor, "idle actor parked its compiled component");
        }
        parked
    }

    /// Whether the compiled component is mapped (false while parked).
    pub fn is_resident(&self) -> bool {
        self.resident.lock().expect("resident lock").is_some()
    }

    /// The linked component, mapped again from the cache if the actor was parked.
    async fn ready(&self) -> Result<Linked, Failure> {
        if let Some(resident) = self.resident.lock().expect("resident lock").as_ref() {
            return Ok(resident.linked.clone());
        }
        let _one_at_a_time = self.reloading.lock().await;
        if let Some(resident) = self.resident.lock().expect("resident lock").as_ref() {
            return Ok(resident.linked.clone());
        }
        let reload = self
            .reload
            .clone()
            .ok_or_else(|| Failure::host(Reason::Trap, "the actor's compiled component is gone"))?;
        let engine = self.engine.clone();
        let actor = self.actor.clone();
        let resident = tokio::task::spawn_blocking(move || {
            let loaded = reload.load()?;
            link(&actor, &engine, &loaded)
        })
        .await
        .map_err(|e| anyhow::anyhow!("the component loader panicked: {e}"))
        .and_then(|r| r)
        .map_err(|e| {
            Failure::host(
                Reason::Trap,
                format!("mapping the compiled component again failed: {e:#}"),
            )
        })?;
        self.stats.reloads.fetch_add(1, Ordering::Relaxed);
        let linked = resident.linked.clone();
        *self.resident.lock().expect("resident lock") = Some(resident);
        Ok(linked)
    }

    /// Drops instances idle for longer than `sandbox.idle_timeout` (keeping one when
    /// `keep_warm`); returns how many were dropped.
    pub fn reap_idle(&self) -> usize {
        if let Some(pool) = &self.concurrent {
            let dropped = pool.reap_idle(self.limits.idle_timeout, self.limits.keep_warm);
            self.stats
                .discarded
                .fetch_add(dropped as u64, Ordering::Relaxed);
            let quiet = pool.is_empty()
                && self.last_active.lock().expect("activity lock").elapsed()
                    >= self.limits.idle_timeout;
            if quiet {
                self.park();
            }
            return dropped;
        }
        let keep = usize::from(self.limits.keep_warm);
        let mut idle = self.idle.lock().expect("pool lock");
        let before = idle.len();
        let timeout = self.limits.idle_timeout;
        let mut kept = 0;
        idle.retain(|g| {
            let fresh = g.last_used.elapsed() < timeout;
            let keep_this = fresh || kept < keep;
            if keep_this {
                kept += 1;
            }
            keep_this
        });
        let dropped = before - idle.len();
        let empty = idle.is_empty();
        drop(idle);
        self.stats
            .discarded
            .fetch_add(dropped as u64, Ordering::Relaxed);
        let quiet = self.permits.available_permits() == self.limits.max_instances
            && self.last_active.lock().expect("activity lock").elapsed() >= timeout;
        if empty && quiet {
            self.park();
        }
        dropped
    }

    /// Starts a background task that reaps idle instances until the executor is dropped.
    pub fn start_reaper(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let period = (self.limits.idle_timeout / 2).max(Duration::from_millis(50));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(executor) = weak.upgrade() else {
                    break;
                };
                executor.reap_idle();
            }
        });
    }

    /// What the component said about itself.
    pub fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    /// Where a cold start's time goes (for the benchmarks): mapping the compiled component again
    /// (zero when it is resident), instantiating from the snapshot, the first call on the fresh
    /// instance and a second call on it. The instance is dropped afterwards.
    pub async fn time_cold_start(&self, input: &str) -> Result<[Duration; 4]> {
        let t = Instant::now();
        self.ready()
            .await
            .map_err(|f| anyhow::anyhow!(f.error.message))?;
        let map = t.elapsed();
        let t = Instant::now();
        let mut guest = self
            .instantiate()
            .await
            .map_err(|f| anyhow::anyhow!(f.error.message))?;
        let instantiate = t.elapsed();
        let mut calls = [Duration::ZERO; 2];
        for call in &mut calls {
            let t = Instant::now();
            let (outcome, _) = self.run(&mut guest, input, self.limits.cpu_timeout).await;
            *call = t.elapsed();
            if let CallOutcome::Failed(f) = outcome {
                bail!("{}", f.error.message);
            }
        }
        Ok([map, instantiate, calls[0], calls[1]])
    }

    /// Parks the compiled component now if the actor may be parked (for the benchmarks).
    pub fn park_now(&self) -> bool {
        self.park()
    }

    /// Pool counters.
    pub fn stats(&self) -> &PoolStats {
        &self.stats
    }

    /// Whether the handler is `async def`: many calls run in each instance at once.
    pub fn is_concurrent(&self) -> bool {
        self.concurrent.is_some()
    }

    /// Calls in flight inside the instances of an `async def` handler (0 for a plain function).
    pub fn calls_in_flight(&self) -> usize {
        self.concurrent.as_ref().map_or(0, |pool| pool.in_flight())
    }

    /// Instances currently idle in the pool.
    pub fn idle_instances(&self) -> usize {
        self.idle.lock().expect("pool lock").len()
    }

    async fn instantiate(&self) -> Result<Guest, Failure> {
        let Linked::Sync(pre) = self.ready().await? else {
            return Err(Failure::host(
                Reason::Trap,
                "an async component is called through its concurrent pool",
            ));
        };
        let mut store = Store::new(pre.instance_pre().engine(), GuestState::new(&self.limits));
        configure_store(&mut store);
        // The component runs code while instantiating, so the deadline is set first.
        store.data_mut().deadline = Instant::now() + self.limits.cpu_timeout;
        let result = pre.instantiate_async(&mut store).await;
        log_output(&self.actor, &self.limits, store.data());
        match result {
            Ok(actor) => {
                self.stats.instantiated.fetch_add(1, Ordering::Relaxed);
                Ok(Guest {
                    store,
                    actor,
                    calls: 0,
                    last_used: Instant::now(),
                })
            }
            Err(err) => {
                let (reason, kind) = classify_trap(store.data(), &err);
                Err(Failure::host(
                    reason,
                    format!("instantiating the component failed ({kind}): {err:#}"),
                ))
            }
        }
    }

    async fn run(&self, guest: &mut Guest, input: &str, timeout: Duration) -> (CallOutcome, bool) {
        let budget = timeout.min(self.limits.cpu_timeout);
        {
            let state = guest.store.data_mut();
            state.deadline = Instant::now() + budget;
            state.timed_out = false;
            state.limiter.denied = false;
        }
        guest.calls += 1;
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let call = guest.actor.call_handle(&mut guest.store, input);
        let result = tokio::time::timeout(budget + HOST_CALL_GRACE, call).await;
        let overflowed = log_output(&self.actor, &self.limits, guest.store.data());
        let limiter = &guest.store.data().limiter;
        self.stats
            .memory_peak_bytes
            .fetch_max(limiter.peak, Ordering::Relaxed);
        let worn_out = limiter.peak > self.limits.recycle_memory_bytes
            || (self.limits.recycle_after_calls > 0
                && guest.calls >= self.limits.recycle_after_calls);
        match result {
            Err(_elapsed) => (
                CallOutcome::Failed(Failure::host(
                    Reason::Timeout,
                    format!(
                        "handler did not return within {} ms (blocked in a host call)",
                        budget.as_millis()
                    ),
                )),
                false,
            ),
            Ok(Err(err)) => {
                self.stats.traps.fetch_add(1, Ordering::Relaxed);
                let failure =
                    trap_failure(&self.limits, guest.store.data(), &err, overflowed, budget);
                (CallOutcome::Failed(failure), false)
            }
            Ok(Ok(result)) => {
                let (outcome, trusted) =
                    self.handler_outcome(result, guest.store.data().limiter.denied);
                (outcome, trusted && !worn_out)
            }
        }
    }

    /// What the handler's own answer means: its result (refused when over
    /// `maxOutputBytes`), or its exception with the reason the host reports. The flag says
    /// whether the instance may serve again: not after it tried to escape the sandbox or ran
    /// out of memory.
    fn handler_outcome(
        &self,
        result: Result<Option<String>, wit::HandlerError>,
        memory_denied: bool,
    ) -> (CallOutcome, bool) {
        match result {
            Err(exc) => {
                let memory = exc.type_ == "MemoryError" && memory_denied;
                let denied = exc.denied.is_some();
                let reason = if memory {
                    Reason::MemoryLimit
                } else if denied {
                    Reason::SandboxDenied
                } else {
                    Reason::HandlerError
                };
                let message = match &exc.denied {
                    Some(what) if *what != exc.message => {
                        format!("{} (sandbox refused {what})", exc.message)
                    }
                    _ => exc.message,
                };
                if let Some(what) = &exc.denied {
                    tracing::warn!(actor = %self.actor, refused = %what, "sandbox denied the handler");
                }
                let failure = Failure {
                    reason,
                    error: ErrorInfo {
                        kind: exc.type_,
                        message,
                        mro: exc.mro_names,
                        traceback: Some(exc.traceback).filter(|t| !t.is_empty()),
                    },
                };
                // A handler that tried to escape is not trusted with its instance again.
                (CallOutcome::Failed(failure), !memory && !denied)
            }
            Ok(None) => (CallOutcome::ReturnedNone, true),
            Ok(Some(text)) if text.len() > self.limits.max_output_bytes => {
                let failure = Failure::host(
                    Reason::OutputTooLarge,
                    format!(
                        "handler result is {} bytes, more than the allowed {}",
                        text.len(),
                        self.limits.max_output_bytes
                    ),
                );
                (CallOutcome::Failed(failure), true)
            }
            Ok(Some(text)) => (CallOutcome::Returned(text), true),
        }
    }
}

/// The failure for an error that stopped the guest (a trap, the CPU deadline, the memory cap,
/// too much output); the instance is then discarded.
fn trap_failure(
    limits: &SandboxLimits,
    state: &GuestState,
    err: &wasmtime::Error,
    overflowed: bool,
    budget: Duration,
) -> Failure {
    let (reason, kind) = if overflowed {
        (Reason::OutputTooLarge, "output")
    } else {
        classify_trap(state, err)
    };
    let message = match reason {
        Reason::Timeout => format!(
            "handler exceeded its CPU deadline of {} ms",
            budget.as_millis()
        ),
        Reason::MemoryLimit => format!(
            "handler exceeded its memory cap of {} MiB",
            limits.memory_bytes >> 20
        ),
        Reason::OutputTooLarge => format!(
            "handler wrote more than {} bytes to stdout/stderr",
            limits.max_log_bytes
        ),
        _ => format!("handler trapped ({kind}): {}", root_message(err)),
    };
    Failure::host(reason, message)
}

/// Moves the guest's captured stdout/stderr into the host log; returns whether it overflowed.
fn log_output(actor: &str, limits: &SandboxLimits, state: &GuestState) -> bool {
    let (stdout, stderr, overflowed) = state.output.drain();
    for (stream, bytes) in [(Stream::Stdout, stdout), (Stream::Stderr, stderr)] {
        if bytes.is_empty() {
            continue;
        }
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines() {
            match stream {
                Stream::Stdout => {
                    tracing::info!(target: "asya::handler", actor = %actor, stream = "stdout", "{line}")
                }
                Stream::Stderr => {
                    tracing::warn!(target: "asya::handler", actor = %actor, stream = "stderr", "{line}")
                }
            }
        }
    }
    if overflowed {
        tracing::warn!(actor = %actor, limit = limits.max_log_bytes,
            "handler output exceeded its limit and was cut");
    }
    overflowed
}

/// Reason and short kind for an error that stopped the guest.
fn classify_trap(state: &GuestState, err: &wasmtime::Error) -> (Reason, &'static str) {
    if state.timed_out {
        return (Reason::Timeout, "deadline");
    }
    if state.limiter.denied {
        return (Reason::MemoryLimit, "memory");
    }
    let text = format!("{err:#}");
    if text.contains(OUTPUT_OVERFLOW_TRAP) {
        return (Reason::OutputTooLarge, "output");
    }
    match err.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::StackOverflow) => (Reason::Trap, "stack overflow"),
        Some(wasmtime::Trap::UnreachableCodeReached) => (Reason::Trap, "unreachable"),
        Some(_) => (Reason::Trap, "trap"),
        None => (Reason::Trap, "host error"),
    }
}

fn root_message(err: &wasmtime::Error) -> String {
    let text = format!("{err:#}");
    // wasmtime appends a multi-line wasm backtrace; the first line says what happened.
    text.lines().next().unwrap_or_default().to_owned()
}

#[async_trait]
impl Executor for WasmExecutor {
    fn mode(&self) -> Mode {
        self.descriptor.mode
    }

    async fn call(&self, input: String, timeout: Duration) -> CallOutcome {
        if let Some(pool) = &self.concurrent {
            return pool.call(self, input, timeout).await;
        }
        // With more messages in flight than instances, a message waits here for a free one; the
        // wait counts against its timeout so it never outlives the transport's ack wait.
        let waited = Instant::now();
        // A free instance (the common case) is taken without arming a timer.
        let acquired = match self.permits.try_acquire() {
            Ok(permit) => Ok(Ok(permit)),
            Err(_) => tokio::time::timeout(timeout, self.permits.acquire()).await,
        };
        let _permit = match acquired {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => {
                return CallOutcome::Failed(Failure::host(Reason::Trap, "actor is shutting down"))
            }
            Err(_) => {
                return CallOutcome::Failed(Failure::host(
                    Reason::Timeout,
                    format!(
                        "no instance became free within {} ms (all {} busy)",
                        timeout.as_millis(),
                        self.limits.max_instances
                    ),
                ))
            }
        };
        let timeout = timeout.saturating_sub(waited.elapsed());
        let pooled = self.idle.lock().expect("pool lock").pop();
        let mut guest = match pooled {
            Some(guest) => guest,
            None => match self.instantiate().await {
                Ok(guest) => guest,
                Err(failure) => return CallOutcome::Failed(failure),
            },
        };
        let (outcome, keep) = self.run(&mut guest, &input, timeout).await;
        guest.last_used = Instant::now();
        *self.last_active.lock().expect("activity lock") = guest.last_used;
        if keep {
            self.idle.lock().expect("pool lock").push(guest);
        } else {
            self.stats.discarded.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(actor = %self.actor, "instance discarded");
        }
        outcome
    }
}
