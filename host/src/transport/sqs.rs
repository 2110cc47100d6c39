//! Amazon SQS transport (on `aws-sdk-sqs`): one standard queue per actor,
//! `asya-<namespace>-<actor>` as Asya names them.
//!
//! - **Receiving.** A background task per subscription long-polls (20 s, up to 10 messages) into
//!   a small channel, so [`Subscription::next`] is cancellation-safe; a poll cut off by shutdown
//!   leaves its messages invisible until the visibility timeout passes, then they come back.
//! - **In flight.** A message being handled is kept invisible: the sidecar reports it in progress
//!   every third of the visibility timeout, which extends it ([`SqsSettings::visibility`]).
//! - **Retries.** A retry's delay is the message's visibility timeout (`ChangeMessageVisibility`,
//!   at most SQS's 12 hours; a longer wait is taken in steps, since the sidecar delays a message
//!   that comes back early again for the rest).
//! - **Deduplication.** Standard queues deliver at least once; each message carries the
//!   sidecar's per-hop dedup id as the attribute `asya-dedup-id`, and each actor's subscription
//!   drops repeats of messages it finished within the window ([`super::dedup`]).
//! - **Bodies.** SQS bodies are text; envelope JSON always is, and other bytes (malformed input)
//!   travel base64-encoded with the attribute `asya-body: base64`.

use super::aws::describe;
use super::dedup::{DedupWindow, DedupWindows, InFlight};
use super::{Acker, Delivery, Outbound, Subscription, TooLarge, Transport};
use anyhow::{anyhow, Context, Result};
use asya_spec::names;
use async_trait::async_trait;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};
use aws_sdk_sqs::Client;
use base64::Engine;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// The largest message body SQS has always carried (256 KiB; AWS raised its own limit to 1 MiB
/// in 2025, local SQS-compatible servers keep the old one).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// The longest visibility timeout SQS accepts (12 hours).
const MAX_VISIBILITY_SECS: i32 = 43_200;

/// The message attribute carrying the sidecar's dedup id.
const DEDUP_ATTRIBUTE: &str = "asya-dedup-id";
/// The message attribute marking a base64 body.
const BODY_ATTRIBUTE: &str = "asya-body";

/// How the transport sets up and uses SQS.
#[derive(Debug, Clone)]
pub struct SqsSettings {
    /// Create the queues when missing (off when something else owns them).
    pub create: bool,
    /// How long a received message stays invisible; extended while it is handled.
    pub visibility: Duration,
    /// Messages received per poll (1–10).
    pub batch: i32,
    /// How long a finished message's id is remembered to drop its repeats.
    pub dedup_window: Duration,
}

impl Default for SqsSettings {
    fn default() -> Self {
        SqsSettings {
            create: true,
            visibility: names::DEFAULT_ACK_WAIT,
            batch: 10,
            dedup_window: names::DUPLICATE_WINDOW,
        }
    }
}

/// Whether the last call to SQS succeeded (for `/readyz`), shared by a host's SQS transports.
#[derive(Clone, Default)]
pub struct SqsHealth(Arc<AtomicBool>);

impl SqsHealth {
    /// Whether SQS answered the last call.
    pub fn is_up(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, up: bool) {
        self.0.store(up, Ordering::Relaxed);
    }
}

/// Checks that SQS answers (a `ListQueues` of asya's prefix), retrying with backoff until it
/// does; each failure is logged with its cause, a refusal (HTTP 401/403) naming `identity`.
pub async fn wait_until_reachable(client: &Client, health: &SqsHealth, identity: &str) {
    let mut wait = Duration::from_millis(200);
    loop {
        match client
            .list_queues()
            .queue_name_prefix("asya-")
            .max_results(1)
            .send()
            .await
        {
            Ok(_) => {
                health.set(true);
                return;
            }
            Err(err) => {
                health.set(false);
                let status = err.raw_response().map(|r| r.status().as_u16());
                if matches!(status, Some(401 | 403)) {
                    tracing::error!(error = %describe(&err), retry_in = ?wait,
                        "SQS refused {identity} (check the AWS credentials of the host)");
                } else {
                    tracing::error!(error = %describe(&err), retry_in = ?wait, "SQS is not reachable yet");
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// The SQS transport of one namespace.
#[derive(Clone)]
pub struct SqsTransport {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    namespace: String,
    settings: SqsSettings,
    health: SqsHealth,
    /// Queue URLs by queue name.
    urls: Mutex<HashMap<String, String>>,
    /// Finished message ids, per actor.
    finished: DedupWindows,
}

impl SqsTransport {
    /// A transport for `namespace` over `client`.
    pub fn new(client: Client, namespace: &str, settings: SqsSettings, health: SqsHealth) -> Self {
        let dedup_window = settings.dedup_window;
        SqsTransport {
            inner: Arc::new(Inner {
                client,
                namespace: namespace.to_owned(),
                settings,
                health,
                urls: Mutex::default(),
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

    fn forget_url(&self, queue: &str) {
        self.inner.urls.lock().expect("queue urls").remove(queue);
    }

    /// The URL of `queue`, creating the queue when missing (if allowed).
    pub async fn url(&self, queue: &str) -> Result<String> {
        if let Some(url) = self.inner.urls.lock().expect("queue urls").get(queue) {
            return Ok(url.clone());
        }
        let client = &self.inner.client;
        let url = match client.get_queue_url().queue_name(queue).send().await {
            Ok(found) => found.queue_url().unwrap_or_default().to_owned(),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_queue_does_not_exist())
                    && self.inner.settings.create =>
            {
                let visibility = self.inner.settings.visibility.as_secs().clamp(1, 43_200);
                let created = match client
                    .create_queue()
                    .queue_name(queue)
                    .attributes(
                        QueueAttributeName::VisibilityTimeout,
                        visibility.to_string(),
                    )
                    // The longest SQS keeps a message (14 days).
                    .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
                    .send()
                    .await
                {
                    Ok(created) => {
                        tracing::info!(%queue, "created SQS queue");
                        created.queue_url().unwrap_or_default().to_owned()
                    }
                    // Created meanwhile by another host (with other attributes): use it.
                    Err(err)
                        if err.as_service_error().is_some_and(|e| {
                            e.is_queue_name_exists() || e.code() == Some("QueueAlreadyExists")
                        }) =>
                    {
                        client
                            .get_queue_url()
                            .queue_name(queue)
                            .send()
                            .await
                            .map_err(|e| anyhow!("finding SQS queue {queue}: {}", describe(&e)))?
                            .queue_url()
                            .unwrap_or_default()
                            .to_owned()
                    }
                    Err(err) => {
                        return Err(anyhow!("creating SQS queue {queue}: {}", describe(&err)))
                    }
                };
                created
            }
            Err(err) => {
                self.inner.health.set(false);
                return Err(anyhow!("finding SQS queue {queue}: {}", describe(&err)));
            }
        };
        self.inner.health.set(true);
        self.inner
            .urls
            .lock()
            .expect("queue urls")
            .insert(queue.to_owned(), url.clone());
        Ok(url)
    }

    async fn send(&self, queue: &str, body: &SqsBody, dedup_id: &str) -> Result<()> {
        let url = self.url(queue).await?;
        let mut send = self
            .inner
            .client
            .send_message()
            .queue_url(url)
            .message_body(body.text.clone())
            .message_attributes(DEDUP_ATTRIBUTE, string_attribute(dedup_id)?);
        if body.base64 {
            send = send.message_attributes(BODY_ATTRIBUTE, string_attribute("base64")?);
        }
        match send.send().await {
            Ok(_) => {
                self.inner.health.set(true);
                Ok(())
            }
            Err(err) => {
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_queue_does_not_exist())
                {
                    self.forget_url(queue);
                } else {
                    self.inner.health.set(false);
                }
                Err(anyhow!("sending to SQS queue {queue}: {}", describe(&err)))
            }
        }
    }
}

/// A message body as SQS carries it: the bytes as text when they are XML-safe text (envelope
/// JSON always is), else base64.
struct SqsBody {
    text: String,
    base64: bool,
}

impl SqsBody {
    fn of(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) if is_sqs_text(text) => SqsBody {
                text: text.to_owned(),
                base64: false,
            },
            _ => SqsBody {
                text: base64::engine::general_purpose::STANDARD.encode(bytes),
                base64: true,
            },
        }
    }
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .context("building an SQS message attribute")
}

/// Whether `text` has only the characters an SQS body may carry (XML 1.0's).
fn is_sqs_text(text: &str) -> bool {
    text.chars().all(|c| {
        matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
    })
}

#[async_trait]
impl Transport for SqsTransport {
    async fn subscribe(&self, actor: &str) -> Result<Box<dyn Subscription>> {
        let queue = self.queue(actor);
        // Resolve (or create) the queue now, so a refused one is an error at start.
        let url = self.url(&queue).await?;
        let (sender, receiver) = mpsc::channel(self.inner.settings.batch.max(1) as usize);
        let poller = tokio::spawn(poll(self.clone(), queue.clone(), url, sender));
        Ok(Box::new(SqsSubscription {
            transport: self.clone(),
            queue,
            finished: self.finished(actor),
            receiver,
            poller,
        }))
    }

    async fn publish(&self, actor: &str, message: Outbound) -> Result<()> {
        // What is sent counts (a base64 body grows by a third).
        let body = SqsBody::of(&message.bytes);
        let size = body.text.len();
        if size > MAX_MESSAGE_BYTES {
            return Err(TooLarge {
                size,
                limit: MAX_MESSAGE_BYTES,
            }
            .into());
        }
        let queue = self.queue(actor);
        match self.send(&queue, &body, &message.dedup_id).await {
            Err(_)
                if self.inner.settings.create
                    && !self
                        .inner
                        .urls
                        .lock()
                        .expect("queue urls")
                        .contains_key(&queue) =>
            {
                // The queue was deleted underneath us: the retry finds (or creates) it again.
                tracing::warn!(%queue, "SQS queue is gone: creating it again");
                self.send(&queue, &body, &message.dedup_id).await
            }
            sent => sent,
        }
    }

    fn max_message_bytes(&self) -> Option<usize> {
        Some(MAX_MESSAGE_BYTES)
    }

    /// A third of the visibility timeout: two extensions may fail before SQS redelivers.
    fn progress_interval(&self) -> Option<Duration> {
        Some(self.inner.settings.visibility / 3)
    }
}

/// Long-polls `queue` into `sender` until the subscription is dropped.
async fn poll(
    transport: SqsTransport,
    queue: String,
    mut url: String,
    sender: mpsc::Sender<Result<aws_sdk_sqs::types::Message>>,
) {
    let settings = transport.inner.settings.clone();
    let mut failures = 0u32;
    loop {
        // Wait for room first, so no message is received that cannot be handed over.
        let Ok(permit) = sender
            .reserve_many(settings.batch.clamp(1, 10) as usize)
            .await
        else {
            return;
        };
        let received = transport
            .inner
            .client
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(settings.batch.clamp(1, 10))
            .wait_time_seconds(20)
            .visibility_timeout(settings.visibility.as_secs().clamp(1, 43_200) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await;
        match received {
            Ok(output) => {
                failures = 0;
                transport.inner.health.set(true);
                let mut permit = permit;
                for message in output.messages.unwrap_or_default() {
                    if let Some(slot) = permit.next() {
                        slot.send(Ok(message));
                    }
                }
            }
            Err(err) => {
                drop(permit);
                failures += 1;
                let gone = err
                    .as_service_error()
                    .is_some_and(|e| e.is_queue_does_not_exist());
                if !gone {
                    transport.inner.health.set(false);
                }
                let error = anyhow!("receiving from SQS queue {queue}: {}", describe(&err));
                if sender.send(Err(error)).await.is_err() {
                    return;
                }
                let wait = Duration::from_millis(200 * u64::from(failures.min(50)));
                tokio::time::sleep(wait.min(Duration::from_secs(10))).await;
                if gone {
                    transport.forget_url(&queue);
                    match transport.url(&queue).await {
                        Ok(found) => url = found,
                        Err(err) => {
                            tracing::warn!(%queue, error = %format!("{err:#}"), "SQS queue is gone")
                        }
                    }
                }
            }
        }
    }
}

struct SqsSubscription {
    transport: SqsTransport,
    queue: String,
    finished: Arc<DedupWindow>,
    receiver: mpsc::Receiver<Result<aws_sdk_sqs::types::Message>>,
    poller: tokio::task::JoinHandle<()>,
}

impl Drop for SqsSubscription {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

fn attribute<'a>(message: &'a aws_sdk_sqs::types::Message, name: &str) -> Option<&'a str> {
    message
        .message_attributes()
        .and_then(|attributes| attributes.get(name))
        .and_then(|value| value.string_value())
}

#[async_trait]
impl Subscription for SqsSubscription {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        loop {
            let message = match self.receiver.recv().await? {
                Ok(message) => message,
                Err(err) => return Some(Err(err)),
            };
            let Some(receipt) = message.receipt_handle().map(str::to_owned) else {
                continue;
            };
            let url = match self.transport.url(&self.queue).await {
                Ok(url) => url,
                Err(err) => return Some(Err(err)),
            };
            let dedup_id = attribute(&message, DEDUP_ATTRIBUTE).map(str::to_owned);
            let mut acker = SqsAcker {
                client: self.transport.inner.client.clone(),
                url,
                receipt,
                visibility: self.transport.inner.settings.visibility,
                dedup_id: dedup_id.clone(),
                finished: self.finished.clone(),
                _in_flight: None,
            };
            if let Some(id) = dedup_id.as_deref() {
                if self.finished.contains(id) {
                    tracing::debug!(queue = %self.queue, "dropping a repeat of a finished message");
                    if let Err(err) = acker.delete().await {
                        tracing::debug!(error = %format!("{err:#}"), "deleting a repeat failed");
                    }
                    continue;
                }
                match self.finished.begin(id) {
                    Some(guard) => acker._in_flight = Some(guard),
                    None => {
                        // Another copy is being handled: this one waits and comes back.
                        if let Err(err) = acker.set_visibility(1).await {
                            tracing::debug!(error = %format!("{err:#}"), "returning a copy in flight failed");
                        }
                        continue;
                    }
                }
            }
            let body = message.body().unwrap_or_default();
            let bytes = if attribute(&message, BODY_ATTRIBUTE) == Some("base64") {
                match base64::engine::general_purpose::STANDARD.decode(body) {
                    Ok(bytes) => bytes,
                    Err(_) => body.as_bytes().to_vec(),
                }
            } else {
                body.as_bytes().to_vec()
            };
            let system = message.attributes();
            let delivered = system
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(1)
                .max(1);
            let published = system
                .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                .and_then(|ms| ms.parse::<i128>().ok())
                .and_then(|ms| {
                    time::OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).ok()
                });
            return Some(Ok(Delivery {
                bytes: bytes.into(),
                delivered,
                published,
                acker: Box::new(acker),
            }));
        }
    }
}

struct SqsAcker {
    client: Client,
    url: String,
    receipt: String,
    visibility: Duration,
    dedup_id: Option<String>,
    finished: Arc<DedupWindow>,
    /// Released when the acker goes, after `ack` recorded the id as finished.
    _in_flight: Option<InFlight>,
}

impl SqsAcker {
    async fn delete(&self) -> Result<()> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(&self.receipt)
            .send()
            .await
            .map_err(|e| anyhow!("deleting an SQS message: {}", describe(&e)))?;
        Ok(())
    }

    async fn set_visibility(&self, seconds: i32) -> Result<()> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&self.receipt)
            .visibility_timeout(seconds.clamp(0, MAX_VISIBILITY_SECS))
            .send()
            .await
            .map_err(|e| anyhow!("changing an SQS message's visibility: {}", describe(&e)))?;
        Ok(())
    }
}

#[async_trait]
impl Acker for SqsAcker {
    async fn ack(self: Box<Self>) -> Result<()> {
        self.delete().await?;
        if let Some(id) = &self.dedup_id {
            self.finished.insert(id);
        }
        Ok(())
    }

    async fn nak(self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        // Visible again after the delay (whole seconds, rounded up: a retry never comes back
        // before its backoff; at most 12 hours, then it is delayed again for the rest).
        let seconds = delay.map_or(0, |d| {
            d.as_millis().div_ceil(1000).min(i32::MAX as u128) as i32
        });
        self.set_visibility(seconds).await
    }

    async fn in_progress(&self) -> Result<()> {
        self.set_visibility(self.visibility.as_secs().clamp(1, 43_200) as i32)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_xml_text_goes_unencoded() {
        assert!(is_sqs_text("{\"a\": \"é\\n\"}\n\t"));
        assert!(!is_sqs_text("nul\u{0}byte"));
        assert!(!is_sqs_text("bell\u{7}"));
    }
}
