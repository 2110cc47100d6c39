//! Errors a client sees: an HTTP status, a stable code and a message that says what to fix.

use std::time::Duration;

/// A refused or failed request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Stable machine-readable code (`not_found`, `not_paused`, ...).
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
    /// For 429: when to try again.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400: the request is malformed; the message names the field.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }

    /// 401: no or an unknown API key.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "unauthorized", message)
    }

    /// 404: no such task for this tenant (another tenant's task is not revealed).
    pub fn not_found(id: &str) -> Self {
        Self::new(404, "not_found", format!("no task {id:?}"))
    }

    /// 404: no such tool for this tenant.
    pub fn unknown_tool(name: &str) -> Self {
        Self::new(404, "unknown_tool", format!("no tool {name:?}"))
    }

    /// 409: the task is not in a state that allows this.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(409, code, message)
    }

    /// 413: the body is over the limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "payload_too_large",
            format!("the request body is over the gateway's limit of {limit} bytes"),
        )
    }

    /// 429: the tenant's rate limit.
    pub fn rate_limited(tenant: &str, wait: Duration) -> Self {
        let mut err = Self::new(
            429,
            "rate_limited",
            format!("tenant {tenant:?} is over its request rate; retry in {wait:?}"),
        );
        err.retry_after = Some(wait);
        err
    }

    /// 503: the transport or the task log is not reachable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "unavailable", message)
    }

    /// 503 from an internal error.
    pub fn unavailable_from(err: anyhow::Error) -> Self {
        Self::unavailable(format!("{err:#}"))
    }
}
