//! Operating the host: Prometheus [`metrics`], W3C trace context ([`trace`]) and per-thread CPU
//! time ([`cpu_time`]).

pub mod cpu_time;
pub mod metrics;
pub mod trace;
