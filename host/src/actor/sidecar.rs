//! The sidecar loop of one actor: receive → check → call the handler → route → publish → ack.
//!
//! It owns no routing rules itself (those are in [`crate::message::routing`] and
//! [`crate::message::resiliency`]) and no transport details (those are behind
//! [`crate::transport::Transport`]). A retry is a delayed redelivery of the input (a NAK with a
//! delay), so nothing is published for it and the attempt number is the delivery count.

use crate::message::envelope::{is_end_actor, now_rfc3339, Envelope, Reason, SINK, SUMP};
use crate::message::resiliency::{AttemptInfo, Resiliency};
use crate::message::routing;
use crate::message::status::{Dispatch, FailureAction};
use crate::ops::metrics::{ActorMetrics, Metrics};
use crate::ops::trace;
use crate::runtime::executor::CallOutcome;
use crate::runtime::executor::Executor;
use crate::transport::results::ResultStore;
use crate::transport::{Delivery, Outbound, Transport};
use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

/// How one actor's sidecar behaves.
#[derive(Debug, Clone)]
pub struct SidecarSettings {
    /// Per-call timeout (`resiliency.actorTimeout`), further capped by `status.deadline_at`.
    pub timeout: Duration,
    /// Messages processed at once (each on its own pooled instance).
    pub concurrency: usize,
    /// Larger inputs are rejected before parsing.
    pub max_message_bytes: usize,
}

impl Default for SidecarSettings {
    fn default() -> Self {
        SidecarSettings {
            timeout: Duration::from_secs(30),
            concurrency: 4,
            max_message_bytes: 16 << 20,
        }
    }
}

/// What to do with one delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Publish these envelopes, then acknowledge the input.
    Publish(Vec<Dispatch>),
    /// Have the transport deliver the input again after `delay` (a retry).
    Redeliver {
        /// Backoff before the next attempt.
        delay: Duration,
        /// The failure that caused the retry, for the log.
        reason: Reason,
    },
}

/// One actor's sidecar: its name, its executor and the transport it moves messages on.
pub struct Sidecar {
    name: String,
    executor: Arc<dyn Executor>,
    transport: Arc<dyn Transport>,
    settings: SidecarSettings,
    resiliency: Resiliency,
    metrics: Arc<Metrics>,
    actor_metrics: ActorMetrics,
    results: Option<Arc<dyn ResultStore>>,
}

impl Sidecar {
    /// A sidecar for `name` whose failures end at `x-sump` (no retries).
    pub fn new(
        name: impl Into<String>,
        executor: Arc<dyn Executor>,
        transport: Arc<dyn Transport>,
        settings: SidecarSettings,
    ) -> Self {
        let name = name.into();
        let metrics = Arc::new(Metrics::new());
        Sidecar {
            actor_metrics: metrics.actor(&name),
            name,
            executor,
            transport,
            settings,
            resiliency: Resiliency::default(),
            metrics,
            results: None,
        }
    }

    /// Stores messages that end here (at `x-sink` or `x-sump`) in `results` directly, doing the
    /// end actor's work in this hop, instead of publishing them to the end actor's queue for it
    /// to store. The result is the same, keyed by envelope id and deduplicated per hop; the
    /// pipeline saves a queue round trip (publish, deliver, ack) per message.
    pub fn with_results(mut self, results: Arc<dyn ResultStore>) -> Self {
        self.results = Some(results);
        self
    }

    /// Replaces the retry policies.
    pub fn with_resiliency(mut self, resiliency: Resiliency) -> Self {
        self.resiliency = resiliency;
        self
    }

    /// Reports into `metrics` (shared by every actor of a host).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.actor_metrics = metrics.actor(&self.name);
        self.metrics = metrics;
        self
    }

    /// The actor's name (its queue).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Everything between receiving bytes and publishing: the decisions around one executor
    /// call. `delivered` is the delivery count (the attempt number); `published` is when the
    /// message first reached this queue (for `maxDuration`).
    pub async fn plan(
        &self,
        bytes: &[u8],
        delivered: u64,
        published: Option<time::OffsetDateTime>,
    ) -> Plan {
        let now = time::OffsetDateTime::now_utc();
        if bytes.len() > self.settings.max_message_bytes {
            let preview = &bytes[..bytes.len().min(1024)];
            return Plan::Publish(vec![routing::parse_error_dispatch(
                &self.name,
                preview,
                &format!(
                    "message of {} bytes exceeds the limit of {} bytes (first KiB kept)",
                    bytes.len(),
                    self.settings.max_message_bytes
                ),
                &now_rfc3339(),
            )]);
        }
        let mut env = match routing::accept(&self.name, bytes, now) {
            Ok(env) => env,
            Err(mut dispatch) => {
                // A fan-out child stopped before its handler (deadline, wrong actor) still
                // reports to the aggregator, or its parent would wait forever.
                crate::message::flow::redirect_child_end(&mut dispatch);
                return Plan::Publish(vec![dispatch]);
            }
        };
        let attempt = u32::try_from(delivered.max(1)).unwrap_or(u32::MAX);
        if let Some(status) = env.status.as_mut() {
            status.attempt = attempt; // `accept` always leaves a status
        }
        let trace_id = trace::enter_hop(&mut env.headers);
        let mut timeout = self.settings.timeout;
        if let Some(deadline) = routing::deadline_of(&env) {
            let left = (deadline - now).try_into().unwrap_or(Duration::ZERO);
            timeout = timeout.min(left);
        }
        let mode = self.executor.mode();
        let input = routing::handler_input(mode, &env);
        let span = tracing::debug_span!("handle", actor = %self.name, envelope = %env.id, trace_id = %trace_id, attempt);
        let started = Instant::now();
        let (outcome, cpu) = {
            let _entered = span.enter();
            crate::ops::cpu_time::CpuTimed::new(self.executor.call(input, timeout)).await
        };
        self.actor_metrics.cpu.inc_by(cpu.as_secs_f64());
        self.actor_metrics
            .handler
            .observe(started.elapsed().as_secs_f64());
        if let CallOutcome::Failed(failure) = &outcome {
            let trap = matches!(
                failure.reason,
                Reason::Timeout
                    | Reason::MemoryLimit
                    | Reason::Trap
                    | Reason::OutputTooLarge
                    | Reason::SandboxDenied
            );
            self.metrics
                .failed(&self.actor_metrics, failure.reason.as_str(), trap);
            tracing::debug!(actor = %self.name, envelope = %env.id, reason = %failure.reason,
                error = %failure.error.message, attempt, "handler failed");
        }
        let elapsed = published
            .map(|p| (now - p).try_into().unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::ZERO);
        let mut retry = None;
        let mut max_attempts = 1;
        let dispatches = routing::route_outcome(
            &self.name,
            mode,
            env,
            outcome,
            |failure, _| {
                let decision = self.resiliency.decide(
                    failure,
                    AttemptInfo {
                        attempt,
                        elapsed,
                        unit_random: unit_random(),
                    },
                );
                max_attempts = self.resiliency.policy_for(failure).max_attempts;
                if let FailureAction::Retry { .. } = decision.action {
                    retry = Some((decision.delay.unwrap_or_default(), failure.reason));
                }
                decision.action
            },
            &now_rfc3339(),
        );
        if let Some((delay, reason)) = retry {
            return Plan::Redeliver { delay, reason };
        }
        Plan::Publish(
            dispatches
                .into_iter()
                .map(|mut d| {
                    if d.destination == SUMP {
                        if let Some(status) = d.envelope.status.as_mut() {
                            status.max_attempts = status.max_attempts.max(max_attempts);
                        }
                    }
                    d
                })
                .collect(),
        )
    }

    /// Processes one delivery and acknowledges it only after every output is published.
    /// On a publish failure the delivery is rejected so the transport delivers it again.
    pub async fn handle(&self, delivery: Delivery) -> Result<()> {
        let started = Instant::now();
        self.actor_metrics.received.inc();
        self.actor_metrics.active.inc();
        let result = self.handle_inner(delivery).await;
        self.actor_metrics.active.dec();
        self.actor_metrics
            .processing
            .observe(started.elapsed().as_secs_f64());
        result
    }

    async fn handle_inner(&self, delivery: Delivery) -> Result<()> {
        match self
            .plan(&delivery.bytes, delivery.delivered, delivery.published)
            .await
        {
            Plan::Redeliver { delay, reason } => {
                self.metrics.processed(&self.actor_metrics, "retried");
                tracing::debug!(actor = %self.name, ?delay, %reason, "retrying later");
                delivery
                    .acker
                    .nak(Some(delay))
                    .await
                    .context("requesting a redelivery")
            }
            Plan::Publish(dispatches) => {
                for dispatch in dispatches {
                    let destination = dispatch.destination.clone();
                    if let Err(err) = self.send(dispatch).await {
                        delivery
                            .acker
                            .nak(Some(Duration::from_millis(500)))
                            .await
                            .ok();
                        return Err(err);
                    }
                    self.metrics.sent(&self.actor_metrics, &destination);
                    if is_end_actor(&destination) {
                        let status = if destination == SINK {
                            "succeeded"
                        } else {
                            "failed"
                        };
                        self.metrics.processed(&self.actor_metrics, status);
                    }
                }
                delivery
                    .acker
                    .ack()
                    .await
                    .context("acknowledging the input")
            }
        }
    }

    /// Puts `dispatch` on its destination's queue or, when it ends here and this sidecar keeps
    /// results itself, stores it; `Ok` means it is durable either way.
    async fn send(&self, dispatch: Dispatch) -> Result<()> {
        let env: &Envelope = &dispatch.envelope;
        // One output per hop of an envelope: a redelivered input republishes the same id, which
        // the transport's deduplication drops.
        let dedup_id =
            asya_spec::names::dedup_id(&env.id, env.route.prev.len(), &dispatch.destination);
        if let Some(results) = self
            .results
            .as_ref()
            .filter(|_| is_end_actor(&dispatch.destination))
        {
            return results
                .put_once(&dispatch.destination, env, &dedup_id)
                .await
                .with_context(|| format!("storing the result at '{}'", dispatch.destination));
        }
        self.transport
            .publish(
                &dispatch.destination,
                Outbound {
                    bytes: env.to_bytes(),
                    dedup_id,
                },
            )
            .await
            .with_context(|| format!("publishing to '{}'", dispatch.destination))
    }

    /// Consumes the actor's queue until `shutdown` is cancelled, with at most
    /// `settings.concurrency` messages in flight; then finishes the in-flight ones and returns.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<()> {
        let (_fixed, current) = watch::channel(self);
        serve_queue(current, shutdown).await
    }
}

/// Consumes one actor's queue until `shutdown` is cancelled, handing each delivery to the sidecar
/// `current` holds when it arrives; then finishes the in-flight messages and returns.
///
/// A changed actor (hot reload) is a new [`Sidecar`] sent through the channel: the queue's
/// subscription stays open, messages already in flight finish on the old one, and nothing is
/// returned to the server or left with an abandoned pull request. Every sidecar sent must be for
/// the same queue on the same transport as the first (its name and transport are used to
/// subscribe); its concurrency may differ and takes effect at once.
pub async fn serve_queue(
    mut current: watch::Receiver<Arc<Sidecar>>,
    shutdown: CancellationToken,
) -> Result<()> {
    let first = current.borrow_and_update().clone();
    let name = first.name.clone();
    let mut subscription = first
        .transport
        .subscribe(&name)
        .await
        .with_context(|| format!("subscribing to '{name}'"))?;
    drop(first);
    let mut concurrency = current.borrow().settings.concurrency.max(1);
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut replaceable = true;
    loop {
        let wanted = current.borrow().settings.concurrency.max(1);
        if wanted > concurrency {
            slots.add_permits(wanted - concurrency);
        } else if wanted < concurrency {
            // Fewer slots: retire the surplus as in-flight messages finish.
            let surplus = slots
                .clone()
                .acquire_many_owned((concurrency - wanted) as u32);
            tokio::spawn(async move {
                if let Ok(permits) = surplus.await {
                    permits.forget();
                }
            });
        }
        concurrency = wanted;
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = current.changed(), if replaceable => {
                // A closed channel means no more replacements: keep the last sidecar.
                replaceable = changed.is_ok();
                continue;
            }
            permit = slots.clone().acquire_owned() => permit.expect("semaphore is never closed"),
        };
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = subscription.next() => match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(err)) => {
                    tracing::warn!(actor = %name, error = %format!("{err:#}"), "receive failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                None => break,
            },
        };
        let sidecar = current.borrow().clone();
        tokio::spawn(async move {
            if let Err(err) = sidecar.handle(delivery).await {
                tracing::warn!(actor = %sidecar.name, error = %format!("{err:#}"), "message will be redelivered");
            }
            drop(permit);
        });
    }
    // Messages the transport already fetched (or is still delivering) for this consumer that
    // nobody started go back, so whoever consumes the queue next gets them now, not after
    // the ack wait. They are collected until the subscription has been quiet for a moment
    // (a pull the server is still filling lands in that window), the subscription is dropped,
    // and only then returned, with a short delay, so they are not delivered here again.
    let mut fetched = Vec::new();
    let give_up = tokio::time::Instant::now() + STOP_DRAIN_MAX;
    while fetched.len() < 10_000 {
        let quiet = STOP_DRAIN_QUIET.min(give_up - tokio::time::Instant::now());
        match tokio::time::timeout(quiet, subscription.next()).await {
            Ok(Some(Ok(delivery))) => fetched.push(delivery),
            _ => break,
        }
    }
    drop(subscription);
    for delivery in fetched {
        if let Err(err) = delivery.acker.nak(Some(STOP_RETURN_DELAY)).await {
            tracing::debug!(actor = %name, error = %format!("{err:#}"), "returning a fetched message failed");
        }
    }
    // Graceful: wait until every in-flight message is done (all permits back; surplus ones
    // being retired are taken first, so this waits for exactly the slots that remain).
    let _all = slots
        .acquire_many(concurrency as u32)
        .await
        .expect("semaphore is never closed");
    Ok(())
}

/// A stopping sidecar collects late deliveries until none has arrived for this long...
const STOP_DRAIN_QUIET: Duration = Duration::from_millis(50);
/// ...or this long has passed.
const STOP_DRAIN_MAX: Duration = Duration::from_millis(500);
/// Returned messages become deliverable again after this delay (to the replacement sidecar).
const STOP_RETURN_DELAY: Duration = Duration::from_millis(100);

/// A uniform random number in [0, 1) for retry jitter (quality does not matter here).
fn unit_random() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::envelope::Route;
    use crate::runtime::executor::Mode;
    use crate::transport::embedded::EmbeddedTransport;
    use crate::transport::results::MemoryResults;
    use async_trait::async_trait;
    use serde_json::json;

    /// A handler that returns its payload unchanged.
    struct Echo;

    #[async_trait]
    impl Executor for Echo {
        fn mode(&self) -> Mode {
            Mode::Payload
        }
        async fn call(&self, input: String, _timeout: Duration) -> CallOutcome {
            CallOutcome::Returned(input)
        }
    }

    #[tokio::test]
    async fn a_sidecar_with_results_stores_the_messages_that_end_there_itself() {
        let transport = Arc::new(EmbeddedTransport::new());
        let mut hops = transport.tap();
        let (store, mut stored) = MemoryResults::new();
        let sidecar = Sidecar::new(
            "only",
            Arc::new(Echo),
            transport.clone(),
            SidecarSettings::default(),
        )
        .with_results(store);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(Arc::new(sidecar).run(shutdown.clone()));
        let env = Envelope::new(
            Route::through(&["only"]).unwrap(),
            json!({"n": 1}),
            "2026-11-25T00:00:00Z",
        );
        transport
            .publish(
                "only",
                Outbound {
                    bytes: env.to_bytes(),
                    dedup_id: env.id.clone(),
                },
            )
            .await
            .unwrap();
        let finished = tokio::time::timeout(Duration::from_secs(5), stored.recv())
            .await
            .expect("the result is stored")
            .unwrap();
        assert_eq!(finished.end_actor, SINK);
        assert_eq!(finished.envelope.id, env.id);
        assert_eq!(finished.envelope.route.curr, SINK);
        assert_eq!(finished.envelope.payload, json!({"n": 1}));
        shutdown.cancel();
        task.await.unwrap().unwrap();
        // Nothing went through the x-sink queue: the only publish on the bus was the input.
        let mut published = Vec::new();
        while let Ok(hop) = hops.try_recv() {
            published.push(hop.destination);
        }
        assert_eq!(published, vec!["only".to_owned()]);
    }
}
