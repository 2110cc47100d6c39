//! The task log on NATS JetStream (the `ASYA_TASKS` stream the hosts report to).
//!
//! - Appends are publishes; guarded ones carry `expected-last-subject-sequence`, so of two
//!   gateways resuming one task, one wins.
//! - A task's history is read with direct gets (next message of its subject), no consumer.
//! - Live events reach followers from **one** ordered consumer per gateway over every task
//!   subject, fanned out in memory: a thousand SSE subscribers cost the server one consumer.
//! - A namespace's list reads its subjects with one short-lived ordered consumer.

use crate::log::{AppendError, Appended, TaskLog};
use anyhow::{Context, Result};
use asya_host::message::task_event::TaskEvent;
use asya_host::transport::task_log::{is_subject_token, tasks_stream};
use asya_spec::names::{task_subject, task_subjects};
use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use async_trait::async_trait;
use futures::StreamExt;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Live events buffered per follower before it is told it fell behind.
const LIVE_BUFFER: usize = 65_536;

/// The JetStream task log.
pub struct NatsTaskLog {
    js: jetstream::Context,
    stream: stream::Stream,
    live: broadcast::Sender<(String, TaskEvent)>,
}

impl NatsTaskLog {
    /// Opens (creating when missing) the task stream on `client`'s server, and starts the one
    /// consumer that feeds live events to followers until `shutdown`.
    pub async fn open(client: async_nats::Client, shutdown: CancellationToken) -> Result<Self> {
        let js = jetstream::new(client);
        let stream = tasks_stream(&js).await?;
        let live = broadcast::channel(LIVE_BUFFER).0;
        tokio::spawn(feed_live(stream.clone(), live.clone(), shutdown));
        Ok(NatsTaskLog { js, stream, live })
    }
}

/// Reads every new event of every task and hands it to the followers; a broken consumer is
/// created again (with backoff) from where it stopped.
async fn feed_live(
    stream: stream::Stream,
    live: broadcast::Sender<(String, TaskEvent)>,
    shutdown: CancellationToken,
) {
    let mut next_seq: Option<u64> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let deliver_policy = match next_seq {
            None => consumer::DeliverPolicy::New,
            Some(start_sequence) => consumer::DeliverPolicy::ByStartSequence { start_sequence },
        };
        let messages = async {
            stream
                .create_consumer(consumer::pull::OrderedConfig {
                    filter_subject: "asya-tasks.>".to_owned(),
                    deliver_policy,
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .messages()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
        };
        let mut messages = tokio::select! {
            _ = shutdown.cancelled() => return,
            made = messages => match made {
                Ok(messages) => messages,
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), "following the task log failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(100);
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return,
                message = messages.next() => message,
            };
            match message {
                Some(Ok(message)) => {
                    if let Some((namespace, event)) = decode(&message) {
                        next_seq = Some(event.seq + 1);
                        // No follower is not an error.
                        let _ = live.send((namespace, event));
                    }
                }
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "reading the task log failed; following again");
                    break;
                }
                None => break,
            }
        }
    }
}

/// The namespace (from the subject) and the event of a message of the stream, with its stream
/// sequence.
fn decode(message: &jetstream::Message) -> Option<(String, TaskEvent)> {
    let seq = message.info().ok()?.stream_sequence;
    decode_parts(&message.subject, &message.payload, seq)
}

fn decode_parts(subject: &str, payload: &[u8], seq: u64) -> Option<(String, TaskEvent)> {
    let namespace = subject.split('.').nth(1)?.to_owned();
    match serde_json::from_slice::<TaskEvent>(payload) {
        Ok(mut event) => {
            event.seq = seq;
            Some((namespace, event))
        }
        Err(err) => {
            tracing::warn!(subject, error = %err, "not a task event; skipped");
            None
        }
    }
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
        let subject = task_subject(namespace, id);
        let mut out = Vec::new();
        let mut from = 1;
        loop {
            match self
                .stream
                .direct_get_next_for_subject(subject.as_str(), Some(from))
                .await
            {
                Ok(message) => {
                    from = message.sequence + 1;
                    if let Some((_, event)) =
                        decode_parts(&message.subject, &message.payload, message.sequence)
                    {
                        out.push(event);
                    }
                }
                Err(err) if err.kind() == stream::DirectGetErrorKind::NotFound => return Ok(out),
                Err(err) => {
                    return Err(anyhow::anyhow!("{err}")).context("reading a task's history")
                }
            }
        }
    }

    fn live(&self) -> Appended {
        self.live.subscribe()
    }

    async fn namespace_events(&self, namespace: &str) -> Result<Vec<TaskEvent>> {
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: task_subjects(namespace),
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("listing the tasks")?;
        let pending = consumer.cached_info().num_pending;
        let name = consumer.cached_info().name.clone();
        let mut out = Vec::with_capacity(pending as usize);
        let mut read = 0;
        if pending > 0 {
            let mut messages = consumer
                .messages()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            while read < pending {
                let Some(message) = messages.next().await else {
                    break;
                };
                let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
                read += 1;
                if let Some((_, event)) = decode(&message) {
                    out.push(event);
                }
            }
        }
        // Not left for the server to expire: a list costs one consumer for its duration only.
        let _ = self.stream.delete_consumer(&name).await;
        Ok(out)
    }
}
