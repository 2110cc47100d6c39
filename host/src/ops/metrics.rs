//! Prometheus metrics with the `asya_actor_` names of the design reference.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

type Labels = Vec<(&'static str, String)>;

fn histogram() -> Histogram {
    // 50 µs .. ~50 s
    Histogram::new(exponential_buckets(0.00005, 2.5, 16))
}

/// Every metric the host exports.
pub struct Metrics {
    registry: Registry,
    received: Family<Labels, Counter>,
    processed: Family<Labels, Counter>,
    sent: Family<Labels, Counter>,
    failed: Family<Labels, Counter>,
    processing: Family<Labels, Histogram, fn() -> Histogram>,
    handler: Family<Labels, Histogram, fn() -> Histogram>,
    active: Family<Labels, Gauge>,
    instances: Family<Labels, Gauge>,
    instances_live: Family<Labels, Gauge>,
    cpu: Family<Labels, Counter<f64, AtomicU64>>,
    memory_peak: Family<Labels, Gauge<u64, AtomicU64>>,
    traps: Family<Labels, Counter>,
    broken: Family<Labels, Gauge>,
    /// Destinations that get their own label: the actors this host knows of and the built-in
    /// ones. Any other destination (a route can name anything) is counted as `other`, so the
    /// label set stays bounded whatever messages carry.
    known: RwLock<HashSet<String>>,
}

/// The `destination` label of a destination this host does not know.
pub const OTHER_DESTINATION: &str = "other";

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// One actor's pre-resolved metric handles (no label lookups on the hot path).
#[derive(Clone)]
pub struct ActorMetrics {
    labels: Labels,
    sent: Arc<Mutex<HashMap<String, Counter>>>,
    succeeded: Counter,
    failed: Counter,
    retried: Counter,
    /// Messages taken off the queue.
    pub received: Counter,
    /// Messages in flight.
    pub active: Gauge,
    /// Seconds from receive to ack.
    pub processing: Histogram,
    /// Seconds inside the handler.
    pub handler: Histogram,
    /// CPU seconds inside the handler (this host's threads).
    pub cpu: Counter<f64, AtomicU64>,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("asya_actor");
        let m = Metrics {
            received: Family::default(),
            processed: Family::default(),
            sent: Family::default(),
            failed: Family::default(),
            processing: Family::new_with_constructor(histogram as fn() -> Histogram),
            handler: Family::new_with_constructor(histogram as fn() -> Histogram),
            active: Family::default(),
            instances: Family::default(),
            instances_live: Family::default(),
            cpu: Family::default(),
            memory_peak: Family::default(),
            traps: Family::default(),
            broken: Family::default(),
            registry: Registry::default(),
            known: RwLock::new(
                asya_spec::names::RESERVED_NAMES
                    .iter()
                    .map(|name| name.to_string())
                    .collect(),
            ),
        };
        registry.register(
            "messages_received",
            "Messages taken off an actor's queue",
            m.received.clone(),
        );
        registry.register(
            "messages_processed",
            "Messages finished by an actor, by status",
            m.processed.clone(),
        );
        registry.register(
            "messages_sent",
            "Envelopes published by an actor, by destination",
            m.sent.clone(),
        );
        registry.register(
            "messages_failed",
            "Failed handler calls, by reason",
            m.failed.clone(),
        );
        registry.register(
            "processing_duration_seconds",
            "Receive to ack",
            m.processing.clone(),
        );
        registry.register(
            "handler_duration_seconds",
            "Time inside the handler",
            m.handler.clone(),
        );
        registry.register("active_messages", "Messages in flight", m.active.clone());
        registry.register(
            "instance_count",
            "Instances created by the actor's pool",
            m.instances.clone(),
        );
        registry.register(
            "instances_live",
            "Instances the actor's pool holds now (0 for an idle actor)",
            m.instances_live.clone(),
        );
        registry.register(
            "cpu_seconds",
            "CPU time the host spent inside the actor's handler calls",
            m.cpu.clone(),
        );
        registry.register(
            "memory_peak_bytes",
            "Largest linear memory of an instance",
            m.memory_peak.clone(),
        );
        registry.register(
            "traps",
            "Instances stopped by the sandbox, by kind",
            m.traps.clone(),
        );
        registry.register(
            "broken",
            "1 while an actor of a pool does not load (its last start failed); the others serve",
            m.broken.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Marks an actor of `namespace` as not loading (`true`) or started again.
    pub fn broken(&self, namespace: &str, actor: &str, broken: bool) {
        let labels = vec![
            ("actor", actor.to_owned()),
            ("namespace", namespace.to_owned()),
        ];
        self.broken.get_or_create(&labels).set(i64::from(broken));
    }

    /// Declares `actors` known destinations (an actor this host serves is known already).
    pub fn know<'a>(&self, actors: impl IntoIterator<Item = &'a str>) {
        let mut known = self.known.write().expect("metrics lock");
        known.extend(actors.into_iter().map(str::to_owned));
    }

    fn destination_label<'a>(&self, destination: &'a str) -> &'a str {
        if self
            .known
            .read()
            .expect("metrics lock")
            .contains(destination)
        {
            destination
        } else {
            OTHER_DESTINATION
        }
    }

    /// Handles for one actor of `namespace` (the tenant: every per-actor series carries it, so
    /// a shared pool's accounting sums by namespace and two tenants' actors of one name stay
    /// apart).
    pub fn actor(&self, namespace: &str, actor: &str) -> ActorMetrics {
        self.know([actor]);
        let labels = vec![
            ("actor", actor.to_owned()),
            ("namespace", namespace.to_owned()),
        ];
        let status = |s: &str| {
            let mut labels = labels.clone();
            labels.push(("status", s.to_owned()));
            self.processed.get_or_create_owned(&labels)
        };
        ActorMetrics {
            labels: labels.clone(),
            sent: Arc::default(),
            succeeded: status("succeeded"),
            failed: status("failed"),
            retried: status("retried"),
            received: self.received.get_or_create_owned(&labels),
            active: self.active.get_or_create_owned(&labels),
            processing: self.processing.get_or_create_owned(&labels),
            handler: self.handler.get_or_create_owned(&labels),
            cpu: self.cpu.get_or_create_owned(&labels),
        }
    }

    /// Counts a finished message by status (`succeeded`, `failed`, `retried`).
    pub fn processed(&self, am: &ActorMetrics, status: &'static str) {
        match status {
            "succeeded" => am.succeeded.inc(),
            "failed" => am.failed.inc(),
            _ => am.retried.inc(),
        };
    }

    /// Counts an envelope sent to `destination`.
    pub fn sent(&self, am: &ActorMetrics, destination: &str) {
        let destination = self.destination_label(destination);
        let mut sent = am.sent.lock().expect("metrics lock");
        if let Some(counter) = sent.get(destination) {
            counter.inc();
            return;
        }
        let mut labels = am.labels.clone();
        labels.push(("destination", destination.to_owned()));
        let counter = self.sent.get_or_create_owned(&labels);
        counter.inc();
        sent.insert(destination.to_owned(), counter);
    }

    /// Counts a failure by reason; sandbox stops also count as traps by kind.
    pub fn failed(&self, am: &ActorMetrics, reason: &str, trap: bool) {
        let mut labels = am.labels.clone();
        labels.push(("reason", reason.to_owned()));
        self.failed.get_or_create(&labels).inc();
        if trap {
            let mut labels = am.labels.clone();
            labels.push(("kind", reason.to_owned()));
            self.traps.get_or_create(&labels).inc();
        }
    }

    /// Records the pool figures of an actor.
    pub fn pool(&self, namespace: &str, actor: &str, instances: u64, live: u64, memory_peak: u64) {
        let labels = vec![
            ("actor", actor.to_owned()),
            ("namespace", namespace.to_owned()),
        ];
        self.instances.get_or_create(&labels).set(instances as i64);
        self.instances_live.get_or_create(&labels).set(live as i64);
        self.memory_peak.get_or_create(&labels).set(memory_peak);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_outside_the_known_actors_are_counted_as_other() {
        let metrics = Metrics::new();
        let a = metrics.actor("team-a", "a");
        metrics.know(["b"]);
        for destination in ["b", "x-sink", "x-sump"] {
            metrics.sent(&a, destination);
        }
        // A route may name anything: 1,000 different names must not make 1,000 series.
        for i in 0..1000 {
            metrics.sent(&a, &format!("made-up-{i}"));
        }
        let text = metrics.render();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("asya_actor_messages_sent_total{"))
            .collect();
        assert_eq!(series.len(), 4, "{series:#?}");
        assert!(
            text.contains(r#"asya_actor_messages_sent_total{actor="a",namespace="team-a",destination="other"} 1000"#),
            "{text}"
        );
        assert!(text.contains(r#"destination="b""#));
    }
}
