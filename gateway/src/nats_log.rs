//! The task log on NATS JetStream (the `ASYA_TASKS` stream the hosts report to): appends are
//! publishes (guarded ones carry `expected-last-subject-sequence`, so two gateways cannot both
//! resume a task), histories are ordered consumers over one task's subject.

use crate::log::{AppendError, TaskLog};
use anyhow::{Context, Result};
use asya_host::message::task_event::TaskEvent;
use asya_host::transport::task_log::{is_subject_token, tasks_stream};
use asya_spec::names::{task_subject, task_subjects};
use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;

/// The JetStream task log.
pub struct NatsTaskLog {
    js: jetstream::Context,
    stream: stream::Stream,
}

impl NatsTaskLog {
    /// Opens (creating when missing) the task stream on `client`'s server.
    pub async fn open(client: async_nats::Client) -> Result<Self> {
        let js = jetstream::new(client);
        let stream = tasks_stream(&js).await?;
        Ok(NatsTaskLog { js, stream })
    }

    /// An ordered consumer over `filter`, from the first event after `after`; with the number
    /// of events already there when it started.
    async fn read(
        &self,
        filter: String,
        after: u64,
    ) -> Result<(u64, consumer::Consumer<consumer::pull::OrderedConfig>)> {
        let deliver_policy = if after == 0 {
            consumer::DeliverPolicy::All
        } else {
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            }
        };
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: filter,
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("reading the task log")?;
        let pending = consumer.cached_info().num_pending;
        Ok((pending, consumer))
    }

    async fn read_all(&self, filter: String) -> Result<Vec<TaskEvent>> {
        let (pending, consumer) = self.read(filter, 0).await?;
        let mut out = Vec::with_capacity(pending as usize);
        if pending == 0 {
            return Ok(out);
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        while (out.len() as u64) < pending {
            let Some(message) = messages.next().await else {
                break;
            };
            let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
            if let Some(event) = decode(&message) {
                out.push(event);
            } else {
                // Counted in `pending` all the same.
                out.push(skipped());
            }
        }
        out.retain(|e| !e.task.is_empty());
        Ok(out)
    }
}

fn skipped() -> TaskEvent {
    serde_json::from_value(serde_json::json!({"task": "", "kind": "hop", "at": ""}))
        .expect("a placeholder event")
}

/// An event from a message of the stream, with its stream sequence.
fn decode(message: &jetstream::Message) -> Option<TaskEvent> {
    let mut event: TaskEvent = match serde_json::from_slice(&message.payload) {
        Ok(event) => event,
        Err(err) => {
            tracing::warn!(subject = %message.subject, error = %err, "not a task event; skipped");
            return None;
        }
    };
    event.seq = message.info().ok()?.stream_sequence;
    Some(event)
}

#[async_trait]
impl TaskLog for NatsTaskLog {
    async fn append(
        &self,
        namespace: &str,
        event: TaskEvent,
        expect_last: Option<u64>,
    ) -> Result<u64, AppendError> {
        if !is_subject_token(&event.task) {
            return Err(AppendError::Failed(anyhow::anyhow!(
                "task id {:?} is not a subject token",
                event.task
            )));
        }
        let mut message = jetstream::message::PublishMessage::build().payload(
            serde_json::to_vec(&event)
                .map_err(anyhow::Error::from)?
                .into(),
        );
        if let Some(last) = expect_last {
            message = message.expected_last_subject_sequence(last);
        }
        let ack = self
            .js
            .send_publish(task_subject(namespace, &event.task), message)
            .await
            .map_err(|e| AppendError::Failed(anyhow::anyhow!("{e}")))?;
        match ack.await {
            Ok(ack) => Ok(ack.sequence),
            Err(err) if err.kind() == PublishErrorKind::WrongLastSequence => {
                Err(AppendError::Conflict)
            }
            Err(err) => Err(AppendError::Failed(anyhow::anyhow!(
                "JetStream did not confirm the task event: {err}"
            ))),
        }
    }

    async fn history(&self, namespace: &str, id: &str) -> Result<Vec<TaskEvent>> {
        if !is_subject_token(id) {
            return Ok(Vec::new());
        }
        self.read_all(task_subject(namespace, id)).await
    }

    async fn follow(
        &self,
        namespace: &str,
        id: &str,
        after: u64,
    ) -> Result<BoxStream<'static, Result<TaskEvent>>> {
        let (_, consumer) = self.read(task_subject(namespace, id), after).await?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(messages
            .filter_map(|message| async move {
                match message {
                    Ok(message) => decode(&message).map(Ok),
                    Err(err) => Some(Err(anyhow::anyhow!("{err}"))),
                }
            })
            .boxed())
    }

    async fn namespace_events(&self, namespace: &str) -> Result<Vec<TaskEvent>> {
        self.read_all(task_subjects(namespace)).await
    }
}
