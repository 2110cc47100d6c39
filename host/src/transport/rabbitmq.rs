//! RabbitMQ transport (AMQP 0-9-1, on `lapin`): one durable quorum queue per actor,
//! `asya-<namespace>-<actor>` as Asya names them, fed through the default exchange.
//!
//! - **Durability.** Messages are persistent and every publish waits for the broker's publisher
//!   confirm; the sidecar acknowledges an input only after all its outputs are confirmed.
//! - **Delayed retries, without a plugin.** A message to be retried after `d` is republished to
//!   a delay queue of that actor (`<queue>.delay-<ms>ms`) whose per-queue TTL dead-letters it
//!   back to the actor's queue, and the original is then acknowledged. Delays are rounded *down*
//!   to a fixed ladder ([`DELAY_LADDER_MS`]) so an actor has a handful of delay queues, not one
//!   per jittered value; a message that comes back early is delayed again for the rest (the
//!   sidecar reads `not_before` from the envelope). Unused delay queues expire (`x-expires`).
//!   The delayed-message exchange plugin is not used: it is not on every broker and keeps
//!   messages on one node only.
//! - **Deduplication.** RabbitMQ delivers a repeated publish twice; each message carries the
//!   sidecar's per-hop dedup id as its `message-id`, and each actor's subscription drops repeats
//!   of messages it finished within the window ([`super::dedup`]).
//! - **Connection loss.** The connection is re-established with backoff by whoever needs it
//!   next (publish or a subscription); unacknowledged deliveries of a lost channel are requeued
//!   by the broker, and the dedup window drops those whose outputs were already published.

use super::dedup::{DedupWindow, DedupWindows, InFlight};
use super::{Acker, Delivery, Outbound, Subscription, TooLarge, Transport};
use anyhow::{anyhow, bail, Context, Result};
use asya_spec::names;
use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The largest message the transport carries: RabbitMQ 4's default `max_message_size` (16 MiB;
/// 3.x allowed 128 MiB), so a message that fits here fits every broker in use.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Retry delays (milliseconds) that get a delay queue; a requested delay uses the largest step
/// not above it (the smallest step when below all), and comes back early for the rest.
pub const DELAY_LADDER_MS: [u64; 16] = [
    50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000,
    1_800_000, 3_600_000, 21_600_000,
];

/// How the transport sets up and uses RabbitMQ.
#[derive(Debug, Clone)]
pub struct RabbitSettings {
    /// Declare the queues when missing (off when something else owns them).
    pub create: bool,
    /// Unacknowledged deliveries per consumer (`basic.qos` prefetch).
    pub prefetch: u16,
    /// How long a finished message's id is remembered to drop its repeats.
    pub dedup_window: Duration,
}

impl Default for RabbitSettings {
    fn default() -> Self {
        RabbitSettings {
            create: true,
            prefetch: 64,
            dedup_window: names::DUPLICATE_WINDOW,
        }
    }
}

/// The delay step a retry after `delay` waits in (see [`DELAY_LADDER_MS`]).
pub fn delay_step(delay: Duration) -> u64 {
    let ms = delay.as_millis() as u64;
    DELAY_LADDER_MS
        .iter()
        .rev()
        .find(|step| **step <= ms)
        .copied()
        .unwrap_or(DELAY_LADDER_MS[0])
}

/// `amqp://user:***@host:port/vhost`: the URL without its password, for logs and errors.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The user name in an AMQP URL (`guest` when none is given, as RabbitMQ defaults).
fn user_of(url: &str) -> String {
    let user = url
        .split_once("://")
        .and_then(|(_, rest)| rest.rsplit_once('@'))
        .map(|(userinfo, _)| userinfo.split(':').next().unwrap_or_default().to_owned());
    match user {
        Some(user) if !user.is_empty() => user,
        _ => "guest".into(),
    }
}

/// One AMQP connection to the broker, re-established when lost.
pub struct RabbitConnection {
    url: String,
    current: tokio::sync::Mutex<Option<Arc<Connection>>>,
    connected: Arc<std::sync::atomic::AtomicBool>,
}

impl RabbitConnection {
    /// Connects to `url`, retrying with backoff (up to 30 s between attempts) until the broker
    /// answers; each failure is logged with its cause (refused credentials name the user).
    pub async fn connect(url: &str) -> Result<Arc<Self>> {
        let connection = Arc::new(RabbitConnection {
            url: url.to_owned(),
            current: tokio::sync::Mutex::new(None),
            connected: Arc::default(),
        });
        let mut wait = Duration::from_millis(200);
        loop {
            match connection.get().await {
                Ok(_) => return Ok(connection),
                Err(err) => {
                    tracing::error!(error = %format!("{err:#}"), retry_in = ?wait, "RabbitMQ is not reachable yet");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Whether the connection is up now (for `/readyz`).
    pub fn is_connected(&self) -> bool {
        self.connected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The live connection, connecting again (once) when it was lost.
    pub async fn get(&self) -> Result<Arc<Connection>> {
        let mut current = self.current.lock().await;
        if let Some(connection) = current.as_ref() {
            if connection.status().connected() {
                return Ok(connection.clone());
            }
            tracing::warn!(url = %redacted(&self.url), "RabbitMQ connection lost: reconnecting");
        }
        self.connected
            .store(false, std::sync::atomic::Ordering::Relaxed);
        *current = None;
        let connection = Connection::connect(
            &self.url,
            ConnectionProperties::default().with_connection_name("asya-host".into()),
        )
        .await
        .map_err(|err| {
            let text = err.to_string();
            if text.contains("ACCESS_REFUSED") || text.contains("authentication") {
                anyhow!(
                    "RabbitMQ at {} refused user '{}': {text} (check the credentials in ASYA_RABBITMQ_URL)",
                    redacted(&self.url),
                    user_of(&self.url)
                )
            } else {
                anyhow!("connecting to RabbitMQ at {}: {text}", redacted(&self.url))
            }
        })?;
        let connection = Arc::new(connection);
        self.connected
            .store(true, std::sync::atomic::Ordering::Relaxed);
        *current = Some(connection.clone());
        tracing::info!(url = %redacted(&self.url), "connected to RabbitMQ");
        Ok(connection)
    }

    /// Closes the connection (after a graceful shutdown).
    pub async fn close(&self) {
        if let Some(connection) = self.current.lock().await.take() {
            let _ = connection.close(200, "asya host stopped".into()).await;
        }
    }
}

/// The RabbitMQ transport of one namespace.
#[derive(Clone)]
pub struct RabbitTransport {
    inner: Arc<Inner>,
}

struct Inner {
    connection: Arc<RabbitConnection>,
    namespace: String,
    settings: RabbitSettings,
    /// The confirm-mode channel publishes go through (re-opened when it closes).
    publisher: tokio::sync::Mutex<Option<Channel>>,
    /// Queues declared on the current connection.
    declared: Mutex<HashSet<String>>,
    /// Finished message ids, per actor.
    finished: DedupWindows,
}

impl RabbitTransport {
    /// A transport for `namespace` over `connection`.
    pub fn new(
        connection: Arc<RabbitConnection>,
        namespace: &str,
        settings: RabbitSettings,
    ) -> Self {
        let dedup_window = settings.dedup_window;
        RabbitTransport {
            inner: Arc::new(Inner {
                connection,
                namespace: namespace.to_owned(),
                settings,
                publisher: tokio::sync::Mutex::new(None),
                declared: Mutex::default(),
                finished: DedupWindows::new(dedup_window),
            }),
        }
    }

    /// The queue of `actor` in this namespace.
    pub fn queue(&self, actor: &str) -> String {
        names::queue_name(&self.inner.namespace, actor)
    }

    fn finished(&self, actor: &str) -> Arc<DedupWindow> {
        self.inner.finished.of(actor)
    }

    /// Declares `queue` (a durable quorum queue) on `channel` unless done on this connection.
    async fn declare(&self, channel: &Channel, queue: &str) -> Result<()> {
        if !self.inner.settings.create
            || self
                .inner
                .declared
                .lock()
                .expect("declared")
                .contains(queue)
        {
            return Ok(());
        }
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("quorum")),
        );
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                arguments,
            )
            .await
            .with_context(|| format!("declaring RabbitMQ queue {queue} (durable, quorum)"))?;
        self.inner
            .declared
            .lock()
            .expect("declared")
            .insert(queue.to_owned());
        Ok(())
    }

    /// Declares the delay queue of `queue` for `step_ms`: messages wait out its TTL, then
    /// dead-letter back to `queue`; the queue itself goes away after an idle hour past its TTL.
    async fn declare_delay(&self, channel: &Channel, queue: &str, step_ms: u64) -> Result<String> {
        let actor_queue = queue;
        let delay_queue = format!("{actor_queue}.delay-{step_ms}ms");
        if self
            .inner
            .declared
            .lock()
            .expect("declared")
            .contains(&delay_queue)
        {
            return Ok(delay_queue);
        }
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(step_ms as i64),
        );
        arguments.insert(
            "x-expires".into(),
            AMQPValue::LongLongInt((step_ms + 3_600_000) as i64),
        );
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from("")),
        );
        arguments.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(LongString::from(actor_queue)),
        );
        channel
            .queue_declare(
                delay_queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                arguments,
            )
            .await
            .with_context(|| format!("declaring RabbitMQ delay queue {delay_queue}"))?;
        self.inner
            .declared
            .lock()
            .expect("declared")
            .insert(delay_queue.clone());
        Ok(delay_queue)
    }

    /// The publishing channel (confirm mode), opened when there is none or it closed.
    async fn publisher(&self) -> Result<Channel> {
        let mut publisher = self.inner.publisher.lock().await;
        if let Some(channel) = publisher.as_ref() {
            if channel.status().connected() {
                return Ok(channel.clone());
            }
        }
        *publisher = None;
        let connection = self.inner.connection.get().await?;
        // Queues declared on a lost connection may have gone with the broker's state.
        self.inner.declared.lock().expect("declared").clear();
        let channel = connection
            .create_channel()
            .await
            .context("opening a RabbitMQ channel")?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("turning on publisher confirms")?;
        *publisher = Some(channel.clone());
        Ok(channel)
    }

    /// Publishes `bytes` to `queue` and waits for the broker's confirm. With `mandatory`, a
    /// queue that does not exist is reported as such (the broker returns the message).
    async fn publish_to(
        &self,
        queue: &str,
        bytes: &[u8],
        message_id: &str,
    ) -> Result<PublishOutcome> {
        let channel = self.publisher().await?;
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(ShortString::from(message_id))
            .with_timestamp(time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64);
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                bytes,
                properties,
            )
            .await;
        let confirmation = match confirm {
            Ok(confirm) => confirm.await,
            Err(err) => Err(err),
        };
        match confirmation {
            Ok(Confirmation::Ack(None)) => Ok(PublishOutcome::Confirmed),
            Ok(Confirmation::Ack(Some(_))) => Ok(PublishOutcome::NoQueue),
            Ok(Confirmation::Nack(_)) => {
                bail!("RabbitMQ did not accept the message for {queue} (nack)")
            }
            Ok(Confirmation::NotRequested) => {
                bail!("RabbitMQ did not confirm the message for {queue}")
            }
            Err(err) => {
                // The channel is likely closed: the next publish opens another.
                *self.inner.publisher.lock().await = None;
                Err(anyhow!("publishing to RabbitMQ queue {queue}: {err}"))
            }
        }
    }
}

enum PublishOutcome {
    Confirmed,
    /// The broker had no queue of that name (the message was returned, not stored).
    NoQueue,
}

#[async_trait]
impl Transport for RabbitTransport {
    async fn subscribe(&self, actor: &str) -> Result<Box<dyn Subscription>> {
        let mut subscription = RabbitSubscription {
            transport: self.clone(),
            actor: actor.to_owned(),
            queue: self.queue(actor),
            finished: self.finished(actor),
            consumer: None,
            failures: 0,
        };
        // Open it now, so a broker refusing the queue is an error at start.
        subscription.open().await?;
        Ok(Box::new(subscription))
    }

    async fn publish(&self, actor: &str, message: Outbound) -> Result<()> {
        if message.bytes.len() > MAX_MESSAGE_BYTES {
            return Err(TooLarge {
                size: message.bytes.len(),
                limit: MAX_MESSAGE_BYTES,
            }
            .into());
        }
        let queue = self.queue(actor);
        let channel = self.publisher().await?;
        self.declare(&channel, &queue).await.inspect_err(|_| {
            self.inner.declared.lock().expect("declared").remove(&queue);
        })?;
        match self
            .publish_to(&queue, &message.bytes, &message.dedup_id)
            .await?
        {
            PublishOutcome::Confirmed => Ok(()),
            PublishOutcome::NoQueue if self.inner.settings.create => {
                // Deleted underneath us: declare it again and publish once more.
                tracing::warn!(%queue, "RabbitMQ queue is gone: declaring it again");
                self.inner.declared.lock().expect("declared").remove(&queue);
                self.declare(&channel, &queue).await?;
                match self
                    .publish_to(&queue, &message.bytes, &message.dedup_id)
                    .await?
                {
                    PublishOutcome::Confirmed => Ok(()),
                    PublishOutcome::NoQueue => bail!("RabbitMQ queue {queue} does not exist"),
                }
            }
            PublishOutcome::NoQueue => {
                bail!("RabbitMQ queue {queue} does not exist (and queue creation is off)")
            }
        }
    }

    fn max_message_bytes(&self) -> Option<usize> {
        Some(MAX_MESSAGE_BYTES)
    }
}

struct RabbitSubscription {
    transport: RabbitTransport,
    actor: String,
    queue: String,
    finished: Arc<DedupWindow>,
    consumer: Option<(Channel, lapin::Consumer)>,
    failures: u32,
}

impl RabbitSubscription {
    async fn open(&mut self) -> Result<()> {
        let connection = self.transport.inner.connection.get().await?;
        let channel = connection
            .create_channel()
            .await
            .context("opening a RabbitMQ channel")?;
        channel
            .basic_qos(
                self.transport.inner.settings.prefetch,
                BasicQosOptions::default(),
            )
            .await
            .context("setting the RabbitMQ prefetch")?;
        if self.transport.inner.settings.create {
            // Declared on this channel, not only remembered: the queue may be new to a
            // restarted broker.
            self.transport
                .inner
                .declared
                .lock()
                .expect("declared")
                .remove(&self.queue);
            self.transport.declare(&channel, &self.queue).await?;
        }
        let consumer = channel
            .basic_consume(
                self.queue.as_str().into(),
                format!("asya-{}-{}", self.actor, uuid::Uuid::new_v4().simple()).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("consuming RabbitMQ queue {}", self.queue))?;
        self.consumer = Some((channel, consumer));
        self.failures = 0;
        Ok(())
    }
}

impl Drop for RabbitSubscription {
    fn drop(&mut self) {
        // Closing the channel returns its unacknowledged deliveries to the queue now.
        if let Some((channel, _)) = self.consumer.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = channel.close(200, "subscription dropped".into()).await;
                });
            }
        }
    }
}

/// The delivery count of a message: RabbitMQ's quorum queues count earlier deliveries in the
/// `x-delivery-count` header.
fn delivered(delivery: &lapin::message::Delivery) -> u64 {
    let count = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get("x-delivery-count").cloned());
    let earlier = match count {
        Some(AMQPValue::LongLongInt(n)) => n.max(0) as u64,
        Some(AMQPValue::LongInt(n)) => n.max(0) as u64,
        Some(AMQPValue::ShortInt(n)) => n.max(0) as u64,
        Some(AMQPValue::LongUInt(n)) => u64::from(n),
        _ => u64::from(delivery.redelivered),
    };
    earlier + 1
}

#[async_trait]
impl Subscription for RabbitSubscription {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        loop {
            if self.consumer.is_none() {
                if self.failures > 0 {
                    let wait = Duration::from_millis(200 * u64::from(self.failures.min(50)));
                    tokio::time::sleep(wait.min(Duration::from_secs(10))).await;
                }
                if let Err(err) = self.open().await {
                    self.failures += 1;
                    return Some(Err(err));
                }
            }
            let (_, consumer) = self.consumer.as_mut().expect("opened above");
            let delivery = match consumer.next().await {
                Some(Ok(delivery)) => delivery,
                Some(Err(err)) => {
                    self.consumer = None;
                    self.failures += 1;
                    return Some(Err(anyhow!(
                        "consuming RabbitMQ queue {}: {err}",
                        self.queue
                    )));
                }
                None => {
                    // The channel closed (broker restart, queue deleted): consume again.
                    tracing::warn!(queue = %self.queue, "RabbitMQ consumer ended: consuming again");
                    self.consumer = None;
                    self.failures += 1;
                    continue;
                }
            };
            let message_id = delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str().to_owned());
            if let Some(id) = message_id.as_deref() {
                if self.finished.contains(id) {
                    tracing::debug!(queue = %self.queue, id, "dropping a repeat of a finished message");
                    if let Err(err) = delivery.acker.ack(BasicAckOptions::default()).await {
                        tracing::debug!(error = %err, "acknowledging a repeat failed");
                    }
                    continue;
                }
            }
            let in_flight = match message_id.as_deref().map(|id| self.finished.begin(id)) {
                Some(None) => {
                    // Another copy is being handled: this one waits and comes back.
                    let busy = RabbitAcker {
                        acker: delivery.acker,
                        transport: self.transport.clone(),
                        queue: self.queue.clone(),
                        bytes: bytes::Bytes::from(delivery.data),
                        // Kept: the copy that comes back must still be known as this message.
                        message_id: message_id.clone(),
                        finished: self.finished.clone(),
                        _in_flight: None,
                    };
                    if let Err(err) = Box::new(busy).nak(Some(Duration::from_secs(1))).await {
                        tracing::debug!(error = %format!("{err:#}"), "returning a copy in flight failed");
                    }
                    continue;
                }
                Some(guard) => guard,
                None => None,
            };
            let published = delivery
                .properties
                .timestamp()
                .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t as i64).ok());
            let delivered = delivered(&delivery);
            let bytes = bytes::Bytes::from(delivery.data);
            return Some(Ok(Delivery {
                bytes: bytes.clone(),
                delivered,
                published,
                acker: Box::new(RabbitAcker {
                    acker: delivery.acker,
                    transport: self.transport.clone(),
                    queue: self.queue.clone(),
                    bytes,
                    message_id,
                    finished: self.finished.clone(),
                    _in_flight: in_flight,
                }),
            }));
        }
    }
}

struct RabbitAcker {
    acker: lapin::Acker,
    transport: RabbitTransport,
    queue: String,
    bytes: bytes::Bytes,
    message_id: Option<String>,
    finished: Arc<DedupWindow>,
    /// Released when the acker goes, after `ack` recorded the id as finished.
    _in_flight: Option<InFlight>,
}

#[async_trait]
impl Acker for RabbitAcker {
    async fn ack(self: Box<Self>) -> Result<()> {
        self.acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(|e| anyhow!("ack failed: {e}"))?;
        if let Some(id) = &self.message_id {
            self.finished.insert(id);
        }
        Ok(())
    }

    async fn nak(self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        let requeue = || async {
            self.acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow!("nack failed: {e}"))
        };
        let Some(delay) = delay.filter(|d| !d.is_zero()) else {
            return requeue().await.map(|_| ());
        };
        // Wait in the delay queue, then back to the actor's queue; the original goes only once
        // the copy is confirmed, so a failure here leaves the message where it was.
        let step = delay_step(delay);
        let moved = async {
            let channel = self.transport.publisher().await?;
            let delay_queue = self
                .transport
                .declare_delay(&channel, &self.queue, step)
                .await?;
            let id = self.message_id.clone().unwrap_or_default();
            match self
                .transport
                .publish_to(&delay_queue, &self.bytes, &id)
                .await?
            {
                PublishOutcome::Confirmed => Ok(()),
                PublishOutcome::NoQueue => {
                    self.transport
                        .inner
                        .declared
                        .lock()
                        .expect("declared")
                        .remove(&delay_queue);
                    bail!("RabbitMQ delay queue {delay_queue} does not exist")
                }
            }
        }
        .await;
        match moved {
            Ok(()) => self
                .acker
                .ack(BasicAckOptions::default())
                .await
                .map(|_| ())
                .map_err(|e| anyhow!("ack after delaying failed: {e}")),
            Err(err) => {
                tracing::warn!(queue = %self.queue, error = %format!("{err:#}"), "delaying a retry failed: returning it now");
                requeue().await.map(|_| ())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_round_down_to_the_ladder() {
        assert_eq!(delay_step(Duration::from_millis(10)), 50);
        assert_eq!(delay_step(Duration::from_millis(120)), 100);
        assert_eq!(delay_step(Duration::from_millis(1_999)), 1_000);
        assert_eq!(delay_step(Duration::from_secs(7)), 5_000);
        assert_eq!(delay_step(Duration::from_secs(86_400)), 21_600_000);
    }

    #[test]
    fn urls_lose_their_password_in_logs() {
        assert_eq!(
            redacted("amqp://asya:s3cret@rabbit:5672/%2f"),
            "amqp://asya:***@rabbit:5672/%2f"
        );
        assert_eq!(redacted("amqp://rabbit:5672"), "amqp://rabbit:5672");
        assert_eq!(user_of("amqp://asya:s3cret@rabbit:5672/%2f"), "asya");
        assert_eq!(user_of("amqp://rabbit"), "guest");
    }
}
