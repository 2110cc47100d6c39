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
