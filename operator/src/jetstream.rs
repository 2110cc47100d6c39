//! The operator's side of NATS JetStream: it owns the namespace's stream, each actor's durable
//! pull consumer, the end actors' consumers and the results bucket (the hosts run with
//! `--no-create`). [`JetStreamAdmin`] is the seam: [`NatsAdmin`] talks to a server,
//! [`MemoryJetStream`] keeps everything in memory for tests.

use crate::render::{ConsumerSpec, StreamSpec};
use async_nats::jetstream::{self, consumer, kv, stream};
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

/// A failed JetStream operation.
#[derive(Debug, thiserror::Error)]
#[error("{operation}: {message}")]
pub struct QueueError {
    /// What was being done (`creating consumer preprocess on ASYA_NLP`).
    pub operation: String,
    /// The server's or client's error.
    pub message: String,
}

fn err(operation: impl Into<String>, message: impl std::fmt::Display) -> QueueError {
    QueueError {
        operation: operation.into(),
        message: message.to_string(),
    }
}

/// What the reconciler needs from JetStream. Every call is idempotent.
#[async_trait]
pub trait JetStreamAdmin: Send + Sync {
    /// Creates the stream if it is missing (an existing stream is left as it is).
    async fn ensure_stream(&self, stream: &StreamSpec) -> Result<(), QueueError>;
    /// Creates the durable consumer if it is missing.
    async fn ensure_consumer(&self, consumer: &ConsumerSpec) -> Result<(), QueueError>;
    /// Creates the namespace's results bucket (`ASYA_RESULTS_<NS>`) if it is missing.
    async fn ensure_results_bucket(&self, stream: &StreamSpec) -> Result<(), QueueError>;
    /// Deletes the consumer; a consumer or stream that is already gone is success.
    async fn delete_consumer(&self, stream: &str, consumer: &str) -> Result<(), QueueError>;
    /// Messages the consumer has not finished: pending plus delivered and not yet acked (a
    /// missing consumer or stream counts 0).
    async fn consumer_backlog(&self, stream: &str, consumer: &str) -> Result<u64, QueueError>;
}

/// The results bucket of a namespace's stream: `ASYA_RESULTS_<NS>` (what the host opens).
pub fn results_bucket(stream: &str) -> String {
    // The stream's own namespace suffix, as `asya_spec::names::results_bucket` derives it.
    format!("ASYA_RESULTS_{}", stream.trim_start_matches("ASYA_"))
}

/// JetStream over a NATS connection.
pub struct NatsAdmin {
    js: jetstream::Context,
}

impl NatsAdmin {
    /// Connects to `url` (retrying the first connection in the background).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let client = async_nats::ConnectOptions::new()
            .name("asya-operator")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .with_context(|| format!("connecting to NATS at {url}"))?;
        Ok(NatsAdmin {
            js: jetstream::new(client),
        })
    }

    /// Over an existing client.
    pub fn new(client: async_nats::Client) -> Self {
        NatsAdmin {
            js: jetstream::new(client),
        }
    }
}

#[async_trait]
impl JetStreamAdmin for NatsAdmin {
    async fn ensure_stream(&self, spec: &StreamSpec) -> Result<(), QueueError> {
        self.js
            .get_or_create_stream(stream::Config {
                name: spec.name.clone(),
                subjects: spec.subjects.clone(),
                storage: stream::StorageType::File,
                // The same window the host uses for its Nats-Msg-Id deduplication.
                duplicate_window: asya_spec::names::DUPLICATE_WINDOW,
                // See `asya_spec::names::STREAM_RETENTION`: acknowledged messages are removed.
                retention: stream::RetentionPolicy::WorkQueue,
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| err(format!("creating stream {}", spec.name), e))
    }

    async fn ensure_consumer(&self, spec: &ConsumerSpec) -> Result<(), QueueError> {
        let operation = || format!("creating consumer {} on {}", spec.name, spec.stream);
        let stream = self
            .js
            .get_stream(&spec.stream)
            .await
            .map_err(|e| err(operation(), e))?;
        // What `asya-host run` would create itself (explicit acks, redelivery after 60s,
        // unlimited deliveries: the host's retry policies decide when to stop).
        let config = consumer::pull::Config {
            durable_name: Some(spec.name.clone()),
            filter_subject: spec.filter_subject.clone(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: asya_spec::names::DEFAULT_ACK_WAIT,
            max_deliver: -1,
            max_ack_pending: asya_spec::names::max_ack_pending(asya_spec::names::DEFAULT_BATCH),
            ..Default::default()
        };
        stream
            .get_or_create_consumer::<consumer::pull::Config>(&spec.name, config)
            .await
            .map(|_| ())
            .map_err(|e| err(operation(), e))
    }

    async fn ensure_results_bucket(&self, spec: &StreamSpec) -> Result<(), QueueError> {
        let bucket = results_bucket(&spec.name);
        if self.js.get_key_value(&bucket).await.is_ok() {
            // An existing bucket gets the configured TTL (its stream's max_age).
            let name = format!("KV_{bucket}");
            let operation = || format!("setting the results TTL of {bucket}");
            let mut stream = self
                .js
                .get_stream(&name)
                .await
                .map_err(|e| err(operation(), e))?;
            let mut config = stream
                .info()
                .await
                .map_err(|e| err(operation(), e))?
                .config
                .clone();
            if config.max_age != spec.results_ttl {
                config.max_age = spec.results_ttl;
                self.js
                    .update_stream(config)
                    .await
                    .map_err(|e| err(operation(), e))?;
            }
            return Ok(());
        }
        self.js
            .create_key_value(kv::Config {
                bucket: bucket.clone(),
                history: 1,
                max_age: spec.results_ttl,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| err(format!("creating key-value bucket {bucket}"), e))
    }

    async fn delete_consumer(&self, stream_name: &str, name: &str) -> Result<(), QueueError> {
        let operation = || format!("deleting consumer {name} on {stream_name}");
        let stream = match self.js.get_stream(stream_name).await {
            Ok(stream) => stream,
            Err(e)
                if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                // No stream, no consumer: nothing to delete.
                return Ok(());
            }
            Err(e) => return Err(err(operation(), e)),
        };
        match stream.delete_consumer(name).await {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(e.kind(), jetstream::stream::ConsumerErrorKind::JetStream(ref j)
                    if j.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND) =>
            {
                Ok(())
            }
            Err(e) => Err(err(operation(), e)),
        }
    }

    async fn consumer_backlog(&self, stream_name: &str, name: &str) -> Result<u64, QueueError> {
        let operation = || format!("reading consumer {name} on {stream_name}");
        let stream = match self.js.get_stream_no_info(stream_name).await {
            Ok(stream) => stream,
            Err(e) if e.to_string().to_lowercase().contains("not found") => return Ok(0),
            Err(e) => return Err(err(operation(), e)),
        };
        let mut consumer: jetstream::consumer::PullConsumer = match stream.get_consumer(name).await
        {
            Ok(consumer) => consumer,
            // A consumer (or stream) not made yet has no backlog.
            Err(e) if e.to_string().to_lowercase().contains("not found") => return Ok(0),
            Err(e) => return Err(err(operation(), e)),
        };
        let info = consumer.info().await.map_err(|e| err(operation(), e))?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }
}

/// In-memory JetStream for tests: records streams and consumers, and fails on demand.
#[derive(Default)]
pub struct MemoryJetStream {
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    streams: BTreeMap<String, Vec<String>>,
    consumers: BTreeMap<(String, String), String>,
    buckets: BTreeSet<String>,
    fail: Option<String>,
    deleted: Vec<(String, String)>,
    backlog: BTreeMap<(String, String), u64>,
}

impl MemoryJetStream {
    /// An empty server.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every following call fail with `message` (`None`: succeed again).
    pub fn fail_with(&self, message: Option<&str>) {
        self.state.lock().unwrap().fail = message.map(str::to_owned);
    }

    /// Subjects of a stream, if it exists.
    pub fn stream(&self, name: &str) -> Option<Vec<String>> {
        self.state.lock().unwrap().streams.get(name).cloned()
    }

    /// The filter subject of a consumer, if it exists.
    pub fn consumer(&self, stream: &str, name: &str) -> Option<String> {
        self.state
            .lock()
            .unwrap()
            .consumers
            .get(&(stream.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Whether a results bucket exists.
    pub fn has_bucket(&self, name: &str) -> bool {
        self.state.lock().unwrap().buckets.contains(name)
    }

    /// Sets the backlog [`JetStreamAdmin::consumer_backlog`] reports for a consumer.
    pub fn set_backlog(&self, stream: &str, name: &str, backlog: u64) {
        self.state
            .lock()
            .unwrap()
            .backlog
            .insert((stream.to_owned(), name.to_owned()), backlog);
    }

    /// Consumers deleted so far, as (stream, consumer).
    pub fn deleted(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().deleted.clone()
    }

    fn check(&self, operation: &str) -> Result<std::sync::MutexGuard<'_, MemoryState>, QueueError> {
        let state = self.state.lock().unwrap();
        match &state.fail {
            Some(message) => Err(err(operation, message)),
            None => Ok(state),
        }
    }
}

#[async_trait]
impl JetStreamAdmin for MemoryJetStream {
    async fn ensure_stream(&self, spec: &StreamSpec) -> Result<(), QueueError> {
        let mut state = self.check(&format!("creating stream {}", spec.name))?;
        state
            .streams
            .entry(spec.name.clone())
            .or_insert_with(|| spec.subjects.clone());
        Ok(())
    }

    async fn ensure_consumer(&self, spec: &ConsumerSpec) -> Result<(), QueueError> {
        let operation = format!("creating consumer {} on {}", spec.name, spec.stream);
        let mut state = self.check(&operation)?;
        if !state.streams.contains_key(&spec.stream) {
            return Err(err(operation, "stream not found"));
        }
        state
            .consumers
            .entry((spec.stream.clone(), spec.name.clone()))
            .or_insert_with(|| spec.filter_subject.clone());
        Ok(())
    }

    async fn ensure_results_bucket(&self, spec: &StreamSpec) -> Result<(), QueueError> {
        let bucket = results_bucket(&spec.name);
        let mut state = self.check(&format!("creating key-value bucket {bucket}"))?;
        state.buckets.insert(bucket);
        Ok(())
    }

    async fn delete_consumer(&self, stream: &str, name: &str) -> Result<(), QueueError> {
        let mut state = self.check(&format!("deleting consumer {name} on {stream}"))?;
        state
            .consumers
            .remove(&(stream.to_owned(), name.to_owned()));
        state.deleted.push((stream.to_owned(), name.to_owned()));
        Ok(())
    }

    async fn consumer_backlog(&self, stream: &str, name: &str) -> Result<u64, QueueError> {
        let state = self.check(&format!("reading consumer {name} on {stream}"))?;
        Ok(state
            .backlog
            .get(&(stream.to_owned(), name.to_owned()))
            .copied()
            .unwrap_or(0))
    }
}
