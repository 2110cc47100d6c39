//! The operator's Prometheus metrics (prefix `asya_operator_`) and its HTTP endpoints:
//! `/healthz` (the process is up), `/readyz` (the Kubernetes API answered) and `/metrics`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Label of the reconcile counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Operator metrics.
pub struct Metrics {
    registry: Registry,
    reconciliations: Family<ResultLabel, Counter>,
    duration: Histogram,
    leader: Gauge,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("asya_operator");
        let reconciliations = Family::<ResultLabel, Counter>::default();
        registry.register(
            "reconciliations",
            "AsyncActor reconciliations by result (ok, error)",
            reconciliations.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        registry.register(
            "reconcile_duration_seconds",
            "Time one AsyncActor reconciliation took",
            duration.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciliations,
            duration,
            leader,
            ready: AtomicBool::new(false),
        }
    }

    /// Counts one reconciliation.
    pub fn reconciled(&self, ok: bool, seconds: f64) {
        self.reconciliations
            .get_or_create(&ResultLabel {
                result: if ok { "ok" } else { "error" },
            })
            .inc();
        self.duration.observe(seconds);
    }

    /// Sets the leader gauge.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Marks the operator ready (or not) for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding metrics");
        out
    }
}

async fn metrics(State(m): State<Arc<Metrics>>) -> ([(&'static str, &'static str); 1], String) {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
}

async fn ready(State(m): State<Arc<Metrics>>) -> (StatusCode, &'static str) {
    if m.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// The HTTP router of `/healthz`, `/readyz` and `/metrics`.
pub fn router(metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(self::metrics))
        .with_state(metrics)
}

/// Serves [`router`] (and `extra` routes) on `addr` until the process ends.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    extra: axum::Router,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(%addr, "serving /healthz, /readyz, /metrics");
    axum::serve(listener, router(metrics).merge(extra))
        .await
        .context("HTTP server")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters() {
        let m = Metrics::new();
        m.reconciled(true, 0.01);
        m.reconciled(false, 0.02);
        m.set_leader(true);
        let text = m.render();
        assert!(
            text.contains("asya_operator_reconciliations_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("asya_operator_reconciliations_total{result=\"error\"} 1"));
        assert!(text.contains("asya_operator_leader 1"));
        assert!(text.contains("asya_operator_reconcile_duration_seconds_count 2"));
    }
}
