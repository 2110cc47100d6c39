//! `asya-host run` reloads its manifest directory while serving: actors are added, changed and
//! removed (and a broken manifest is survived) without losing or delaying a neighbour's messages.
//! Real nats-server, real host process, real components.

mod common;

use asya_host::message::envelope::{Envelope, Route, SUMP};
use asya_host::transport::nats::{self, NatsSettings, NatsTransport};
use asya_host::transport::{Outbound, Transport};
use common::nats::{HostProcess, NatsServer};
use futures::StreamExt;
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NS: &str = "reload";

fn manifest(name: &str, component: &Path, cpu_timeout: &str, version: &str) -> String {
    format!(
        "apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {{name: {name}, namespace: {NS}}}\n\
         spec:\n  handler: behaviours.behave\n  component: {}\n\
         \x20 sandbox: {{cpuTimeout: {cpu_timeout}, env: {{VERSION: {version}}}}}\n",
        component.display()
    )
}

/// Sends a message to `actor` every few milliseconds until stopped; records send instants.
struct Load {
    sent: Arc<Mutex<HashMap<String, Instant>>>,
}

async fn publish(transport: &NatsTransport, actor: &str, payload: serde_json::Value) -> String {
    let env = Envelope::new(
        Route::through(&[actor]).unwrap(),
        payload,
        "2026-11-25T00:00:00Z",
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

fn percentile(mut values: Vec<Duration>, p: f64) -> Duration {
    values.sort();
    values[((values.len() as f64 - 1.0) * p) as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_are_added_changed_and_removed_while_the_host_runs() {
    let component = common::component("behaviours.behave", "payload");
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path();
    std::fs::write(
        manifests.join("echo.yaml"),
        manifest("echo", &component, "2s", "v1"),
    )
    .unwrap();
    let server = NatsServer::start();
    let _host = HostProcess::start(
        &server.url(),
        manifests,
        &[],
        &["--reload-interval", "200ms"],
    );
    let client = nats::connect(&server.url()).await.unwrap();
    let transport = Arc::new(
        NatsTransport::new(client.clone(), NS, NatsSettings::default())
            .await
            .unwrap(),
    );
    // Core NATS sees every result the moment the host stores it: exact latencies. Anything
    // that ended at x-sump is a failure the test reports with its reason.
    let mut ended = client.subscribe(nats::results_subject(NS)).await.unwrap();
    let failed: Arc<Mutex<Vec<String>>> = Arc::default();
    let arrived: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let results: Arc<Mutex<HashMap<String, serde_json::Value>>> = Arc::default();
    {
        let (arrived, results, failed) = (arrived.clone(), results.clone(), failed.clone());
        tokio::spawn(async move {
            while let Some(msg) = ended.next().await {
                let env: Envelope = serde_json::from_slice(&msg.payload).unwrap();
                if env.route.curr == SUMP {
                    failed
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&msg.payload).into_owned());
                    continue;
                }
                results.lock().unwrap().insert(env.id.clone(), env.payload);
                arrived.lock().unwrap().insert(env.id, Instant::now());
            }
        });
    }
    // Which version of `echo` serves its queue: it reports the VERSION its manifest grants.
    let version_of_echo = || {
        let (transport, results) = (transport.clone(), results.clone());
        async move {
            let id = publish(&transport, "echo", json!({"do": "env", "name": "VERSION"})).await;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(payload) = results.lock().unwrap().get(&id) {
                    return payload["value"].as_str().unwrap_or_default().to_owned();
                }
                assert!(Instant::now() < deadline, "echo never answered {id}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let load = Load {
        sent: Arc::default(),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let phase: Arc<Mutex<&'static str>> = Arc::new(Mutex::new("baseline"));
    let phases: Arc<Mutex<HashMap<String, &'static str>>> = Arc::default();
    let sender = {
        let (sent, transport, stop, phase, phases) = (
            load.sent.clone(),
            transport.clone(),
            stop.clone(),
            phase.clone(),
            phases.clone(),
        );
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let t = Instant::now();
                let id = publish(&transport, "echo", json!({"do": "echo"})).await;
                sent.lock().unwrap().insert(id.clone(), t);
                phases.lock().unwrap().insert(id, *phase.lock().unwrap());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(version_of_echo().await, "v1");
    *phase.lock().unwrap() = "reload";

    // Added: a second actor starts serving its queue.
    std::fs::write(
        manifests.join("echo2.yaml"),
        manifest("echo2", &component, "2s", "v1"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = publish(&transport, "echo2", json!({"do": "echo"})).await;
    while !arrived.lock().unwrap().contains_key(&first) {
        assert!(
            Instant::now() < deadline,
            "the added actor never served its queue"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Changed: the neighbour is replaced in place; its queue keeps being served, and soon by
    // the new version only.
    std::fs::write(
        manifests.join("echo.yaml"),
        manifest("echo", &component, "3s", "v2"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while version_of_echo().await != "v2" {
        assert!(
            Instant::now() < deadline,
            "the changed actor never took effect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..5 {
        assert_eq!(
            version_of_echo().await,
            "v2",
            "the old version served after the change"
        );
    }
    // Broken: a manifest that does not parse changes nothing.
    std::fs::write(
        manifests.join("broken.yaml"),
        "kind: AsyncActor\nspec: [oops\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::remove_file(manifests.join("broken.yaml")).unwrap();
    // Removed: the actor stops pulling; its messages wait in the stream.
    std::fs::remove_file(manifests.join("echo2.yaml")).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let orphan = publish(&transport, "echo2", json!({"do": "echo"})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !arrived.lock().unwrap().contains_key(&orphan),
        "a removed actor still consumed its queue"
    );
    stop.cancel();
    sender.await.unwrap();

    let sent = load.sent.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sent
        .keys()
        .any(|id| !arrived.lock().unwrap().contains_key(id))
    {
        assert!(
            Instant::now() < deadline,
            "the neighbour lost messages during reloads: {} of {} missing; at x-sump: {:?}",
            sent.keys()
                .filter(|id| !arrived.lock().unwrap().contains_key(*id))
                .count(),
            sent.len(),
            failed.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let arrived = arrived.lock().unwrap();
    let phases = phases.lock().unwrap();
    let latencies = |which: &str| -> Vec<Duration> {
        sent.iter()
            .filter(|(id, _)| phases[*id] == which)
            .map(|(id, t)| arrived[id].duration_since(*t))
            .collect()
    };
    let (base, during) = (latencies("baseline"), latencies("reload"));
    let (p50_base, p50_reload) = (
        percentile(base.clone(), 0.5),
        percentile(during.clone(), 0.5),
    );
    let p99_reload = percentile(during.clone(), 0.99);
    println!(
        "neighbour latency: baseline p50 {p50_base:?} ({} msgs); during reloads p50 {p50_reload:?}, \
         p99 {p99_reload:?} ({} msgs)",
        base.len(),
        during.len()
    );
    assert!(
        p50_reload <= p50_base * 2 + Duration::from_millis(2),
        "reloads delayed the neighbour: p50 {p50_base:?} -> {p50_reload:?}"
    );
}

/// Sends one message to each of `actors` and waits for all their results; the actors that
/// answered `echo` (within 30 s).
async fn answering(
    client: &async_nats::Client,
    transport: &NatsTransport,
    actors: &[String],
) -> Vec<String> {
    let mut ended = client.subscribe(nats::results_subject(NS)).await.unwrap();
    let mut waiting: HashMap<String, String> = HashMap::new();
    for actor in actors {
        let id = publish(transport, actor, json!({"do": "echo"})).await;
        waiting.insert(id, actor.clone());
    }
    let mut answered = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !waiting.is_empty() {
        let Ok(Some(msg)) = tokio::time::timeout_at(deadline, ended.next()).await else {
            break;
        };
        let env: Envelope = serde_json::from_slice(&msg.payload).unwrap();
        if let Some(actor) = waiting.remove(&env.id) {
            if env.route.curr != SUMP && env.payload["seen_by"] == 1 {
                answered.push(actor);
            }
        }
    }
    answered.sort();
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_host_keeps_serving_its_other_actors_when_one_breaks() {
    let component = common::component("behaviours.behave", "payload");
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..51).map(|i| format!("member-{i:02}")).collect();
    for name in &names {
        std::fs::write(
            dir.path().join(format!("{name}.yaml")),
            manifest(name, &component, "2s", "v1"),
        )
        .unwrap();
    }
    let server = NatsServer::start();
    let args = ["--pool", "reload/pool", "--reload-interval", "200ms"];
    let host = HostProcess::start(&server.url(), dir.path(), &[], &args);
    let client = nats::connect(&server.url()).await.unwrap();
    let transport = NatsTransport::new(client.clone(), NS, NatsSettings::default())
        .await
        .unwrap();
    assert_eq!(answering(&client, &transport, &names).await, names);

    // One member's manifest breaks (as a bad edit of the pool's ConfigMap would): the reload
    // reports it, the member keeps its running version, and the other 50 never notice.
    std::fs::write(dir.path().join("member-00.yaml"), "spec: [not, a, manifest").unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(answering(&client, &transport, &names).await, names);

    // A host (re)started on the broken directory, with another member whose component does not
    // exist: it starts, serves the 49 others, and reports the one that did not load.
    drop(host);
    std::fs::write(
        dir.path().join("member-50.yaml"),
        manifest(
            "member-50",
            Path::new("/nonexistent/member.wasm"),
            "2s",
            "v1",
        ),
    )
    .unwrap();
    let host = HostProcess::start(&server.url(), dir.path(), &[], &args);
    let others: Vec<String> = names[1..50].to_vec();
    assert_eq!(answering(&client, &transport, &others).await, others);
    let (_, metrics) = common::net::http_get(host.http_port, "/metrics").unwrap();
    assert!(
        metrics.contains(&format!(
            "asya_actor_broken{{actor=\"member-50\",namespace=\"{NS}\"}} 1"
        )),
        "{metrics}"
    );
    // Without --pool the same directory does not start: a dedicated host's actor must load.
    let mut dedicated = std::process::Command::new(common::nats::host_binary())
        .args(["run", "--nats", &server.url(), "--manifests"])
        .arg(dir.path())
        .args(["--http", "127.0.0.1:0"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || dedicated.wait().unwrap())
        .await
        .unwrap();
    assert!(!status.success());
}
