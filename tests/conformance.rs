//! Parity: one table of handler cases runs through the WASM executor and the native-Python
//! runtime, and the final envelopes must be identical (ids, timestamps, trace ids and traceback
//! file paths aside), so the fallback can never drift from the WASM path.

mod common;

use asya_host::app::local::{ActorDef, LocalHost};
use asya_host::message::envelope::{Envelope, Reason, SINK, SUMP};
use asya_host::runtime::executor::Mode;
use asya_host::runtime::python::{PythonRuntimeConfig, SpawnSpec};
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn python_def(name: &str, handler: &str, mode: Mode, dir: &std::path::Path) -> ActorDef {
    let mut def = ActorDef::new(name, std::path::PathBuf::new());
    def.python = Some(PythonRuntimeConfig {
        socket: dir.join(format!("{name}.sock")),
        spawn: Some(SpawnSpec {
            python: common::repo_root().join(".venv/bin/python"),
            handler: handler.into(),
            mode,
            source_dir: common::repo_root().join("tests/fixtures/handlers"),
            env: vec![],
        }),
        ready_timeout: Duration::from_secs(60),
        max_in_flight: 4,
        max_output_bytes: 8 << 20,
    });
    def
}

/// The pipeline both ways: `judge` (envelope mode router), `work` and `count` (class).
async fn hosts(dir: &std::path::Path) -> (LocalHost, LocalHost) {
    let behave = common::component("behaviours.behave", "payload");
    let router = common::component("router.route", "envelope");
    let counter = common::component("counter.Counter.process", "payload");
    let wasm = LocalHost::start(
        vec![
            ActorDef::new("judge", router),
            ActorDef::new("work", behave.clone()),
            ActorDef::new("count", counter),
            ActorDef::new("post", behave),
        ],
        common::cache(),
    )
    .await
    .unwrap();
    let python = LocalHost::start(
        vec![
            python_def("judge", "router.route", Mode::Envelope, dir),
            python_def("work", "behaviours.behave", Mode::Payload, dir),
            python_def("count", "counter.Counter.process", Mode::Payload, dir),
            python_def("post", "behaviours.behave", Mode::Payload, dir),
        ],
        common::cache(),
    )
    .await
    .unwrap();
    (wasm, python)
}

/// The envelope without what legitimately differs between two runs.
fn normalised(mut env: Envelope) -> Value {
    let id = std::mem::replace(&mut env.id, "ID".into());
    env.headers.remove("traceparent");
    if let Some(status) = env.status.as_mut() {
        status.created_at = None;
        status.updated_at = None;
        status.first_attempt_at = None;
        status.not_before = None;
        if let Some(error) = status.error.as_mut() {
            error.message = error.message.replace(&id, "ID");
            // Same exception, same last line; file paths differ (/1/x.py in the component).
            error.traceback = error
                .traceback
                .as_ref()
                .and_then(|t| t.trim_end().lines().last().map(str::to_owned));
        }
    }
    serde_json::to_value(env).unwrap()
}

async fn run(host: &mut LocalHost, route: &[&str], payload: &Value) -> (String, Envelope) {
    let steps: Vec<String> = route.iter().map(|s| s.to_string()).collect();
    let id = host.send(&steps, payload.clone()).await.unwrap();
    let done = host.next_result(WAIT).await.unwrap();
    assert_eq!(done.envelope.id, id);
    (done.end_actor, done.envelope)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_and_native_python_produce_identical_envelopes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wasm, mut python) = hosts(dir.path()).await;
    let mut nested = json!({"leaf": true});
    for i in 0..50 {
        nested = json!({"level": i, "child": nested});
    }
    let cases: Vec<(&str, Vec<&str>, Value)> = vec![
        ("echo", vec!["work", "post"], json!({"text": "hi"})),
        ("none", vec!["work", "post"], json!({"do": "none"})),
        (
            "raise",
            vec!["work"],
            json!({"do": "raise", "missing": "lang"}),
        ),
        ("unknown action", vec!["work"], json!({"do": "nope"})),
        ("non-dict result", vec!["work"], json!({"do": "non_dict"})),
        ("non-JSON result", vec!["work"], json!({"do": "non_json"})),
        (
            "unicode",
            vec!["work"],
            json!({"text": "Grüße 世界 🌍 \u{0000}"}),
        ),
        ("nested 50", vec!["work"], json!({"tree": nested})),
        ("class handler", vec!["count", "post"], json!({"i": 1})),
        (
            "envelope insert",
            vec!["judge", "post"],
            json!({"insert": "work"}),
        ),
        (
            "route violation",
            vec!["judge", "post"],
            json!({"forge": "prev"}),
        ),
        (
            "id violation",
            vec!["judge", "post"],
            json!({"forge": "id"}),
        ),
    ];
    for (name, route, payload) in cases {
        let (wasm_end, wasm_env) = run(&mut wasm, &route, &payload).await;
        let (python_end, python_env) = run(&mut python, &route, &payload).await;
        assert_eq!(wasm_end, python_end, "case {name}: end actor");
        assert_eq!(normalised(wasm_env), normalised(python_env), "case {name}");
    }
    wasm.shutdown().await.unwrap();
    python.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_runtime_timeouts_and_crashes_are_reported_and_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let mut def = python_def("work", "behaviours.behave", Mode::Payload, dir.path());
    def.settings.timeout = Duration::from_millis(800);
    let mut host = LocalHost::start(vec![def], common::cache()).await.unwrap();

    let (end, env) = run(&mut host, &["work"], &json!({"do": "loop"})).await;
    assert_eq!(end, SUMP);
    assert_eq!(env.status.unwrap().reason, Some(Reason::Timeout));
    let (end, _) = run(&mut host, &["work"], &json!({"text": "after the timeout"})).await;
    assert_eq!(end, SINK, "the runtime was restarted");

    let (end, env) = run(&mut host, &["work"], &json!({"do": "exit"})).await;
    assert_eq!(end, SUMP);
    let status = env.status.unwrap();
    assert_eq!(status.reason, Some(Reason::Trap));
    assert!(status.error.unwrap().message.contains("did it crash"));
    let (end, _) = run(&mut host, &["work"], &json!({"text": "after the crash"})).await;
    assert_eq!(end, SINK, "the runtime was restarted");
    let restarts = host
        .python_executor("work")
        .unwrap()
        .restarts
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        restarts, 3,
        "started once, restarted after the timeout and after the crash"
    );
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_crash_under_several_calls_restarts_the_runtime_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut def = python_def("work", "behaviours.behave", Mode::Payload, dir.path());
    def.settings.timeout = Duration::from_secs(20);
    def.settings.concurrency = 4;
    let mut host = LocalHost::start(vec![def], common::cache()).await.unwrap();
    let route = vec!["work".to_owned()];
    // Three calls in flight on their own connections, then one that kills the runtime.
    for _ in 0..3 {
        host.send(&route, json!({"do": "sleep", "seconds": 5}))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    host.send(&route, json!({"do": "exit"})).await.unwrap();
    for _ in 0..4 {
        let done = host.next_result(WAIT).await.unwrap();
        assert_eq!(done.end_actor, SUMP);
        assert_eq!(done.envelope.status.unwrap().reason, Some(Reason::Trap));
    }
    let restarts = host
        .python_executor("work")
        .unwrap()
        .restarts
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        restarts, 2,
        "started once, restarted once for the four failed calls"
    );
    let (end, _) = run(&mut host, &["work"], &json!({"text": "after"})).await;
    assert_eq!(end, SINK);
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_async_calls_share_one_runtime_and_a_timeout_cancels_only_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut def = python_def("wait", "waits.wait", Mode::Payload, dir.path());
    def.settings.timeout = Duration::from_millis(1500);
    def.settings.concurrency = 16;
    def.python.as_mut().unwrap().max_in_flight = 16;
    let mut host = LocalHost::start(vec![def], common::cache()).await.unwrap();
    let route = vec!["wait".to_owned()];
    let started = std::time::Instant::now();
    let stuck = host.send(&route, json!({"sleep": 30})).await.unwrap();
    for i in 0..10 {
        host.send(&route, json!({"i": i, "sleep": 0.5}))
            .await
            .unwrap();
    }
    let mut finished = 0;
    for _ in 0..11 {
        let done = host.next_result(WAIT).await.unwrap();
        if done.envelope.id == stuck {
            assert_eq!(done.end_actor, SUMP);
            let status = done.envelope.status.unwrap();
            assert_eq!(status.reason, Some(Reason::Timeout));
            let message = status.error.unwrap().message;
            assert!(message.contains("cancelled"), "{message}");
        } else {
            assert_eq!(done.end_actor, SINK);
            finished += 1;
        }
    }
    assert_eq!(finished, 10);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "ten calls of 0.5 s in flight together took {:?}",
        started.elapsed()
    );
    let restarts = host
        .python_executor("wait")
        .unwrap()
        .restarts
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        restarts, 1,
        "an async call is cancelled, not the runtime restarted"
    );
    let (end, _) = run(&mut host, &["wait"], &json!({"sleep": 0})).await;
    assert_eq!(end, SINK);
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_result_over_max_output_bytes_is_refused_and_the_runtime_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut def = python_def("wait", "waits.wait", Mode::Payload, dir.path());
    def.python.as_mut().unwrap().max_output_bytes = 64 << 10;
    let mut host = LocalHost::start(vec![def], common::cache()).await.unwrap();
    let (end, env) = run(&mut host, &["wait"], &json!({"do": "big", "size": 4 << 20})).await;
    assert_eq!(end, SUMP);
    let status = env.status.unwrap();
    assert_eq!(status.reason, Some(Reason::OutputTooLarge));
    assert!(status
        .error
        .unwrap()
        .message
        .contains("more than the allowed 65536"));
    let (end, env) = run(&mut host, &["wait"], &json!({"do": "big", "size": 1000})).await;
    assert_eq!(end, SINK);
    assert_eq!(env.payload["text"].as_str().unwrap().len(), 1000);
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_handlers_produce_identical_envelopes_on_wasm_and_native() {
    let dir = tempfile::tempdir().unwrap();
    let mut wasm = LocalHost::start(
        vec![ActorDef::new(
            "wait",
            common::component("waits.wait", "payload"),
        )],
        common::cache(),
    )
    .await
    .unwrap();
    let mut python = LocalHost::start(
        vec![python_def("wait", "waits.wait", Mode::Payload, dir.path())],
        common::cache(),
    )
    .await
    .unwrap();
    assert!(wasm.executor("wait").unwrap().is_concurrent());
    let cases = [
        ("echo after a sleep", json!({"text": "hi", "sleep": 0.05})),
        (
            "raise after a sleep",
            json!({"do": "raise", "i": 7, "sleep": 0.05}),
        ),
        ("gather", json!({"do": "gather", "n": 5, "each": 0.05})),
        (
            "wait_for times out",
            json!({"do": "wait_for", "timeout": 0.05}),
        ),
        ("unknown action", json!({"do": "nope"})),
    ];
    for (name, payload) in cases {
        let (wasm_end, wasm_env) = run(&mut wasm, &["wait"], &payload).await;
        let (python_end, python_env) = run(&mut python, &["wait"], &payload).await;
        assert_eq!(wasm_end, python_end, "case {name}: end actor");
        assert_eq!(normalised(wasm_env), normalised(python_env), "case {name}");
    }
    wasm.shutdown().await.unwrap();
    python.shutdown().await.unwrap();
}
