//! The operator's HTTP endpoints on a real socket: `/healthz`, `/readyz` (503 until the
//! Kubernetes API answered), `/metrics` (OpenMetrics text with the reconcile counters).

use asya_operator::metrics::{router, Metrics};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(port: u16, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_owned();
    (code, body)
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let metrics = Arc::new(Metrics::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = router(metrics.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    assert_eq!(get(port, "/healthz").await.0, 200);
    assert_eq!(get(port, "/readyz").await.0, 503);
    metrics.set_ready(true);
    assert_eq!(get(port, "/readyz").await.0, 200);

    metrics.reconciled(true, 0.003);
    metrics.set_leader(true);
    let (code, body) = get(port, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        body.contains("asya_operator_reconciliations_total{result=\"ok\"} 1"),
        "{body}"
    );
    assert!(body.contains("asya_operator_leader 1"), "{body}");
    assert!(
        body.contains("asya_operator_reconcile_duration_seconds_bucket"),
        "{body}"
    );
    assert_eq!(get(port, "/nope").await.0, 404);
}
