//! The operator's side of RabbitMQ and SQS: it creates each actor's queue
//! (`asya-<namespace>-<actor>`) when it reconciles the actor, so the queue exists before any host
//! runs (KEDA reads its length to scale a deployment up from zero, and a message sent while no
//! host runs waits in it). Hosts still declare their queues themselves, idempotently and with
//! the same arguments, so a host also runs where no operator manages the broker.
//!
//! [`QueueAdmin`] is the seam: [`BrokerAdmin`] talks to RabbitMQ (AMQP `queue.declare`, durable
//! quorum queue) and SQS (`CreateQueue`), each only when configured (`--rabbitmq-admin-url`,
//! `--manage-sqs-queues`); [`MemoryQueues`] keeps everything in memory for tests. On actor
//! deletion an empty queue is deleted; a queue still holding messages is kept (and reported), so
//! deleting an actor never drops work.

use crate::jetstream::QueueError;
use asya_spec::actor::Transport;
use async_trait::async_trait;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{QueueAttributeName, QueueAttributeName as Attr};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// What ensuring a queue did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    /// The queue exists now.
    Created,
    /// The operator does not manage this transport's queues: the host declares them.
    NotManaged,
}

/// What deleting a queue did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// Deleted (or already gone).
    Gone,
    /// Kept: it still holds messages (or, on RabbitMQ, a host still consumes it).
    KeptWithMessages,
    /// The operator does not manage this transport's queues.
    NotManaged,
}

/// What the reconciler needs from RabbitMQ and SQS. Every call is idempotent.
#[async_trait]
pub trait QueueAdmin: Send + Sync {
    /// Creates `queue` on `transport` if it is missing.
    async fn ensure_queue(&self, transport: Transport, queue: &str) -> Result<Ensured, QueueError>;
    /// Deletes `queue` on `transport` if it holds no messages.
    async fn delete_queue(&self, transport: Transport, queue: &str) -> Result<Deleted, QueueError>;
}

fn err(operation: impl Into<String>, message: impl std::fmt::Display) -> QueueError {
    QueueError {
        operation: operation.into(),
        message: message.to_string(),
    }
}

/// The arguments of an actor's RabbitMQ queue: durable, quorum (replicated, and what the hosts
/// declare; a declare with other arguments is refused by the broker).
fn rabbitmq_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    arguments
}

/// RabbitMQ administration over AMQP, connecting (again) when needed.
pub struct RabbitAdmin {
    url: String,
    connection: tokio::sync::Mutex<Option<lapin::Connection>>,
}

impl RabbitAdmin {
    /// An admin for the broker at `url` (connects on first use).
    pub fn new(url: &str) -> Self {
        RabbitAdmin {
            url: url.to_owned(),
            connection: tokio::sync::Mutex::new(None),
        }
    }

    async fn channel(&self) -> Result<lapin::Channel, QueueError> {
        let mut connection = self.connection.lock().await;
        if !connection.as_ref().is_some_and(|c| c.status().connected()) {
            let opened = lapin::Connection::connect(
                &self.url,
                lapin::ConnectionProperties::default().with_connection_name("asya-operator".into()),
            )
            .await
            .map_err(|e| err("connecting to RabbitMQ", e))?;
            *connection = Some(opened);
        }
        connection
            .as_ref()
            .expect("connected above")
            .create_channel()
            .await
            .map_err(|e| err("opening a RabbitMQ channel", e))
    }

    /// Declares `queue` (durable quorum queue).
    pub async fn declare(&self, queue: &str) -> Result<(), QueueError> {
        let channel = self.channel().await?;
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                rabbitmq_arguments(),
            )
            .await
            .map_err(|e| err(format!("declaring RabbitMQ queue {queue}"), e));
        let _ = channel.close(200, "done".into()).await;
        declared.map(|_| ())
    }

    /// Deletes `queue` if it holds no message and no consumer (quorum queues do not take
    /// `queue.delete` with `if-empty`, so a passive declare reads the counts first; a message
    /// published in between the two calls would go with the queue).
    pub async fn delete_if_empty(&self, queue: &str) -> Result<Deleted, QueueError> {
        let channel = self.channel().await?;
        let found = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        let found = match found {
            Ok(found) => found,
            // 404: already gone (the broker closed this channel).
            Err(e) if e.to_string().contains("NOT_FOUND") => return Ok(Deleted::Gone),
            Err(e) => return Err(err(format!("reading RabbitMQ queue {queue}"), e)),
        };
        if found.message_count() > 0 || found.consumer_count() > 0 {
            let _ = channel.close(200, "done".into()).await;
            return Ok(Deleted::KeptWithMessages);
        }
        let deleted = channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await;
        let _ = channel.close(200, "done".into()).await;
        match deleted {
            Ok(_) => Ok(Deleted::Gone),
            Err(e) if e.to_string().contains("NOT_FOUND") => Ok(Deleted::Gone),
            Err(e) => Err(err(format!("deleting RabbitMQ queue {queue}"), e)),
        }
    }
}

/// SQS administration with the operator's AWS settings.
pub struct SqsAdmin {
    client: aws_sdk_sqs::Client,
}

/// An SDK error with its service code and message.
fn describe<E: ProvideErrorMetadata + std::fmt::Display>(e: &E) -> String {
    match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        _ => e.to_string(),
    }
}

impl SqsAdmin {
    /// An admin using `client`.
    pub fn new(client: aws_sdk_sqs::Client) -> Self {
        SqsAdmin { client }
    }

    /// An admin with the AWS settings of the environment, `region` and `endpoint` (a local
    /// SQS-compatible server) when given.
    pub async fn from_env(region: &str, endpoint: Option<&str>) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_owned()));
        if let Some(endpoint) = endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        SqsAdmin::new(aws_sdk_sqs::Client::new(&loader.load().await))
    }

    /// Creates `queue` (standard queue, 14-day retention); an existing one is kept as it is.
    pub async fn create(&self, queue: &str) -> Result<(), QueueError> {
        match self
            .client
            .create_queue()
            .queue_name(queue)
            .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Exists with other attributes (the host's visibility timeout): it is there.
            Err(e)
                if e.as_service_error().is_some_and(|s| {
                    s.is_queue_name_exists() || s.code() == Some("QueueAlreadyExists")
                }) =>
            {
                Ok(())
            }
            Err(e) => Err(err(format!("creating SQS queue {queue}"), describe(&e))),
        }
    }

    /// Deletes `queue` if SQS counts no message in it (visible, in flight or delayed).
    pub async fn delete_if_empty(&self, queue: &str) -> Result<Deleted, QueueError> {
        let url = match self.client.get_queue_url().queue_name(queue).send().await {
            Ok(found) => found.queue_url().unwrap_or_default().to_owned(),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_queue_does_not_exist()) =>
            {
                return Ok(Deleted::Gone)
            }
            Err(e) => return Err(err(format!("finding SQS queue {queue}"), describe(&e))),
        };
        let attributes = self
            .client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(Attr::ApproximateNumberOfMessages)
            .attribute_names(Attr::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(Attr::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| err(format!("reading SQS queue {queue}"), describe(&e)))?;
        let held: u64 = attributes
            .attributes()
            .map(|a| a.values().filter_map(|v| v.parse::<u64>().ok()).sum())
            .unwrap_or(0);
        if held > 0 {
            return Ok(Deleted::KeptWithMessages);
        }
        self.client
            .delete_queue()
            .queue_url(&url)
            .send()
            .await
            .map_err(|e| err(format!("deleting SQS queue {queue}"), describe(&e)))?;
        Ok(Deleted::Gone)
    }
}

/// The brokers the operator manages queues on (each optional).
#[derive(Default)]
pub struct BrokerAdmin {
    /// RabbitMQ, when `--rabbitmq-admin-url` is given.
    pub rabbitmq: Option<RabbitAdmin>,
    /// SQS, when `--manage-sqs-queues` is on.
    pub sqs: Option<SqsAdmin>,
}

#[async_trait]
impl QueueAdmin for BrokerAdmin {
    async fn ensure_queue(&self, transport: Transport, queue: &str) -> Result<Ensured, QueueError> {
        match (transport, &self.rabbitmq, &self.sqs) {
            (Transport::Rabbitmq, Some(rabbit), _) => {
                rabbit.declare(queue).await.map(|_| Ensured::Created)
            }
            (Transport::Sqs, _, Some(sqs)) => sqs.create(queue).await.map(|_| Ensured::Created),
            _ => Ok(Ensured::NotManaged),
        }
    }

    async fn delete_queue(&self, transport: Transport, queue: &str) -> Result<Deleted, QueueError> {
        match (transport, &self.rabbitmq, &self.sqs) {
            (Transport::Rabbitmq, Some(rabbit), _) => rabbit.delete_if_empty(queue).await,
            (Transport::Sqs, _, Some(sqs)) => sqs.delete_if_empty(queue).await,
            _ => Ok(Deleted::NotManaged),
        }
    }
}

/// Queues kept in memory (tests): every transport managed.
#[derive(Default)]
pub struct MemoryQueues {
    queues: Mutex<BTreeSet<(String, String)>>,
    /// Queues that report holding messages (kept on delete).
    pub busy: Mutex<BTreeSet<String>>,
}

impl MemoryQueues {
    /// An empty broker.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// The queues that exist, as (transport, name).
    pub fn queues(&self) -> Vec<(String, String)> {
        self.queues
            .lock()
            .expect("queues")
            .iter()
            .cloned()
            .collect()
    }
}

#[async_trait]
impl QueueAdmin for MemoryQueues {
    async fn ensure_queue(&self, transport: Transport, queue: &str) -> Result<Ensured, QueueError> {
        self.queues
            .lock()
            .expect("queues")
            .insert((transport.as_str().to_owned(), queue.to_owned()));
        Ok(Ensured::Created)
    }

    async fn delete_queue(&self, transport: Transport, queue: &str) -> Result<Deleted, QueueError> {
        if self.busy.lock().expect("busy").contains(queue) {
            return Ok(Deleted::KeptWithMessages);
        }
        self.queues
            .lock()
            .expect("queues")
            .remove(&(transport.as_str().to_owned(), queue.to_owned()));
        Ok(Deleted::Gone)
    }
}
