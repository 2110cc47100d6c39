//! The sidecar loop of one actor: receive → check → call the handler → route → publish → ack.
//!
//! It owns no routing rules itself (those are in [`crate::routing`]) and no transport details
//! (those are behind [`crate::transport::Transport`]).

use crate::envelope::{now_rfc3339, Envelope};
use crate::executor::Executor;
use crate::routing::{self, CallOutcome, Dispatch, Failure, FailureAction};
use crate::transport::{Delivery, Outbound, Transport};
use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How one actor's sidecar behaves.
#[derive(Debug, Clone)]
pub struct SidecarSettings {
    /// Per-call timeout (`resiliency.actorTimeout`), further capped by `status.deadline_at`.
    pub timeout: Duration,
    /// Messages processed at once (each on its own pooled instance).
    pub concurrency: usize,
    /// Larger inputs are rejected before parsing.
    pub max_message_bytes: usize,
}

impl Default for SidecarSettings {
    fn default() -> Self {
        SidecarSettings {
            timeout: Duration::from_secs(30),
            concurrency: 4,
            max_message_bytes: 16 << 20,
        }
    }
}

/// Decides what happens to a failure; the resiliency policy plugs in here.
pub type FailurePolicy = Arc<dyn Fn(&Failure, &Envelope) -> FailureAction + Send + Sync>;

/// One actor's sidecar: its name, its executor and the transport it moves messages on.
pub struct Sidecar {
    name: String,
    executor: Arc<dyn Executor>,
    transport: Arc<dyn Transport>,
    settings: SidecarSettings,
    on_failure: FailurePolicy,
}

impl Sidecar {
    /// A sidecar for `name` whose failures end at `x-sump` (no retries).
    pub fn new(
        name: impl Into<String>,
        executor: Arc<dyn Executor>,
        transport: Arc<dyn Transport>,
        settings: SidecarSettings,
    ) -> Self {
        Sidecar {
            name: name.into(),
            executor,
            transport,
            settings,
            on_failure: Arc::new(routing::give_up),
        }
    }

    /// Replaces the failure policy (retries, onExhausted routing).
    pub fn with_failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.on_failure = policy;
        self
    }

    /// The actor's name (its queue).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Everything between receiving bytes and publishing: the pure decisions around one
    /// executor call. Returns the envelopes to publish.
    pub async fn process(&self, bytes: &[u8]) -> Vec<Dispatch> {
        let now = time::OffsetDateTime::now_utc();
        if bytes.len() > self.settings.max_message_bytes {
            let preview = &bytes[..bytes.len().min(1024)];
            return vec![routing::parse_error_dispatch(
                &self.name,
                preview,
                &format!(
                    "message of {} bytes exceeds the limit of {} bytes (first KiB kept)",
                    bytes.len(),
                    self.settings.max_message_bytes
                ),
                &now_rfc3339(),
            )];
        }
        let env = match routing::accept(&self.name, bytes, now) {
            Ok(env) => env,
            Err(dispatch) => return vec![dispatch],
        };
        let mut timeout = self.settings.timeout;
        if let Some(deadline) = routing::deadline_of(&env) {
            let left = (deadline - now).try_into().unwrap_or(Duration::ZERO);
            timeout = timeout.min(left);
        }
        let mode = self.executor.mode();
        let input = routing::handler_input(mode, &env);
        let span = tracing::debug_span!("handle", actor = %self.name, envelope = %env.id);
        let outcome = {
            let _entered = span.enter();
            self.executor.call(input, timeout).await
        };
        if let CallOutcome::Failed(failure) = &outcome {
            tracing::debug!(actor = %self.name, envelope = %env.id, reason = %failure.reason,
                error = %failure.error.message, "handler failed");
        }
        let on_failure = &self.on_failure;
        routing::route_outcome(
            &self.name,
            mode,
            env,
            outcome,
            |f, e| on_failure(f, e),
            &now_rfc3339(),
        )
    }

    /// Processes one delivery and acknowledges it only after every output is published.
    /// On a publish failure the delivery is rejected so the transport delivers it again.
    pub async fn handle(&self, delivery: Delivery) -> Result<()> {
        let dispatches = self.process(&delivery.bytes).await;
        for dispatch in dispatches {
            if let Err(err) = self.publish(dispatch).await {
                delivery
                    .acker
                    .nak(Some(Duration::from_millis(500)))
                    .await
                    .ok();
                return Err(err);
            }
        }
        delivery
            .acker
            .ack()
            .await
            .context("acknowledging the input")
    }

    async fn publish(&self, dispatch: Dispatch) -> Result<()> {
        let env = &dispatch.envelope;
        let status = env.status.as_ref();
        let attempt = status.map_or(1, |s| s.attempt);
        let dedup_id = format!(
            "{}:{}:{}:{}",
            env.id,
            env.route.prev.len(),
            dispatch.destination,
            attempt
        );
        let delay = retry_delay(&dispatch);
        self.transport
            .publish(
                &dispatch.destination,
                Outbound {
                    bytes: env.to_bytes(),
                    dedup_id,
                    delay,
                },
            )
            .await
            .with_context(|| format!("publishing to '{}'", dispatch.destination))
    }

    /// Consumes the actor's queue until `shutdown` is cancelled, with at most
    /// `settings.concurrency` messages in flight; then finishes the in-flight ones and returns.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<()> {
        let mut subscription = self
            .transport
            .subscribe(&self.name)
            .await
            .with_context(|| format!("subscribing to '{}'", self.name))?;
        let concurrency = self.settings.concurrency.max(1);
        let slots = Arc::new(Semaphore::new(concurrency));
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = slots.clone().acquire_owned() => permit.expect("semaphore is never closed"),
            };
            let delivery = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = subscription.next() => match next {
                    Some(Ok(delivery)) => delivery,
                    Some(Err(err)) => {
                        tracing::warn!(actor = %self.name, error = %format!("{err:#}"), "receive failed");
                        continue;
                    }
                    None => break,
                },
            };
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(err) = this.handle(delivery).await {
                    tracing::warn!(actor = %this.name, error = %format!("{err:#}"), "message will be redelivered");
                }
                drop(permit);
            });
        }
        // Graceful: wait until every in-flight message is done (all permits back).
        let _all = slots
            .acquire_many(concurrency as u32)
            .await
            .expect("semaphore is never closed");
        Ok(())
    }
}

/// The delay before a retry is delivered, carried in the envelope by the retry policy.
fn retry_delay(dispatch: &Dispatch) -> Option<Duration> {
    let status = dispatch.envelope.status.as_ref()?;
    if status.reason.is_some() && status.phase == crate::envelope::Phase::Retrying {
        let ms = dispatch
            .envelope
            .headers
            .get(RETRY_DELAY_HEADER)
            .and_then(|v| v.as_u64())?;
        return Some(Duration::from_millis(ms));
    }
    None
}

/// Header where the retry policy records the delay of the next attempt (milliseconds).
pub const RETRY_DELAY_HEADER: &str = "x-asya-retry-delay-ms";
