//! Transports move envelope bytes between actor queues. The sidecar logic ([`crate::actor::sidecar`]) is
//! written against this interface only, so the embedded in-process transport (the default, for
//! development, tests and the demo), NATS JetStream, RabbitMQ and SQS plug into the same routing
//! code ([`backend`] picks one per host).
//!
//! Contract: a [`Delivery`] is acknowledged only after every output derived from it has been
//! published (`publish` returned `Ok`); a delivery dropped without ack is redelivered by
//! transports that persist (the embedded one does not persist across process restarts).

pub mod aws;
pub mod backend;
pub mod dedup;
pub mod dynamodb;
pub mod embedded;
pub mod nats;
pub mod rabbitmq;
pub mod results;
pub mod sqs;
pub mod task_log;

use anyhow::Result;
use async_trait::async_trait;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One message to put on an actor's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// Envelope bytes (JSON).
    pub bytes: Vec<u8>,
    /// Idempotency key: envelope id plus hop, so a redelivered input does not duplicate outputs.
    pub dedup_id: String,
}

/// A message the transport cannot carry: over its size limit (NATS: the server's
/// `max_payload`). Returned by [`Transport::publish`] (and result stores) before anything is
/// sent; retrying cannot help, so the sidecar ends the input with `OutputTooLarge` instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a message of {size} bytes is over the transport's limit of {limit} bytes")]
pub struct TooLarge {
    /// The message's size in bytes.
    pub size: usize,
    /// The most the transport carries.
    pub limit: usize,
}

/// Acknowledges or rejects one received message.
#[async_trait]
pub trait Acker: Send + Sync {
    /// The message is done: all its outputs are published.
    async fn ack(self: Box<Self>) -> Result<()>;
    /// The message could not be handled now; deliver it again (after `delay`, if given).
    async fn nak(self: Box<Self>, delay: Option<Duration>) -> Result<()>;
    /// The message is still being worked on: do not deliver it again yet (restarts the
    /// transport's redelivery timer). Transports without one do nothing.
    async fn in_progress(&self) -> Result<()> {
        Ok(())
    }
}

/// A message received from a queue.
pub struct Delivery {
    /// The raw bytes as received (not yet known to be an envelope).
    pub bytes: bytes::Bytes,
    /// How many times this message has been delivered (1 on first delivery).
    pub delivered: u64,
    /// When the message was first put on this queue.
    pub published: Option<time::OffsetDateTime>,
    /// Acknowledgement handle.
    pub acker: Box<dyn Acker>,
}

/// A stream of deliveries from one actor's queue.
#[async_trait]
pub trait Subscription: Send {
    /// The next delivery; `None` when the subscription ended. Cancellation-safe: dropping the
    /// future loses no message.
    async fn next(&mut self) -> Option<Result<Delivery>>;
}

/// A message bus with one queue per actor.
#[async_trait]
pub trait Transport: Send + Sync {
    /// Starts consuming `actor`'s queue.
    async fn subscribe(&self, actor: &str) -> Result<Box<dyn Subscription>>;
    /// Puts a message on `actor`'s queue; `Ok` means it is durably accepted. A message over
    /// [`Transport::max_message_bytes`] fails with [`TooLarge`].
    async fn publish(&self, actor: &str, message: Outbound) -> Result<()>;
    /// The largest message this transport carries (`None`: no limit of its own).
    fn max_message_bytes(&self) -> Option<usize> {
        None
    }
    /// How often a delivery still being handled must be reported in progress so the transport
    /// does not deliver it again meanwhile (`None`: it never redelivers a message in flight).
    fn progress_interval(&self) -> Option<Duration> {
        None
    }
}

/// The next delivery of `subscription`, or `None` once `shutdown` is cancelled or the
/// subscription ended; receive errors are logged (tagged with `actor`) and skipped.
pub async fn next_delivery(
    subscription: &mut dyn Subscription,
    shutdown: &CancellationToken,
    actor: &str,
) -> Option<Delivery> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            next = subscription.next() => match next {
                Some(Ok(delivery)) => return Some(delivery),
                Some(Err(err)) => {
                    tracing::warn!(actor, error = %format!("{err:#}"), "receive failed");
                }
                None => return None,
            },
        }
    }
}
