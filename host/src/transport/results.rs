//! Where final envelopes are kept: the [`ResultStore`] interface every transport's store
//! implements (the NATS key-value bucket in [`crate::transport::nats`]) and the in-memory store
//! of the embedded transport.

use crate::message::envelope::Envelope;
use anyhow::Result;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Where final envelopes are kept.
#[async_trait]
pub trait ResultStore: Send + Sync {
    /// Stores the final envelope of a message that ended at `end_actor`.
    async fn put(&self, end_actor: &str, envelope: &Envelope) -> Result<()>;
    /// Stores like [`ResultStore::put`], for a message that may be stored again after a
    /// redelivery: a store that can drop a repeat of `dedup_id` does (the default stores again;
    /// a result is keyed by envelope id, so a repeat overwrites, it never adds).
    async fn put_once(&self, end_actor: &str, envelope: &Envelope, dedup_id: &str) -> Result<()> {
        let _ = dedup_id;
        self.put(end_actor, envelope).await
    }
    /// The final envelope of message `id`, if it has ended.
    async fn get(&self, id: &str) -> Result<Option<Envelope>>;
    /// How many `put`s an end actor keeps in flight. A store whose writes are round trips (a
    /// key-value bucket on a server) needs several, or one end actor caps the pipeline's rate;
    /// one (the default) keeps results in arrival order.
    fn concurrency(&self) -> usize {
        1
    }
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
