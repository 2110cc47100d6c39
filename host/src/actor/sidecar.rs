//! The sidecar loop of one actor: receive → check → call the handler → route → publish → ack.
//!
//! It owns no routing rules itself (those are in [`crate::message::routing`] and
//! [`crate::message::resiliency`]) and no transport details (those are behind
//! [`crate::transport::Transport`]). A retry is a copy of the input published to the same actor
//! with the next attempt number and the policy's backoff (`status.attempt`, `status.not_before`),
//! and the input is then acknowledged: the attempt count lives in the envelope, so a
//! redelivery after a crash, a shutdown or a failed publish costs no attempt, and `maxDuration`
//! counts from the first attempt (`status.first_attempt_at`).

use crate::message::envelope::{is_end_actor, now_rfc3339, Envelope, Reason, SINK, SUMP};
use crate::message::resiliency::{AttemptInfo, Resiliency};
use crate::message::routing;
use crate::message::status::{Dispatch, FailureAction};
use crate::message::task_event::{TaskEvent, TaskReporter};
use crate::ops::metrics::{ActorMetrics, Metrics};
use crate::ops::trace;
use crate::runtime::executor::CallOutcome;
use crate::runtime::executor::Executor;
use crate::transport::results::ResultStore;
use crate::transport::{Delivery, Outbound, TooLarge, Transport};
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
    /// A retry whose backoff has not passed: have the transport deliver the input again after
    /// `delay`, without running the handler.
    Redeliver {
        /// What is left of the backoff.
        delay: Duration,
    },
}

/// One actor's sidecar: its name, its executor and the transport it moves messages on.
pub struct Sidecar {
    name: String,
    namespace: String,
    executor: Arc<dyn Executor>,
    transport: Arc<dyn Transport>,
    settings: SidecarSettings,
    resiliency: Resiliency,
    metrics: Arc<Metrics>,
    actor_metrics: ActorMetrics,
    results: Option<Arc<dyn ResultStore>>,
    tasks: Option<Arc<dyn TaskReporter>>,
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
            actor_metrics: metrics.actor("default", &name),
            name,
            namespace: "default".to_owned(),
            executor,
            transport,
            settings,
            resiliency: Resiliency::default(),
            metrics,
            results: None,
            tasks: None,
        }
    }

    /// Reports each hop of a gateway task (a message with the `asya-task` header) to `tasks`
    /// before publishing it, so a task's events are in the order its hops happened.
    pub fn with_tasks(mut self, tasks: Arc<dyn TaskReporter>) -> Self {
        self.tasks = Some(tasks);
        self
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
        self.actor_metrics = metrics.actor(&self.namespace, &self.name);
        self.metrics = metrics;
        self
    }

    /// The actor's namespace (its tenant, a label of its metrics; default `default`).
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self.actor_metrics = self.metrics.actor(&self.namespace, &self.name);
        self
    }

    /// The actor's name (its queue).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Everything between receiving bytes and publishing: the decisions around one executor
    /// call. The attempt number and the time of the first attempt come from the envelope, not
    /// from the transport's delivery count.
    pub async fn plan(&self, bytes: &[u8]) -> Plan {
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
        let now_text = now_rfc3339();
        let status = env.status_mut(&now_text); // `accept` always leaves one
        let attempt = status.attempt.max(1);
        if let Some(wait) = status
            .not_before
            .as_deref()
            .and_then(crate::message::envelope::parse_rfc3339)
            .filter(|at| *at > now)
        {
            return Plan::Redeliver {
                delay: (wait - now).try_into().unwrap_or(Duration::ZERO),
            };
        }
        status.not_before = None;
        let first_attempt = status
            .first_attempt_at
            .get_or_insert_with(|| now_text.clone())
            .clone();
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
        let elapsed = crate::message::envelope::parse_rfc3339(&first_attempt)
            .map(|first| (now - first).try_into().unwrap_or(Duration::ZERO))
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
                    retry = Some(decision.delay.unwrap_or_default());
                }
                decision.action
            },
            &now_text,
        );
        if let Some(delay) = retry {
            // The retry is the copy routing addressed to this actor: it waits out the backoff.
            let not_before = now + delay;
            let mut dispatches = dispatches;
            for dispatch in &mut dispatches {
                if dispatch.destination == self.name {
                    let status = dispatch.envelope.status_mut(&now_text);
                    status.not_before = Some(crate::message::routing::format_time(not_before));
                }
            }
            return Plan::Publish(dispatches);
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
        let plan = self.plan(&delivery.bytes);
        let plan = match self.transport.progress_interval() {
            None => plan.await,
            Some(every) => {
                // A handler may run longer than the transport's redelivery timer: report the
                // message in progress meanwhile, so it is not delivered (and run) twice at once.
                tokio::pin!(plan);
                let mut ticks =
                    tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tokio::select! {
                        plan = &mut plan => break plan,
                        _ = ticks.tick() => {
                            if let Err(err) = delivery.acker.in_progress().await {
                                tracing::debug!(actor = %self.name, error = %format!("{err:#}"), "in-progress report failed");
                            }
                        }
                    }
                }
            }
        };
        match plan {
            Plan::Redeliver { delay } => {
                tracing::debug!(actor = %self.name, ?delay, "retry waits out its backoff");
                delivery
                    .acker
                    .nak(Some(delay))
                    .await
                    .context("requesting a redelivery")
            }
            Plan::Publish(dispatches) => {
                for dispatch in dispatches {
                    let mut destination = dispatch.destination.clone();
                    let mut sent = self.send(dispatch).await;
                    if let Some(too_large) = sent
                        .as_ref()
                        .err()
                        .and_then(|e| e.downcast_ref::<TooLarge>())
                    {
                        // Over the transport's limit: the same output would fail every time, so
                        // the input ends here (OutputTooLarge) instead of coming back forever.
                        let failure = routing::output_too_large(
                            &self.name,
                            &delivery.bytes,
                            too_large.size,
                            too_large.limit,
                            time::OffsetDateTime::now_utc(),
                        );
                        tracing::warn!(actor = %self.name, size = too_large.size, limit = too_large.limit,
                            to = %destination, "output over the transport's limit: the message fails with OutputTooLarge");
                        self.metrics.failed(
                            &self.actor_metrics,
                            Reason::OutputTooLarge.as_str(),
                            true,
                        );
                        destination = failure.destination.clone();
                        sent = self.send(failure).await;
                    }
                    if let Err(err) = sent {
                        delivery
                            .acker
                            .nak(Some(Duration::from_millis(500)))
                            .await
                            .ok();
                        return Err(err);
                    }
                    self.metrics.sent(&self.actor_metrics, &destination);
                    if destination == self.name {
                        // A retry: the copy for the next attempt is on the queue.
                        self.metrics.processed(&self.actor_metrics, "retried");
                    }
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
        if let Some(tasks) = &self.tasks {
            if let Some(event) = TaskEvent::for_dispatch(&dispatch, &now_rfc3339()) {
                tasks
                    .report(event)
                    .await
                    .context("reporting the task's hop")?;
            }
        }
        let env: &Envelope = &dispatch.envelope;
        let dedup_id = routing::output_dedup_id(env, &dispatch.destination);
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
    let mut failures = 0u32;
    let mut ended = Ok(());
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
                Some(Ok(delivery)) => {
                    failures = 0;
                    delivery
                }
                Some(Err(err)) => {
                    failures += 1;
                    tracing::warn!(actor = %name, error = %format!("{err:#}"), failures, "receive failed");
                    if failures >= MAX_RECEIVE_FAILURES {
                        // A subscription that only fails is given up: its supervisor starts a
                        // new one (subscribing again) after a backoff.
                        ended = Err(err.context(format!(
                            "'{name}': {failures} receives in a row failed"
                        )));
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100) * failures).await;
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
    ended
}

/// Receives that fail in a row before a queue loop gives its subscription up.
const MAX_RECEIVE_FAILURES: u32 = 10;

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
    use crate::message::status::Dispatch;
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

    /// A handler that always raises `ValueError`.
    struct Fails;

    #[async_trait]
    impl Executor for Fails {
        fn mode(&self) -> Mode {
            Mode::Payload
        }
        async fn call(&self, _input: String, _timeout: Duration) -> CallOutcome {
            CallOutcome::Failed(
                crate::message::outcome::Failure::host(Reason::HandlerError, "boom")
                    .with_type("ValueError"),
            )
        }
    }

    fn failing(policy: &str) -> Sidecar {
        let spec: asya_spec::Resiliency = serde_yaml_ng::from_str(policy).unwrap();
        Sidecar::new(
            "flaky",
            Arc::new(Fails),
            Arc::new(EmbeddedTransport::new()),
            SidecarSettings::default(),
        )
        .with_resiliency(Resiliency::from_spec(&spec).unwrap())
    }

    fn input() -> Vec<u8> {
        Envelope::new(
            Route::through(&["flaky"]).unwrap(),
            json!({"n": 1}),
            "2026-11-25T00:00:00Z",
        )
        .to_bytes()
    }

    fn published(plan: Plan) -> Vec<Dispatch> {
        match plan {
            Plan::Publish(dispatches) => dispatches,
            other => panic!("expected a publish, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn attempts_are_counted_in_the_envelope_not_by_deliveries() {
        let sidecar = failing(
            "policies: {default: {maxAttempts: 3, backoff: constant, initialInterval: 50ms}}",
        );
        let bytes = input();
        // A retry is the input republished to the same actor with the next attempt number and
        // its backoff; the same bytes delivered again (a shutdown return, a failed publish, a
        // crash) make the same decision: redeliveries cost no attempt.
        let first = published(sidecar.plan(&bytes).await);
        for _ in 0..3 {
            let again = published(sidecar.plan(&bytes).await);
            assert_eq!(again[0].envelope.status.as_ref().unwrap().attempt, 2);
        }
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].destination, "flaky");
        let status = first[0].envelope.status.clone().unwrap();
        assert_eq!((status.attempt, status.max_attempts), (2, 3));
        assert_eq!(status.phase, crate::message::envelope::Phase::Retrying);
        assert!(status.not_before.is_some() && status.first_attempt_at.is_some());
        // Delivered before its backoff passed: waits, without running the handler.
        let retry = first[0].envelope.to_bytes();
        assert!(
            matches!(sidecar.plan(&retry).await, Plan::Redeliver { delay } if delay <= Duration::from_millis(50))
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        let second = published(sidecar.plan(&retry).await);
        let status = second[0].envelope.status.clone().unwrap();
        assert_eq!(status.attempt, 3);
        // The first attempt's time is kept across retries.
        assert_eq!(
            status.first_attempt_at,
            first[0].envelope.status.clone().unwrap().first_attempt_at
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        let last = published(sidecar.plan(&second[0].envelope.to_bytes()).await);
        assert_eq!(last[0].destination, SUMP);
        let status = last[0].envelope.status.clone().unwrap();
        assert_eq!(status.reason, Some(Reason::MaxRetriesExhausted));
        assert_eq!((status.attempt, status.max_attempts), (3, 3));
    }

    #[tokio::test]
    async fn max_duration_counts_from_the_first_attempt() {
        let sidecar = failing(
            "policies: {default: {maxAttempts: 10, backoff: constant, initialInterval: 10ms, maxDuration: 1s}}",
        );
        // A message that entered the mesh long ago still gets its retries here...
        let mut env: Envelope = serde_json::from_slice(&input()).unwrap();
        env.status.as_mut().unwrap().created_at = Some("2020-01-01T00:00:00Z".into());
        let first = published(sidecar.plan(&env.to_bytes()).await);
        assert_eq!(first[0].destination, "flaky", "retried");
        // ...until a second has passed since its first attempt here.
        let mut retry = first[0].envelope.clone();
        let status = retry.status.as_mut().unwrap();
        status.first_attempt_at = Some(crate::message::routing::format_time(
            time::OffsetDateTime::now_utc() - time::Duration::seconds(2),
        ));
        status.not_before = None;
        let last = published(sidecar.plan(&retry.to_bytes()).await);
        assert_eq!(last[0].destination, SUMP);
        assert_eq!(
            last[0].envelope.status.clone().unwrap().reason,
            Some(Reason::MaxRetriesExhausted)
        );
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
