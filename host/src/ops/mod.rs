//! Operating the host: Prometheus [`metrics`], W3C trace context ([`trace`]), per-thread CPU
//! time ([`cpu_time`]) and the supervision of its long-running tasks ([`supervisor`]).

pub mod cpu_time;
pub mod metrics;
pub mod supervisor;
pub mod trace;
