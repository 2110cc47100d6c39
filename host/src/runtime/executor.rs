//! The interface between the sidecar logic and whatever runs the handler: a WASM component
//! instance pool ([`crate::runtime::wasm`]) or the native-Python runtime ([`crate::runtime::python`]).

/// What a call produced, and the failure it may carry (defined with the message logic that
/// consumes them; see [`crate::message::outcome`]).
pub use crate::message::outcome::{CallOutcome, Failure};
/// How the handler sees messages.
pub use asya_spec::Mode;
use async_trait::async_trait;
use std::time::Duration;

/// Runs a handler. Implementations are shared by every in-flight message of an actor and bound
/// their own concurrency.
#[async_trait]
pub trait Executor: Send + Sync {
    /// How the handler sees messages.
    fn mode(&self) -> Mode;

    /// Runs the handler once on `input` (JSON text: the payload or the whole envelope) and stops
    /// it after `timeout`. Never panics on guest misbehaviour: every failure is a
    /// [`CallOutcome::Failed`] with a precise reason.
    async fn call(&self, input: String, timeout: Duration) -> CallOutcome;
}
