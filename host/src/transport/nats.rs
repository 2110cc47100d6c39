//! NATS JetStream transport: one stream per namespace (`ASYA_<NAMESPACE>`, subjects
//! `asya.<namespace>.>`), one durable pull consumer per actor (`<actor>`, filtered on
//! `asya.<namespace>.<actor>`). Publishes wait for JetStream's ack and carry a `Nats-Msg-Id`, so
//! an input redelivered after a crash does not duplicate its outputs within the dedup window.

use super::{Acker, Delivery, Outbound, Subscription, TooLarge, Transport};
use crate::message::envelope::Envelope;
use crate::transport::results::ResultStore;
use anyhow::{Context, Result};
use asya_spec::names;
/// The namespace layout on JetStream (stream, subjects, results bucket), from the shared contract.
pub use asya_spec::names::{results_bucket, results_subject, stream_name, subject};
use async_nats::jetstream::{self, consumer, kv, stream, AckKind};
use async_trait::async_trait;
use futures::StreamExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How the transport sets up and uses JetStream.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// Create the stream and consumers when missing (off when the operator owns them).
    pub create: bool,
    /// A delivery not acknowledged within this time is delivered again.
    pub ack_wait: Duration,
    /// Messages fetched per pull (bounds what is buffered locally).
    pub batch: usize,
    /// Window in which equal `Nats-Msg-Id`s are dropped.
    pub duplicate_window: Duration,
    /// How long results stay in the namespace's results bucket.
    pub results_ttl: Duration,
}

impl Default for NatsSettings {
    fn default() -> Self {
        NatsSettings {
            create: true,
            ack_wait: names::DEFAULT_ACK_WAIT,
            batch: names::DEFAULT_BATCH,
            duplicate_window: names::DUPLICATE_WINDOW,
            results_ttl: names::DEFAULT_RESULTS_TTL,
        }
    }
}

/// The JetStream transport of one namespace.
#[derive(Clone)]
pub struct NatsTransport {
    js: jetstream::Context,
    namespace: String,
    settings: NatsSettings,
    max_bytes: PayloadLimit,
}

/// Room kept under the server's `max_payload` for the headers the host adds (`Nats-Msg-Id`),
/// which count against the same limit.
const HEADER_ROOM: usize = 1024;

/// The largest message (envelope bytes) the server a client is connected to carries: its
/// `max_payload` (NATS default 1 MiB), less room for the headers. Read from the server's INFO
/// once known (a client that is still connecting has none yet) and kept.
#[derive(Clone)]
pub struct PayloadLimit {
    client: async_nats::Client,
    known: Arc<AtomicUsize>,
}

impl PayloadLimit {
    /// The limit of the server `client` talks to.
    pub fn new(client: &async_nats::Client) -> Self {
        PayloadLimit {
            client: client.clone(),
            known: Arc::default(),
        }
    }

    /// The limit, once the server has told it.
    pub fn get(&self) -> Option<usize> {
        match self.known.load(Ordering::Relaxed) {
            0 => {
                let max_payload = self.client.server_info().max_payload;
                (max_payload > 0).then(|| {
                    let limit = max_payload.saturating_sub(HEADER_ROOM);
                    self.known.store(limit, Ordering::Relaxed);
                    limit
                })
            }
            limit => Some(limit),
        }
    }

    /// `Err(TooLarge)` when `size` is over the limit.
    fn check(&self, size: usize) -> Result<()> {
        match self.get() {
            Some(limit) if size > limit => Err(TooLarge { size, limit }.into()),
            _ => Ok(()),
        }
    }
}

/// Connects to NATS, retrying the first connection, reconnecting forever afterwards.
pub async fn connect(url: &str) -> Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name("asya-host")
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .event_callback(|event| async move {
            tracing::info!(%event, "nats connection event");
        })
        .connect(url)
        .await
        .with_context(|| format!("connecting to NATS at {url}"))
}

impl NatsTransport {
    /// A transport for `namespace` over `client`. With `settings.create`, the stream is created
    /// (idempotently) right away.
    pub async fn new(
        client: async_nats::Client,
        namespace: &str,
        settings: NatsSettings,
    ) -> Result<Self> {
        let transport = NatsTransport {
            max_bytes: PayloadLimit::new(&client),
            js: jetstream::new(client),
            namespace: namespace.to_owned(),
            settings,
        };
        transport.stream().await?;
        Ok(transport)
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The namespace's stream, created when missing (if allowed).
    pub async fn stream(&self) -> Result<stream::Stream> {
        let name = stream_name(&self.namespace);
        if self.settings.create {
            let mut stream = self
                .js
                .get_or_create_stream(stream::Config {
                    name: name.clone(),
                    subjects: vec![names::stream_subjects(&self.namespace)],
                    storage: stream::StorageType::File,
                    duplicate_window: self.settings.duplicate_window,
                    // See `asya_spec::names::STREAM_RETENTION`.
                    retention: stream::RetentionPolicy::WorkQueue,
                    ..Default::default()
                })
                .await
                .with_context(|| format!("creating stream {name}"))?;
            let retention = stream.info().await.map(|i| i.config.retention).ok();
            if retention.is_some_and(|r| r != stream::RetentionPolicy::WorkQueue) {
                // Retention cannot be changed in place; an older stream keeps every message.
                tracing::warn!(stream = %name, ?retention, "this stream keeps acknowledged messages (made by an older asya); recreate it with work-queue retention to bound it");
            }
            Ok(stream)
        } else {
            self.js
                .get_stream(&name)
                .await
                .with_context(|| format!("stream {name} does not exist (and --no-create is set)"))
        }
    }

    /// The key-value bucket where end actors keep final envelopes: `ASYA_RESULTS_<NAMESPACE>`.
    pub async fn results(&self) -> Result<NatsResults> {
        let bucket = results_bucket(&self.namespace);
        let store = match self.js.get_key_value(&bucket).await {
            Ok(store) => {
                if self.settings.create {
                    self.set_results_ttl(&bucket).await?;
                }
                store
            }
            Err(_) if self.settings.create => self
                .js
                .create_key_value(kv::Config {
                    bucket: bucket.clone(),
                    history: 1,
                    storage: stream::StorageType::File,
                    max_age: self.settings.results_ttl,
                    ..Default::default()
                })
                .await
                .with_context(|| format!("creating key-value bucket {bucket}"))?,
            Err(err) => {
                return Err(err).with_context(|| format!("opening key-value bucket {bucket}"))
            }
        };
        Ok(NatsResults {
            store,
            js: self.js.clone(),
            max_bytes: self.max_bytes.clone(),
        })
    }
}

impl NatsTransport {
    /// Gives an existing results bucket the configured TTL (its stream's `max_age`).
    async fn set_results_ttl(&self, bucket: &str) -> Result<()> {
        let name = format!("KV_{bucket}");
        let mut stream = self
            .js
            .get_stream(&name)
            .await
            .with_context(|| format!("opening stream {name}"))?;
        let mut config = stream
            .info()
            .await
            .with_context(|| format!("reading stream {name}"))?
            .config
            .clone();
        if config.max_age != self.settings.results_ttl {
            config.max_age = self.settings.results_ttl;
            self.js
                .update_stream(config)
                .await
                .with_context(|| format!("setting the results TTL of {bucket}"))?;
        }
        Ok(())
    }
}

struct NatsSubscription {
    messages: consumer::pull::Stream,
}

struct NatsAcker(jetstream::message::Acker);

#[async_trait]
impl Acker for NatsAcker {
    async fn ack(self: Box<Self>) -> Result<()> {
        self.0
            .ack()
            .await
            .map_err(|e| anyhow::anyhow!("ack failed: {e}"))
    }

    async fn nak(self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        self.0
            .ack_with(AckKind::Nak(delay))
            .await
            .map_err(|e| anyhow::anyhow!("nak failed: {e}"))
    }

    async fn in_progress(&self) -> Result<()> {
        self.0
            .ack_with(AckKind::Progress)
            .await
            .map_err(|e| anyhow::anyhow!("in-progress ack failed: {e}"))
    }
}

#[async_trait]
impl Subscription for NatsSubscription {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        let message = match self.messages.next().await? {
            Ok(message) => message,
            Err(err) => return Some(Err(anyhow::anyhow!("pulling from JetStream: {err}"))),
        };
        let (delivered, published) = match message.info() {
            Ok(info) => (info.delivered.max(1) as u64, Some(info.published)),
            Err(_) => (1, None),
        };
        let (message, acker) = message.split();
        Some(Ok(Delivery {
            bytes: message.payload,
            delivered,
            published,
            acker: Box::new(NatsAcker(acker)),
        }))
    }
}

#[async_trait]
impl Transport for NatsTransport {
    async fn subscribe(&self, actor: &str) -> Result<Box<dyn Subscription>> {
        let stream = self.stream().await?;
        let config = consumer::pull::Config {
            durable_name: Some(actor.to_owned()),
            filter_subject: subject(&self.namespace, actor),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.settings.ack_wait,
            max_deliver: -1,
            max_ack_pending: names::max_ack_pending(self.settings.batch),
            ..Default::default()
        };
        let consumer: consumer::PullConsumer = if self.settings.create {
            stream
                .get_or_create_consumer(actor, config)
                .await
                .with_context(|| format!("creating consumer '{actor}'"))?
        } else {
            stream
                .get_consumer(actor)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| {
                    format!("consumer '{actor}' does not exist (and --no-create is set)")
                })?
        };
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.settings.batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .with_context(|| format!("pulling for consumer '{actor}'"))?;
        Ok(Box::new(NatsSubscription { messages }))
    }

    async fn publish(&self, actor: &str, message: Outbound) -> Result<()> {
        self.max_bytes.check(message.bytes.len())?;
        let ack = self
            .js
            .send_publish(
                subject(&self.namespace, actor),
                jetstream::message::PublishMessage::build()
                    .payload(message.bytes.into())
                    .message_id(&message.dedup_id),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        ack.await
            .map_err(|e| anyhow::anyhow!("JetStream did not confirm: {e}"))?;
        Ok(())
    }

    fn max_message_bytes(&self) -> Option<usize> {
        self.max_bytes.get()
    }

    /// A third of the ack wait: two reports may be lost before the server redelivers.
    fn progress_interval(&self) -> Option<Duration> {
        Some(self.settings.ack_wait / 3)
    }
}

/// The key-value key of a message id: the id itself when it is a valid key, else `hex.<hex>`.
pub fn result_key(id: &str) -> String {
    let valid = !id.is_empty()
        && !id.starts_with('.')
        && !id.ends_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b));
    if valid {
        id.to_owned()
    } else {
        format!("hex.{}", hex::encode(id))
    }
}

/// Final envelopes in a JetStream key-value bucket, keyed by envelope id.
#[derive(Clone)]
pub struct NatsResults {
    store: kv::Store,
    js: jetstream::Context,
    max_bytes: PayloadLimit,
}

impl NatsResults {
    /// Waits until message `id` has ended, or `timeout` passes.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Envelope> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(env) = self.get(id).await? {
                return Ok(env);
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("no result for {id} within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many results the bucket holds.
    pub async fn stored(&self) -> Result<u64> {
        Ok(self.state().await?.messages)
    }

    /// The bucket's stream state, from the server (`Store::status` answers from the stream
    /// info cached when the bucket was opened).
    async fn state(&self) -> Result<stream::State> {
        let mut stream = self.store.stream.clone();
        let info = stream.info().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(info.state.clone())
    }

    /// How many writes the bucket has accepted, overwrites included. A put repeated with the
    /// same deduplication id (a redelivered message stored again) is not counted, so this
    /// equals [`NatsResults::stored`] when every message was stored exactly once.
    pub async fn accepted(&self) -> Result<u64> {
        Ok(self.state().await?.last_sequence)
    }

    /// Every stored result: the final envelope of each message that has ended, in the order
    /// they were stored.
    pub async fn all(&self) -> Result<Vec<Envelope>> {
        let consumer = self
            .store
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: format!("{}>", self.store.prefix),
                deliver_policy: consumer::DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("reading the results bucket: {e}"))?;
        let pending = consumer.cached_info().num_pending;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("reading the results bucket: {e}"))?;
        let mut out = Vec::with_capacity(pending as usize);
        for _ in 0..pending {
            let message = messages
                .next()
                .await
                .context("the results bucket's stream ended early")?
                .map_err(|e| anyhow::anyhow!("reading the results bucket: {e}"))?;
            if message.payload.is_empty() {
                continue; // a delete or purge marker
            }
            out.push(
                serde_json::from_slice(&message.payload)
                    .context("stored result is not an envelope")?,
            );
        }
        Ok(out)
    }

    /// Every key in the bucket (message ids that have ended).
    pub async fn ids(&self) -> Result<Vec<String>> {
        let mut keys = self
            .store
            .keys()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            out.push(key.map_err(|e| anyhow::anyhow!("{e}"))?);
        }
        Ok(out)
    }
}

#[async_trait]
impl ResultStore for NatsResults {
    async fn put(&self, _end_actor: &str, envelope: &Envelope) -> Result<()> {
        let bytes = envelope.to_bytes();
        self.max_bytes.check(bytes.len())?;
        self.store
            .put(result_key(&envelope.id), bytes.into())
            .await
            .map_err(|e| anyhow::anyhow!("storing result {}: {e}", envelope.id))?;
        Ok(())
    }

    /// A put carrying `Nats-Msg-Id`: the bucket's stream drops a repeat within its
    /// deduplication window, as the actor streams do for a republished hop.
    async fn put_once(&self, end_actor: &str, envelope: &Envelope, dedup_id: &str) -> Result<()> {
        if self.store.use_jetstream_prefix {
            // A bucket reached through a JetStream domain prefix: the plain put knows the subject.
            return self.put(end_actor, envelope).await;
        }
        let subject = format!(
            "{}{}",
            self.store.put_prefix.as_ref().unwrap_or(&self.store.prefix),
            result_key(&envelope.id)
        );
        let bytes = envelope.to_bytes();
        self.max_bytes.check(bytes.len())?;
        let ack = self
            .js
            .send_publish(
                subject,
                jetstream::message::PublishMessage::build()
                    .payload(bytes.into())
                    .message_id(dedup_id),
            )
            .await
            .map_err(|e| anyhow::anyhow!("storing result {}: {e}", envelope.id))?;
        ack.await
            .map_err(|e| anyhow::anyhow!("storing result {}: not confirmed: {e}", envelope.id))?;
        Ok(())
    }

    /// Each put is a JetStream publish awaiting its ack: keep many in flight.
    fn concurrency(&self) -> usize {
        64
    }

    async fn get(&self, id: &str) -> Result<Option<Envelope>> {
        let Some(bytes) = self
            .store
            .get(result_key(id))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
        else {
            return Ok(None);
        };
        Ok(Some(
            serde_json::from_slice(&bytes).context("stored result is not an envelope")?,
        ))
    }
}
