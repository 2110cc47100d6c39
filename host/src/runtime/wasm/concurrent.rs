//! Many calls in one instance: the pool of an `async def` handler's component (world
//! `actor-async`, whose `handle` is a component-model async export).
//!
//! Each instance is owned by one driver task, which runs a single `run_concurrent` on the
//! instance's store for the instance's whole life and starts every call it receives as a
//! component-model task (`TypedFunc::call_concurrent`): while one call awaits (an HTTP response,
//! a timer), the others run. Callers reach the driver over a channel and wait for their answer on
//! a oneshot with their own deadline (`actorTimeout`), outside the store: wasmtime documents that
//! a timeout raced inside `run_concurrent` may not fire while guest code runs.
//!
//! Limits:
//! - `sandbox.maxConcurrency` calls per instance and `maxInstances` instances; a call waits for a
//!   slot within its timeout.
//! - CPU: guest code running without awaiting is bounded by `cpuTimeout`
//!   ([`configure_concurrent_store`]); past it the instance stops, failing its calls in flight
//!   (a store traps as a whole). A synchronous call that blocks inside an async handler
//!   (`time.sleep`, `urllib.request`) holds the whole instance in a host call, where no epoch
//!   callback runs: the instance's watchdog stops it after `cpuTimeout` the same way.
//! - Memory: the cap is per instance, shared by its calls; a refused growth fails the call that
//!   raised `MemoryError` with `MemoryLimit`, and the instance takes no new calls.
//! - A call whose caller gave up (timeout) cannot be cancelled inside the guest (wasmtime 48 has
//!   no host-side cancellation of a guest task): it runs on and keeps its slot. An instance
//!   whose every call in flight was given up is dropped, which ends them.

use super::{log_output, trap_failure, wit, Descriptor, Linked, PoolStats, WasmExecutor};
use crate::message::envelope::Reason;
use crate::runtime::executor::{CallOutcome, Failure, Mode};
use crate::runtime::sandbox::{
    configure_concurrent_store, GuestState, HostCallClock, SandboxLimits, WasmtimeResultExt,
};
use anyhow::Context;
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use wasmtime::component::TypedFunc;
use wasmtime::Store;

type HandleResult = Result<Option<String>, wit::HandlerError>;
type HandleFunc = TypedFunc<(String,), (HandleResult,)>;

/// How often a driver looks for calls whose callers all gave up.
const ABANDON_CHECK: Duration = Duration::from_millis(500);

/// What a caller gets back from the driver.
enum Answer {
    /// The handler's own answer, and whether the memory limiter had refused a growth.
    Handled(HandleResult, bool),
    /// The instance stopped with this call in flight.
    Stopped(Failure),
}

/// One call on its way into an instance.
struct Job {
    input: String,
    reply: oneshot::Sender<Answer>,
    /// Held until the guest's task ends, even after its caller gave up.
    slot: OwnedSemaphorePermit,
}

/// What a driver shares with the pool.
struct Shared {
    /// Calls handed to this instance and not yet ended in it.
    in_flight: AtomicUsize,
    /// Takes no new calls: its memory or sandbox is no longer trusted, or it is worn out.
    retiring: AtomicBool,
    last_used: Mutex<Instant>,
    /// Why the watchdog stopped the instance (its callers read it: their replies are gone).
    stopped: Mutex<Option<Failure>>,
}

/// One instance, as the pool sees it.
struct Instance {
    jobs: mpsc::UnboundedSender<Job>,
    shared: Arc<Shared>,
}

impl Instance {
    fn is_live(&self) -> bool {
        !self.jobs.is_closed() && !self.shared.retiring.load(Ordering::Acquire)
    }
}

/// The instances of one `async def` actor.
pub(super) struct ConcurrentPool {
    instances: Mutex<Vec<Instance>>,
    /// `maxInstances` × `maxConcurrency` calls at once.
    slots: Arc<Semaphore>,
    starting: tokio::sync::Mutex<()>,
    per_instance: usize,
    max_instances: usize,
}

/// How a driver's loop ended without a trap.
enum Stop {
    /// No more calls will come (the pool dropped the instance, or it retired and drained).
    Done,
    /// Every call in flight was given up by its caller.
    Abandoned,
}

/// Instantiates the component in a store set up for concurrent calls.
async fn instantiate(
    exec: &WasmExecutor,
) -> Result<
    (
        Store<GuestState>,
        wasmtime::component::Instance,
        Arc<HostCallClock>,
    ),
    Failure,
> {
    let Linked::Concurrent(pre) = exec.ready().await? else {
        return Err(Failure::host(
            Reason::Trap,
            "a plain function's component has no concurrent pool",
        ));
    };
    let mut store = Store::new(pre.engine(), GuestState::new(&exec.limits));
    let clock = configure_concurrent_store(&mut store, exec.limits.cpu_timeout);
    let result = pre.instantiate_async(&mut store).await;
    log_output(&exec.actor, &exec.limits, store.data());
    match result {
        Ok(instance) => {
            exec.stats.instantiated.fetch_add(1, Ordering::Relaxed);
            Ok((store, instance, clock))
        }
        Err(err) => {
            let failure = trap_failure(
                &exec.limits,
                store.data(),
                &err,
                false,
                exec.limits.cpu_timeout,
            );
            Err(Failure::host(
                failure.reason,
                format!(
                    "instantiating the component failed: {}",
                    failure.error.message
                ),
            ))
        }
    }
}

/// Asks a fresh instance what it wraps, and checks that `handle` has the contract's type.
pub(super) async fn describe(exec: &WasmExecutor) -> anyhow::Result<Descriptor> {
    let (mut store, instance, _) = instantiate(exec)
        .await
        .map_err(|f| anyhow::anyhow!(f.error.message))?;
    instance
        .get_typed_func::<(String,), (HandleResult,)>(&mut store, "handle")
        .anyhow()
        .context("its `handle` export is not asya:actor-async's")?;
    let describe = instance
        .get_typed_func::<(), (wit::Descriptor,)>(&mut store, "describe")
        .anyhow()?;
    let (described,) = describe.call_async(&mut store, ()).await.anyhow()?;
    exec.stats.discarded.fetch_add(1, Ordering::Relaxed);
    Ok(Descriptor {
        handler: described.handler,
        mode: match described.mode {
            wit::Mode::Payload => Mode::Payload,
            wit::Mode::Envelope => Mode::Envelope,
        },
        sdk_version: described.sdk_version,
    })
}

impl ConcurrentPool {
    /// An empty pool sized by `limits`.
    pub(super) fn new(limits: &SandboxLimits) -> Self {
        let per_instance = limits.max_concurrency.max(1);
        let max_instances = limits.max_instances.max(1);
        ConcurrentPool {
            instances: Mutex::default(),
            slots: Arc::new(Semaphore::new(per_instance * max_instances)),
            starting: tokio::sync::Mutex::new(()),
            per_instance,
            max_instances,
        }
    }

    /// Whether no instance is alive.
    pub(super) fn is_empty(&self) -> bool {
        let mut instances = self.instances.lock().expect("pool lock");
        instances.retain(|i| !i.jobs.is_closed());
        instances.is_empty()
    }

    /// Calls in flight across the instances.
    pub(super) fn in_flight(&self) -> usize {
        let instances = self.instances.lock().expect("pool lock");
        instances
            .iter()
            .map(|i| i.shared.in_flight.load(Ordering::Acquire))
            .sum()
    }

    /// Drops instances with no call in flight for `idle`; returns how many.
    pub(super) fn reap_idle(&self, idle: Duration, keep_warm: bool) -> usize {
        let mut instances = self.instances.lock().expect("pool lock");
        let before = instances.len();
        let mut kept = 0;
        instances.retain(|i| {
            let busy = i.shared.in_flight.load(Ordering::Acquire) > 0;
            let fresh = i.shared.last_used.lock().expect("use lock").elapsed() < idle;
            let keep = !i.jobs.is_closed() && (busy || fresh || (keep_warm && kept == 0));
            kept += usize::from(keep);
            keep
        });
        before - instances.len()
    }

    /// Runs one call in an instance with room, starting an instance if none has.
    pub(super) async fn call(
        &self,
        exec: &WasmExecutor,
        input: String,
        timeout: Duration,
    ) -> CallOutcome {
        let waited = Instant::now();
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => match tokio::time::timeout(timeout, self.slots.clone().acquire_owned()).await
            {
                Ok(Ok(slot)) => slot,
                Ok(Err(_)) => {
                    return CallOutcome::Failed(Failure::host(
                        Reason::Trap,
                        "actor is shutting down",
                    ))
                }
                Err(_) => {
                    return CallOutcome::Failed(Failure::host(
                        Reason::Timeout,
                        format!(
                            "no call slot became free within {} ms (all {} instances × {} \
                             calls busy)",
                            timeout.as_millis(),
                            self.max_instances,
                            self.per_instance
                        ),
                    ))
                }
            },
        };
        let (jobs, shared) = match self.pick(exec).await {
            Ok(picked) => picked,
            Err(failure) => return CallOutcome::Failed(failure),
        };
        *exec.last_active.lock().expect("activity lock") = Instant::now();
        exec.stats.calls.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        if jobs.send(Job { input, reply, slot }).is_err() {
            shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            return CallOutcome::Failed(Failure::host(
                Reason::Trap,
                "the instance stopped before the call reached it",
            ));
        }
        let left = timeout.saturating_sub(waited.elapsed());
        match tokio::time::timeout(left, answer).await {
            Ok(Ok(Answer::Handled(result, memory_denied))) => {
                let (outcome, trusted) = exec.handler_outcome(result, memory_denied);
                if !trusted {
                    shared.retiring.store(true, Ordering::Release);
                }
                outcome
            }
            Ok(Ok(Answer::Stopped(failure))) => CallOutcome::Failed(failure),
            Ok(Err(_)) => CallOutcome::Failed(
                shared
                    .stopped
                    .lock()
                    .expect("stop lock")
                    .clone()
                    .unwrap_or_else(|| {
                        Failure::host(
                            Reason::Trap,
                            "the instance's driver ended with the call in flight",
                        )
                    }),
            ),
            Err(_) => CallOutcome::Failed(Failure::host(
                Reason::Timeout,
                format!(
                    "handler did not return within {} ms; its task runs on in the instance \
                     until it ends (a guest task cannot be cancelled from the host) and the \
                     other calls there go on",
                    timeout.as_millis()
                ),
            )),
        }
    }

    /// The least busy live instance with room (its in-flight count taken), or a new one.
    fn take_room(&self) -> Option<(mpsc::UnboundedSender<Job>, Arc<Shared>)> {
        let mut instances = self.instances.lock().expect("pool lock");
        instances.retain(|i| !i.jobs.is_closed());
        let best = instances
            .iter()
            .filter(|i| i.is_live())
            .min_by_key(|i| i.shared.in_flight.load(Ordering::Acquire))?;
        let live = instances.iter().filter(|i| i.is_live()).count();
        let busy = best.shared.in_flight.load(Ordering::Acquire);
        // At the instance cap, the slot this call holds guarantees room somewhere among the
        // live instances unless retiring ones hold slots: then the least busy takes one more.
        if busy >= self.per_instance && live < self.max_instances {
            return None;
        }
        best.shared.in_flight.fetch_add(1, Ordering::AcqRel);
        *best.shared.last_used.lock().expect("use lock") = Instant::now();
        Some((best.jobs.clone(), best.shared.clone()))
    }

    async fn pick(
        &self,
        exec: &WasmExecutor,
    ) -> Result<(mpsc::UnboundedSender<Job>, Arc<Shared>), Failure> {
        if let Some(room) = self.take_room() {
            return Ok(room);
        }
        let _one_at_a_time = self.starting.lock().await;
        if let Some(room) = self.take_room() {
            return Ok(room);
        }
        let (mut store, instance, clock) = instantiate(exec).await?;
        let handle = instance
            .get_typed_func::<(String,), (HandleResult,)>(&mut store, "handle")
            .map_err(|err| {
                Failure::host(
                    Reason::Trap,
                    format!("the component's handle export is not asya:actor-async's: {err}"),
                )
            })?;
        let (jobs, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            in_flight: AtomicUsize::new(1),
            retiring: AtomicBool::new(false),
            last_used: Mutex::new(Instant::now()),
            stopped: Mutex::new(None),
        });
        let driver = Driver {
            actor: exec.actor.clone(),
            limits: exec.limits.clone(),
            stats: exec.stats.clone(),
            shared: shared.clone(),
        };
        let running = tokio::spawn(driver.run(store, handle, receiver));
        tokio::spawn(watch(
            running,
            clock,
            shared.clone(),
            exec.stats.clone(),
            exec.actor.clone(),
            exec.limits.cpu_timeout,
        ));
        self.instances.lock().expect("pool lock").push(Instance {
            jobs: jobs.clone(),
            shared: shared.clone(),
        });
        Ok((jobs, shared))
    }
}

/// Stops the instance whose driver is `running` when its guest has been inside one host call for
/// longer than `budget`: a synchronous call blocking an async handler (no epoch callback runs
/// there, so the CPU deadline cannot see it). Ends when the driver does.
async fn watch(
    mut running: tokio::task::JoinHandle<()>,
    clock: Arc<HostCallClock>,
    shared: Arc<Shared>,
    stats: Arc<PoolStats>,
    actor: String,
    budget: Duration,
) {
    let mut check = tokio::time::interval(
        (budget / 4).clamp(Duration::from_millis(10), Duration::from_millis(500)),
    );
    loop {
        tokio::select! {
            _ = &mut running => return,
            _ = check.tick() => {
                let blocked = clock.blocked_for();
                if blocked < budget {
                    continue;
                }
                let calls = shared.in_flight.load(Ordering::Acquire);
                let message = format!(
                    "a call in this instance blocked in a synchronous call (time.sleep, \
                     urllib.request, ...) for {} ms, past its CPU deadline of {} ms: an async \
                     handler must await; the instance was stopped with its {calls} calls in flight",
                    blocked.as_millis(),
                    budget.as_millis()
                );
                tracing::warn!(actor = %actor, "{message}");
                *shared.stopped.lock().expect("stop lock") =
                    Some(Failure::host(Reason::Timeout, message));
                shared.retiring.store(true, Ordering::Release);
                running.abort();
                stats.traps.fetch_add(1, Ordering::Relaxed);
                stats.discarded.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// The task that owns one instance's store and runs every call in it.
struct Driver {
    actor: String,
    limits: SandboxLimits,
    stats: Arc<PoolStats>,
    shared: Arc<Shared>,
}

impl Driver {
    async fn run(
        self,
        mut store: Store<GuestState>,
        handle: HandleFunc,
        mut jobs: mpsc::UnboundedReceiver<Job>,
    ) {
        // Callers' replies and slots by call number: outside the store's event loop, so that
        // whatever ends it, every caller still waiting is answered.
        let mut waiting: HashMap<u64, (oneshot::Sender<Answer>, OwnedSemaphorePermit)> =
            HashMap::new();
        let this = &self;
        let waiting_ref = &mut waiting;
        let jobs_ref = &mut jobs;
        let ended = store
            .run_concurrent(async move |accessor| -> wasmtime::Result<Stop> {
                let mut calls = FuturesUnordered::new();
                let mut open = true;
                let mut started: u64 = 0;
                let mut check = tokio::time::interval(ABANDON_CHECK);
                loop {
                    let retiring = this.shared.retiring.load(Ordering::Acquire);
                    if calls.is_empty() && (!open || (retiring && jobs_ref.is_empty())) {
                        return Ok(Stop::Done);
                    }
                    tokio::select! {
                        job = jobs_ref.recv(), if open => match job {
                            Some(Job { input, reply, slot }) => {
                                let id = started;
                                started += 1;
                                waiting_ref.insert(id, (reply, slot));
                                calls.push(async move {
                                    (id, handle.call_concurrent(accessor, (input,)).await)
                                });
                            }
                            None => open = false,
                        },
                        Some((id, result)) = calls.next() => {
                            let (result,) = result?;
                            let (memory_denied, peak) = accessor.with(|mut access| {
                                let state = access.get();
                                log_output(&this.actor, &this.limits, state);
                                (state.limiter.denied, state.limiter.peak)
                            });
                            this.stats.memory_peak_bytes.fetch_max(peak, Ordering::Relaxed);
                            let worn_out = peak > this.limits.recycle_memory_bytes
                                || (this.limits.recycle_after_calls > 0
                                    && started >= this.limits.recycle_after_calls);
                            if worn_out || memory_denied {
                                this.shared.retiring.store(true, Ordering::Release);
                            }
                            if let Some((reply, slot)) = waiting_ref.remove(&id) {
                                this.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                                let _ = reply.send(Answer::Handled(result, memory_denied));
                                drop(slot);
                            }
                        }
                        _ = check.tick() => {
                            if !waiting_ref.is_empty()
                                && waiting_ref.values().all(|(reply, _)| reply.is_closed())
                            {
                                return Ok(Stop::Abandoned);
                            }
                        }
                    }
                }
            })
            .await
            .and_then(|ended| ended);
        jobs.close();
        let failure = match ended {
            Ok(Stop::Done) => None,
            Ok(Stop::Abandoned) => Some(Failure::host(
                Reason::Timeout,
                "every call in flight in the instance was given up by its caller; the \
                 instance was dropped",
            )),
            Err(err) => {
                self.stats.traps.fetch_add(1, Ordering::Relaxed);
                let overflowed = log_output(&self.actor, &self.limits, store.data());
                let failure = trap_failure(
                    &self.limits,
                    store.data(),
                    &err,
                    overflowed,
                    self.limits.cpu_timeout,
                );
                let message = match failure.reason {
                    Reason::Timeout => format!(
                        "a call in this instance ran {} ms of guest code without awaiting (its \
                         CPU deadline); the instance was stopped with its {} calls in flight",
                        self.limits.cpu_timeout.as_millis(),
                        waiting.len()
                    ),
                    _ => format!(
                        "{}; the instance was stopped with its {} calls in flight",
                        failure.error.message,
                        waiting.len()
                    ),
                };
                tracing::warn!(actor = %self.actor, "{message}");
                Some(Failure::host(failure.reason, message))
            }
        };
        let failure = failure.unwrap_or_else(|| {
            Failure::host(Reason::Trap, "the instance stopped with the call in flight")
        });
        let mut unanswered: Vec<_> = waiting.into_values().map(|(reply, _)| reply).collect();
        while let Ok(job) = jobs.try_recv() {
            unanswered.push(job.reply);
        }
        for reply in unanswered {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            let _ = reply.send(Answer::Stopped(failure.clone()));
        }
        self.shared.retiring.store(true, Ordering::Release);
        self.stats.discarded.fetch_add(1, Ordering::Relaxed);
        drop(store);
    }
}
