//! Task events: what hosts report about each hop of a message a gateway tracks (an envelope
//! whose `asya-task` header holds its own id), and the [`TaskReporter`] the sidecar reports to.
//!
//! A task's events, in order, are its whole history: `created` (the gateway), one `hop` per
//! actor it moves to, `retrying`, `paused`/`resumed`, and one terminal event (`succeeded`,
//! `failed`, `canceled`). Every event carries a snapshot of where the task is (actor, hops done
//! of the route's total), so a late subscriber needs no other source. Events are at least once:
//! a redelivered hop reports again, with the same content.

use crate::message::envelope::{Envelope, Phase, Route};
use crate::message::status::Dispatch;
use anyhow::Result;
use asya_spec::names::{is_reserved, SINK, SUMP};
pub use asya_spec::names::{PAUSE, TASK_HEADER};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The header an envelope-mode handler sets to ask the human something when it pauses.
pub const PAUSE_PROMPT_HEADER: &str = "asya-pause-prompt";
/// The header with a JSON Schema of the input the human should give (optional).
pub const PAUSE_SCHEMA_HEADER: &str = "asya-pause-schema";
/// The payload key a payload-mode handler sets to ask the human something (removed on resume).
pub const PAUSE_PROMPT_KEY: &str = "pause_prompt";
/// The prompt of a pause that names none.
pub const DEFAULT_PAUSE_PROMPT: &str = "Review the payload and resume the task.";

/// What happened to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The gateway published the task's first message.
    Created,
    /// The message moved on to `actor`.
    Hop,
    /// The handler failed; the message goes back to `actor` for another attempt.
    Retrying,
    /// The message waits at `x-pause` for a human.
    Paused,
    /// A human resumed the message; it goes on to `actor`.
    Resumed,
    /// The route ended at `x-sink`; `result` is the final payload.
    Succeeded,
    /// The message ended at `x-sump`; `reason` and `error` say why.
    Failed,
    /// A client canceled the task.
    Canceled,
}

impl EventKind {
    /// Whether no event follows this one (later ones are stale and ignored).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            EventKind::Succeeded | EventKind::Failed | EventKind::Canceled
        )
    }

    /// The wire name (`hop`, `succeeded`, ...): also the SSE event name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Hop => "hop",
            EventKind::Retrying => "retrying",
            EventKind::Paused => "paused",
            EventKind::Resumed => "resumed",
            EventKind::Succeeded => "succeeded",
            EventKind::Failed => "failed",
            EventKind::Canceled => "canceled",
        }
    }
}

/// One event of a task, with a snapshot of where the task is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    /// The task (and envelope) id.
    pub task: String,
    /// Position in the task's history, from 1; set by the task log that stores the event.
    #[serde(default)]
    pub seq: u64,
    /// What happened.
    pub kind: EventKind,
    /// When (RFC 3339).
    pub at: String,
    /// Where the message is now: the actor it moved to, or the one it ended at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Steps of the route done (built-in steps such as `x-pause` not counted).
    #[serde(default)]
    pub hops: usize,
    /// Steps of the route in all, as far as it is known now (a handler may add steps).
    #[serde(default)]
    pub total_hops: usize,
    /// `hops / total_hops` (1 once the task ended successfully).
    #[serde(default)]
    pub progress: f64,
    /// Attempt number at `actor`.
    #[serde(default = "one")]
    pub attempt: u32,
    /// The final payload (`succeeded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why the task is in its phase (`failed`: `HandlerError`, `DeadlineExpired`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The error that ended the task (`failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    /// What the human is asked (`paused`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// A JSON Schema of the input the human should give (`paused`, optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// The tool the task was created through (`created`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The route the task was created with (`created`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Vec<String>>,
    /// When the task expires (`created`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_at: Option<String>,
}

fn one() -> u32 {
    1
}

/// The task id of `env` if a gateway tracks it: the `asya-task` header names the envelope's
/// own id (fan-out children and error envelopes derived from a task have ids of their own and
/// are not reported).
pub fn task_id(env: &Envelope) -> Option<&str> {
    env.headers
        .get(TASK_HEADER)
        .and_then(Value::as_str)
        .filter(|id| *id == env.id)
}

/// Steps of `route` done and in all, built-in steps (`x-sink`, `x-pause`, ...) not counted.
pub fn route_progress(route: &Route) -> (usize, usize) {
    let counts = |name: &String| !is_reserved(name);
    let done = route.prev.iter().filter(|s| counts(s)).count();
    let rest = usize::from(counts(&route.curr)) + route.next.iter().filter(|s| counts(s)).count();
    (done, done + rest)
}

impl TaskEvent {
    /// An event of `kind` about `env`, with its route's progress and its status' attempt.
    pub fn about(kind: EventKind, env: &Envelope, actor: Option<&str>, at: &str) -> TaskEvent {
        let (hops, total_hops) = route_progress(&env.route);
        let progress = if kind == EventKind::Succeeded {
            1.0
        } else if total_hops == 0 {
            0.0
        } else {
            hops as f64 / total_hops as f64
        };
        TaskEvent {
            task: env.id.clone(),
            seq: 0,
            kind,
            at: at.to_owned(),
            actor: actor.map(str::to_owned),
            hops,
            total_hops,
            progress,
            attempt: env.status.as_ref().map_or(1, |s| s.attempt),
            result: None,
            reason: env
                .status
                .as_ref()
                .and_then(|s| s.reason)
                .map(|r| r.as_str().to_owned()),
            error: env
                .status
                .as_ref()
                .and_then(|s| s.error.as_ref())
                .and_then(|e| serde_json::to_value(e).ok()),
            prompt: None,
            schema: None,
            tool: None,
            route: None,
            deadline_at: None,
        }
    }

    /// The event a sidecar reports before publishing `dispatch` (`None`: not a tracked task).
    pub fn for_dispatch(dispatch: &Dispatch, at: &str) -> Option<TaskEvent> {
        let env = &dispatch.envelope;
        task_id(env)?;
        let to = dispatch.destination.as_str();
        let retrying = env
            .status
            .as_ref()
            .is_some_and(|s| s.phase == Phase::Retrying);
        let kind = match to {
            SINK => EventKind::Succeeded,
            SUMP => EventKind::Failed,
            _ if retrying => EventKind::Retrying,
            _ => EventKind::Hop,
        };
        // An ended message's route ends at the end actor; the actor it ended at is the one
        // that last touched it.
        let actor = match kind {
            EventKind::Succeeded | EventKind::Failed => env
                .status
                .as_ref()
                .and_then(|s| s.actor.clone())
                .unwrap_or_else(|| to.to_owned()),
            _ => to.to_owned(),
        };
        let mut event = TaskEvent::about(kind, env, Some(&actor), at);
        if kind == EventKind::Succeeded {
            event.result = Some(env.payload.clone());
            event.hops = event.total_hops;
        }
        Some(event)
    }

    /// The event `x-pause` reports once it has stored `env`: the human's prompt comes from the
    /// `asya-pause-prompt` header, else the payload's `pause_prompt`, else a default.
    pub fn paused(env: &Envelope, at: &str) -> TaskEvent {
        let mut event = TaskEvent::about(EventKind::Paused, env, Some(PAUSE), at);
        let prompt = env
            .headers
            .get(PAUSE_PROMPT_HEADER)
            .or_else(|| env.payload.get(PAUSE_PROMPT_KEY))
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_PAUSE_PROMPT);
        event.prompt = Some(prompt.to_owned());
        event.schema = env
            .headers
            .get(PAUSE_SCHEMA_HEADER)
            .filter(|s| s.is_object())
            .cloned();
        event.reason = Some("Paused".to_owned());
        event
    }

    /// The deduplication id of a host-reported event: a redelivered hop reports the same event
    /// again, which a log with deduplication (JetStream's `Nats-Msg-Id`) drops.
    pub fn dedup_id(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.task,
            self.kind.as_str(),
            self.hops,
            self.attempt
        )
    }
}

/// Where hosts report task events (one per namespace): the JetStream task log on NATS, the
/// gateway's in-memory log on the embedded transport.
#[async_trait]
pub trait TaskReporter: Send + Sync {
    /// Stores `event` durably; the sidecar acknowledges its input only after this.
    async fn report(&self, event: TaskEvent) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::status;

    fn tracked(route: &[&str]) -> Envelope {
        let mut env = Envelope::new(
            Route::through(route).unwrap(),
            serde_json::json!({"text": "hi"}),
            "2026-12-02T00:00:00Z",
        );
        env.headers
            .insert(TASK_HEADER.to_owned(), Value::String(env.id.clone()));
        env
    }

    #[test]
    fn only_an_envelope_naming_itself_is_a_task() {
        let mut env = tracked(&["a"]);
        assert_eq!(task_id(&env), Some(env.id.as_str()));
        env.id = "child".into();
        assert_eq!(task_id(&env), None);
        env.headers.clear();
        assert_eq!(task_id(&env), None);
    }

    #[test]
    fn progress_counts_actors_not_built_in_steps() {
        let route = Route::through(&["a", PAUSE, "b", "c"]).unwrap();
        assert_eq!(route_progress(&route), (0, 3));
        let route = route.advanced().unwrap().advanced().unwrap();
        assert_eq!(route.curr, "b");
        assert_eq!(route_progress(&route), (1, 3));
        // Ended at the last step: every actor done.
        let last = route.advanced().unwrap();
        assert_eq!(route_progress(&last.ended_at(SINK)), (3, 3));
    }

    #[test]
    fn a_hop_a_success_and_a_pause_carry_their_snapshots() {
        let env = tracked(&["a", "b"]);
        let mut moved = env.clone();
        moved.route = moved.route.advanced().unwrap();
        let hop = TaskEvent::for_dispatch(&status::to_current_step(moved, "t1"), "t1").unwrap();
        assert_eq!(hop.kind, EventKind::Hop);
        assert_eq!(hop.actor.as_deref(), Some("b"));
        assert_eq!((hop.hops, hop.total_hops), (1, 2));
        assert!((hop.progress - 0.5).abs() < 1e-9);

        let done = status::finish(env.clone(), "b", "t2");
        let done = TaskEvent::for_dispatch(&done, "t2").unwrap();
        assert_eq!(done.kind, EventKind::Succeeded);
        assert_eq!(done.actor.as_deref(), Some("b"));
        assert_eq!(done.result, Some(serde_json::json!({"text": "hi"})));
        assert_eq!(done.progress, 1.0);

        let mut asks = env.clone();
        asks.payload = serde_json::json!({"pause_prompt": "Approve?"});
        let paused = TaskEvent::paused(&asks, "t3");
        assert_eq!(paused.prompt.as_deref(), Some("Approve?"));
        asks.headers.insert(
            PAUSE_PROMPT_HEADER.into(),
            Value::String("From header".into()),
        );
        assert_eq!(
            TaskEvent::paused(&asks, "t3").prompt.as_deref(),
            Some("From header")
        );
        asks.headers.remove(PAUSE_PROMPT_HEADER);
        asks.payload = serde_json::json!({});
        assert_eq!(
            TaskEvent::paused(&asks, "t3").prompt.as_deref(),
            Some(DEFAULT_PAUSE_PROMPT)
        );
    }

    #[test]
    fn untracked_messages_report_nothing() {
        let env = Envelope::new(
            Route::through(&["a"]).unwrap(),
            serde_json::json!({}),
            "2026-12-02T00:00:00Z",
        );
        assert!(TaskEvent::for_dispatch(&status::finish(env, "a", "t"), "t").is_none());
    }

    #[test]
    fn events_round_trip_and_name_their_kind() {
        let env = tracked(&["a"]);
        let event = TaskEvent::about(EventKind::Created, &env, Some("a"), "t");
        let back: TaskEvent = serde_json::from_slice(&serde_json::to_vec(&event).unwrap()).unwrap();
        assert_eq!(back, event);
        assert!(serde_json::to_string(&event)
            .unwrap()
            .contains("\"kind\":\"created\""));
        assert!(EventKind::Canceled.is_terminal() && !EventKind::Paused.is_terminal());
    }
}
