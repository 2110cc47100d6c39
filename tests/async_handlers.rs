//! `async def` handlers in WASM (world `actor-async`): many calls in flight in one instance,
//! each bounded on its own (timeout, exception), the instance bounded as a whole (CPU deadline,
//! memory cap), outbound HTTP that awaits and only to granted hosts.

mod common;

use asya_host::app::local::{ActorDef, LocalHost};
use asya_host::message::envelope::{Envelope, Reason, SINK, SUMP};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

fn waits() -> std::path::PathBuf {
    common::component("waits.wait", "payload")
}

/// An async actor with one instance running up to `concurrency` calls.
fn one_instance(name: &str, concurrency: usize) -> ActorDef {
    let mut def = ActorDef::new(name, waits());
    def.limits.max_instances = 1;
    def.limits.max_concurrency = concurrency;
    def.settings.concurrency = concurrency;
    def
}

fn reason(env: &Envelope) -> Option<Reason> {
    env.status.as_ref().and_then(|s| s.reason)
}

/// Sends every payload, then collects every result by envelope id.
async fn run_all(
    host: &mut LocalHost,
    actor: &str,
    payloads: Vec<Value>,
) -> Vec<(String, Envelope)> {
    let route = vec![actor.to_owned()];
    let mut ids = Vec::new();
    for payload in payloads {
        ids.push(host.send(&route, payload).await.unwrap());
    }
    let mut by_id = std::collections::HashMap::new();
    for _ in 0..ids.len() {
        let done = host.next_result(WAIT).await.unwrap();
        by_id.insert(done.envelope.id.clone(), (done.end_actor, done.envelope));
    }
    ids.iter().map(|id| by_id.remove(id).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_slow_calls_in_one_instance_take_one_latency_not_fifty() {
    let mut host = LocalHost::start(vec![one_instance("wait", 64)], common::cache())
        .await
        .unwrap();
    let executor = host.executor("wait").unwrap().clone();
    assert!(executor.is_concurrent(), "waits.wait is async def");
    let started = Instant::now();
    let payloads = (0..50).map(|i| json!({"i": i, "sleep": 0.5})).collect();
    let done = run_all(&mut host, "wait", payloads).await;
    let took = started.elapsed();
    for (i, (end, env)) in done.iter().enumerate() {
        assert_eq!(end, SINK, "{:?}", env.status);
        assert_eq!(env.payload["i"], i);
    }
    assert!(
        took < Duration::from_secs(3),
        "50 calls of 0.5 s in one instance took {took:?}"
    );
    let stats = executor.stats();
    // One instance ran all 50 calls; one more described the component at load unless another
    // actor of the same component had described it in this process (tests run side by side).
    let made = stats
        .instantiated
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!((1..=2).contains(&made), "{made} instances for 50 calls");
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gather_and_wait_for_work_inside_a_call() {
    let mut host = LocalHost::start(vec![one_instance("wait", 8)], common::cache())
        .await
        .unwrap();
    let started = Instant::now();
    let done = run_all(
        &mut host,
        "wait",
        vec![
            json!({"do": "gather", "n": 20, "each": 0.3}),
            json!({"do": "wait_for", "timeout": 0.2}),
        ],
    )
    .await;
    assert_eq!(done[0].0, SINK, "{:?}", done[0].1.status);
    assert_eq!(done[1].0, SINK, "{:?}", done[1].1.status);
    assert_eq!(done[1].1.payload["timed_out"], true);
    assert!(started.elapsed() < Duration::from_secs(3));
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_fails_one_call_and_the_others_in_the_instance_finish() {
    let mut def = one_instance("wait", 16);
    // Far from the 0.3 s calls, so a loaded machine does not time them out too.
    def.settings.timeout = Duration::from_millis(3000);
    let mut host = LocalHost::start(vec![def], common::cache()).await.unwrap();
    let mut payloads = vec![json!({"i": "stuck", "sleep": 30})];
    payloads.extend((0..10).map(|i| json!({"i": i, "sleep": 0.3})));
    let done = run_all(&mut host, "wait", payloads).await;
    assert_eq!(done[0].0, SUMP);
    assert_eq!(reason(&done[0].1), Some(Reason::Timeout));
    for (end, env) in &done[1..] {
        assert_eq!(end, SINK, "{:?}", env.status);
    }
    // The instance serves on beside the abandoned call.
    let done = run_all(&mut host, "wait", vec![json!({"i": "after"})]).await;
    assert_eq!(done[0].0, SINK);
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_in_one_call_leaves_the_others_running() {
    let mut host = LocalHost::start(vec![one_instance("wait", 16)], common::cache())
        .await
        .unwrap();
    let payloads = (0..10)
        .map(|i| {
            if i == 3 {
                json!({"i": i, "sleep": 0.2, "do": "raise"})
            } else {
                json!({"i": i, "sleep": 0.4})
            }
        })
        .collect();
    let done = run_all(&mut host, "wait", payloads).await;
    for (i, (end, env)) in done.iter().enumerate() {
        if i == 3 {
            assert_eq!(end, SUMP);
            assert_eq!(reason(env), Some(Reason::HandlerError));
            let error = env.status.as_ref().unwrap().error.as_ref().unwrap();
            assert_eq!(error.kind, "ValueError");
            assert!(error.message.contains("call 3 failed"), "{}", error.message);
        } else {
            assert_eq!(end, SINK, "call {i}: {:?}", env.status);
        }
    }
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_spins_after_an_await_hits_the_cpu_deadline() {
    let mut def = one_instance("wait", 16);
    def.limits.cpu_timeout = Duration::from_millis(500);
    def.settings.timeout = Duration::from_secs(20);
    let mut host = LocalHost::start(vec![def], common::cache()).await.unwrap();
    let started = Instant::now();
    let done = run_all(
        &mut host,
        "wait",
        vec![
            json!({"i": "spin", "sleep": 0.1, "do": "spin"}),
            json!({"i": "waiting", "sleep": 2}),
        ],
    )
    .await;
    for (end, env) in &done {
        assert_eq!(end, SUMP);
        assert_eq!(reason(env), Some(Reason::Timeout), "{:?}", env.status);
        let message = &env.status.as_ref().unwrap().error.as_ref().unwrap().message;
        assert!(message.contains("without awaiting"), "{message}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped by the CPU deadline, not the 20 s actor timeout: {:?}",
        started.elapsed()
    );
    // A fresh instance serves the next call.
    let done = run_all(&mut host, "wait", vec![json!({"i": "after", "sleep": 0.1})]).await;
    assert_eq!(done[0].0, SINK, "{:?}", done[0].1.status);
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_cap_holds_across_concurrent_calls() {
    let mut def = one_instance("wait", 8);
    def.limits.memory_bytes = 96 << 20;
    def.limits.recycle_memory_bytes = 72 << 20;
    let mut host = LocalHost::start(vec![def], common::cache()).await.unwrap();
    // Each call holds 30 MiB, a chunk per await: together they pass the 96 MiB cap.
    let payloads = (0..5)
        .map(|i| json!({"i": i, "do": "alloc", "chunks": 30}))
        .collect();
    let done = run_all(&mut host, "wait", payloads).await;
    let refused = done
        .iter()
        .filter(|(end, env)| end == SUMP && reason(env) == Some(Reason::MemoryLimit))
        .count();
    assert!(
        refused >= 1,
        "{:?}",
        done.iter().map(|d| reason(&d.1)).collect::<Vec<_>>()
    );
    for (end, env) in &done {
        assert!(
            end == SINK || reason(env) == Some(Reason::MemoryLimit),
            "{:?}",
            env.status
        );
    }
    let peak = host
        .executor("wait")
        .unwrap()
        .stats()
        .memory_peak_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(peak <= 96 << 20, "peak {peak}");
    // The instance that hit the cap takes no new calls; the actor serves on.
    let done = run_all(&mut host, "wait", vec![json!({"i": "after"})]).await;
    assert_eq!(done[0].0, SINK, "{:?}", done[0].1.status);
    host.shutdown().await.unwrap();
}

/// A loopback HTTP server answering every request after `delay`.
async fn slow_server(delay: Duration) -> u16 {
    use axum::routing::any;
    let app = axum::Router::new().route(
        "/{*path}",
        any(move |body: String| async move {
            tokio::time::sleep(delay).await;
            json!({"echo": body}).to_string()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_http_awaits_concurrently_and_only_to_granted_hosts() {
    let port = slow_server(Duration::from_millis(300)).await;
    let other = slow_server(Duration::ZERO).await;
    let mut def = one_instance("wait", 64);
    def.limits.allowed_hosts = std::sync::Arc::new(
        asya_host::runtime::outbound::HostAllowlist::parse(&[format!("127.0.0.1:{port}")]).unwrap(),
    );
    let mut host = LocalHost::start(vec![def], common::cache()).await.unwrap();
    let started = Instant::now();
    let url = format!("http://127.0.0.1:{port}/v1/chat");
    let payloads = (0..30)
        .map(|i| json!({"i": i, "do": "fetch", "method": "POST", "url": url, "body": format!("prompt {i}")}))
        .collect();
    let done = run_all(&mut host, "wait", payloads).await;
    let took = started.elapsed();
    for (i, (end, env)) in done.iter().enumerate() {
        assert_eq!(end, SINK, "{:?}", env.status);
        assert_eq!(env.payload["status"], 200);
        let body: Value = serde_json::from_str(env.payload["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["echo"], format!("prompt {i}"));
    }
    assert!(
        took < Duration::from_secs(3),
        "30 requests of 0.3 s from one instance took {took:?}"
    );
    let denied = format!("http://127.0.0.1:{other}/v1/chat");
    let done = run_all(
        &mut host,
        "wait",
        vec![json!({"do": "fetch", "url": denied})],
    )
    .await;
    assert_eq!(done[0].0, SUMP);
    assert_eq!(
        reason(&done[0].1),
        Some(Reason::SandboxDenied),
        "{:?}",
        done[0].1.status
    );
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_handler_in_envelope_mode_carries_the_route_on() {
    let mut envelope = ActorDef::new("wait-env", common::component("waits.wait", "envelope"));
    envelope.settings.concurrency = 8;
    let mut host = LocalHost::start(vec![envelope, one_instance("wait", 8)], common::cache())
        .await
        .unwrap();
    assert!(host.executor("wait-env").unwrap().is_concurrent());
    let route = vec!["wait-env".to_owned(), "wait".to_owned()];
    let id = host.send(&route, json!({"text": "hi"})).await.unwrap();
    let done = host.next_result(WAIT).await.unwrap();
    assert_eq!(done.envelope.id, id);
    assert_eq!(done.end_actor, SINK, "{:?}", done.envelope.status);
    assert_eq!(done.envelope.payload, json!({"text": "hi"}));
    assert_eq!(done.envelope.route.prev, vec!["wait-env", "wait"]);
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_blocks_in_a_synchronous_sleep_is_stopped_by_the_cpu_deadline() {
    let mut def = one_instance("wait", 16);
    def.limits.cpu_timeout = Duration::from_millis(500);
    def.settings.timeout = Duration::from_secs(20);
    let mut host = LocalHost::start(vec![def], common::cache()).await.unwrap();
    let started = Instant::now();
    let done = run_all(
        &mut host,
        "wait",
        vec![
            json!({"i": "blocked", "sleep": 0.1, "do": "block", "seconds": 30}),
            json!({"i": "waiting", "sleep": 2}),
        ],
    )
    .await;
    for (end, env) in &done {
        assert_eq!(end, SUMP);
        assert_eq!(reason(env), Some(Reason::Timeout), "{:?}", env.status);
        let message = &env.status.as_ref().unwrap().error.as_ref().unwrap().message;
        assert!(
            message.contains("blocked in a synchronous call"),
            "{message}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped by the watchdog, not the 20 s actor timeout: {:?}",
        started.elapsed()
    );
    let done = run_all(&mut host, "wait", vec![json!({"i": "after", "sleep": 0.1})]).await;
    assert_eq!(done[0].0, SINK, "{:?}", done[0].1.status);
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_without_max_in_flight_takes_instances_times_concurrency_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wait.yaml");
    std::fs::write(
        &file,
        "apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {name: wait}\n\
         spec:\n  handler: waits.wait\n  sandbox: {maxInstances: 1, maxConcurrency: 40}\n",
    )
    .unwrap();
    let manifest = asya_host::actor::manifest::load_file(&file)
        .unwrap()
        .remove(0);
    let def = ActorDef::from_manifest(&manifest, waits()).unwrap();
    assert_eq!(
        def.settings.concurrency, 1,
        "maxInstances, before the handler is known"
    );
    let mut host = LocalHost::start(vec![def], common::cache()).await.unwrap();
    let started = Instant::now();
    let payloads = (0..40).map(|i| json!({"i": i, "sleep": 0.5})).collect();
    let done = run_all(&mut host, "wait", payloads).await;
    assert!(done.iter().all(|(end, _)| end == SINK));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "40 calls of 0.5 s with 1 x 40 in flight took {:?}",
        started.elapsed()
    );
    host.shutdown().await.unwrap();
}
