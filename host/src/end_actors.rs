//! The built-in end actors `x-sink` and `x-sump`: they run inside the host, take finished
//! messages off their queues and persist the final envelope, keyed by envelope id, so a client
//! can fetch a result by id.

use crate::envelope::{Envelope, SINK, SUMP};
use crate::routing;
use crate::transport::Transport;
use anyhow::{Context, Result};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Where final envelopes are kept.
#[async_trait]
pub trait ResultStore: Send + Sync {
    /// Stores the final envelope of a message that ended at `end_actor`.
    async fn put(&self, end_actor: &str, envelope: &Envelope) -> Result<()>;
    /// The final envelope of message `id`, if it has ended.
    async fn get(&self, id: &str) -> Result<Option<Envelope>>;
}

/// A final envelope and the end actor that received it.
#[derive(Debug, Clone)]
pub struct Finished {
    /// `x-sink` or `x-sump`.
    pub end_actor: String,
    /// The final envelope.
    pub envelope: Envelope,
}

/// Results kept in memory (embedded transport), also streamed to a listener in arrival order.
pub struct MemoryResults {
    by_id: Mutex<HashMap<String, Envelope>>,
    listener: mpsc::UnboundedSender<Finished>,
}

impl MemoryResults {
    /// A store and the receiver of everything stored in it.
    pub fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<Finished>) {
        let (listener, rx) = mpsc::unbounded_channel();
        (
            Arc::new(MemoryResults {
                by_id: Mutex::default(),
                listener,
            }),
            rx,
        )
    }
}

#[async_trait]
impl ResultStore for MemoryResults {
    async fn put(&self, end_actor: &str, envelope: &Envelope) -> Result<()> {
        self.by_id
            .lock()
            .expect("results lock")
            .insert(envelope.id.clone(), envelope.clone());
        let _ = self.listener.send(Finished {
            end_actor: end_actor.to_owned(),
            envelope: envelope.clone(),
        });
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<Envelope>> {
        Ok(self.by_id.lock().expect("results lock").get(id).cloned())
    }
}

/// Runs `x-sink` and `x-sump` on `transport` until `shutdown`, storing into `store`.
pub async fn run_end_actors(
    transport: Arc<dyn Transport>,
    store: Arc<dyn ResultStore>,
    shutdown: CancellationToken,
) -> Result<()> {
    let sink = run_end_actor(SINK, transport.clone(), store.clone(), shutdown.clone());
    let sump = run_end_actor(SUMP, transport, store, shutdown);
    tokio::try_join!(sink, sump)?;
    Ok(())
}

async fn run_end_actor(
    name: &'static str,
    transport: Arc<dyn Transport>,
    store: Arc<dyn ResultStore>,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut subscription = transport
        .subscribe(name)
        .await
        .with_context(|| format!("subscribing to '{name}'"))?;
    loop {
        let Some(delivery) =
            crate::transport::next_delivery(subscription.as_mut(), &shutdown, name).await
        else {
            return Ok(());
        };
        let envelope = match serde_json::from_slice::<Envelope>(&delivery.bytes) {
            Ok(env) => env,
            Err(err) => {
                // Garbage published straight to an end actor is still kept, as a ParseError.
                routing::parse_error_dispatch(
                    name,
                    &delivery.bytes,
                    &err.to_string(),
                    &crate::envelope::now_rfc3339(),
                )
                .envelope
            }
        };
        match store.put(name, &envelope).await {
            Ok(()) => delivery.acker.ack().await?,
            Err(err) => {
                tracing::warn!(actor = name, envelope = %envelope.id, error = %format!("{err:#}"),
                    "storing the result failed; it will be redelivered");
                delivery.acker.nak(None).await?;
            }
        }
    }
}
