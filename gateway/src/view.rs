//! A task's status as clients see it: the fold of its events (pure, no I/O).

use asya_host::message::task_event::{EventKind, TaskEvent};
use serde::Serialize;
use serde_json::Value;

/// What a pause asks of the human.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pause {
    /// The question.
    pub prompt: String,
    /// A JSON Schema of the expected input, if the step gave one.
    pub schema: Option<Value>,
}

/// A task's status (`GET /v1/tasks/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskView {
    /// Task (envelope) id.
    pub id: String,
    /// The tenant's namespace.
    pub namespace: String,
    /// The tool it was created through, if any.
    pub tool: Option<String>,
    /// The route it was created with.
    pub route: Vec<String>,
    /// `pending`, `processing`, `retrying`, `paused`, `succeeded`, `failed` or `canceled`.
    pub phase: String,
    /// Where it is (or ended).
    pub actor: Option<String>,
    /// Steps done.
    pub hops: usize,
    /// Steps in all, as known now.
    pub total_hops: usize,
    /// `hops / total_hops`.
    pub progress: f64,
    /// Attempt at `actor`.
    pub attempt: u32,
    /// When it was created.
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// When it expires.
    pub deadline_at: Option<String>,
    /// The final payload (succeeded).
    pub result: Option<Value>,
    /// Why it is in its phase.
    pub reason: Option<String>,
    /// The error that ended it (failed).
    pub error: Option<Value>,
    /// What a paused task asks.
    pub pause: Option<Pause>,
    /// Sequence of the last event folded in (the `expect_last` of a guarded append).
    #[serde(skip)]
    pub last_seq: u64,
}

impl TaskView {
    /// Folds `events` (in order) into a view; `None` without a `created` event first (no such
    /// task for this tenant). Events after a terminal one are stale (a canceled task's message
    /// still moving) and are ignored.
    pub fn fold<'a>(
        namespace: &str,
        events: impl IntoIterator<Item = &'a TaskEvent>,
    ) -> Option<TaskView> {
        let mut events = events.into_iter();
        let first = events.next()?;
        if first.kind != EventKind::Created {
            return None;
        }
        let mut view = TaskView {
            id: first.task.clone(),
            namespace: namespace.to_owned(),
            tool: first.tool.clone(),
            route: first.route.clone().unwrap_or_default(),
            phase: "pending".into(),
            actor: first.actor.clone(),
            hops: first.hops,
            total_hops: first.total_hops,
            progress: first.progress,
            attempt: first.attempt,
            created_at: first.at.clone(),
            updated_at: first.at.clone(),
            deadline_at: first.deadline_at.clone(),
            result: None,
            reason: None,
            error: None,
            pause: None,
            last_seq: first.seq,
        };
        for event in events {
            view.last_seq = view.last_seq.max(event.seq);
            if view.is_terminal() {
                continue;
            }
            view.apply(event);
        }
        Some(view)
    }

    fn apply(&mut self, event: &TaskEvent) {
        self.phase = match event.kind {
            EventKind::Created | EventKind::Hop | EventKind::Resumed => "processing",
            EventKind::Retrying => "retrying",
            EventKind::Paused => "paused",
            EventKind::Succeeded => "succeeded",
            EventKind::Failed => "failed",
            EventKind::Canceled => "canceled",
        }
        .into();
        if event.actor.is_some() {
            self.actor = event.actor.clone();
        }
        self.hops = event.hops;
        self.total_hops = event.total_hops;
        self.progress = event.progress;
        self.attempt = event.attempt;
        self.updated_at = event.at.clone();
        self.reason = event.reason.clone();
        self.pause = (event.kind == EventKind::Paused).then(|| Pause {
            prompt: event.prompt.clone().unwrap_or_default(),
            schema: event.schema.clone(),
        });
        match event.kind {
            EventKind::Succeeded => self.result = event.result.clone(),
            EventKind::Failed => self.error = event.error.clone(),
            _ => {}
        }
    }

    /// Whether the task has ended.
    pub fn is_terminal(&self) -> bool {
        matches!(self.phase.as_str(), "succeeded" | "failed" | "canceled")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, kind: EventKind, actor: &str, hops: usize) -> TaskEvent {
        TaskEvent {
            task: "t".into(),
            seq,
            kind,
            at: format!("2026-12-02T00:00:0{seq}Z"),
            actor: Some(actor.into()),
            hops,
            total_hops: 2,
            progress: hops as f64 / 2.0,
            attempt: 1,
            result: (kind == EventKind::Succeeded).then(|| serde_json::json!({"ok": true})),
            reason: None,
            error: None,
            prompt: (kind == EventKind::Paused).then(|| "Approve?".to_owned()),
            schema: None,
            tool: None,
            route: (kind == EventKind::Created).then(|| vec!["a".into(), "b".into()]),
            deadline_at: None,
        }
    }

    #[test]
    fn events_fold_into_the_latest_status() {
        let events = [
            event(1, EventKind::Created, "a", 0),
            event(2, EventKind::Hop, "b", 1),
            event(3, EventKind::Succeeded, "b", 2),
        ];
        let view = TaskView::fold("ns", &events).unwrap();
        assert_eq!(view.phase, "succeeded");
        assert_eq!(view.result, Some(serde_json::json!({"ok": true})));
        assert_eq!(view.route, vec!["a", "b"]);
        assert_eq!(view.last_seq, 3);
        assert!(view.is_terminal());
    }

    #[test]
    fn a_pause_shows_its_prompt_until_resumed() {
        let mut events = vec![
            event(1, EventKind::Created, "a", 0),
            event(2, EventKind::Paused, "x-pause", 1),
        ];
        let view = TaskView::fold("ns", &events).unwrap();
        assert_eq!(view.phase, "paused");
        assert_eq!(view.pause.unwrap().prompt, "Approve?");
        events.push(event(3, EventKind::Resumed, "b", 1));
        let view = TaskView::fold("ns", &events).unwrap();
        assert_eq!(view.phase, "processing");
        assert!(view.pause.is_none());
    }

    #[test]
    fn events_after_the_end_are_ignored_and_a_history_needs_its_creation() {
        let events = [
            event(1, EventKind::Created, "a", 0),
            event(2, EventKind::Canceled, "a", 0),
            event(3, EventKind::Hop, "b", 1),
        ];
        let view = TaskView::fold("ns", &events).unwrap();
        assert_eq!(view.phase, "canceled");
        assert_eq!(view.last_seq, 3);
        assert!(TaskView::fold("ns", &events[1..]).is_none());
        assert!(TaskView::fold("ns", &[]).is_none());
    }
}
