//! The built-in fan-in aggregator `x-fanin`: it collects the children of a flow's fan-out and the
//! parked parent, and when all have arrived sends the parent on with the merged results (see
//! [`crate::message::flow`] for the message shapes).
//!
//! State lives in a [`FanInStore`]: in memory on the embedded transport, and in a JetStream
//! key-value bucket on NATS, so a fan-in survives a host restart. Each arrival is stored before its
//! delivery is acknowledged; the merged parent is published before the completing delivery is
//! acknowledged, so a crash in between means redelivery, never loss.

use crate::message::envelope::{now_rfc3339, Envelope};
use crate::message::flow::{self, FanInRole, FANIN};
use crate::message::routing;
use crate::message::status::Dispatch;
use crate::transport::{Outbound, Transport};
use anyhow::{Context, Result};
use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One fan-out being collected.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Partial {
    /// The parked parent, once it arrived.
    #[serde(default)]
    pub parent: Option<Envelope>,
    /// Children that ended, by index.
    #[serde(default)]
    pub children: BTreeMap<usize, Envelope>,
    /// Number of children expected (known from either side).
    #[serde(default)]
    pub count: usize,
    /// Set once the merged parent was sent; later duplicates are dropped.
    #[serde(default)]
    pub done: bool,
}

impl Partial {
    fn add(&mut self, role: &FanInRole, env: Envelope) {
        match role {
            FanInRole::Parent { count } => {
                self.count = *count;
                self.parent = Some(env);
            }
            FanInRole::Child { index, count, .. } => {
                self.count = *count;
                self.children.insert(*index, env);
            }
        }
    }

    fn complete(&self) -> bool {
        !self.done && self.parent.is_some() && self.children.len() == self.count
    }
}

/// What an arrival did.
#[derive(Debug)]
pub enum Arrival {
    /// Stored; more parts are missing.
    Waiting,
    /// This arrival completed the fan-out: the parent and its children, in index order.
    Complete(Box<Envelope>, Vec<Envelope>),
    /// The fan-out was already merged (a redelivered duplicate).
    AlreadyDone,
}

/// Where partial fan-ins are kept.
#[async_trait]
pub trait FanInStore: Send + Sync {
    /// Records `env` (in `role`) under fan-out `parent_id`; returns the parts when every one has
    /// arrived (again on each later arrival until [`FanInStore::finish`]).
    async fn arrive(&self, parent_id: &str, role: &FanInRole, env: Envelope) -> Result<Arrival>;
    /// Marks fan-out `parent_id` merged (after its parent was published): its parts are dropped
    /// and late duplicates ignored.
    async fn finish(&self, parent_id: &str) -> Result<()>;
}

/// Fan-ins kept in memory (embedded transport): lost with the process, like its queues.
#[derive(Default)]
pub struct MemoryFanIn {
    inner: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    open: HashMap<String, Partial>,
    done: HashSet<String>,
    done_order: VecDeque<String>,
}

/// How many finished fan-outs the in-memory store remembers, to drop late duplicates.
const REMEMBER_DONE: usize = 100_000;

#[async_trait]
impl FanInStore for MemoryFanIn {
    async fn arrive(&self, parent_id: &str, role: &FanInRole, env: Envelope) -> Result<Arrival> {
        let mut state = self.inner.lock().expect("fan-in lock");
        if state.done.contains(parent_id) {
            return Ok(Arrival::AlreadyDone);
        }
        let partial = state.open.entry(parent_id.to_owned()).or_default();
        partial.add(role, env);
        if !partial.complete() {
            return Ok(Arrival::Waiting);
        }
        Ok(Arrival::Complete(
            Box::new(partial.parent.clone().expect("complete has a parent")),
            partial.children.values().cloned().collect(),
        ))
    }

    async fn finish(&self, parent_id: &str) -> Result<()> {
        let mut state = self.inner.lock().expect("fan-in lock");
        state.open.remove(parent_id);
        if state.done.insert(parent_id.to_owned()) {
            state.done_order.push_back(parent_id.to_owned());
        }
        if state.done_order.len() > REMEMBER_DONE {
            if let Some(old) = state.done_order.pop_front() {
                state.done.remove(&old);
            }
        }
        Ok(())
    }
}

/// Fan-ins kept in the JetStream key-value bucket `ASYA_FANIN_<NAMESPACE>`: one key per fan-out,
/// updated with compare-and-set, so several hosts may run the aggregator at once.
pub struct NatsFanIn {
    store: kv::Store,
}

impl NatsFanIn {
    /// Opens (or creates) the bucket for `namespace`. Finished fan-outs are remembered for a day.
    pub async fn open(js: &jetstream::Context, namespace: &str) -> Result<Self> {
        let bucket = asya_spec::names::fanin_bucket(namespace);
        let store = match js.get_key_value(&bucket).await {
            Ok(store) => store,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: bucket.clone(),
                    history: 1,
                    max_age: Duration::from_secs(24 * 3600),
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .with_context(|| format!("creating key-value bucket {bucket}"))?,
        };
        Ok(NatsFanIn { store })
    }
}

#[async_trait]
impl FanInStore for NatsFanIn {
    async fn arrive(&self, parent_id: &str, role: &FanInRole, env: Envelope) -> Result<Arrival> {
        let key = crate::transport::nats::result_key(parent_id);
        for _ in 0..100 {
            let entry = self
                .store
                .entry(&key)
                .await
                .map_err(|e| anyhow::anyhow!("reading fan-in {parent_id}: {e}"))?;
            let (mut partial, revision) = match &entry {
                Some(e) if e.operation == kv::Operation::Put => (
                    serde_json::from_slice::<Partial>(&e.value)
                        .context("stored fan-in state is not valid")?,
                    Some(e.revision),
                ),
                Some(e) => (Partial::default(), Some(e.revision)),
                None => (Partial::default(), None),
            };
            if partial.done {
                return Ok(Arrival::AlreadyDone);
            }
            partial.add(role, env.clone());
            let complete = partial.complete();
            let bytes = serde_json::to_vec(&partial).expect("fan-in state serialises");
            let written = match revision {
                Some(rev) => self.store.update(&key, bytes.into(), rev).await.is_ok(),
                None => self.store.create(&key, bytes.into()).await.is_ok(),
            };
            if !written {
                // Another arrival changed the key first: read it again and retry.
                continue;
            }
            if !complete {
                return Ok(Arrival::Waiting);
            }
            return Ok(Arrival::Complete(
                Box::new(partial.parent.expect("complete has a parent")),
                partial.children.into_values().collect(),
            ));
        }
        anyhow::bail!("fan-in {parent_id}: too many concurrent updates")
    }

    async fn finish(&self, parent_id: &str) -> Result<()> {
        // Only a small tombstone stays behind (it expires with the bucket's max age).
        let tombstone = Partial {
            done: true,
            ..Partial::default()
        };
        let bytes = serde_json::to_vec(&tombstone).expect("fan-in state serialises");
        self.store
            .put(crate::transport::nats::result_key(parent_id), bytes.into())
            .await
            .map_err(|e| anyhow::anyhow!("finishing fan-in {parent_id}: {e}"))?;
        Ok(())
    }
}

fn publish_dedup_id(d: &Dispatch) -> String {
    asya_spec::names::dedup_id(&d.envelope.id, d.envelope.route.prev.len(), &d.destination)
}

/// Runs the aggregator on `transport` until `shutdown`.
pub async fn run_fanin(
    transport: Arc<dyn Transport>,
    store: Arc<dyn FanInStore>,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut subscription = transport
        .subscribe(FANIN)
        .await
        .with_context(|| format!("subscribing to '{FANIN}'"))?;
    loop {
        let Some(delivery) =
            crate::transport::next_delivery(subscription.as_mut(), &shutdown, FANIN).await
        else {
            return Ok(());
        };
        let now = now_rfc3339();
        let parsed = serde_json::from_slice::<Envelope>(&delivery.bytes)
            .map_err(|e| e.to_string())
            .and_then(|env| flow::fanin_role(&env).map(|role| (env, role)));
        let (env, role) = match parsed {
            Ok(ok) => ok,
            Err(message) => {
                // Not something the aggregator can merge: keep it at the error end.
                let dispatch =
                    routing::parse_error_dispatch(FANIN, &delivery.bytes, &message, &now);
                transport
                    .publish(
                        &dispatch.destination,
                        Outbound {
                            bytes: dispatch.envelope.to_bytes(),
                            dedup_id: publish_dedup_id(&dispatch),
                        },
                    )
                    .await?;
                delivery.acker.ack().await?;
                continue;
            }
        };
        let parent_id = match &role {
            FanInRole::Parent { .. } => flow::fanout_key(&env),
            FanInRole::Child { parent, .. } => parent.clone(),
        };
        match store.arrive(&parent_id, &role, env).await {
            Ok(Arrival::Complete(parent, children)) => {
                let dispatch = flow::complete(*parent, children, &now);
                tracing::debug!(parent = %parent_id, to = %dispatch.destination, "fan-in complete");
                let published = transport
                    .publish(
                        &dispatch.destination,
                        Outbound {
                            bytes: dispatch.envelope.to_bytes(),
                            dedup_id: publish_dedup_id(&dispatch),
                        },
                    )
                    .await;
                // A second host merging the same fan-out publishes the same dedup id, which
                // JetStream drops; the merged parent is never lost, at worst sent twice.
                let published = match published {
                    Ok(()) => store.finish(&parent_id).await,
                    Err(err) => Err(err),
                };
                match published {
                    Ok(()) => delivery.acker.ack().await?,
                    Err(err) => {
                        tracing::warn!(parent = %parent_id, error = %format!("{err:#}"),
                            "publishing the merged fan-in failed; it will be redelivered");
                        delivery.acker.nak(Some(Duration::from_millis(200))).await?;
                    }
                }
            }
            Ok(Arrival::Waiting | Arrival::AlreadyDone) => delivery.acker.ack().await?,
            Err(err) => {
                tracing::warn!(parent = %parent_id, error = %format!("{err:#}"),
                    "storing a fan-in part failed; it will be redelivered");
                delivery.acker.nak(Some(Duration::from_millis(200))).await?;
            }
        }
    }
}
