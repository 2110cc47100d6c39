//! The two ways to run actors: [`serve`] (`asya-host run`: manifests from a directory, NATS
//! JetStream or the embedded transport, hot reload, health and metrics) and [`local`] (a whole
//! pipeline in one process on the embedded transport: `asya dev`, tests and benchmarks).

pub mod local;
pub mod serve;
