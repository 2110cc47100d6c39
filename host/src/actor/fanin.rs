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
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// One fan-out being collected (in memory).
#[derive(Debug, Clone)]
struct Partial {
    /// The parked parent, once it arrived.
    parent: Option<Envelope>,
    /// Children that ended, by index.
    children: BTreeMap<usize, Envelope>,
    /// Number of children expected (known from either side).
    count: usize,
    /// When its first part arrived (the fan-in timeout counts from here).
    first: Instant,
}

impl Partial {
    fn new() -> Self {
        Partial {
            parent: None,
            children: BTreeMap::new(),
            count: 0,
            first: Instant::now(),
        }
    }

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
        self.parent.is_some() && self.children.len() == self.count
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

/// A fan-out that did not complete within the fan-in timeout.
#[derive(Debug)]
pub struct Expired {
    /// The fan-out's key.
    pub parent_id: String,
    /// The parked parent, if it arrived.
    pub parent: Option<Envelope>,
    /// Children that arrived.
    pub arrived: usize,
    /// Children expected.
    pub count: usize,
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
    /// Open fan-outs whose first part arrived more than `timeout` ago.
    async fn expired(&self, timeout: Duration) -> Result<Vec<Expired>>;
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
        let partial = state
            .open
            .entry(parent_id.to_owned())
            .or_insert_with(Partial::new);
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

    async fn expired(&self, timeout: Duration) -> Result<Vec<Expired>> {
        let state = self.inner.lock().expect("fan-in lock");
        Ok(state
            .open
            .iter()
            .filter(|(_, p)| p.first.elapsed() >= timeout)
            .map(|(id, p)| Expired {
                parent_id: id.clone(),
                parent: p.parent.clone(),
                arrived: p.children.len(),
                count: p.count,
            })
            .collect())
    }
}

/// Fan-ins kept in the JetStream key-value bucket `ASYA_FANIN_<NAMESPACE>`, one key per part:
/// `<fan-out>.p` (the parked parent), `<fan-out>.c<index>` (each child), written once each, and
/// a small index `<fan-out>.i` (which parts arrived, when the first did) updated with
/// compare-and-set. So an arrival writes its own envelope and a few bytes per child, never the
/// whole partial again (no O(n²) bytes, nothing near `max_payload`), and several hosts may run
/// the aggregator at once. A merged fan-out leaves a `<fan-out>.done` marker and its parts are
/// purged; the bucket's max age bounds whatever is left.
pub struct NatsFanIn {
    store: kv::Store,
}

/// The index of one fan-out in the bucket.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct FanInIndex {
    /// The fan-out's key, as the parts carry it.
    key: String,
    /// Children expected.
    count: usize,
    /// Whether the parent arrived.
    parent: bool,
    /// Indices of the children that arrived, ascending.
    children: Vec<usize>,
    /// When the first part arrived (Unix seconds).
    first: u64,
}

impl FanInIndex {
    /// Adds a part; `false` when it was already there (a redelivery).
    fn add(&mut self, role: &FanInRole) -> bool {
        match role {
            FanInRole::Parent { count } => {
                self.count = *count;
                !std::mem::replace(&mut self.parent, true)
            }
            FanInRole::Child { index, count, .. } => {
                self.count = *count;
                match self.children.binary_search(index) {
                    Ok(_) => false,
                    Err(at) => {
                        self.children.insert(at, *index);
                        true
                    }
                }
            }
        }
    }

    fn complete(&self) -> bool {
        self.parent && self.children.len() == self.count
    }
}

/// Attempts at updating a fan-out's index against concurrent arrivals before giving up (the
/// delivery then comes back later).
const INDEX_ATTEMPTS: u32 = 20;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl NatsFanIn {
    /// Opens (or creates) the bucket for `namespace`. Its entries expire after a day.
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

    fn base(parent_id: &str) -> String {
        crate::transport::nats::result_key(parent_id)
    }

    /// Purges a merged fan-out's parts and index (the index last, so a purge cut short is
    /// found again). What a failure leaves behind expires with the bucket.
    async fn purge_parts(&self, base: &str) {
        let Ok(Some((index, _))) = self.index(base).await else {
            return;
        };
        let mut keys = vec![format!("{base}.p")];
        keys.extend(index.children.iter().map(|i| format!("{base}.c{i}")));
        keys.push(format!("{base}.i"));
        for key in keys {
            if let Err(err) = self.store.purge(&key).await {
                tracing::debug!(%key, error = %err, "purging a fan-in part failed");
            }
        }
    }

    async fn is_done(&self, base: &str) -> Result<bool> {
        Ok(self
            .store
            .get(format!("{base}.done"))
            .await
            .map_err(|e| anyhow::anyhow!("reading fan-in {base}: {e}"))?
            .is_some())
    }

    async fn get_envelope(&self, key: &str) -> Result<Option<Envelope>> {
        let value = self
            .store
            .get(key)
            .await
            .map_err(|e| anyhow::anyhow!("reading fan-in part {key}: {e}"))?;
        value
            .map(|bytes| serde_json::from_slice(&bytes).context("stored fan-in part is not valid"))
            .transpose()
    }

    async fn index(&self, base: &str) -> Result<Option<(FanInIndex, u64)>> {
        let entry = self
            .store
            .entry(format!("{base}.i"))
            .await
            .map_err(|e| anyhow::anyhow!("reading fan-in index {base}: {e}"))?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => Ok(Some((
                serde_json::from_slice(&e.value).context("stored fan-in index is not valid")?,
                e.revision,
            ))),
            _ => Ok(None),
        }
    }

    /// Records `role` in the index (compare-and-set, with a short random backoff on a race);
    /// returns the index as written.
    async fn record(&self, base: &str, parent_id: &str, role: &FanInRole) -> Result<FanInIndex> {
        for attempt in 1..=INDEX_ATTEMPTS {
            let (mut index, revision) = match self.index(base).await? {
                Some((index, revision)) => (index, Some(revision)),
                None => (
                    FanInIndex {
                        key: parent_id.to_owned(),
                        first: unix_now(),
                        ..FanInIndex::default()
                    },
                    None,
                ),
            };
            if !index.add(role) {
                return Ok(index);
            }
            let bytes = serde_json::to_vec(&index).expect("fan-in index serialises");
            let key = format!("{base}.i");
            let written = match revision {
                Some(rev) => self
                    .store
                    .update(&key, bytes.into(), rev)
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        (
                            e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                            e.to_string(),
                        )
                    }),
                None => self
                    .store
                    .create(&key, bytes.into())
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        (
                            e.kind() == kv::CreateErrorKind::AlreadyExists,
                            e.to_string(),
                        )
                    }),
            };
            match written {
                Ok(()) => return Ok(index),
                Err((true, _)) => {
                    // Another arrival updated the index first: read it again, after a moment.
                    let spread = (uuid::Uuid::new_v4().as_u128() % 10) as u64;
                    tokio::time::sleep(Duration::from_millis(spread + u64::from(attempt))).await;
                }
                Err((false, error)) => anyhow::bail!("updating fan-in index {base}: {error}"),
            }
        }
        anyhow::bail!("fan-in {parent_id}: the index kept changing under {INDEX_ATTEMPTS} updates")
    }
}

#[async_trait]
impl FanInStore for NatsFanIn {
    async fn arrive(&self, parent_id: &str, role: &FanInRole, env: Envelope) -> Result<Arrival> {
        let base = Self::base(parent_id);
        if self.is_done(&base).await? {
            // A merge whose purge a crash cut short leaves its parts: drop them now.
            self.purge_parts(&base).await;
            return Ok(Arrival::AlreadyDone);
        }
        // The part first (a redelivery writes the same again), then the index.
        let part = match role {
            FanInRole::Parent { .. } => format!("{base}.p"),
            FanInRole::Child { index, .. } => format!("{base}.c{index}"),
        };
        self.store
            .put(&part, env.to_bytes().into())
            .await
            .map_err(|e| anyhow::anyhow!("storing fan-in part {part}: {e}"))?;
        let index = self.record(&base, parent_id, role).await?;
        if !index.complete() {
            // A late duplicate racing the merge: `finish` marks the fan-out done before it
            // purges, so a part written meanwhile is seen here and purged too.
            if self.is_done(&base).await? {
                for key in [part, format!("{base}.i")] {
                    let _ = self.store.purge(&key).await;
                }
                return Ok(Arrival::AlreadyDone);
            }
            return Ok(Arrival::Waiting);
        }
        let parent = self
            .get_envelope(&format!("{base}.p"))
            .await?
            .context("a complete fan-in has no parent part")?;
        let mut children = Vec::with_capacity(index.count);
        for i in &index.children {
            children.push(
                self.get_envelope(&format!("{base}.c{i}"))
                    .await?
                    .with_context(|| format!("a complete fan-in has no child part {i}"))?,
            );
        }
        Ok(Arrival::Complete(Box::new(parent), children))
    }

    async fn finish(&self, parent_id: &str) -> Result<()> {
        let base = Self::base(parent_id);
        self.store
            .put(format!("{base}.done"), "1".into())
            .await
            .map_err(|e| anyhow::anyhow!("finishing fan-in {parent_id}: {e}"))?;
        self.purge_parts(&base).await;
        Ok(())
    }

    async fn expired(&self, timeout: Duration) -> Result<Vec<Expired>> {
        use futures::StreamExt;
        let mut keys = self
            .store
            .keys()
            .await
            .map_err(|e| anyhow::anyhow!("listing fan-ins: {e}"))?;
        let mut bases = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| anyhow::anyhow!("listing fan-ins: {e}"))?;
            if let Some(base) = key.strip_suffix(".i") {
                bases.push(base.to_owned());
            }
        }
        let cutoff = unix_now().saturating_sub(timeout.as_secs());
        let mut out = Vec::new();
        for base in bases {
            let Some((index, _)) = self.index(&base).await? else {
                continue;
            };
            if index.first > cutoff || index.complete() {
                continue;
            }
            out.push(Expired {
                parent: self.get_envelope(&format!("{base}.p")).await?,
                parent_id: index.key,
                arrived: index.children.len(),
                count: index.count,
            });
        }
        Ok(out)
    }
}

/// Publishes `dispatch` under its hop's dedup id (a repeat by another aggregator is dropped).
async fn publish(transport: &dyn Transport, dispatch: &Dispatch) -> Result<()> {
    transport
        .publish(
            &dispatch.destination,
            Outbound {
                bytes: dispatch.envelope.to_bytes(),
                dedup_id: publish_dedup_id(dispatch),
            },
        )
        .await
}

fn publish_dedup_id(d: &Dispatch) -> String {
    asya_spec::names::dedup_id(&d.envelope.id, d.envelope.route.prev.len(), &d.destination)
}

/// How long a fan-out may wait for its children at the aggregator (the default of
/// `--fanin-timeout`); then its parent ends with `FanInTimeout`.
pub const DEFAULT_FANIN_TIMEOUT: Duration = Duration::from_secs(3600);

/// Ends every fan-out of `store` open for longer than `timeout`: its parent fails with
/// `FanInTimeout` (published before the fan-out is dropped, so a crash in between sends it again
/// under the same dedup id, never loses it).
async fn end_expired(transport: &dyn Transport, store: &dyn FanInStore, timeout: Duration) {
    let expired = match store.expired(timeout).await {
        Ok(expired) => expired,
        Err(err) => {
            tracing::warn!(error = %format!("{err:#}"), "listing expired fan-ins failed");
            return;
        }
    };
    for open in expired {
        if let Some(parent) = open.parent {
            let dispatch =
                flow::timed_out(parent, open.arrived, open.count, timeout, &now_rfc3339());
            tracing::warn!(parent = %open.parent_id, arrived = open.arrived, count = open.count,
                to = %dispatch.destination, "fan-in timed out");
            let published = publish(transport, &dispatch).await;
            if let Err(err) = published {
                tracing::warn!(parent = %open.parent_id, error = %format!("{err:#}"),
                    "publishing a timed-out fan-in failed; trying again at the next sweep");
                continue;
            }
        } else {
            tracing::warn!(parent = %open.parent_id, arrived = open.arrived,
                "fan-in timed out before its parent arrived; its children are dropped");
        }
        if let Err(err) = store.finish(&open.parent_id).await {
            tracing::warn!(parent = %open.parent_id, error = %format!("{err:#}"), "dropping a timed-out fan-in failed");
        }
    }
}

/// Runs the aggregator on `transport` until `shutdown`; fan-outs open for longer than
/// `timeout` end with `FanInTimeout`.
pub async fn run_fanin(
    transport: Arc<dyn Transport>,
    store: Arc<dyn FanInStore>,
    timeout: Duration,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut subscription = transport
        .subscribe(FANIN)
        .await
        .with_context(|| format!("subscribing to '{FANIN}'"))?;
    let mut sweep = tokio::time::interval(
        (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(10)),
    );
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let delivery = tokio::select! {
            _ = sweep.tick() => {
                end_expired(transport.as_ref(), store.as_ref(), timeout).await;
                continue;
            }
            next = crate::transport::next_delivery(subscription.as_mut(), &shutdown, FANIN) => {
                match next {
                    Some(delivery) => delivery,
                    None => return Ok(()),
                }
            }
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
                publish(transport.as_ref(), &dispatch).await?;
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
                let published = publish(transport.as_ref(), &dispatch).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::envelope::{Reason, Route, SUMP};
    use crate::message::flow::{CHILD_HEADER, PARENT_HEADER};
    use crate::transport::embedded::EmbeddedTransport;
    use serde_json::json;

    /// A parent parked at the aggregator waiting for `count` children, and its child `index`.
    pub(crate) fn fan_out(count: usize) -> (Envelope, impl Fn(usize) -> Envelope) {
        let mut parent = Envelope::new(
            Route::through(&[FANIN, "after"]).unwrap(),
            json!({"q": "x"}),
            "2026-12-02T00:00:00Z",
        );
        parent.route.prev = vec!["router".into()];
        parent.headers.insert(
            PARENT_HEADER.into(),
            json!({"count": count, "target": ["r"]}),
        );
        let key = flow::fanout_key(&parent);
        let child = move |index: usize| {
            let mut child = Envelope::new(
                Route::through(&[FANIN]).unwrap(),
                json!({"item": index}),
                "2026-12-02T00:00:00Z",
            );
            child.headers.insert(
                CHILD_HEADER.into(),
                json!({"key": key, "index": index, "count": count}),
            );
            child
        };
        (parent, child)
    }

    async fn publish(transport: &EmbeddedTransport, env: &Envelope) {
        transport
            .publish(
                FANIN,
                Outbound {
                    bytes: env.to_bytes(),
                    dedup_id: env.id.clone(),
                },
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_fan_out_whose_children_do_not_all_arrive_times_out_at_sump() {
        let transport = Arc::new(EmbeddedTransport::new());
        let mut sump = transport.subscribe(SUMP).await.unwrap();
        let shutdown = CancellationToken::new();
        let store = Arc::new(MemoryFanIn::default());
        let task = tokio::spawn(run_fanin(
            transport.clone(),
            store.clone(),
            Duration::from_millis(300),
            shutdown.clone(),
        ));
        let (parent, child) = fan_out(3);
        publish(&transport, &parent).await;
        publish(&transport, &child(1)).await;
        let ended = tokio::time::timeout(Duration::from_secs(5), sump.next())
            .await
            .expect("the parent ends")
            .unwrap()
            .unwrap();
        let env: Envelope = serde_json::from_slice(&ended.bytes).unwrap();
        assert_eq!(env.id, parent.id);
        let status = env.status.unwrap();
        assert_eq!(status.reason, Some(Reason::FanInTimeout));
        assert!(
            status.error.unwrap().message.contains("1 of 3"),
            "says how many arrived"
        );
        assert!(!env.headers.contains_key(PARENT_HEADER));
        // Nothing of it stays in memory; a late child is dropped as a duplicate.
        assert!(store.expired(Duration::ZERO).await.unwrap().is_empty());
        assert!(matches!(
            store
                .arrive(
                    &flow::fanout_key(&parent),
                    &flow::fanin_role(&child(2)).unwrap(),
                    child(2)
                )
                .await
                .unwrap(),
            Arrival::AlreadyDone
        ));
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }
}
