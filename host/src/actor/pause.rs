//! The built-in `x-pause` step (human in the loop): a message routed here is stored, keyed by
//! its id, in the namespace's results store with `phase: paused`, and its task reports a
//! `paused` event with the human's prompt. Nothing publishes it on: the gateway's `resume`
//! reads it back, merges the human's input and sends it to the step after `x-pause`.

use crate::message::envelope::{now_rfc3339, Envelope, Phase, Reason};
use crate::message::routing;
use crate::message::task_event::{task_id, TaskEvent, TaskReporter, PAUSE};
use crate::transport::results::ResultStore;
use crate::transport::{Delivery, Transport};
use anyhow::{Context, Result};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Marks `env` paused at `x-pause` (the status the gateway finds when it resumes it).
pub fn pause_status(env: &mut Envelope, now: &str) {
    let status = env.status_mut(now);
    status.phase = Phase::Paused;
    status.reason = Some(Reason::Paused);
    status.actor = Some(PAUSE.to_owned());
    status.error = None;
    status.updated_at = Some(now.to_owned());
}

/// Runs `x-pause` on `transport` until `shutdown`: stores each message in `store`, then reports
/// its task paused to `tasks` (when the message is a gateway task and a reporter is given).
pub async fn run_pause_actor(
    transport: Arc<dyn Transport>,
    store: Arc<dyn ResultStore>,
    tasks: Option<Arc<dyn TaskReporter>>,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut subscription = transport
        .subscribe(PAUSE)
        .await
        .with_context(|| format!("subscribing to '{PAUSE}'"))?;
    while let Some(delivery) =
        crate::transport::next_delivery(subscription.as_mut(), &shutdown, PAUSE).await
    {
        pause_one(delivery, store.as_ref(), tasks.as_deref()).await?;
    }
    Ok(())
}

async fn pause_one(
    delivery: Delivery,
    store: &dyn ResultStore,
    tasks: Option<&dyn TaskReporter>,
) -> Result<()> {
    let now = now_rfc3339();
    let mut env = match serde_json::from_slice::<Envelope>(&delivery.bytes) {
        Ok(env) => env,
        Err(err) => {
            // Not an envelope: it cannot be resumed; it is kept as a ParseError instead.
            let failed =
                routing::parse_error_dispatch(PAUSE, &delivery.bytes, &err.to_string(), &now);
            return match store.put(&failed.destination, &failed.envelope).await {
                Ok(()) => delivery.acker.ack().await,
                Err(_) => delivery.acker.nak(None).await,
            };
        }
    };
    pause_status(&mut env, &now);
    let stored = async {
        store.put(PAUSE, &env).await?;
        if let (Some(tasks), Some(_)) = (tasks, task_id(&env)) {
            tasks.report(TaskEvent::paused(&env, &now)).await?;
        }
        anyhow::Ok(())
    };
    match stored.await {
        Ok(()) => {
            tracing::info!(envelope = %env.id, "message paused for a human");
            delivery.acker.ack().await
        }
        Err(err) => {
            tracing::warn!(envelope = %env.id, error = %format!("{err:#}"),
                "pausing the message failed; it will be redelivered");
            delivery.acker.nak(None).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::envelope::Route;
    use crate::message::task_event::{EventKind, TASK_HEADER};
    use crate::transport::embedded::EmbeddedTransport;
    use crate::transport::results::MemoryResults;
    use crate::transport::Outbound;
    use async_trait::async_trait;
    use std::sync::Mutex;
    use std::time::Duration;

    #[derive(Default)]
    struct Recorded(Mutex<Vec<TaskEvent>>);

    #[async_trait]
    impl TaskReporter for Recorded {
        async fn report(&self, event: TaskEvent) -> Result<()> {
            self.0.lock().unwrap().push(event);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_paused_message_is_stored_paused_and_its_task_reports_the_prompt() {
        let transport = Arc::new(EmbeddedTransport::new());
        let (store, mut stored) = MemoryResults::new();
        let recorded = Arc::new(Recorded::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_pause_actor(
            transport.clone(),
            store.clone(),
            Some(recorded.clone()),
            shutdown.clone(),
        ));
        let mut env = Envelope::new(
            Route::through(&["draft", PAUSE, "publish"])
                .unwrap()
                .advanced()
                .unwrap(),
            serde_json::json!({"pause_prompt": "Publish this draft?"}),
            "2026-12-02T00:00:00Z",
        );
        env.headers.insert(
            TASK_HEADER.into(),
            serde_json::Value::String(env.id.clone()),
        );
        transport
            .publish(
                PAUSE,
                Outbound {
                    bytes: env.to_bytes(),
                    dedup_id: "d".into(),
                },
            )
            .await
            .unwrap();
        let finished = tokio::time::timeout(Duration::from_secs(5), stored.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(finished.end_actor, PAUSE);
        let status = finished.envelope.status.unwrap();
        assert_eq!(status.phase, Phase::Paused);
        assert_eq!(status.reason, Some(Reason::Paused));
        // The report follows the store; wait for it.
        for _ in 0..100 {
            if !recorded.0.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let events = recorded.0.lock().unwrap().clone();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::Paused);
        assert_eq!(events[0].prompt.as_deref(), Some("Publish this draft?"));
        assert_eq!((events[0].hops, events[0].total_hops), (1, 2));
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }
}
