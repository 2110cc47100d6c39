//! The sandbox every component runs in: the shared wasmtime engine (with its epoch ticker), the
//! per-store state (WASI context denied by default, memory limiter, captured stdout/stderr) and the
//! limits an actor declares.

use anyhow::{Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::outbound::{HostAllowlist, OutboundHttp};

/// Converts wasmtime's error type (not a `std::error::Error`) into `anyhow::Error`, so the usual
/// `.context(...)` applies at our boundaries.
pub(crate) trait WasmtimeResultExt<T> {
    /// The same result with an `anyhow::Error`.
    fn anyhow(self) -> anyhow::Result<T>;
}

impl<T> WasmtimeResultExt<T> for std::result::Result<T, wasmtime::Error> {
    fn anyhow(self) -> anyhow::Result<T> {
        self.map_err(anyhow::Error::from)
    }
}

/// How often the engine's epoch advances; the unit of CPU deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);
/// A running handler yields to the async executor every this many ticks, so one busy handler
/// cannot starve the other actors on its thread.
const YIELD_EVERY_TICKS: u64 = 5;

/// Per-actor sandbox limits, from the manifest's `sandbox` section.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxLimits {
    /// Cap on each linear memory of an instance, in bytes.
    pub memory_bytes: u64,
    /// Wall-clock budget of one call while it runs (epoch deadline).
    pub cpu_timeout: Duration,
    /// Instances that may run at once (and so messages in flight for this actor).
    pub max_instances: usize,
    /// Largest accepted handler result, in bytes of JSON.
    pub max_output_bytes: usize,
    /// Largest stdout + stderr one call may write before it is stopped.
    pub max_log_bytes: usize,
    /// An instance whose memory grew past this is discarded after its call.
    pub recycle_memory_bytes: u64,
    /// An instance is discarded after this many calls (0: never).
    pub recycle_after_calls: u64,
    /// The only environment variables the guest sees.
    pub env: Vec<(String, String)>,
    /// Keep one instance ready while idle (lower first-message latency, more memory).
    pub keep_warm: bool,
    /// Keep the compiled component mapped while idle. Otherwise an idle actor (no instance, no
    /// message for `idle_timeout`, and right after it is loaded) parks it and maps it again from
    /// the compile cache on its next message. `keep_warm` implies this.
    pub keep_loaded: bool,
    /// Idle instances are dropped after this long without a message.
    pub idle_timeout: std::time::Duration,
    /// Hosts the handler may reach over HTTP(S) (`sandbox.allowedHosts`); empty denies all.
    pub allowed_hosts: Arc<HostAllowlist>,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            memory_bytes: 256 << 20,
            cpu_timeout: Duration::from_secs(30),
            max_instances: 4,
            max_output_bytes: 8 << 20,
            max_log_bytes: 1 << 20,
            recycle_memory_bytes: 192 << 20,
            recycle_after_calls: 0,
            env: Vec::new(),
            keep_warm: false,
            keep_loaded: false,
            idle_timeout: Duration::from_secs(60),
            allowed_hosts: Arc::default(),
        }
    }
}

/// The pooling instance allocator's sizing (opt-in: `ASYA_POOLING=1`).
///
/// A fresh instance then reuses a memory slot that last held the same snapshot, and keeps up to
/// `keep_resident_bytes` of it resident between uses, so its first call does not fault the
/// snapshot's pages in again (measured by `cargo bench --bench cold_start`). The price: at most
/// `warm_slots` unused slots stay resident, and at most `instances` instances exist at once in
/// the whole host (further instantiations fail and their messages are retried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolingSettings {
    /// Component instances alive at once, across every actor (`ASYA_POOL_INSTANCES`, 1000).
    pub instances: u32,
    /// Bytes of each memory kept resident for the next instance (`ASYA_POOL_KEEP_RESIDENT`,
    /// 64 MiB).
    pub keep_resident_bytes: usize,
    /// Unused slots kept warm (`ASYA_POOL_WARM_SLOTS`, 32).
    pub warm_slots: u32,
}

impl Default for PoolingSettings {
    fn default() -> Self {
        PoolingSettings {
            instances: 1000,
            keep_resident_bytes: 64 << 20,
            warm_slots: 32,
        }
    }
}

impl PoolingSettings {
    /// `Some` when `ASYA_POOLING=1`, sized by the `ASYA_POOL_*` variables (defaults otherwise).
    pub fn from_env() -> Option<Self> {
        if std::env::var("ASYA_POOLING").ok().as_deref() != Some("1") {
            return None;
        }
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let d = PoolingSettings::default();
        Some(PoolingSettings {
            instances: var("ASYA_POOL_INSTANCES").map_or(d.instances, |v| v as u32),
            keep_resident_bytes: var("ASYA_POOL_KEEP_RESIDENT")
                .map_or(d.keep_resident_bytes, |v| v as usize),
            warm_slots: var("ASYA_POOL_WARM_SLOTS").map_or(d.warm_slots, |v| v as u32),
        })
    }
}

/// The wasmtime engine shared by every actor of a host, and the thread that drives its epoch.
pub struct SandboxEngine {
    engine: Engine,
    linker: Linker<GuestState>,
    ticker_stop: Arc<AtomicBool>,
}

impl SandboxEngine {
    /// Creates the engine (Cranelift, epoch interruption, component model) and the linker with
    /// WASI and wasi:http. `ASYA_POOLING=1` selects the pooling instance allocator (see
    /// [`PoolingSettings::from_env`]).
    pub fn new() -> Result<Arc<Self>> {
        Self::with_pooling(PoolingSettings::from_env())
    }

    /// As [`SandboxEngine::new`], with the instance allocator chosen by the caller: `None` maps
    /// fresh memory for every instance; `Some` keeps linear memories and stacks in pre-reserved
    /// slots that later instances reuse.
    pub fn with_pooling(pooling: Option<PoolingSettings>) -> Result<Arc<Self>> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            // CPython needs a deeper stack than the default for real-world recursion; the
            // async fiber stack must exceed it.
            .max_wasm_stack(4 << 20)
            .async_stack_size(6 << 20);
        if let Some(settings) = pooling {
            let mut pool = wasmtime::PoolingAllocationConfig::new();
            // A CPython component has about ten core instances, one memory and a few tables.
            pool.total_component_instances(settings.instances)
                .total_core_instances(settings.instances * 16)
                .total_memories(settings.instances * 2)
                .total_tables(settings.instances * 16)
                .total_stacks(settings.instances)
                .max_memory_size(4 << 30)
                .table_elements(100_000)
                .max_core_instances_per_component(64)
                .max_memories_per_component(8)
                .max_tables_per_component(32)
                .linear_memory_keep_resident(settings.keep_resident_bytes)
                .max_unused_warm_slots(settings.warm_slots);
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config)
            .anyhow()
            .context("creating the wasmtime engine")?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .anyhow()
            .context("linking WASI")?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .anyhow()
            .context("linking wasi:http")?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("asya-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .context("starting the epoch ticker")?;
        }
        Ok(Arc::new(SandboxEngine {
            engine,
            linker,
            ticker_stop,
        }))
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The linker holding WASI and wasi:http (both deny-by-default per store) and nothing else.
    pub fn linker(&self) -> &Linker<GuestState> {
        &self.linker
    }
}

impl Drop for SandboxEngine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Memory accounting for one store: enforces the cap and remembers whether it was hit.
#[derive(Debug, Default)]
pub struct MemoryLimiter {
    cap: u64,
    /// Largest memory size requested so far (bytes).
    pub peak: u64,
    /// Set when a growth past the cap was refused.
    pub denied: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.cap {
            self.denied = true;
            return Ok(false);
        }
        self.peak = self.peak.max(desired as u64);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

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
            limiter: MemoryLimiter {
                cap: limits.memory_bytes,
                ..MemoryLimiter::default()
            },
            deadline: Instant::now() + limits.cpu_timeout,
            timed_out: false,
            output,
            http: WasiHttpCtx::new(),
            outbound: OutboundHttp::new(limits.allowed_hosts.clone()),
        }
    }
}

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

/// Which guest stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The guest's stdout.
    Stdout,
    /// The guest's stderr.
    Stderr,
}

#[derive(Debug, Default)]
struct OutputBuffers {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    overflowed: bool,
}

/// stdout and stderr of a guest, kept in memory up to a byte budget and drained after each call
/// into the host's log (tagged with the actor). Writing past the budget stops the guest.
#[derive(Debug, Clone)]
pub struct CapturedOutput {
    buffers: Arc<Mutex<OutputBuffers>>,
    capacity: usize,
}

impl CapturedOutput {
    fn new(capacity: usize) -> Self {
        CapturedOutput {
            buffers: Arc::default(),
            capacity,
        }
    }

    fn stream(&self, which: Stream) -> GuestOutputStream {
        GuestOutputStream {
            output: self.clone(),
            which,
        }
    }

    /// Takes what the guest wrote since the last call, and whether it tried to write more than
    /// allowed.
    pub fn drain(&self) -> (Vec<u8>, Vec<u8>, bool) {
        let mut b = self.buffers.lock().expect("output lock");
        let overflowed = std::mem::take(&mut b.overflowed);
        (
            std::mem::take(&mut b.stdout),
            std::mem::take(&mut b.stderr),
            overflowed,
        )
    }

    fn write(&self, which: Stream, bytes: &[u8]) -> Result<(), ()> {
        let mut b = self.buffers.lock().expect("output lock");
        if b.stdout.len() + b.stderr.len() + bytes.len() > self.capacity {
            b.overflowed = true;
            return Err(());
        }
        match which {
            Stream::Stdout => b.stdout.extend_from_slice(bytes),
            Stream::Stderr => b.stderr.extend_from_slice(bytes),
        }
        Ok(())
    }
}

/// The message the guest traps with when it writes too much output.
pub const OUTPUT_OVERFLOW_TRAP: &str = "asya: handler output (stdout/stderr) exceeded its limit";

#[derive(Debug, Clone)]
struct GuestOutputStream {
    output: CapturedOutput,
    which: Stream,
}

impl IsTerminal for GuestOutputStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutputStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutputStream {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestOutputStream {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.output
            .write(self.which, &bytes)
            .map_err(|()| StreamError::trap(OUTPUT_OVERFLOW_TRAP))
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for GuestOutputStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(
            self.output
                .write(self.which, buf)
                .map(|()| buf.len())
                .map_err(|()| std::io::Error::other(OUTPUT_OVERFLOW_TRAP)),
        )
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
