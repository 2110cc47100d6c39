//! The embedded transport: every queue is an in-process channel. No server, no persistence; for
//! local development (`asya dev`), tests and benchmarks.
//!
//! Queues are created on first use by either side. Channels are unbounded so that routes with
//! cycles (a judge sending back to an earlier step) cannot deadlock; the amount of work in the
//! mesh is bounded where it enters, by the caller's in-flight window (see [`crate::dev`]).

use super::{Acker, Delivery, Outbound, Subscription, Transport};
use anyhow::{bail, Result};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// A message seen crossing the embedded bus: for `asya dev`'s hop display and for tests.
#[derive(Debug, Clone)]
pub struct Hop {
    /// The queue it was published to.
    pub destination: String,
    /// The envelope bytes.
    pub bytes: Vec<u8>,
}

struct Queue {
    tx: mpsc::UnboundedSender<Queued>,
    rx: Option<mpsc::UnboundedReceiver<Queued>>,
}

struct Queued {
    bytes: bytes::Bytes,
    delivered: u64,
    published: time::OffsetDateTime,
}

/// In-process queues, one per actor.
#[derive(Clone, Default)]
pub struct EmbeddedTransport {
    queues: Arc<Mutex<HashMap<String, Queue>>>,
    tap: Arc<Mutex<Option<mpsc::UnboundedSender<Hop>>>>,
}

impl EmbeddedTransport {
    /// A transport with no queues yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every message published from now on is also copied to the returned receiver.
    pub fn tap(&self) -> mpsc::UnboundedReceiver<Hop> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.tap.lock().expect("tap lock") = Some(tx);
        rx
    }

    fn sender(&self, actor: &str) -> mpsc::UnboundedSender<Queued> {
        let mut queues = self.queues.lock().expect("queues lock");
        queues
            .entry(actor.to_owned())
            .or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                Queue { tx, rx: Some(rx) }
            })
            .tx
            .clone()
    }
}

struct EmbeddedSubscription {
    rx: mpsc::UnboundedReceiver<Queued>,
    requeue: mpsc::UnboundedSender<Queued>,
}

struct EmbeddedAcker {
    requeue: Option<(mpsc::UnboundedSender<Queued>, Queued)>,
}

#[async_trait]
impl Acker for EmbeddedAcker {
    async fn ack(self: Box<Self>) -> Result<()> {
        Ok(())
    }

    async fn nak(self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        if let Some((tx, mut msg)) = self.requeue {
            msg.delivered += 1;
            if let Some(delay) = delay {
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx.send(msg);
                });
            } else {
                let _ = tx.send(msg);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Subscription for EmbeddedSubscription {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        let msg = self.rx.recv().await?;
        Some(Ok(Delivery {
            bytes: msg.bytes.clone(),
            delivered: msg.delivered,
            published: Some(msg.published),
            acker: Box::new(EmbeddedAcker {
                requeue: Some((self.requeue.clone(), msg)),
            }),
        }))
    }
}

#[async_trait]
impl Transport for EmbeddedTransport {
    async fn subscribe(&self, actor: &str) -> Result<Box<dyn Subscription>> {
        let requeue = self.sender(actor);
        let mut queues = self.queues.lock().expect("queues lock");
        let queue = queues.get_mut(actor).expect("created by sender()");
        let Some(rx) = queue.rx.take() else {
            bail!("embedded queue '{actor}' already has a consumer");
        };
        Ok(Box::new(EmbeddedSubscription { rx, requeue }))
    }

    async fn publish(&self, actor: &str, message: Outbound) -> Result<()> {
        if let Some(tap) = self.tap.lock().expect("tap lock").as_ref() {
            let _ = tap.send(Hop {
                destination: actor.to_owned(),
                bytes: message.bytes.clone(),
            });
        }
        let tx = self.sender(actor);
        let queued = Queued {
            bytes: message.bytes.into(),
            delivered: 1,
            published: time::OffsetDateTime::now_utc(),
        };
        if tx.send(queued).is_err() {
            bail!("embedded queue '{actor}' is closed");
        }
        Ok(())
    }
}
