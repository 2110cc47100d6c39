//! What a handler call produced, as routing sees it: the interface between the executors
//! ([`crate::runtime::executor`], which re-exports these) and the message logic. It lives at the
//! bottom layer so the pure message code never depends on where handlers run.

use crate::message::envelope::{ErrorInfo, Reason};

/// Why a call produced no usable result, with the details that go into `status.error`.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The precise reason (`HandlerError`, `Timeout`, `MemoryLimit`, ...).
    pub reason: Reason,
    /// Type, message, MRO and traceback.
    pub error: ErrorInfo,
}

impl Failure {
    /// A failure that did not come from a Python exception.
    pub fn host(reason: Reason, message: impl Into<String>) -> Self {
        Failure {
            reason,
            error: ErrorInfo::host(reason.as_str(), message),
        }
    }
}

/// The result of running a handler once.
#[derive(Debug, Clone, PartialEq)]
pub enum CallOutcome {
    /// The handler returned a value: JSON text of a payload (payload mode) or envelope.
    Returned(String),
    /// The handler returned `None`.
    ReturnedNone,
    /// The handler raised, or the sandbox stopped it.
    Failed(Failure),
}

impl Failure {
    /// The same failure reported as Python exception `kind` (MRO `[kind, Exception]`).
    pub fn with_type(mut self, kind: &str) -> Self {
        self.error.kind = kind.to_owned();
        self.error.mro = vec!["Exception".to_owned()];
        self
    }
}
