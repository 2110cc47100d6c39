//! The task log on NATS: the JetStream stream `ASYA_TASKS`, one subject per task
//! (`asya-tasks.<namespace>.<id>`), where hosts report each hop of a gateway task and the gateway
//! writes `created`, `resumed` and `canceled`. A task's subject is its history in order: the
//! gateway replays it for late subscribers and folds it into the task's status.

use crate::message::task_event::{TaskEvent, TaskReporter};
use anyhow::{Context, Result};
use asya_spec::names::{task_subject, TASKS_STREAM};
use async_nats::jetstream::{self, stream};
use async_trait::async_trait;
use std::time::Duration;

/// How long a task's events are kept.
pub const TASK_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// At most this many events per task are kept (the oldest go first): a task that loops through
/// its actors cannot grow the log without bound.
pub const MAX_EVENTS_PER_TASK: i64 = 1000;

/// The stream every host and gateway of a NATS server shares, created when missing.
pub async fn tasks_stream(js: &jetstream::Context) -> Result<stream::Stream> {
    js.get_or_create_stream(stream::Config {
        name: TASKS_STREAM.to_owned(),
        subjects: vec!["asya-tasks.>".to_owned()],
        storage: stream::StorageType::File,
        max_age: TASK_RETENTION,
        max_messages_per_subject: MAX_EVENTS_PER_TASK,
        discard: stream::DiscardPolicy::Old,
        duplicate_window: Duration::from_secs(120),
        allow_direct: true,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
    .with_context(|| format!("creating the task stream {TASKS_STREAM}"))
}

/// Whether `id` can be one token of a subject (a task id from the gateway always can: a UUID).
pub fn is_subject_token(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Reports the task events of one namespace to `ASYA_TASKS`.
pub struct NatsTaskLog {
    js: jetstream::Context,
    namespace: String,
}

impl NatsTaskLog {
    /// The task log of `namespace`, creating the stream when missing.
    pub async fn open(js: jetstream::Context, namespace: &str) -> Result<Self> {
        tasks_stream(&js).await?;
        Ok(NatsTaskLog {
            js,
            namespace: namespace.to_owned(),
        })
    }
}

#[async_trait]
impl TaskReporter for NatsTaskLog {
    async fn report(&self, event: TaskEvent) -> Result<()> {
        if !is_subject_token(&event.task) {
            // Not an id the gateway made (a hand-made envelope): there is no task to report to.
            tracing::debug!(task = %event.task, "task id is not a subject token; not reported");
            return Ok(());
        }
        let ack = self
            .js
            .send_publish(
                task_subject(&self.namespace, &event.task),
                jetstream::message::PublishMessage::build()
                    .payload(serde_json::to_vec(&event)?.into())
                    .message_id(event.dedup_id()),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        ack.await
            .map_err(|e| anyhow::anyhow!("JetStream did not confirm the task event: {e}"))?;
        Ok(())
    }
}
