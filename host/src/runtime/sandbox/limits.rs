//! Per-actor sandbox limits (from the manifest's `sandbox` section) and the memory limiter
//! that enforces the cap on each store.

use std::sync::Arc;
use std::time::Duration;
use wasmtime::ResourceLimiter;

use crate::runtime::outbound::HostAllowlist;

/// Per-actor sandbox limits, from the manifest's `sandbox` section. Its `Debug` form names the
/// env variables without their values (some come from Secrets).
#[derive(Clone, PartialEq)]
pub struct SandboxLimits {
    /// Cap on each linear memory of an instance, in bytes.
    pub memory_bytes: u64,
    /// Wall-clock budget of one call while it runs (epoch deadline).
    pub cpu_timeout: Duration,
    /// Instances that may run at once (and so messages in flight for this actor).
    pub max_instances: usize,
    /// Calls running at once in one instance of an `async def` handler (`sandbox.maxConcurrency`).
    pub max_concurrency: usize,
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

impl std::fmt::Debug for SandboxLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("SandboxLimits")
            .field("memory_bytes", &self.memory_bytes)
            .field("cpu_timeout", &self.cpu_timeout)
            .field("max_instances", &self.max_instances)
            .field("max_concurrency", &self.max_concurrency)
            .field("max_output_bytes", &self.max_output_bytes)
            .field("max_log_bytes", &self.max_log_bytes)
            .field("recycle_memory_bytes", &self.recycle_memory_bytes)
            .field("recycle_after_calls", &self.recycle_after_calls)
            .field("env (names only)", &env)
            .field("keep_warm", &self.keep_warm)
            .field("keep_loaded", &self.keep_loaded)
            .field("idle_timeout", &self.idle_timeout)
            .field("allowed_hosts", &self.allowed_hosts)
            .finish()
    }
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            memory_bytes: 256 << 20,
            cpu_timeout: Duration::from_secs(30),
            max_instances: 4,
            max_concurrency: 64,
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

/// Memory accounting for one store: enforces the cap and remembers whether it was hit.
#[derive(Debug, Default)]
pub struct MemoryLimiter {
    cap: u64,
    /// Largest memory size requested so far (bytes).
    pub peak: u64,
    /// Set when a growth past the cap was refused.
    pub denied: bool,
}

impl MemoryLimiter {
    /// A limiter refusing growth past `cap` bytes.
    pub fn with_cap(cap: u64) -> Self {
        MemoryLimiter {
            cap,
            ..MemoryLimiter::default()
        }
    }
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
