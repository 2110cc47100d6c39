//! Fault tests against a real nats-server (JetStream) started on a free loopback port, with the
//! real `asya-host run` process and real components: nothing is lost or duplicated when the host
//! is killed, when the server restarts, or when messages are poison, malformed or oversize.

mod common;

use asya_host::message::envelope::{Envelope, Reason, Route, SINK};
use asya_host::transport::nats::{self, NatsResults, NatsSettings, NatsTransport};
use asya_host::transport::results::ResultStore;
use asya_host::transport::{Outbound, Transport};
use common::nats::{http_get, signal, HostProcess, NatsServer};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const NS: &str = "faults";

fn manifests() -> PathBuf {
    common::repo_root().join("tests/fixtures/actors")
}

fn start_host(server: &NatsServer, extra: &[&str]) -> HostProcess {
    let component = common::component("behaviours.behave", "payload");
    HostProcess::start(
        &server.url(),
        &manifests(),
        &[
            ("echo", component.as_path()),
            ("poison", component.as_path()),
        ],
        extra,
    )
}

async fn client(server: &NatsServer) -> (NatsTransport, NatsResults) {
    let client = nats::connect(&server.url()).await.unwrap();
    let transport = NatsTransport::new(client, NS, NatsSettings::default())
        .await
        .unwrap();
    let results = transport.results().await.unwrap();
    (transport, results)
}

/// Publishes `n` envelopes along `route`, pipelining the JetStream acks; returns their ids.
async fn publish_many(
    transport: &NatsTransport,
    route: &[&str],
    n: usize,
    payload: Value,
) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    let js = transport.jetstream();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut acks = Vec::new();
        for i in chunk {
            let mut p = payload.clone();
            p["i"] = json!(i);
            let env = Envelope::new(Route::through(route).unwrap(), p, "2026-11-25T00:00:00Z");
            ids.push(env.id.clone());
            let msg = async_nats::jetstream::message::PublishMessage::build()
                .payload(env.to_bytes().into())
                .message_id(format!("{}:client", env.id));
            acks.push(
                js.send_publish(nats::subject(NS, route[0]), msg)
                    .await
                    .unwrap(),
            );
        }
        for ack in acks {
            ack.await.unwrap();
        }
    }
    ids
}

/// Messages that have ended: results the host stored in the bucket (at x-sink or x-sump).
async fn ended(results: &NatsResults) -> usize {
    results.stored().await.unwrap() as usize
}

async fn wait_for_ended(results: &NatsResults, at_least: usize, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let n = ended(results).await;
        if n >= at_least || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_delivers_every_message_exactly_once() {
    let server = NatsServer::start();
    let flags = ["--ack-wait", "2s", "--batch", "32"];
    let host = start_host(&server, &flags);
    let (transport, results) = client(&server).await;
    let ids = publish_many(&transport, &["echo"], 10_000, json!({"text": "hi"})).await;

    let before = wait_for_ended(&results, 1_500, Duration::from_secs(120)).await;
    assert!(
        (1_500..10_000).contains(&before),
        "killed mid-stream (after {before})"
    );
    host.kill9();
    let _host = start_host(&server, &flags);

    let total = wait_for_ended(&results, 10_000, Duration::from_secs(180)).await;
    assert_eq!(total, 10_000, "every message ended");
    tokio::time::sleep(Duration::from_secs(3)).await; // redeliveries past ack-wait would show now
    assert_eq!(ended(&results).await, 10_000);
    assert_eq!(
        results.accepted().await.unwrap(),
        10_000,
        "exactly once: each result was stored once (a redelivered message's repeat was dropped)"
    );
    let all = results.all().await.unwrap();
    assert!(
        all.iter().all(|env| env.route.curr == SINK),
        "every message ended at x-sink"
    );
    let stored: HashSet<String> = all.into_iter().map(|env| env.id).collect();
    let sent: HashSet<String> = ids.into_iter().collect();
    assert_eq!(
        stored, sent,
        "the results bucket holds exactly the ids sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_restart_mid_stream_loses_nothing() {
    let mut server = NatsServer::start();
    let _host = start_host(&server, &["--ack-wait", "3s"]);
    let (transport, results) = client(&server).await;
    // A short sleep in the handler keeps the stream busy long enough to restart mid-way.
    publish_many(
        &transport,
        &["echo"],
        3_000,
        json!({"do": "sleep", "seconds": 0.005}),
    )
    .await;
    let before = wait_for_ended(&results, 300, Duration::from_secs(60)).await;
    assert!(before < 3_000, "restarted mid-stream (after {before})");
    server.restart();
    let (_, results) = client(&server).await;
    let total = wait_for_ended(&results, 3_000, Duration::from_secs(180)).await;
    assert_eq!(
        total, 3_000,
        "the host reconnected and every message arrived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_retried_with_delays_then_ends_at_the_sump() {
    let server = NatsServer::start();
    let _host = start_host(&server, &[]);
    let (transport, results) = client(&server).await;
    let started = Instant::now();
    let env = Envelope::new(
        Route::through(&["poison"]).unwrap(),
        json!({"do": "raise"}),
        "2026-11-25T00:00:00Z",
    );
    transport
        .publish(
            "poison",
            Outbound {
                bytes: env.to_bytes(),
                dedup_id: env.id.clone(),
            },
        )
        .await
        .unwrap();
    let done = results
        .wait(&env.id, Duration::from_secs(60))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let status = done.status.unwrap();
    assert_eq!(done.route.curr, "x-sump");
    assert_eq!(status.reason, Some(Reason::MaxRetriesExhausted));
    assert_eq!(status.attempt, 3, "status.attempt counts the deliveries");
    assert_eq!(status.max_attempts, 3);
    assert_eq!(status.error.unwrap().kind, "KeyError");
    assert!(
        elapsed >= Duration::from_millis(800),
        "two 400 ms backoffs were observed ({elapsed:?})"
    );

    // A non-retryable error ends at once.
    let env = Envelope::new(
        Route::through(&["poison"]).unwrap(),
        json!({"do": "no-such-action"}),
        "2026-11-25T00:00:00Z",
    );
    transport
        .publish(
            "poison",
            Outbound {
                bytes: env.to_bytes(),
                dedup_id: env.id.clone(),
            },
        )
        .await
        .unwrap();
    let done = results
        .wait(&env.id, Duration::from_secs(30))
        .await
        .unwrap();
    let status = done.status.unwrap();
    assert_eq!(status.reason, Some(Reason::NonRetryable));
    assert_eq!(status.attempt, 1);
}

async fn find_result(results: &NatsResults, pred: impl Fn(&Envelope) -> bool) -> Envelope {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for id in results.ids().await.unwrap() {
            if let Some(env) = results.get(&id).await.unwrap() {
                if pred(&env) {
                    return env;
                }
            }
        }
        assert!(Instant::now() < deadline, "no matching result");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversize_messages_end_at_the_sump_with_the_reason() {
    let server = NatsServer::start();
    let _host = start_host(&server, &["--max-message-bytes", "65536"]);
    let (transport, results) = client(&server).await;
    transport
        .publish(
            "echo",
            Outbound {
                bytes: b"\xff\xfenot an envelope".to_vec(),
                dedup_id: "raw-1".into(),
            },
        )
        .await
        .unwrap();
    let parse = find_result(&results, |e| e.payload.get("raw_base64").is_some()).await;
    assert_eq!(parse.status.unwrap().reason, Some(Reason::ParseError));

    // The end actors still consume their queues: a finished envelope published to x-sink by
    // someone else is stored, and garbage there is kept as a ParseError.
    let finished = Envelope::new(
        Route::through(&[SINK]).unwrap(),
        json!({"from": "elsewhere"}),
        "2026-11-25T00:00:00Z",
    );
    for (bytes, dedup_id) in [
        (finished.to_bytes(), finished.id.clone()),
        (b"not an envelope either".to_vec(), "raw-2".to_owned()),
    ] {
        transport
            .publish(SINK, Outbound { bytes, dedup_id })
            .await
            .unwrap();
    }
    let stored = results
        .wait(&finished.id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(stored.payload, json!({"from": "elsewhere"}));
    let garbage = find_result(&results, |e| {
        e.payload.get("raw") == Some(&json!("not an envelope either"))
    })
    .await;
    assert_eq!(garbage.route.prev, vec![SINK.to_owned()]);

    let env = Envelope::new(
        Route::through(&["echo"]).unwrap(),
        json!({"blob": "x".repeat(100_000)}),
        "2026-11-25T00:00:00Z",
    );
    transport
        .publish(
            "echo",
            Outbound {
                bytes: env.to_bytes(),
                dedup_id: env.id.clone(),
            },
        )
        .await
        .unwrap();
    let big = find_result(&results, |e| {
        e.status
            .as_ref()
            .and_then(|s| s.error.as_ref())
            .is_some_and(|err| err.message.contains("exceeds the limit"))
    })
    .await;
    let error = big.status.unwrap().error.unwrap();
    assert!(error.message.contains("65536"), "{}", error.message);
}

/// The end actors consume their queues (`--end-queues`): a finished envelope that reaches
/// x-sink twice, as it does when the store's write landed and the acknowledgement was lost to a
/// server restart, is stored once. (It was written twice before, once per delivery.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_message_delivered_twice_to_an_end_actor_is_stored_once() {
    let server = NatsServer::start();
    let _host = start_host(&server, &["--end-queues"]);
    let (transport, results) = client(&server).await;
    let finished = Envelope::new(
        Route::through(&[SINK]).unwrap(),
        json!({"done": true}),
        "2026-11-25T00:00:00Z",
    );
    let other = Envelope::new(
        Route::through(&[SINK]).unwrap(),
        json!({"done": "too"}),
        "2026-11-25T00:00:00Z",
    );
    // Two queue messages holding the same envelope (distinct publish ids, so the x-sink stream
    // keeps both and the end actor receives both), then a third, different one.
    for (env, publish_id) in [(&finished, "a"), (&finished, "b"), (&other, "c")] {
        transport
            .publish(
                SINK,
                Outbound {
                    bytes: env.to_bytes(),
                    dedup_id: format!("{}:{publish_id}", env.id),
                },
            )
            .await
            .unwrap();
    }
    results
        .wait(&other.id, Duration::from_secs(30))
        .await
        .unwrap();
    results
        .wait(&finished.id, Duration::from_secs(30))
        .await
        .unwrap();
    // The end actor stores several at once: a moment more lets a second write of the repeat
    // land, if there were one.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(ended(&results).await, 2);
    assert_eq!(
        results.accepted().await.unwrap(),
        2,
        "the second copy was dropped as a repeat, not written again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_work_and_exits_zero() {
    let server = NatsServer::start();
    let flags = ["--ack-wait", "2s", "--grace", "20s"];
    let mut host = start_host(&server, &flags);
    let (transport, results) = client(&server).await;
    publish_many(
        &transport,
        &["echo"],
        40,
        json!({"do": "sleep", "seconds": 0.3}),
    )
    .await;
    wait_for_ended(&results, 4, Duration::from_secs(30)).await;
    let stopping = Instant::now();
    signal(&host.child, 15);
    let status = host.child.wait().unwrap();
    assert!(status.success(), "exit code 0 after SIGTERM ({status:?})");
    assert!(
        stopping.elapsed() < Duration::from_secs(20),
        "within the grace period"
    );
    // Whatever was not finished is delivered to the next host; nothing is lost.
    let _next = start_host(&server, &flags);
    let total = wait_for_ended(&results, 40, Duration::from_secs(60)).await;
    assert_eq!(total, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_trace_context() {
    let server = NatsServer::start();
    let host = start_host(&server, &[]);
    let (transport, results) = client(&server).await;
    let mut env = Envelope::new(
        Route::through(&["echo"]).unwrap(),
        json!({"text": "hi"}),
        "2026-11-25T00:00:00Z",
    );
    env.headers.insert(
        "traceparent".into(),
        json!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    transport
        .publish(
            "echo",
            Outbound {
                bytes: env.to_bytes(),
                dedup_id: env.id.clone(),
            },
        )
        .await
        .unwrap();
    let done = results
        .wait(&env.id, Duration::from_secs(30))
        .await
        .unwrap();
    let traceparent = done.headers["traceparent"].as_str().unwrap().to_owned();
    assert!(
        traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{traceparent}"
    );
    assert_ne!(
        traceparent,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );

    assert_eq!(http_get(host.http_port, "/healthz").unwrap().0, 200);
    assert_eq!(http_get(host.http_port, "/readyz").unwrap().0, 200);
    let (code, body) = http_get(host.http_port, "/metrics").unwrap();
    assert_eq!(code, 200);
    for line in [
        "asya_actor_messages_received_total{actor=\"echo\",namespace=\"faults\"} 1",
        "asya_actor_messages_processed_total{actor=\"echo\",namespace=\"faults\",status=\"succeeded\"} 1",
        "asya_actor_messages_sent_total{actor=\"echo\",namespace=\"faults\",destination=\"x-sink\"} 1",
        "asya_actor_handler_duration_seconds_count{actor=\"echo\",namespace=\"faults\"} 1",
        "asya_actor_active_messages{actor=\"echo\",namespace=\"faults\"} 0",
    ] {
        assert!(body.contains(line), "missing {line:?} in\n{body}");
    }
    let cpu: f64 = body
        .lines()
        .find_map(|l| {
            l.strip_prefix("asya_actor_cpu_seconds_total{actor=\"echo\",namespace=\"faults\"} ")
        })
        .expect("per-actor CPU time is exported")
        .parse()
        .unwrap();
    assert!(cpu > 0.0 && cpu < 5.0, "echo used {cpu} CPU seconds");
    // The pool figures are refreshed every second.
    std::thread::sleep(Duration::from_millis(1200));
    let (_, body) = http_get(host.http_port, "/metrics").unwrap();
    for line in [
        "asya_actor_instances_live{actor=\"echo\",namespace=\"faults\"} 1",
        "asya_actor_instances_live{actor=\"poison\",namespace=\"faults\"} 0",
    ] {
        assert!(body.contains(line), "missing {line:?} in\n{body}");
    }
}
