//! Production faults (issue 14), on a real nats-server and the real `asya-host run`: nothing
//! loops forever, nothing dies silently, nothing grows without bound.
//! - a result over the server's `max_payload` ends at `x-sump` with `OutputTooLarge` after one
//!   attempt, whether the handler's result alone is too large (the host's output limit is the
//!   server's when smaller) or only the envelope around it is (checked before publishing);
//! - a handler that runs three times the consumer's ack wait is processed once: the host
//!   reports the message in progress while it runs, so JetStream does not deliver it again;
//! - the namespace stream holds only what is not yet processed, and results expire;
//! - a NATS restart under load: every message still ends, `/readyz` reports the outage and the
//!   recovery, and the supervised end actors are running again.

mod common;

use asya_host::message::envelope::{Envelope, Phase, Reason, Route};
use asya_host::transport::nats::{self, NatsResults, NatsSettings, NatsTransport};
use asya_host::transport::results::ResultStore;
use asya_host::transport::{Outbound, Transport};
use common::nats::{http_get, HostProcess, NatsServer};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const NS: &str = "limits";
/// The server's `max_payload` in these tests (NATS' default is 1 MiB).
const MAX_PAYLOAD: usize = 64 * 1024;

fn write_manifest(dir: &Path, name: &str, spec: &str) {
    std::fs::write(
        dir.join(format!("{name}.yaml")),
        format!(
            "apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {{name: {name}, namespace: {NS}}}\n\
             spec:\n  handler: behaviours.behave\n{spec}"
        ),
    )
    .unwrap();
}

async fn client(server: &NatsServer) -> (NatsTransport, NatsResults) {
    client_in(server, NS).await
}

async fn send(transport: &NatsTransport, actor: &str, payload: Value) -> String {
    let env = Envelope::new(
        Route::through(&[actor]).unwrap(),
        payload,
        "2026-12-02T00:00:00Z",
    );
    transport
        .publish(
            actor,
            Outbound {
                bytes: env.to_bytes(),
                dedup_id: format!("{}:client", env.id),
            },
        )
        .await
        .unwrap();
    env.id
}

/// The value of the metric line starting with `prefix` (0 when absent).
fn metric(host: &HostProcess, prefix: &str) -> f64 {
    let (_, body) = http_get(host.http_port, "/metrics").unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_the_servers_max_payload_ends_at_sump_after_one_attempt() {
    let server = NatsServer::start_with_config(&format!("max_payload: {MAX_PAYLOAD}\n"));
    let dir = tempfile::tempdir().unwrap();
    // Five attempts are allowed: a retry loop would show in the attempt count and the metrics.
    write_manifest(
        dir.path(),
        "big",
        "  resiliency:\n    policies:\n      default: {maxAttempts: 5, backoff: constant, initialInterval: 200ms}\n",
    );
    let component = common::component("behaviours.behave", "payload");
    let host = HostProcess::start(
        &server.url(),
        dir.path(),
        &[("big", component.as_path())],
        &["--ack-wait", "2s"],
    );
    let (transport, results) = client(&server).await;
    // The result alone is over the limit (the handler's output limit became the server's).
    let whole = send(&transport, "big", json!({"do": "big", "bytes": 2_000_000})).await;
    // The result fits; the envelope around it does not (refused before publishing).
    let limit = MAX_PAYLOAD - 1024;
    let edge = send(
        &transport,
        "big",
        json!({"do": "big", "bytes": limit - 100}),
    )
    .await;
    for (id, what) in [
        (&whole, "result over the limit"),
        (&edge, "envelope over the limit"),
    ] {
        let done = results.wait(id, Duration::from_secs(60)).await.unwrap();
        let status = done.status.clone().unwrap();
        assert_eq!(status.phase, Phase::Failed, "{what}: {status:?}");
        assert_eq!(
            status.reason,
            Some(Reason::OutputTooLarge),
            "{what}: {status:?}"
        );
        assert_eq!(status.attempt, 1, "{what}: one attempt");
        let error = status.error.unwrap();
        assert_eq!(error.kind, "OutputTooLarge", "{what}");
        assert!(
            error.message.contains(&limit.to_string()) || error.message.contains("bytes"),
            "{what}: {}",
            error.message
        );
        // The input payload (which fit) is kept for whoever reads the error end.
        assert_eq!(done.payload["do"], "big", "{what}");
    }
    // Nothing comes back: each message was received once and never retried.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        metric(
            &host,
            "asya_actor_messages_received_total{actor=\"big\",namespace=\"limits\"} "
        ),
        2.0
    );
    assert_eq!(
        metric(
            &host,
            "asya_actor_messages_failed_total{actor=\"big\",namespace=\"limits\",reason=\"OutputTooLarge\"} "
        ),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_running_three_times_the_ack_wait_is_processed_once() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    write_manifest(
        dir.path(),
        "slow",
        "  resiliency: {actorTimeout: 20s}\n  sandbox: {cpuTimeout: 20s, maxInstances: 4}\n",
    );
    let component = common::component("behaviours.behave", "payload");
    let host = HostProcess::start(
        &server.url(),
        dir.path(),
        &[("slow", component.as_path())],
        &["--ack-wait", "1s"],
    );
    let (transport, results) = client(&server).await;
    let id = send(&transport, "slow", json!({"do": "sleep", "seconds": 3.2})).await;
    let done = results.wait(&id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(done.status.unwrap().phase, Phase::Succeeded);
    // Redeliveries past the ack wait would have started more runs by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        metric(
            &host,
            "asya_actor_messages_received_total{actor=\"slow\",namespace=\"limits\"} "
        ),
        1.0,
        "the message was delivered (and its handler run) once"
    );
    assert_eq!(
        metric(
            &host,
            "asya_actor_handler_duration_seconds_count{actor=\"slow\",namespace=\"limits\"} "
        ),
        1.0
    );
}

/// The namespace stream's message count and bytes.
async fn stream_size(transport: &NatsTransport) -> (u64, u64) {
    let mut stream = transport.stream().await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    (state.messages, state.bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_through_three_actors_leave_the_stream_as_it_was() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let component = common::component("behaviours.behave", "payload");
    for name in ["one", "two", "three"] {
        write_manifest(dir.path(), name, "  sandbox: {maxInstances: 8}\n");
    }
    let (transport, results) = client(&server).await;
    let before = stream_size(&transport).await;
    let _host = HostProcess::start(
        &server.url(),
        dir.path(),
        &[
            ("one", component.as_path()),
            ("two", component.as_path()),
            ("three", component.as_path()),
        ],
        &["--batch", "32"],
    );
    let js = transport.jetstream();
    let total = 10_000;
    for chunk in (0..total).collect::<Vec<_>>().chunks(500) {
        let mut acks = Vec::new();
        for i in chunk {
            let env = Envelope::new(
                Route::through(&["one", "two", "three"]).unwrap(),
                json!({"i": i}),
                "2026-12-02T00:00:00Z",
            );
            let msg = async_nats::jetstream::message::PublishMessage::build()
                .payload(env.to_bytes().into())
                .message_id(format!("{}:client", env.id));
            acks.push(
                js.send_publish(nats::subject(NS, "one"), msg)
                    .await
                    .unwrap(),
            );
        }
        for ack in acks {
            ack.await.unwrap();
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while results.stored().await.unwrap() < total as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {total} ended",
            results.stored().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // 30,000 messages went through the stream (10,000 to each actor); every one was
    // acknowledged, so work-queue retention removed it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let after = stream_size(&transport).await;
        if after == before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stream holds {after:?} (messages, bytes) after all work ended; before: {before:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_expire_after_their_namespaces_ttl() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    write_manifest(dir.path(), "echo", "");
    let component = common::component("behaviours.behave", "payload");
    let _host = HostProcess::start(
        &server.url(),
        dir.path(),
        &[("echo", component.as_path())],
        &[
            "--results-ttl",
            "1h",
            "--results-ttl-for",
            &format!("{NS}=2s"),
        ],
    );
    let client = nats::connect(&server.url()).await.unwrap();
    // The host made the namespace's bucket with that TTL: open it without creating.
    let transport = NatsTransport::new(
        client,
        NS,
        NatsSettings {
            create: false,
            ..NatsSettings::default()
        },
    )
    .await
    .unwrap();
    let results = transport.results().await.unwrap();
    let id = send(&transport, "echo", json!({"do": "echo"})).await;
    results.wait(&id, Duration::from_secs(30)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        results.get(&id).await.unwrap().is_none(),
        "the result is gone after the namespace's 2 s TTL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_under_load_loses_nothing_and_health_reports_it() {
    let mut server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    write_manifest(dir.path(), "echo", "  sandbox: {maxInstances: 8}\n");
    let component = common::component("behaviours.behave", "payload");
    // With --end-queues the end actors consume x-sink / x-sump and store: they are busy too.
    let host = HostProcess::start(
        &server.url(),
        dir.path(),
        &[("echo", component.as_path())],
        &[
            "--ack-wait",
            "2s",
            "--end-queues",
            "--unhealthy-after",
            "60s",
        ],
    );
    let (transport, results) = client(&server).await;
    let total = 3_000u64;
    let mut ids = Vec::new();
    for i in 0..total {
        ids.push(send(&transport, "echo", json!({"i": i})).await);
    }
    // Mid-stream, NATS goes away: the host is not ready (it cannot consume), but healthy (the
    // outage is shorter than --unhealthy-after); then NATS comes back on the same storage.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while results.stored().await.unwrap() < total / 10 {
        assert!(std::time::Instant::now() < deadline, "nothing ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (code, body) = http_get(host.http_port, "/readyz").unwrap();
        if code == 503 {
            assert!(body.contains("not ready"), "{body}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz never reported the outage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(http_get(host.http_port, "/healthz").unwrap().0, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while http_get(host.http_port, "/readyz").unwrap().0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz never recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every message ends, once.
    let (_transport, results) = client(&server).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while results.stored().await.unwrap() < total {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {total} ended after the restart",
            results.stored().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in ids.iter().step_by(97) {
        let done = results.get(id).await.unwrap().expect("ended");
        assert_eq!(done.status.unwrap().phase, Phase::Succeeded);
    }
    assert_eq!(http_get(host.http_port, "/healthz").unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_fan_in_stores_each_part_once_and_expires_open_fan_outs() {
    use asya_host::actor::fanin::{Arrival, FanInStore, NatsFanIn};
    use asya_host::message::flow::{self, CHILD_HEADER, FANIN, PARENT_HEADER};
    let server = NatsServer::start();
    let client = nats::connect(&server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let store = NatsFanIn::open(&js, NS).await.unwrap();
    let count = 200;
    let mut parent = Envelope::new(
        Route::through(&[FANIN, "after"]).unwrap(),
        json!({"q": "x"}),
        "2026-12-02T00:00:00Z",
    );
    parent.headers.insert(
        PARENT_HEADER.into(),
        json!({"count": count, "target": ["r"]}),
    );
    let key = flow::fanout_key(&parent);
    let child = |index: usize| {
        let mut child = Envelope::new(
            Route::through(&[FANIN]).unwrap(),
            json!({"item": index, "pad": "x".repeat(2000)}),
            "2026-12-02T00:00:00Z",
        );
        child.headers.insert(
            CHILD_HEADER.into(),
            json!({"key": key, "index": index, "count": count}),
        );
        child
    };
    // Children in reverse order, concurrently in pairs, each one delivered twice.
    let mut completes = 0;
    for index in (0..count).rev() {
        let env = child(index);
        let role = flow::fanin_role(&env).unwrap();
        let (a, b) = tokio::join!(
            store.arrive(&key, &role, env.clone()),
            store.arrive(&key, &role, env)
        );
        for arrival in [a.unwrap(), b.unwrap()] {
            assert!(matches!(arrival, Arrival::Waiting), "no parent yet");
        }
    }
    // Before the parent arrives the fan-out is open; with a zero timeout it counts as expired.
    let open = store.expired(Duration::ZERO).await.unwrap();
    assert_eq!(
        (open.len(), open[0].arrived, open[0].count),
        (1, count, count)
    );
    assert!(open[0].parent.is_none());
    // The index holds a few bytes per child, never the children: no O(n^2) rewriting.
    let kv = js
        .get_key_value(asya_spec::names::fanin_bucket(NS))
        .await
        .unwrap();
    let index_key = format!("{}.i", nats::result_key(&key));
    let index = kv.get(&index_key).await.unwrap().unwrap();
    assert!(
        index.len() < 8 * count + 200,
        "index of {} bytes",
        index.len()
    );
    match store
        .arrive(&key, &flow::fanin_role(&parent).unwrap(), parent.clone())
        .await
        .unwrap()
    {
        Arrival::Complete(merged_parent, children) => {
            completes += 1;
            assert_eq!(merged_parent.id, parent.id);
            let items: Vec<_> = children.iter().map(|c| c.payload["item"].clone()).collect();
            assert_eq!(items, (0..count).map(|i| json!(i)).collect::<Vec<_>>());
        }
        other => panic!("expected the fan-out complete, got {other:?}"),
    }
    assert_eq!(completes, 1);
    store.finish(&key).await.unwrap();
    // Merged: its parts are gone, a late duplicate is dropped, nothing is open.
    assert!(kv.get(&index_key).await.unwrap().is_none());
    let late = child(3);
    assert!(matches!(
        store
            .arrive(&key, &flow::fanin_role(&late).unwrap(), late)
            .await
            .unwrap(),
        Arrival::AlreadyDone
    ));
    assert!(store.expired(Duration::ZERO).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_while_fan_ins_are_open_loses_nothing() {
    let (manifests, components) = common::fan_flow("production-faults");
    let mut server = NatsServer::start();
    let pairs: Vec<(&str, &Path)> = components
        .iter()
        .map(|(n, p)| (n.as_str(), p.as_path()))
        .collect();
    // The end actors consume their queues too (--end-queues): fan-in and end actors are busy
    // when the server goes away.
    let host = HostProcess::start(
        &server.url(),
        &manifests,
        &pairs,
        &["--ack-wait", "3s", "--end-queues"],
    );
    let client = nats::connect(&server.url()).await.unwrap();
    let transport = NatsTransport::new(client, "default", NatsSettings::default())
        .await
        .unwrap();
    let results = transport.results().await.unwrap();
    let messages = 40usize;
    let mut ids = Vec::new();
    for i in 0..messages {
        let items: Vec<usize> = (0..(i % 5 + 20)).collect();
        let env = Envelope::new(
            Route::through(&["start-fan"]).unwrap(),
            json!({"text": format!("m{i}"), "items": items, "i": i}),
            "2026-12-02T00:00:00Z",
        );
        ids.push((env.id.clone(), i));
        transport
            .publish(
                "start-fan",
                Outbound {
                    bytes: env.to_bytes(),
                    dedup_id: format!("{}:client", env.id),
                },
            )
            .await
            .unwrap();
    }
    // Once some have ended (so fan-ins are open and the end actors storing), NATS goes away.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while results.stored().await.unwrap() < 3 {
        assert!(std::time::Instant::now() < deadline, "nothing ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        (results.stored().await.unwrap() as usize) < messages,
        "the restart must happen mid-run"
    );
    server.stop();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while http_get(host.http_port, "/readyz").unwrap().0 != 503 {
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz never reported the outage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while http_get(host.http_port, "/readyz").unwrap().0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz never recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_transport, results) = client_in(&server, "default").await;
    for (id, i) in &ids {
        let env = results.wait(id, Duration::from_secs(120)).await.unwrap();
        let status = env.status.as_ref().unwrap();
        assert_eq!(status.phase, Phase::Succeeded, "{id}: {status:?}");
        let squares: Vec<Value> = (0..(i % 5 + 20))
            .map(|j| json!({"item": j, "square": j * j}))
            .collect();
        assert_eq!(env.payload["squares"], Value::Array(squares), "message {i}");
    }
    assert_eq!(
        results.accepted().await.unwrap() as usize,
        messages,
        "each stored once"
    );
    assert_eq!(http_get(host.http_port, "/healthz").unwrap().0, 200);
}

async fn client_in(server: &NatsServer, namespace: &str) -> (NatsTransport, NatsResults) {
    let client = nats::connect(&server.url()).await.unwrap();
    let transport = NatsTransport::new(client, namespace, NatsSettings::default())
        .await
        .unwrap();
    let results = transport.results().await.unwrap();
    (transport, results)
}
