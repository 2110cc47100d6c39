//! What a store holds besides the instance: the WASI context (denied by default), outbound
//! HTTP to granted hosts, the memory limiter, the CPU deadline and captured output.

use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::limits::{MemoryLimiter, SandboxLimits};
use super::output::{CapturedOutput, Stream};
use crate::runtime::outbound::OutboundHttp;

/// Everything a store holds besides the instance: WASI, limits, deadline and captured output.
pub struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory cap and high-water mark.
    pub limiter: MemoryLimiter,
    /// When the current call must stop.
    pub deadline: Instant,
    /// Set by the epoch callback when the deadline stopped the guest.
    pub timed_out: bool,
    /// For an instance running many async calls: how long guest code may run without
    /// awaiting (see [`configure_concurrent_store`]); `None` for one call at a time.
    pub slice_budget: Option<std::time::Duration>,
    /// When the guest's current run of code began (async instances).
    pub slice_started: Instant,
    /// When the epoch callback last ran (async instances).
    pub last_tick: Instant,
    /// stdout and stderr of the current call.
    pub output: CapturedOutput,
    http: WasiHttpCtx,
    /// The allowlist check on outbound HTTP, and the last refused request.
    pub outbound: OutboundHttp,
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl GuestState {
    /// A fresh state: no preopened directories, no sockets, no inherited environment or
    /// arguments; only `limits.env`; outbound HTTP only to `limits.allowed_hosts`. Clocks and
    /// randomness are allowed.
    pub fn new(limits: &SandboxLimits) -> Self {
        let output = CapturedOutput::new(limits.max_log_bytes);
        let mut builder = WasiCtx::builder();
        builder
            .envs(&limits.env)
            .stdout(output.stream(Stream::Stdout))
            .stderr(output.stream(Stream::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        GuestState {
            wasi: builder.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter::with_cap(limits.memory_bytes),
            deadline: Instant::now() + limits.cpu_timeout,
            timed_out: false,
            slice_budget: None,
            slice_started: Instant::now(),
            last_tick: Instant::now(),
            output,
            http: WasiHttpCtx::new(),
            outbound: OutboundHttp::new(limits.allowed_hosts.clone()),
        }
    }
}

/// A running handler yields to the async executor every this many ticks, so one busy handler
/// cannot starve the other actors on its thread.
const YIELD_EVERY_TICKS: u64 = 5;

/// Installs the limiter and the epoch deadline policy on a new store.
pub fn configure_store(store: &mut wasmtime::Store<GuestState>) {
    store.limiter(|state| &mut state.limiter);
    store.set_epoch_deadline(YIELD_EVERY_TICKS);
    store.epoch_deadline_callback(|mut ctx| {
        let state = ctx.data_mut();
        if Instant::now() >= state.deadline {
            state.timed_out = true;
            return Err(wasmtime::format_err!("asya: CPU deadline exceeded"));
        }
        Ok(wasmtime::UpdateDeadline::Yield(YIELD_EVERY_TICKS))
    });
}

/// When an async instance's guest last went into a host call that has not returned: a
/// synchronous call inside an `async def` handler (`time.sleep`, `urllib.request`) blocks the
/// whole instance there, where no epoch callback runs. Read from outside the store, by the
/// instance's watchdog.
#[derive(Debug)]
pub struct HostCallClock {
    origin: Instant,
    /// Microseconds after `origin` when the current host call began; 0: not in a host call.
    since: std::sync::atomic::AtomicU64,
}

impl HostCallClock {
    fn new() -> Self {
        HostCallClock {
            origin: Instant::now(),
            since: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn enter(&self) {
        let micros = self.origin.elapsed().as_micros() as u64;
        self.since
            .store(micros.max(1), std::sync::atomic::Ordering::Release);
    }

    fn leave(&self) {
        self.since.store(0, std::sync::atomic::Ordering::Release);
    }

    /// How long the guest has been inside its current host call (zero when it is not in one).
    pub fn blocked_for(&self) -> std::time::Duration {
        match self.since.load(std::sync::atomic::Ordering::Acquire) {
            0 => std::time::Duration::ZERO,
            since => self
                .origin
                .elapsed()
                .saturating_sub(std::time::Duration::from_micros(since)),
        }
    }
}

/// A gap this long between two epoch callbacks means the guest was not running in between
/// (every call in the instance was awaiting); its next run of code starts a new slice.
const SLICE_GAP: std::time::Duration = std::time::Duration::from_millis(100);

/// Installs the limiter and the CPU policy on the store of an instance that runs many async
/// calls at once. A wall-clock deadline per call cannot apply: calls overlap, and most of a call
/// is spent awaiting, when no guest code runs. What is bounded is a *slice*: guest code running
/// without awaiting. While it runs, the epoch callback fires every few milliseconds; a gap
/// longer than [`SLICE_GAP`] since the previous one means the guest was idle in between. A slice
/// longer than `budget` (a handler that spins, or blocks in a synchronous call, after an await)
/// stops the instance, and with it every call in flight there.
///
/// The returned clock tells how long the guest has been inside a host call: the instance's
/// watchdog stops an instance blocked in one for longer than `budget`.
pub fn configure_concurrent_store(
    store: &mut wasmtime::Store<GuestState>,
    budget: std::time::Duration,
) -> std::sync::Arc<HostCallClock> {
    let clock = std::sync::Arc::new(HostCallClock::new());
    let hook_clock = clock.clone();
    store.call_hook(move |_, hook| {
        match hook {
            wasmtime::CallHook::CallingHost => hook_clock.enter(),
            wasmtime::CallHook::ReturningFromHost => hook_clock.leave(),
            _ => {}
        }
        Ok(())
    });
    store.limiter(|state| &mut state.limiter);
    store.data_mut().slice_budget = Some(budget);
    store.set_epoch_deadline(YIELD_EVERY_TICKS);
    store.epoch_deadline_callback(|mut ctx| {
        let state = ctx.data_mut();
        let now = Instant::now();
        if now.duration_since(state.last_tick) > SLICE_GAP {
            state.slice_started = now;
        }
        state.last_tick = now;
        let budget = state.slice_budget.unwrap_or(std::time::Duration::MAX);
        if now.duration_since(state.slice_started) >= budget {
            state.timed_out = true;
            return Err(wasmtime::format_err!(
                "asya: CPU deadline exceeded (guest code ran without awaiting)"
            ));
        }
        Ok(wasmtime::UpdateDeadline::Yield(YIELD_EVERY_TICKS))
    });
    clock
}
