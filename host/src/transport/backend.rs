//! Which broker and state store `asya-host run` uses, chosen once per host: the transport of
//! each namespace's queues and where its results and open fan-ins live.
//!
//! | `--transport` | queues | results and fan-ins (`--store`) |
//! |---|---|---|
//! | `nats` (default) | a JetStream stream per namespace | JetStream key-value buckets on the same server |
//! | `rabbitmq` | a quorum queue per actor | DynamoDB (default) or JetStream buckets (`--store nats://…`) |
//! | `sqs` | an SQS queue per actor | DynamoDB (default) or JetStream buckets (`--store nats://…`) |
//!
//! RabbitMQ and SQS have no key-value store of their own, so a host on them needs one beside
//! the broker; DynamoDB is where an AWS setup already points, a NATS server is the light choice
//! elsewhere.

use crate::actor::fanin::{FanInStore, NatsFanIn};
use crate::message::task_event::TaskReporter;
use crate::transport::aws;
use crate::transport::dynamodb::DynamoTable;
use crate::transport::nats::{self, NatsSettings, NatsTransport};
use crate::transport::rabbitmq::{self, RabbitConnection, RabbitSettings, RabbitTransport};
use crate::transport::results::ResultStore;
use crate::transport::sqs::{self, SqsHealth, SqsSettings, SqsTransport};
use crate::transport::task_log::NatsTaskLog;
use crate::transport::Transport;
use anyhow::{bail, Context, Result};
use std::sync::Arc;
use std::time::Duration;

/// The broker a host's actors use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportKind {
    /// NATS JetStream.
    Nats,
    /// RabbitMQ (AMQP 0-9-1).
    Rabbitmq,
    /// Amazon SQS (or an SQS-compatible server at `AWS_ENDPOINT_URL`).
    Sqs,
}

impl TransportKind {
    /// The name manifests and flags use.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Nats => "nats",
            TransportKind::Rabbitmq => "rabbitmq",
            TransportKind::Sqs => "sqs",
        }
    }
}

/// How to reach the broker and the state store.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// The broker.
    pub transport: TransportKind,
    /// NATS server URL (the `nats` transport).
    pub nats_url: String,
    /// JetStream settings (the `nats` transport and a NATS state store).
    pub nats: NatsSettings,
    /// AMQP URL (the `rabbitmq` transport).
    pub rabbitmq_url: Option<String>,
    /// Where results and fan-ins live on RabbitMQ and SQS: `dynamodb` or a `nats://` URL
    /// (none: DynamoDB).
    pub store: Option<String>,
    /// The DynamoDB state table.
    pub dynamodb_table: String,
    /// Create missing queues, streams, buckets and tables.
    pub create: bool,
    /// Redelivery timer: JetStream's ack wait, SQS's visibility timeout.
    pub ack_wait: Duration,
    /// Messages fetched at once (JetStream pull batch, RabbitMQ prefetch, SQS receive batch).
    pub batch: usize,
}

/// One namespace's transport and stores.
pub struct NamespaceParts {
    /// The namespace's queues.
    pub transport: Arc<dyn Transport>,
    /// Where its final envelopes go.
    pub results: Arc<dyn ResultStore>,
    /// Where its open fan-ins are kept.
    pub fanin: Arc<dyn FanInStore>,
    /// Where the hops of gateway tasks are reported (NATS only: the gateway runs on NATS or
    /// in-process on the embedded transport).
    pub tasks: Option<Arc<dyn TaskReporter>>,
}

/// Results and fan-ins for a broker without a key-value store (one per host: its size does not
/// matter).
#[allow(clippy::large_enum_variant)]
pub enum StateStore {
    /// JetStream key-value buckets on a NATS server.
    Nats {
        /// The client.
        client: async_nats::Client,
        /// Bucket settings.
        settings: NatsSettings,
    },
    /// The DynamoDB state table.
    Dynamo(Arc<DynamoTable>),
}

impl StateStore {
    async fn open(config: &BackendConfig) -> Result<Self> {
        match config.store.as_deref().map(str::trim) {
            None | Some("") | Some("dynamodb") => {
                let aws = aws::config().await;
                let client = aws_sdk_dynamodb::Client::new(&aws);
                Ok(StateStore::Dynamo(
                    DynamoTable::open(client, &config.dynamodb_table, config.create).await?,
                ))
            }
            Some(url) if url.starts_with("nats://") || url.starts_with("tls://") => {
                Ok(StateStore::Nats {
                    client: nats::connect(url).await?,
                    settings: config.nats.clone(),
                })
            }
            Some(other) => bail!(
                "--store {other}: expected `dynamodb` or a nats:// URL (where results and fan-ins live)"
            ),
        }
    }

    async fn namespace(
        &self,
        namespace: &str,
        results_ttl: Duration,
    ) -> Result<(Arc<dyn ResultStore>, Arc<dyn FanInStore>)> {
        match self {
            StateStore::Nats { client, settings } => {
                let settings = NatsSettings {
                    results_ttl,
                    ..settings.clone()
                };
                let transport = NatsTransport::new(client.clone(), namespace, settings).await?;
                let results = Arc::new(transport.results().await?);
                let fanin = Arc::new(NatsFanIn::open(transport.jetstream(), namespace).await?);
                Ok((results, fanin))
            }
            StateStore::Dynamo(table) => {
                let state = Arc::new(table.namespace(namespace, results_ttl));
                Ok((state.clone(), state))
            }
        }
    }

    fn ready(&self) -> Result<(), String> {
        match self {
            StateStore::Nats { client, .. } => nats_ready(client),
            StateStore::Dynamo(_) => Ok(()),
        }
    }
}

fn nats_ready(client: &async_nats::Client) -> Result<(), String> {
    match client.connection_state() {
        async_nats::connection::State::Connected => Ok(()),
        state => Err(format!("NATS is {state:?}")),
    }
}

/// A host's connection to its broker and state store.
pub enum Backend {
    /// NATS JetStream for queues and state.
    Nats {
        /// The client.
        client: async_nats::Client,
        /// JetStream settings.
        settings: NatsSettings,
    },
    /// RabbitMQ queues.
    Rabbitmq {
        /// The AMQP connection.
        connection: Arc<RabbitConnection>,
        /// Queue settings.
        settings: RabbitSettings,
        /// Results and fan-ins.
        store: StateStore,
    },
    /// SQS queues.
    Sqs {
        /// The SQS client.
        client: aws_sdk_sqs::Client,
        /// Queue settings.
        settings: SqsSettings,
        /// Whether SQS answered the last call.
        health: SqsHealth,
        /// Results and fan-ins.
        store: StateStore,
    },
}

impl Backend {
    /// Connects to the broker and the state store, retrying with backoff until both answer
    /// (each failure is logged with its cause).
    pub async fn connect(config: &BackendConfig) -> Result<Self> {
        match config.transport {
            TransportKind::Nats => Ok(Backend::Nats {
                client: nats::connect(&config.nats_url).await?,
                settings: config.nats.clone(),
            }),
            TransportKind::Rabbitmq => {
                let url = config
                    .rabbitmq_url
                    .as_deref()
                    .context("--transport rabbitmq needs --rabbitmq-url (or ASYA_RABBITMQ_URL)")?;
                let connection = RabbitConnection::connect(url).await?;
                Ok(Backend::Rabbitmq {
                    connection,
                    settings: RabbitSettings {
                        create: config.create,
                        prefetch: config.batch.clamp(1, u16::MAX as usize) as u16,
                        ..RabbitSettings::default()
                    },
                    store: StateStore::open(config).await?,
                })
            }
            TransportKind::Sqs => {
                let aws = aws::config().await;
                let client = aws_sdk_sqs::Client::new(&aws);
                let health = SqsHealth::default();
                let identity = aws::identity(&aws).await;
                sqs::wait_until_reachable(&client, &health, &identity).await;
                Ok(Backend::Sqs {
                    client,
                    settings: SqsSettings {
                        create: config.create,
                        visibility: config.ack_wait,
                        batch: config.batch.clamp(1, 10) as i32,
                        ..SqsSettings::default()
                    },
                    health,
                    store: StateStore::open(config).await?,
                })
            }
        }
    }

    /// The transport and stores of `namespace` (results kept for `results_ttl`).
    pub async fn namespace(
        &self,
        namespace: &str,
        results_ttl: Duration,
    ) -> Result<NamespaceParts> {
        match self {
            Backend::Nats { client, settings } => {
                let settings = NatsSettings {
                    results_ttl,
                    ..settings.clone()
                };
                let transport = NatsTransport::new(client.clone(), namespace, settings).await?;
                tracing::info!(namespace, max_message_bytes = ?Transport::max_message_bytes(&transport),
                    "namespace on NATS: messages over the server's max_payload end at x-sump (OutputTooLarge)");
                let results = Arc::new(transport.results().await?);
                let fanin = Arc::new(NatsFanIn::open(transport.jetstream(), namespace).await?);
                let tasks = NatsTaskLog::open(transport.jetstream().clone(), namespace).await?;
                Ok(NamespaceParts {
                    transport: Arc::new(transport),
                    results,
                    fanin,
                    tasks: Some(Arc::new(tasks)),
                })
            }
            Backend::Rabbitmq {
                connection,
                settings,
                store,
            } => {
                let (results, fanin) = store.namespace(namespace, results_ttl).await?;
                tracing::info!(
                    namespace,
                    max_message_bytes = rabbitmq::MAX_MESSAGE_BYTES,
                    "namespace on RabbitMQ"
                );
                Ok(NamespaceParts {
                    transport: Arc::new(RabbitTransport::new(
                        connection.clone(),
                        namespace,
                        settings.clone(),
                    )),
                    results,
                    fanin,
                    tasks: None,
                })
            }
            Backend::Sqs {
                client,
                settings,
                health,
                store,
            } => {
                let (results, fanin) = store.namespace(namespace, results_ttl).await?;
                tracing::info!(
                    namespace,
                    max_message_bytes = sqs::MAX_MESSAGE_BYTES,
                    "namespace on SQS"
                );
                Ok(NamespaceParts {
                    transport: Arc::new(SqsTransport::new(
                        client.clone(),
                        namespace,
                        settings.clone(),
                        health.clone(),
                    )),
                    results,
                    fanin,
                    tasks: None,
                })
            }
        }
    }

    /// `Ok` when the broker (and a state store with a connection) is reachable, else why not.
    pub fn ready(&self) -> Result<(), String> {
        match self {
            Backend::Nats { client, .. } => nats_ready(client),
            Backend::Rabbitmq {
                connection, store, ..
            } => {
                if !connection.is_connected() {
                    return Err("RabbitMQ is not connected".into());
                }
                store.ready()
            }
            Backend::Sqs { health, store, .. } => {
                if !health.is_up() {
                    return Err("SQS did not answer the last call".into());
                }
                store.ready()
            }
        }
    }

    /// Flushes and closes connections after a graceful shutdown.
    pub async fn close(&self) {
        match self {
            Backend::Nats { client, .. } => {
                client.flush().await.ok();
            }
            Backend::Rabbitmq {
                connection, store, ..
            } => {
                connection.close().await;
                if let StateStore::Nats { client, .. } = store {
                    client.flush().await.ok();
                }
            }
            Backend::Sqs { store, .. } => {
                if let StateStore::Nats { client, .. } = store {
                    client.flush().await.ok();
                }
            }
        }
    }
}
