//! # asya host
//!
//! One process that runs many sandboxed WebAssembly actors and is, at the same time, their
//! sidecar: it consumes each actor's queue, calls the component in-process, routes the result,
//! retries, times out and dead-letters.
//!
//! Layers, each depending only on those below it (the README's module map has a line per
//! module):
//!
//! - [`app`]: the two ways to run (`serve`, `local`);
//! - [`actor`]: one actor (manifest, builder, sidecar loop, end actors, fan-in);
//! - [`runtime`]: where handlers run (wasm, python, sandbox, component cache, OCI, outbound HTTP);
//! - [`transport`]: moving envelope bytes between queues, and where results are stored;
//! - [`message`]: what happens to one envelope (pure: envelope, routing, flow, resiliency);
//! - [`ops`]: metrics, tracing, CPU time.
//!
//! The AsyncActor contract itself (types, names, durations, quantities) is the `asya-spec` crate.

pub mod actor;
pub mod app;
pub mod message;
pub mod ops;
pub mod runtime;
pub mod transport;
