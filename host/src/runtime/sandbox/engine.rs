//! The wasmtime engine shared by every actor of a host, the thread that advances its epoch
//! (the unit of CPU deadlines), and the opt-in pooling allocator.

use anyhow::{Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::Linker;
use wasmtime::{Config, Engine};

use super::guest::GuestState;

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

/// The wasmtime engines shared by every actor of a host, and the thread that drives their epoch.
///
/// Two engines: plain functions' components run on one without the component model's async
/// support, because a store that supports concurrency routes even a plain call through its
/// event loop (measured: 13.3 µs against 16.5 µs a call, and 10-20% fewer hops per second);
/// `async def` components (world `actor-async`, which imports WASI 0.3) run on the other.
pub struct SandboxEngine {
    engine: Engine,
    linker: Linker<GuestState>,
    concurrent: Engine,
    concurrent_linker: Linker<GuestState>,
    ticker_stop: Arc<AtomicBool>,
}

/// What only an `async def` component imports: WASI 0.3 (timers and HTTP that await). The
/// `actor` world imports WASI 0.2 only, so a component naming these needs the concurrent engine.
const WASI_P3_IMPORTS: [&[u8]; 2] = [
    b"wasi:clocks/monotonic-clock@0.3.0",
    b"wasi:http/client@0.3.0",
];

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
        let base = || {
            let mut config = Config::new();
            config
                .wasm_component_model(true)
                .epoch_interruption(true)
                // CPython needs a deeper stack than the default for real-world recursion; the
                // async fiber stack must exceed it.
                .max_wasm_stack(4 << 20)
                .async_stack_size(6 << 20);
            config
        };
        let mut config = base();
        config
            .wasm_component_model_async(false)
            .concurrency_support(false);
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
        let linker = wasi_0_2_linker(&engine)?;
        // The concurrent engine allocates on demand: async instances are few (each runs many
        // calls), and a second pool would reserve its address space twice.
        let concurrent = Engine::new(&base())
            .anyhow()
            .context("creating the wasmtime engine for async components")?;
        let mut concurrent_linker = wasi_0_2_linker(&concurrent)?;
        // WASI 0.3 for `async def` handlers: clocks that await, and wasi:http 0.3 behind the
        // same allowlist hook as 0.2.
        wasmtime_wasi::p3::add_to_linker(&mut concurrent_linker)
            .anyhow()
            .context("linking WASI 0.3")?;
        wasmtime_wasi_http::p3::add_to_linker(&mut concurrent_linker)
            .anyhow()
            .context("linking wasi:http 0.3")?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engines = [engine.clone(), concurrent.clone()];
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("asya-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        for engine in &engines {
                            engine.increment_epoch();
                        }
                    }
                })
                .context("starting the epoch ticker")?;
        }
        Ok(Arc::new(SandboxEngine {
            engine,
            linker,
            concurrent,
            concurrent_linker,
            ticker_stop,
        }))
    }

    /// The engine of plain functions' components (and of everything that is not a component).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Both engines: plain, then concurrent.
    pub fn engines(&self) -> [&Engine; 2] {
        [&self.engine, &self.concurrent]
    }

    /// The engine a component's bytes need: the concurrent one when it imports WASI 0.3.
    pub fn engine_for(&self, component: &[u8]) -> &Engine {
        let p3 = WASI_P3_IMPORTS
            .iter()
            .any(|name| memchr::memmem::find(component, name).is_some());
        if p3 {
            &self.concurrent
        } else {
            &self.engine
        }
    }

    /// The linker of `engine` (one of [`SandboxEngine::engines`]): WASI and wasi:http, both
    /// deny-by-default per store, and nothing else.
    pub fn linker_for(&self, engine: &Engine) -> &Linker<GuestState> {
        if Engine::same(engine, &self.concurrent) {
            &self.concurrent_linker
        } else {
            &self.linker
        }
    }

    /// The plain engine's linker.
    pub fn linker(&self) -> &Linker<GuestState> {
        &self.linker
    }
}

impl Drop for SandboxEngine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// A linker with WASI 0.2 and wasi:http 0.2, what every asya component imports.
fn wasi_0_2_linker(engine: &Engine) -> Result<Linker<GuestState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .anyhow()
        .context("linking WASI")?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .anyhow()
        .context("linking wasi:http")?;
    Ok(linker)
}
