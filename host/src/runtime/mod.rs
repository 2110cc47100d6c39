//! Where handlers run: the [`executor`] interface, WebAssembly components in the host
//! ([`wasm`], sandboxed by [`sandbox`], compiled once by [`component_cache`], fetched by
//! [`oci`], reaching out only through [`outbound`]) and the native-Python runtime beside it
//! ([`python`]), whose files the host carries for user images ([`python_files`]).

pub mod component_cache;
pub mod executor;
pub mod oci;
pub mod outbound;
pub mod python;
pub mod python_files;
pub mod sandbox;
pub mod wasm;
