//! The task log the gateway reads and writes: every task's events in order, per namespace.
//! Two implementations: [`MemoryTaskLog`] (in-process, with the embedded transport) and
//! [`crate::nats_log::NatsTaskLog`] (the JetStream stream the hosts report to).

use anyhow::Result;
use asya_host::message::task_event::{TaskEvent, TaskReporter};
use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Why an append was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The task's last event is not the one expected: someone else changed it first.
    #[error("the task changed meanwhile")]
    Conflict,
    /// The log could not be written.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Every task's events, in order.
#[async_trait]
pub trait TaskLog: Send + Sync {
    /// Appends `event` to its task in `namespace` and returns its sequence. With `expect_last`,
    /// only if the task's last event has that sequence (0: the task has no event yet).
    async fn append(
        &self,
        namespace: &str,
        event: TaskEvent,
        expect_last: Option<u64>,
    ) -> Result<u64, AppendError>;

    /// Task `id`'s events so far (empty: no such task in `namespace`).
    async fn history(&self, namespace: &str, id: &str) -> Result<Vec<TaskEvent>>;

    /// Every event appended from now on, with its namespace.
    fn live(&self) -> Appended;

    /// Task `id`'s events after sequence `after`, then each new one as it is appended. The
    /// stream does not end by itself (the caller stops after a terminal event).
    async fn follow(
        &self,
        namespace: &str,
        id: &str,
        after: u64,
    ) -> Result<BoxStream<'static, Result<TaskEvent>>> {
        // Subscribe before reading the history, so nothing falls between the two.
        let live = self.live();
        let past = self.history(namespace, id).await?;
        Ok(history_then_live(past, live, namespace, id, after))
    }

    /// Every event of every task of `namespace` still kept, in order.
    async fn namespace_events(&self, namespace: &str) -> Result<Vec<TaskEvent>>;
}

/// Events appended to a log, with their namespace, as they happen (for followers).
pub type Appended = broadcast::Receiver<(String, TaskEvent)>;

/// A follower's stream: the events of `past` after `after`, then those of `live` for the same
/// task that are newer than the last one sent (an event may be in both: `live` was subscribed
/// before `past` was read, so that none falls between them). A follower that falls behind
/// `live`'s buffer gets an error and can reconnect from its last event id.
pub fn history_then_live(
    past: Vec<TaskEvent>,
    live: Appended,
    namespace: &str,
    id: &str,
    after: u64,
) -> BoxStream<'static, Result<TaskEvent>> {
    let past: Vec<TaskEvent> = past.into_iter().filter(|e| e.seq > after).collect();
    let mut last = past.last().map_or(after, |e| e.seq);
    let (namespace, id) = (namespace.to_owned(), id.to_owned());
    let live = futures::stream::unfold(live, |mut rx| async move {
        match rx.recv().await {
            Ok(appended) => Some((Ok(appended), rx)),
            Err(broadcast::error::RecvError::Lagged(_)) => Some((
                Err(anyhow::anyhow!(
                    "the follower fell behind; reconnect with Last-Event-ID"
                )),
                rx,
            )),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
    .filter_map(move |appended| {
        let next = match appended {
            Ok((ns, event)) if ns == namespace && event.task == id && event.seq > last => {
                last = event.seq;
                Some(Ok(event))
            }
            Ok(_) => None,
            Err(err) => Some(Err(err)),
        };
        futures::future::ready(next)
    });
    futures::stream::iter(past.into_iter().map(Ok))
        .chain(live)
        .boxed()
}

/// How many tasks the in-memory log keeps; the oldest are forgotten first.
pub const MEMORY_TASKS: usize = 100_000;

#[derive(Default)]
struct Tasks {
    /// Events by task id.
    events: HashMap<String, Vec<TaskEvent>>,
    /// The namespace of each task id.
    namespaces: HashMap<String, String>,
    /// Task ids, oldest first (to forget the oldest).
    order: VecDeque<String>,
    /// The last sequence given.
    seq: u64,
}

/// The task log of a gateway and its hosts in one process. It also takes the hosts' reports
/// (the namespace of a reported event is the task's own, so actors need not know it).
pub struct MemoryTaskLog {
    tasks: Mutex<Tasks>,
    appended: broadcast::Sender<(String, TaskEvent)>,
}

impl Default for MemoryTaskLog {
    fn default() -> Self {
        MemoryTaskLog {
            tasks: Mutex::default(),
            appended: broadcast::channel(4096).0,
        }
    }
}

impl MemoryTaskLog {
    fn append_locked(
        &self,
        namespace: Option<&str>,
        mut event: TaskEvent,
        expect_last: Option<u64>,
    ) -> Result<u64, AppendError> {
        let mut tasks = self.tasks.lock().expect("task log");
        let known = tasks.namespaces.get(&event.task).cloned();
        let namespace = match (namespace, known) {
            (Some(given), Some(known)) if given != known => return Err(AppendError::Conflict),
            (Some(given), _) => given.to_owned(),
            (None, Some(known)) => known,
            // A report about a task this log never created: nobody watches it.
            (None, None) => return Ok(0),
        };
        let last = tasks
            .events
            .get(&event.task)
            .and_then(|e| e.last())
            .map_or(0, |e| e.seq);
        if expect_last.is_some_and(|expected| expected != last) {
            return Err(AppendError::Conflict);
        }
        tasks.seq += 1;
        event.seq = tasks.seq;
        if !tasks.namespaces.contains_key(&event.task) {
            tasks
                .namespaces
                .insert(event.task.clone(), namespace.clone());
            tasks.order.push_back(event.task.clone());
            while tasks.order.len() > MEMORY_TASKS {
                if let Some(old) = tasks.order.pop_front() {
                    tasks.events.remove(&old);
                    tasks.namespaces.remove(&old);
                }
            }
        }
        let seq = event.seq;
        tasks
            .events
            .entry(event.task.clone())
            .or_default()
            .push(event.clone());
        drop(tasks);
        let _ = self.appended.send((namespace, event));
        Ok(seq)
    }
}

#[async_trait]
impl TaskLog for MemoryTaskLog {
    async fn append(
        &self,
        namespace: &str,
        event: TaskEvent,
        expect_last: Option<u64>,
    ) -> Result<u64, AppendError> {
        self.append_locked(Some(namespace), event, expect_last)
    }

    async fn history(&self, namespace: &str, id: &str) -> Result<Vec<TaskEvent>> {
        let tasks = self.tasks.lock().expect("task log");
        if tasks.namespaces.get(id).map(String::as_str) != Some(namespace) {
            return Ok(Vec::new());
        }
        Ok(tasks.events.get(id).cloned().unwrap_or_default())
    }

    fn live(&self) -> Appended {
        self.appended.subscribe()
    }

    async fn namespace_events(&self, namespace: &str) -> Result<Vec<TaskEvent>> {
        let tasks = self.tasks.lock().expect("task log");
        let mut out: Vec<TaskEvent> = tasks
            .order
            .iter()
            .filter(|id| tasks.namespaces.get(*id).map(String::as_str) == Some(namespace))
            .flat_map(|id| tasks.events.get(id).cloned().unwrap_or_default())
            .collect();
        out.sort_by_key(|e| e.seq);
        Ok(out)
    }
}

#[async_trait]
impl TaskReporter for MemoryTaskLog {
    async fn report(&self, event: TaskEvent) -> Result<()> {
        match self.append_locked(None, event, None) {
            Ok(_) | Err(AppendError::Conflict) => Ok(()),
            Err(AppendError::Failed(err)) => Err(err),
        }
    }
}

/// A reporter for the hosts of a [`MemoryTaskLog`].
pub fn reporter(log: &Arc<MemoryTaskLog>) -> Arc<dyn TaskReporter> {
    log.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use asya_host::message::envelope::{Envelope, Route};
    use asya_host::message::task_event::EventKind;

    fn event(task: &str, kind: EventKind) -> TaskEvent {
        let mut env = Envelope::new(
            Route::through(&["a"]).unwrap(),
            serde_json::json!({}),
            "2026-12-02T00:00:00Z",
        );
        env.id = task.into();
        TaskEvent::about(kind, &env, Some("a"), "2026-12-02T00:00:00Z")
    }

    #[tokio::test]
    async fn tasks_are_kept_per_namespace_and_guarded_appends_conflict() {
        let log = MemoryTaskLog::default();
        let s1 = log
            .append("a", event("t1", EventKind::Created), Some(0))
            .await
            .unwrap();
        assert!(matches!(
            log.append("a", event("t1", EventKind::Created), Some(0))
                .await,
            Err(AppendError::Conflict)
        ));
        assert!(log.history("b", "t1").await.unwrap().is_empty());
        log.report(event("t1", EventKind::Hop)).await.unwrap();
        log.report(event("unknown", EventKind::Hop)).await.unwrap();
        let history = log.history("a", "t1").await.unwrap();
        assert_eq!(history.len(), 2);
        assert!(matches!(
            log.append("a", event("t1", EventKind::Canceled), Some(s1))
                .await,
            Err(AppendError::Conflict)
        ));
        assert!(log.namespace_events("b").await.unwrap().is_empty());
        assert_eq!(log.namespace_events("a").await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_follower_gets_the_history_then_new_events() {
        let log = Arc::new(MemoryTaskLog::default());
        log.append("a", event("t1", EventKind::Created), None)
            .await
            .unwrap();
        let mut events = log.follow("a", "t1", 0).await.unwrap();
        log.report(event("t2", EventKind::Hop)).await.unwrap();
        log.report(event("t1", EventKind::Succeeded)).await.unwrap();
        let first = events.next().await.unwrap().unwrap();
        let second = events.next().await.unwrap().unwrap();
        assert_eq!(first.kind, EventKind::Created);
        assert_eq!(second.kind, EventKind::Succeeded);
    }
}
