//! The asya gateway: how work comes in and is watched.
//!
//! - [`config`]: tenants, keys (as digests), limits and tools, from one YAML file.
//! - [`auth`]: Bearer API keys to tenants; a rate limit per tenant.
//! - [`service`]: the operations (create, get, list, events, cancel, resume), tenant-scoped.
//! - [`view`]: a task's status, folded from its events (pure).
//! - [`log`]: the task log interface and its in-process implementation; [`nats_log`]: the
//!   JetStream one the hosts report to.
//! - [`api`]: the HTTP API and its OpenAPI document; [`mcp`]: the MCP server at `/mcp`.
//! - [`error`]: what a refused request returns.

pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod log;
pub mod mcp;
pub mod nats_log;
pub mod service;
pub mod view;
