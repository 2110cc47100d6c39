//! The sandbox every component runs in, one concern per module: the shared wasmtime
//! [`engine`] (with its epoch ticker and optional pooling allocator), the [`limits`] an actor
//! declares and the memory limiter enforcing them, the per-store [`guest`] state (WASI denied by
//! default, outbound HTTP only to granted hosts, the CPU deadline), and captured guest
//! [`output`].

pub mod engine;
pub mod guest;
pub mod limits;
pub mod output;

pub(crate) use engine::WasmtimeResultExt;
pub use engine::{PoolingSettings, SandboxEngine, EPOCH_TICK};
pub use guest::{configure_concurrent_store, configure_store, GuestState, HostCallClock};
pub use limits::{MemoryLimiter, SandboxLimits};
pub use output::{CapturedOutput, Stream, OUTPUT_OVERFLOW_TRAP};
