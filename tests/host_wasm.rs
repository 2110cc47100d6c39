//! Real components (built by `asya build` with componentize-py) run through the real host on the
//! embedded transport: routing, errors, envelope mode and the sandbox's limits.

mod common;

use asya_host::app::local::{ActorDef, LocalHost};
use asya_host::message::envelope::{Envelope, Phase, Reason, Route, SINK, SUMP};
use asya_host::runtime::sandbox::SandboxLimits;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

fn behave() -> std::path::PathBuf {
    common::component("behaviours.behave", "payload")
}

fn steps(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn start(actors: Vec<ActorDef>) -> LocalHost {
    LocalHost::start(actors, common::cache())
        .await
        .expect("host starts")
}

async fn run_one(host: &mut LocalHost, route: &[&str], payload: Value) -> (String, Envelope) {
    let id = host.send(&steps(route), payload).await.unwrap();
    let finished = host.next_result(WAIT).await.unwrap();
    assert_eq!(finished.envelope.id, id);
    (finished.end_actor, finished.envelope)
}

fn reason(env: &Envelope) -> Option<Reason> {
    env.status.as_ref().and_then(|s| s.reason)
}

fn error_type(env: &Envelope) -> String {
    env.status
        .as_ref()
        .unwrap()
        .error
        .as_ref()
        .unwrap()
        .kind
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_handlers_route_through_every_step_to_the_sink() {
    let mut host = start(vec![
        ActorDef::new("a", behave()),
        ActorDef::new("b", behave()),
    ])
    .await;
    let (end, env) = run_one(&mut host, &["a", "b"], json!({"text": "hi"})).await;
    assert_eq!(end, SINK);
    assert_eq!(env.payload, json!({"text": "hi", "seen_by": 2}));
    assert_eq!(env.route.prev, vec!["a", "b"]);
    let status = env.status.unwrap();
    assert_eq!(status.phase, Phase::Succeeded);
    assert_eq!(status.reason, Some(Reason::Completed));
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class_handler_is_constructed_once_at_build_never_per_message() {
    let counter = common::component("counter.Counter.process", "payload");
    let mut def = ActorDef::new("count", counter);
    // Every message gets a brand-new instance from the snapshot: if the constructor ran on
    // instantiation or per call, the count would exceed 1.
    def.limits.recycle_after_calls = 1;
    def.limits.max_instances = 4;
    def.settings.concurrency = 4;
    let mut host = start(vec![def]).await;
    let payloads: Vec<Value> = (0..20).map(|i| json!({"i": i})).collect();
    let results = host
        .run_batch(&steps(&["count"]), payloads, 8, WAIT)
        .await
        .unwrap();
    for r in &results {
        assert_eq!(r.end_actor, SINK);
        assert_eq!(
            r.envelope.payload["constructions"],
            json!(1),
            "{:?}",
            r.envelope.payload
        );
        assert_eq!(r.envelope.payload["greeting"], json!("hello"));
    }
    let stats = host.executor("count").unwrap().stats();
    assert!(
        stats
            .instantiated
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 20,
        "a fresh instance per message"
    );
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returning_none_ends_at_the_sink_with_the_payload_unchanged() {
    let mut host = start(vec![
        ActorDef::new("a", behave()),
        ActorDef::new("b", behave()),
    ])
    .await;
    let (end, env) = run_one(&mut host, &["a", "b"], json!({"do": "none", "k": 1})).await;
    assert_eq!(end, SINK);
    assert_eq!(env.payload, json!({"do": "none", "k": 1}));
    assert_eq!(env.route.prev, vec!["a"], "b never ran");
    assert_eq!(env.status.unwrap().phase, Phase::Succeeded);
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_ends_at_the_sump_with_type_mro_and_traceback() {
    let mut host = start(vec![ActorDef::new("a", behave())]).await;
    let (end, env) = run_one(&mut host, &["a"], json!({"do": "raise", "missing": "lang"})).await;
    assert_eq!(end, SUMP);
    let status = env.status.unwrap();
    assert_eq!(status.phase, Phase::Failed);
    assert_eq!(status.reason, Some(Reason::HandlerError));
    let err = status.error.unwrap();
    assert_eq!(err.kind, "KeyError");
    assert_eq!(err.message, "'lang'");
    assert_eq!(err.mro, vec!["LookupError", "Exception"]);
    let tb = err.traceback.unwrap();
    assert!(
        tb.contains("Traceback") && tb.contains("behaviours.py") && tb.contains("in behave"),
        "{tb}"
    );
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_mode_inserts_a_step_and_may_not_rewrite_the_past() {
    let router = common::component("router.route", "envelope");
    let mut host = start(vec![
        ActorDef::new("judge", router),
        ActorDef::new("refine", behave()),
        ActorDef::new("post", behave()),
    ])
    .await;
    let (end, env) = run_one(&mut host, &["judge", "post"], json!({"insert": "refine"})).await;
    assert_eq!(end, SINK);
    assert_eq!(env.route.prev, vec!["judge", "refine", "post"]);
    assert_eq!(env.payload["seen_by"], json!(2));
    assert_eq!(env.headers["routed"], json!(true));

    for forge in ["prev", "curr", "id"] {
        let (end, env) = run_one(&mut host, &["judge", "post"], json!({"forge": forge})).await;
        assert_eq!(end, SUMP, "forging {forge}");
        assert_eq!(
            reason(&env),
            Some(Reason::RouteViolation),
            "forging {forge}"
        );
        assert_eq!(env.id.len(), 36, "the original id is kept");
    }
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_misaddressed_input_goes_to_the_sump_with_the_original_kept() {
    let mut host = start(vec![ActorDef::new("a", behave())]).await;
    host.send_raw("a", b"{this is not an envelope".to_vec())
        .await
        .unwrap();
    let finished = host.next_result(WAIT).await.unwrap();
    assert_eq!(finished.end_actor, SUMP);
    assert_eq!(reason(&finished.envelope), Some(Reason::ParseError));
    assert_eq!(
        finished.envelope.payload,
        json!({"raw": "{this is not an envelope"})
    );

    let mut env = Envelope::new(
        Route::through(&["b"]).unwrap(),
        json!({"x": 1}),
        "2026-01-01T00:00:00Z",
    );
    env.route.curr = "b".into();
    host.send_raw("a", env.to_bytes()).await.unwrap();
    let finished = host.next_result(WAIT).await.unwrap();
    assert_eq!(reason(&finished.envelope), Some(Reason::RouteMismatch));
    assert_eq!(finished.envelope.payload, json!({"x": 1}));
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_dict_and_non_serialisable_results_are_clear_type_errors() {
    let mut host = start(vec![ActorDef::new("a", behave())]).await;
    let (end, env) = run_one(&mut host, &["a"], json!({"do": "non_dict"})).await;
    assert_eq!(end, SUMP);
    assert_eq!(error_type(&env), "TypeError");
    let message = env
        .status
        .as_ref()
        .unwrap()
        .error
        .as_ref()
        .unwrap()
        .message
        .clone();
    assert!(
        message.contains("returned list, expected a dict or None"),
        "{message}"
    );

    let (_, env) = run_one(&mut host, &["a"], json!({"do": "non_json"})).await;
    assert_eq!(error_type(&env), "TypeError");
    let message = env
        .status
        .as_ref()
        .unwrap()
        .error
        .as_ref()
        .unwrap()
        .message
        .clone();
    assert!(message.contains("not JSON-serialisable"), "{message}");
    host.shutdown().await.unwrap();
}

fn strict(name: &str) -> ActorDef {
    let mut def = ActorDef::new(name, behave());
    def.limits = SandboxLimits {
        cpu_timeout: Duration::from_millis(500),
        memory_bytes: 160 << 20,
        recycle_memory_bytes: 150 << 20,
        ..SandboxLimits::default()
    };
    def
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_is_stopped_by_the_deadline_and_the_host_carries_on() {
    let mut host = start(vec![strict("a")]).await;
    let started = Instant::now();
    let (end, env) = run_one(&mut host, &["a"], json!({"do": "loop"})).await;
    assert_eq!(end, SUMP);
    assert_eq!(reason(&env), Some(Reason::Timeout));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped near the 500 ms deadline"
    );
    let (end, env) = run_one(&mut host, &["a"], json!({"text": "next"})).await;
    assert_eq!(end, SINK, "the next message is processed");
    assert_eq!(env.payload["seen_by"], json!(1));
    let stats = host.executor("a").unwrap().stats();
    assert!(stats.discarded.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_is_stopped_by_the_cap_and_the_host_carries_on() {
    let mut host = start(vec![strict("a")]).await;
    let (end, env) = run_one(&mut host, &["a"], json!({"do": "alloc"})).await;
    assert_eq!(end, SUMP);
    assert_eq!(reason(&env), Some(Reason::MemoryLimit), "{:?}", env.status);
    let (end, _) = run_one(&mut host, &["a"], json!({"text": "next"})).await;
    assert_eq!(end, SINK, "the next message is processed");
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_sleeping_past_its_deadline_is_stopped() {
    let mut host = start(vec![strict("a")]).await;
    let started = Instant::now();
    let (end, env) = run_one(&mut host, &["a"], json!({"do": "sleep", "seconds": 30})).await;
    assert_eq!(end, SUMP);
    assert_eq!(reason(&env), Some(Reason::Timeout));
    assert!(started.elapsed() < Duration::from_secs(5));
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_large_and_deeply_nested_payloads_round_trip() {
    let mut host = start(vec![
        ActorDef::new("a", behave()),
        ActorDef::new("b", behave()),
    ])
    .await;
    let unicode = json!({"text": "Grüße, мир, 世界, 🌍🚀, \u{0000}nul and \"quotes\""});
    let (end, env) = run_one(&mut host, &["a", "b"], unicode.clone()).await;
    assert_eq!(end, SINK);
    assert_eq!(env.payload["text"], unicode["text"]);

    let big = "é".repeat(512 * 1024); // 1 MiB of UTF-8
    let (end, env) = run_one(&mut host, &["a", "b"], json!({"blob": big})).await;
    assert_eq!(end, SINK);
    assert_eq!(env.payload["blob"].as_str().unwrap().len(), big.len());
    assert_eq!(env.payload["blob"].as_str().unwrap(), big);

    let mut nested = json!({"leaf": "bottom"});
    for depth in 0..50 {
        nested = json!({"level": depth, "child": nested});
    }
    let (end, env) = run_one(&mut host, &["a"], json!({"tree": nested.clone()})).await;
    assert_eq!(end, SINK);
    assert_eq!(env.payload["tree"], nested);
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_results_are_rejected_as_output_too_large() {
    let mut def = ActorDef::new("a", behave());
    def.limits.max_output_bytes = 1000;
    let mut host = start(vec![def]).await;
    let (end, env) = run_one(&mut host, &["a"], json!({"blob": "x".repeat(5000)})).await;
    assert_eq!(end, SUMP);
    assert_eq!(reason(&env), Some(Reason::OutputTooLarge));
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_stdout_is_stopped_and_reported() {
    let mut host = start(vec![strict("a")]).await;
    let (end, env) = run_one(&mut host, &["a"], json!({"do": "flood"})).await;
    assert_eq!(end, SUMP);
    assert_eq!(
        reason(&env),
        Some(Reason::OutputTooLarge),
        "{:?}",
        env.status
    );
    let (end, _) = run_one(
        &mut host,
        &["a"],
        json!({"do": "print", "text": "still here"}),
    )
    .await;
    assert_eq!(end, SINK);
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_hides_the_host_environment_and_filesystem() {
    // SAFETY: set before the host starts any thread that reads the environment.
    unsafe { std::env::set_var("ASYA_TEST_FAKE_SECRET", "s3cr3t") };
    let probe = common::component("probe.probe", "payload");
    let mut def = ActorDef::new("probe", probe);
    def.limits.env = vec![("GRANTED".into(), "yes".into())];
    let mut host = start(vec![def]).await;
    let (end, env) = run_one(&mut host, &["probe"], json!({})).await;
    assert_eq!(end, SINK);
    assert_eq!(env.payload["env"], json!({"GRANTED": "yes"}));
    assert!(
        env.payload["passwd"].as_str().unwrap().contains("Error"),
        "{}",
        env.payload
    );
    assert!(
        env.payload["socket"].as_str().unwrap().contains("Error"),
        "{}",
        env.payload
    );
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_components_are_cached_by_digest() {
    let dir = tempfile::tempdir().unwrap();
    let cache =
        asya_host::runtime::component_cache::ComponentCache::new(Some(dir.path().to_path_buf()));
    let engine = asya_host::runtime::sandbox::SandboxEngine::new().unwrap();
    let path = behave();
    let t = Instant::now();
    let first = cache.load_file(engine.engine(), &path).unwrap();
    let compile = t.elapsed();
    assert!(!first.from_cache);
    let t = Instant::now();
    let second = cache.load_file(engine.engine(), &path).unwrap();
    let cached = t.elapsed();
    assert!(second.from_cache);
    assert_eq!(first.digest, second.digest);
    assert!(first.digest.starts_with("sha256:"));
    assert!(
        cached * 10 < compile,
        "a cached load ({cached:?}) is far faster than a compile ({compile:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_are_reused_and_recycled_past_the_memory_mark() {
    let mut host = start(vec![ActorDef::new("warm", behave())]).await;
    for i in 0..20 {
        let (end, _) = run_one(&mut host, &["warm"], json!({"i": i})).await;
        assert_eq!(end, SINK);
    }
    let stats = host.executor("warm").unwrap().stats();
    // One warm instance for every message, and one for describe() at load unless another actor
    // of the same component had been described in this process (tests run side by side).
    assert!(
        (1..=2).contains(
            &stats
                .instantiated
                .load(std::sync::atomic::Ordering::Relaxed)
        ),
        "one instance for describe() at load, then one warm instance for every message"
    );
    host.shutdown().await.unwrap();

    let mut def = ActorDef::new("recycled", behave());
    def.limits.recycle_memory_bytes = 1; // every instance is past the mark after its call
    let mut host = start(vec![def]).await;
    for i in 0..3 {
        let (end, _) = run_one(&mut host, &["recycled"], json!({"i": i})).await;
        assert_eq!(end, SINK);
    }
    let stats = host.executor("recycled").unwrap().stats();
    // Three recycled after their call, plus the probe that described the component at load
    // (none when this process had described the component already: the "warm" actor above).
    let discarded = stats.discarded.load(std::sync::atomic::Ordering::Relaxed);
    assert!((3..=4).contains(&discarded), "{discarded} discarded");
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_actors_hold_no_instance_and_idle_instances_are_reclaimed() {
    let mut def = ActorDef::new("cold", behave());
    def.limits.idle_timeout = Duration::from_millis(300);
    let mut host = start(vec![def]).await;
    let executor = host.executor("cold").unwrap().clone();
    assert_eq!(
        executor.idle_instances(),
        0,
        "a registered, idle actor holds no instance"
    );
    assert!(
        !executor.is_resident(),
        "nor its compiled component: it maps it from the cache on demand"
    );
    let started = Instant::now();
    let (end, _) = run_one(&mut host, &["cold"], json!({"text": "first"})).await;
    assert_eq!(end, SINK);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "instantiated on demand"
    );
    assert_eq!(executor.idle_instances(), 1, "kept for the next message");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        executor.idle_instances(),
        0,
        "reclaimed after the idle timeout"
    );
    assert!(
        !executor.is_resident(),
        "parked again after the idle timeout"
    );
    let (end, _) = run_one(&mut host, &["cold"], json!({"text": "again"})).await;
    assert_eq!(end, SINK);
    let stats = executor.stats();
    assert_eq!(stats.reloads.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert_eq!(stats.parks.load(std::sync::atomic::Ordering::Relaxed), 2);

    // keepWarm keeps an instance and the compiled component.
    let mut def = ActorDef::new("warm", behave());
    def.limits.keep_warm = true;
    def.limits.idle_timeout = Duration::from_millis(300);
    let warm_host = start(vec![def]).await;
    let warm = warm_host.executor("warm").unwrap().clone();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(warm.is_resident());
    assert_eq!(warm.idle_instances(), 1);
    warm_host.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_recursion_is_reported_and_the_host_carries_on() {
    let mut host = start(vec![strict("a")]).await;
    let (end, env) = run_one(&mut host, &["a"], json!({"do": "recurse"})).await;
    assert_eq!(end, SUMP);
    let status = env.status.unwrap();
    // CPython's own guard (RecursionError) or the wasm stack guard (Trap): never a crash.
    assert!(
        status.reason == Some(Reason::HandlerError) || status.reason == Some(Reason::Trap),
        "{status:?}"
    );
    let (end, _) = run_one(&mut host, &["a"], json!({"text": "next"})).await;
    assert_eq!(end, SINK);
    host.shutdown().await.unwrap();
}

/// A loopback HTTP server for the outbound-HTTP tests: `GET /hello` and `POST /echo`, counting
/// the requests it answers.
async fn http_server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use axum::routing::{get, post};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let (h1, h2) = (hits.clone(), hits.clone());
    let app = axum::Router::new()
        .route(
            "/hello",
            get(move || async move {
                h1.fetch_add(1, Ordering::SeqCst);
                (
                    [("content-type", "application/json")],
                    r#"{"hello": "world"}"#,
                )
            }),
        )
        .route(
            "/echo",
            post(
                move |headers: axum::http::HeaderMap, body: String| async move {
                    h2.fetch_add(1, Ordering::SeqCst);
                    let marked = headers.get("x-asya-test").is_some();
                    let echoed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    (
                        [("content-type", "application/json")],
                        json!({"echo": echoed, "marked": marked}).to_string(),
                    )
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, hits)
}

fn granted(name: &str, hosts: &[String]) -> ActorDef {
    let mut def = ActorDef::new(name, behave());
    def.limits.allowed_hosts =
        std::sync::Arc::new(asya_host::runtime::outbound::HostAllowlist::parse(hosts).unwrap());
    def
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_hosts_let_http_out_to_granted_hosts_only() {
    use std::sync::atomic::Ordering;
    let (port, hits) = http_server().await;
    let (other_port, other_hits) = http_server().await;
    let mut host = start(vec![
        granted("caller", &[format!("127.0.0.1:{port}")]),
        ActorDef::new("ungranted", behave()),
    ])
    .await;

    // GET and a POST with a JSON body to the granted host succeed, through plain urllib.
    let url = format!("http://127.0.0.1:{port}/hello");
    let (end, env) = run_one(&mut host, &["caller"], json!({"do": "fetch", "url": url})).await;
    assert_eq!(end, SINK, "{:?}", env.status);
    assert_eq!(env.payload["status"], 200);
    assert_eq!(env.payload["body"], json!({"hello": "world"}));
    assert_eq!(env.payload["type"], "application/json");
    let url = format!("http://127.0.0.1:{port}/echo");
    let body = json!({"prompt": "x".repeat(20_000)});
    let (end, env) = run_one(
        &mut host,
        &["caller"],
        json!({"do": "fetch", "url": url, "body": body}),
    )
    .await;
    assert_eq!(end, SINK, "{:?}", env.status);
    assert_eq!(env.payload["body"], json!({"echo": body, "marked": true}));
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    // Another port of the same address, and any host for an actor granted nothing: refused
    // inside the handler, never sent.
    for (actor, target) in [
        ("caller", format!("http://127.0.0.1:{other_port}/hello")),
        ("caller", format!("http://localhost:{port}/hello")),
        ("ungranted", format!("http://127.0.0.1:{port}/hello")),
    ] {
        let (end, env) = run_one(&mut host, &[actor], json!({"do": "fetch", "url": target})).await;
        assert_eq!(end, SUMP, "{actor} -> {target}");
        assert_eq!(
            reason(&env),
            Some(Reason::SandboxDenied),
            "{:?}",
            env.status
        );
        assert_eq!(error_type(&env), "SandboxDenied");
        let status = env.status.unwrap();
        assert!(status.attempt <= 1, "a refusal is not retried: {status:?}");
        let error = status.error.unwrap();
        assert!(
            error.mro.contains(&"urllib.error.URLError".to_owned()),
            "{:?}",
            error.mro
        );
        assert!(error.message.contains("allowedHosts"), "{}", error.message);
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "refused requests never left"
    );
    assert_eq!(other_hits.load(Ordering::SeqCst), 0);

    // The host and the granted actor carry on.
    let url = format!("http://127.0.0.1:{port}/hello");
    let (end, _) = run_one(&mut host, &["caller"], json!({"do": "fetch", "url": url})).await;
    assert_eq!(end, SINK);
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaping_to_files_or_sockets_ends_at_the_sump_as_sandbox_denied() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut host = start(vec![strict("a")]).await;
    for payload in [
        json!({"do": "read_file", "path": "/etc/passwd"}),
        json!({"do": "read_file", "path": "secrets.txt"}),
        json!({"do": "socket", "port": port}),
        json!({"do": "resolve", "port": port}),
    ] {
        let (end, env) = run_one(&mut host, &["a"], payload.clone()).await;
        assert_eq!(end, SUMP, "{payload}");
        let status = env.status.unwrap();
        assert_eq!(
            status.reason,
            Some(Reason::SandboxDenied),
            "{payload}: {status:?}"
        );
        assert!(
            status
                .error
                .as_ref()
                .unwrap()
                .message
                .contains("sandbox refused"),
            "{status:?}"
        );
    }
    let stats = host.executor("a").unwrap().stats();
    assert!(
        stats.discarded.load(std::sync::atomic::Ordering::Relaxed) >= 3,
        "each offending instance is discarded"
    );
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "no connection reached the host");
    let (end, _) = run_one(&mut host, &["a"], json!({"text": "next"})).await;
    assert_eq!(end, SINK);
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_actor_whose_artifact_was_removed_compiles_again() {
    let cache_dir = tempfile::tempdir().unwrap();
    let cache =
        asya_host::runtime::component_cache::ComponentCache::new(Some(cache_dir.path().into()));
    let mut host = LocalHost::start(vec![ActorDef::new("a", behave())], cache.clone())
        .await
        .unwrap();
    assert!(!host.executor("a").unwrap().is_resident(), "parked");
    // Nothing keeps the compiled component mapped (a registration burst keeps the last few).
    cache.forget_recent();
    let artifacts = || {
        std::fs::read_dir(cache_dir.path().join("compiled"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .map(|e| e.path())
            .collect::<Vec<_>>()
    };
    // Someone cleans the cache while the actor is parked.
    for artifact in artifacts() {
        std::fs::remove_file(artifact).unwrap();
    }
    let (end, env) = run_one(&mut host, &["a"], json!({"text": "still served"})).await;
    assert_eq!(end, SINK, "{:?}", env.status);
    assert_eq!(artifacts().len(), 1, "compiled and cached again");
    host.shutdown().await.unwrap();
}
