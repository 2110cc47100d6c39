//! The DynamoDB state store: final envelopes ([`ResultStore`]) and open fan-ins
//! ([`FanInStore`]) for hosts whose transport has no key-value store of its own (SQS, and
//! RabbitMQ unless pointed at NATS). One table (`asya-state` unless `ASYA_DYNAMODB_TABLE` says
//! otherwise) with a string partition key `pk` holds every namespace:
//!
//! | item | `pk` |
//! |---|---|
//! | a final envelope | `r|<namespace>|<id>` |
//! | a fan-out's part (parent, child `i`) | `f|<namespace>|<fan-out>|p`, `…|c<i>` |
//! | a fan-out's index (which parts arrived) | `f|<namespace>|<fan-out>|i` |
//! | a merged fan-out's marker | `f|<namespace>|<fan-out>|done` |
//!
//! Every item carries `expires_at` (the table's TTL attribute): results live for the namespace's
//! results TTL, fan-in items for a day. A fan-in arrival writes its own part and adds its index
//! to the fan-out's index with one atomic `UpdateItem` (`ADD` to a number set): no
//! compare-and-set loop, however many children arrive at once. A result written again under the
//! same dedup id (a redelivered message stored twice) is dropped by a condition, so `writes`
//! counts each message once.

use crate::actor::fanin::{Arrival, Expired, FanInStore};
use crate::message::envelope::Envelope;
use crate::message::flow::FanInRole;
use crate::transport::aws::describe;
use crate::transport::results::ResultStore;
use crate::transport::TooLarge;
use anyhow::{anyhow, Context, Result};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ScalarAttributeType, TableStatus, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The largest envelope stored in one item (DynamoDB's item limit is 400 KB, keys and other
/// attributes included).
pub const MAX_ENVELOPE_BYTES: usize = 380 * 1024;

/// How long a new table may take to become active before the host gives up (and its
/// supervisor reports it).
const TABLE_ACTIVE_WAIT: Duration = Duration::from_secs(300);

/// How long fan-in items live (as the NATS fan-in bucket's max age).
const FANIN_TTL: Duration = Duration::from_secs(24 * 3600);

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The state table.
pub struct DynamoTable {
    client: Client,
    name: String,
}

impl DynamoTable {
    /// Opens table `name`; with `create`, creates it when missing (on-demand billing, TTL on
    /// `expires_at`) and waits until it is active. Retries with backoff while DynamoDB is not
    /// reachable.
    pub async fn open(client: Client, name: &str, create: bool) -> Result<Arc<Self>> {
        let mut wait = Duration::from_millis(200);
        let started = std::time::Instant::now();
        loop {
            match client.describe_table().table_name(name).send().await {
                Ok(found) => {
                    let status = found.table().and_then(|t| t.table_status().cloned());
                    if status.is_none() || status == Some(TableStatus::Active) {
                        break;
                    }
                    if started.elapsed() > TABLE_ACTIVE_WAIT {
                        anyhow::bail!(
                            "DynamoDB table {name} is still {status:?} after {TABLE_ACTIVE_WAIT:?}"
                        );
                    }
                    tracing::info!(
                        table = name,
                        ?status,
                        "waiting for the DynamoDB table to be active"
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(err)
                    if err
                        .as_service_error()
                        .is_some_and(|e| e.is_resource_not_found_exception()) =>
                {
                    if !create {
                        anyhow::bail!("DynamoDB table {name} does not exist (and creation is off)");
                    }
                    let created = client
                        .create_table()
                        .table_name(name)
                        .attribute_definitions(
                            AttributeDefinition::builder()
                                .attribute_name("pk")
                                .attribute_type(ScalarAttributeType::S)
                                .build()?,
                        )
                        .key_schema(
                            KeySchemaElement::builder()
                                .attribute_name("pk")
                                .key_type(KeyType::Hash)
                                .build()?,
                        )
                        .billing_mode(BillingMode::PayPerRequest)
                        .send()
                        .await;
                    match created {
                        Ok(_) => tracing::info!(table = name, "created DynamoDB table"),
                        Err(err)
                            if err
                                .as_service_error()
                                .is_some_and(|e| e.is_resource_in_use_exception()) => {}
                        Err(err) => {
                            return Err(anyhow!(
                                "creating DynamoDB table {name}: {}",
                                describe(&err)
                            ))
                        }
                    }
                    let ttl = client
                        .update_time_to_live()
                        .table_name(name)
                        .time_to_live_specification(
                            TimeToLiveSpecification::builder()
                                .enabled(true)
                                .attribute_name("expires_at")
                                .build()?,
                        )
                        .send()
                        .await;
                    if let Err(err) = ttl {
                        tracing::warn!(table = name, error = %describe(&err), "turning on the table's TTL failed: items will not expire");
                    }
                }
                Err(err) => {
                    tracing::error!(table = name, error = %describe(&err), retry_in = ?wait, "DynamoDB is not reachable yet");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            }
        }
        Ok(Arc::new(DynamoTable {
            client,
            name: name.to_owned(),
        }))
    }

    /// The state of `namespace` in this table, results kept for `results_ttl`.
    pub fn namespace(self: &Arc<Self>, namespace: &str, results_ttl: Duration) -> DynamoState {
        DynamoState {
            table: self.clone(),
            namespace: namespace.to_owned(),
            results_ttl,
        }
    }

    async fn get(&self, pk: &str) -> Result<Option<HashMap<String, AttributeValue>>> {
        let found = self
            .client
            .get_item()
            .table_name(&self.name)
            .key("pk", s(pk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| anyhow!("reading {pk} from DynamoDB: {}", describe(&e)))?;
        Ok(found.item)
    }

    async fn delete(&self, pk: &str) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.name)
            .key("pk", s(pk))
            .send()
            .await
            .map_err(|e| anyhow!("deleting {pk} from DynamoDB: {}", describe(&e)))?;
        Ok(())
    }

    async fn put_envelope(&self, pk: &str, envelope: &Envelope, expires_at: i64) -> Result<()> {
        let bytes = envelope.to_bytes();
        check_size(bytes.len())?;
        self.client
            .put_item()
            .table_name(&self.name)
            .item("pk", s(pk))
            .item("envelope", s(String::from_utf8_lossy(&bytes)))
            .item("expires_at", n(expires_at))
            .send()
            .await
            .map_err(|e| anyhow!("writing {pk} to DynamoDB: {}", describe(&e)))?;
        Ok(())
    }

    /// The envelope stored under `pk`. An item without one is not written yet (DynamoDB
    /// writes an item whole; a local DynamoDB-compatible server may show an update half-done).
    async fn get_envelope(&self, pk: &str) -> Result<Option<Envelope>> {
        self.get(pk)
            .await?
            .filter(|item| item.contains_key("envelope"))
            .map(|item| envelope_of(&item, pk))
            .transpose()
    }
}

fn check_size(size: usize) -> Result<()> {
    if size > MAX_ENVELOPE_BYTES {
        return Err(TooLarge {
            size,
            limit: MAX_ENVELOPE_BYTES,
        }
        .into());
    }
    Ok(())
}

fn envelope_of(item: &HashMap<String, AttributeValue>, pk: &str) -> Result<Envelope> {
    let text = item
        .get("envelope")
        .and_then(|v| v.as_s().ok())
        .with_context(|| format!("{pk} has no envelope"))?;
    serde_json::from_str(text).with_context(|| format!("{pk} is not an envelope"))
}

/// One namespace's results and fan-ins in the state table.
#[derive(Clone)]
pub struct DynamoState {
    table: Arc<DynamoTable>,
    namespace: String,
    results_ttl: Duration,
}

/// A fan-out's index, as read back from its item.
#[derive(Debug, Default)]
struct Index {
    count: usize,
    parent: bool,
    children: Vec<usize>,
    first: i64,
    parent_id: String,
}

impl Index {
    fn from_item(item: &HashMap<String, AttributeValue>) -> Self {
        let number = |name: &str| {
            item.get(name)
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
        };
        let mut children: Vec<usize> = item
            .get("children")
            .and_then(|v| v.as_ns().ok())
            .map(|set| set.iter().filter_map(|i| i.parse().ok()).collect())
            .unwrap_or_default();
        children.sort_unstable();
        Index {
            count: number("fan_count").max(0) as usize,
            parent: item
                .get("has_parent")
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(false),
            children,
            first: number("first_at"),
            parent_id: item
                .get("parent_id")
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default(),
        }
    }

    fn complete(&self) -> bool {
        self.parent && self.children.len() == self.count
    }
}

impl DynamoState {
    fn result_key(&self, id: &str) -> String {
        format!("r|{}|{id}", self.namespace)
    }

    fn fanin_key(&self, parent_id: &str, part: &str) -> String {
        format!("f|{}|{parent_id}|{part}", self.namespace)
    }

    async fn write_result(
        &self,
        end_actor: &str,
        envelope: &Envelope,
        dedup_id: Option<&str>,
    ) -> Result<()> {
        let bytes = envelope.to_bytes();
        check_size(bytes.len())?;
        let expires_at = unix_now() + self.results_ttl.as_secs() as i64;
        let mut update = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .key("pk", s(self.result_key(&envelope.id)))
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_names("#ns", "ns")
            .expression_attribute_values(":e", s(String::from_utf8_lossy(&bytes)))
            .expression_attribute_values(":a", s(end_actor))
            .expression_attribute_values(":k", s("result"))
            .expression_attribute_values(":ns", s(&self.namespace))
            .expression_attribute_values(":x", n(expires_at))
            .expression_attribute_values(":one", n(1));
        update = match dedup_id {
            Some(dedup) => update
                .update_expression("SET envelope = :e, end_actor = :a, #kind = :k, #ns = :ns, expires_at = :x, dedup = :d ADD writes :one")
                .condition_expression("attribute_not_exists(dedup) OR dedup <> :d")
                .expression_attribute_values(":d", s(dedup)),
            None => update.update_expression(
                "SET envelope = :e, end_actor = :a, #kind = :k, #ns = :ns, expires_at = :x ADD writes :one",
            ),
        };
        match update.send().await {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                // Stored before under the same dedup id: a redelivered message, dropped.
                Ok(())
            }
            Err(err) => Err(anyhow!(
                "storing result {} in DynamoDB: {}",
                envelope.id,
                describe(&err)
            )),
        }
    }

    /// Every stored result of the namespace with how many writes it took (1 when each message
    /// was stored exactly once).
    pub async fn all_results(&self) -> Result<Vec<(Envelope, u64)>> {
        let items = self
            .scan("#kind = :k", &[(":k", s("result"))])
            .await
            .context("scanning DynamoDB results")?;
        // An item without its envelope is not written yet (see `get_envelope`).
        items
            .iter()
            .filter(|item| item.contains_key("envelope"))
            .map(|item| {
                let writes = item
                    .get("writes")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                Ok((envelope_of(item, "a result")?, writes))
            })
            .collect()
    }

    /// Every item of this namespace matching `filter` (`#kind` names the item's kind; `values`
    /// are the filter's `:name`s), all pages, read consistently.
    async fn scan(
        &self,
        filter: &str,
        values: &[(&str, AttributeValue)],
    ) -> Result<Vec<HashMap<String, AttributeValue>>> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        let expression = format!("#ns = :ns AND {filter}");
        loop {
            let mut scan = self
                .table
                .client
                .scan()
                .table_name(&self.table.name)
                .filter_expression(&expression)
                .expression_attribute_names("#ns", "ns")
                .expression_attribute_names("#kind", "kind")
                .expression_attribute_values(":ns", s(&self.namespace))
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            for (name, value) in values {
                scan = scan.expression_attribute_values(*name, value.clone());
            }
            let page = scan.send().await.map_err(|e| anyhow!(describe(&e)))?;
            out.extend(page.items().iter().cloned());
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(out),
            }
        }
    }

    async fn is_done(&self, parent_id: &str) -> Result<bool> {
        Ok(self
            .table
            .get(&self.fanin_key(parent_id, "done"))
            .await?
            .is_some())
    }

    async fn index(&self, parent_id: &str) -> Result<Option<Index>> {
        Ok(self
            .table
            .get(&self.fanin_key(parent_id, "i"))
            .await?
            .map(|item| Index::from_item(&item)))
    }

    /// Deletes a merged fan-out's parts and index (the index last, so a purge cut short is
    /// found again). What a failure leaves behind expires with the table's TTL.
    async fn purge(&self, parent_id: &str) {
        let Ok(Some(index)) = self.index(parent_id).await else {
            return;
        };
        let mut parts = vec!["p".to_owned()];
        parts.extend(index.children.iter().map(|i| format!("c{i}")));
        parts.push("i".into());
        for part in parts {
            let key = self.fanin_key(parent_id, &part);
            if let Err(err) = self.table.delete(&key).await {
                tracing::debug!(%key, error = %format!("{err:#}"), "deleting a fan-in part failed");
            }
        }
    }

    /// Adds `role` to the fan-out's index atomically; returns the index as written.
    async fn record(&self, parent_id: &str, role: &FanInRole) -> Result<Index> {
        let now = unix_now();
        let update = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .key("pk", s(self.fanin_key(parent_id, "i")))
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_names("#ns", "ns")
            .expression_attribute_values(":k", s("fanin"))
            .expression_attribute_values(":ns", s(&self.namespace))
            .expression_attribute_values(":pid", s(parent_id))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":x", n(now + FANIN_TTL.as_secs() as i64))
            .return_values(ReturnValue::AllNew);
        const COMMON: &str = "#kind = :k, #ns = :ns, parent_id = :pid, first_at = if_not_exists(first_at, :now), expires_at = if_not_exists(expires_at, :x), fan_count = :c";
        let update = match role {
            FanInRole::Parent { count } => update
                .update_expression(format!("SET {COMMON}, has_parent = :t"))
                .expression_attribute_values(":c", n(count))
                .expression_attribute_values(":t", AttributeValue::Bool(true)),
            FanInRole::Child { index, count, .. } => update
                .update_expression(format!("SET {COMMON} ADD children :i"))
                .expression_attribute_values(":c", n(count))
                .expression_attribute_values(":i", AttributeValue::Ns(vec![index.to_string()])),
        };
        let written = update
            .send()
            .await
            .map_err(|e| anyhow!("updating fan-in index {parent_id}: {}", describe(&e)))?;
        Ok(written
            .attributes
            .as_ref()
            .map(Index::from_item)
            .unwrap_or_default())
    }
}

#[async_trait]
impl ResultStore for DynamoState {
    async fn put(&self, end_actor: &str, envelope: &Envelope) -> Result<()> {
        self.write_result(end_actor, envelope, None).await
    }

    async fn put_once(&self, end_actor: &str, envelope: &Envelope, dedup_id: &str) -> Result<()> {
        self.write_result(end_actor, envelope, Some(dedup_id)).await
    }

    async fn get(&self, id: &str) -> Result<Option<Envelope>> {
        self.table.get_envelope(&self.result_key(id)).await
    }

    /// Each put is a round trip: keep many in flight.
    fn concurrency(&self) -> usize {
        64
    }
}

#[async_trait]
impl FanInStore for DynamoState {
    async fn arrive(&self, parent_id: &str, role: &FanInRole, env: Envelope) -> Result<Arrival> {
        if self.is_done(parent_id).await? {
            // A merge whose purge a crash cut short leaves its parts: drop them now.
            self.purge(parent_id).await;
            return Ok(Arrival::AlreadyDone);
        }
        // The part first (a redelivery writes the same again), then the index.
        let part = match role {
            FanInRole::Parent { .. } => "p".to_owned(),
            FanInRole::Child { index, .. } => format!("c{index}"),
        };
        let expires_at = unix_now() + FANIN_TTL.as_secs() as i64;
        let part_key = self.fanin_key(parent_id, &part);
        self.table.put_envelope(&part_key, &env, expires_at).await?;
        let index = self.record(parent_id, role).await?;
        if !index.complete() {
            if self.is_done(parent_id).await? {
                // A late duplicate racing the merge.
                let _ = self.table.delete(&part_key).await;
                let _ = self.table.delete(&self.fanin_key(parent_id, "i")).await;
                return Ok(Arrival::AlreadyDone);
            }
            return Ok(Arrival::Waiting);
        }
        let parent = self
            .table
            .get_envelope(&self.fanin_key(parent_id, "p"))
            .await?
            .context("a complete fan-in has no parent part")?;
        let mut children = Vec::with_capacity(index.count);
        for i in &index.children {
            children.push(
                self.table
                    .get_envelope(&self.fanin_key(parent_id, &format!("c{i}")))
                    .await?
                    .with_context(|| format!("a complete fan-in has no child part {i}"))?,
            );
        }
        Ok(Arrival::Complete(Box::new(parent), children))
    }

    async fn finish(&self, parent_id: &str) -> Result<()> {
        let key = self.fanin_key(parent_id, "done");
        self.table
            .client
            .put_item()
            .table_name(&self.table.name)
            .item("pk", s(&key))
            .item("expires_at", n(unix_now() + FANIN_TTL.as_secs() as i64))
            .send()
            .await
            .map_err(|e| anyhow!("finishing fan-in {parent_id}: {}", describe(&e)))?;
        self.purge(parent_id).await;
        Ok(())
    }

    /// A scan of the table's fan-in indexes of this namespace (few: only open fan-outs have one).
    async fn expired(&self, timeout: Duration) -> Result<Vec<Expired>> {
        let cutoff = unix_now() - timeout.as_secs() as i64;
        let indexes: Vec<Index> = self
            .scan(
                "#kind = :k AND first_at <= :cutoff",
                &[(":k", s("fanin")), (":cutoff", n(cutoff))],
            )
            .await
            .context("listing fan-ins in DynamoDB")?
            .iter()
            .map(Index::from_item)
            .collect();
        let mut out = Vec::new();
        for index in indexes {
            if index.complete() || index.first > cutoff {
                continue;
            }
            out.push(Expired {
                parent: self
                    .table
                    .get_envelope(&self.fanin_key(&index.parent_id, "p"))
                    .await?,
                parent_id: index.parent_id,
                arrived: index.children.len(),
                count: index.count,
            });
        }
        Ok(out)
    }
}
