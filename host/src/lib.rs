//! # asya host
//!
//! One process that runs many sandboxed WebAssembly actors and is, at the same time, their
//! sidecar: it consumes each actor's queue, calls the component in-process, routes the result,
//! retries, times out and dead-letters.
//!
//! Pure logic (envelope model, routing rules) lives apart from I/O (transports, executors).

pub mod component_cache;
pub mod cpu_time;
pub mod end_actors;
pub mod envelope;
pub mod executor;
pub mod fanin;
pub mod flow;
pub mod local;
pub mod manifest;
pub mod metrics;
pub mod oci;
pub mod outbound;
pub mod python;
pub mod resiliency;
pub mod routing;
pub mod sandbox;
pub mod serve;
pub mod sidecar;
pub mod trace;
pub mod transport;
pub mod wasm;
