//! A compiled flow with fan-out on a real nats-server (JetStream) and the real `asya-host run`:
//! the fan-in state lives in the `ASYA_FANIN_<NS>` key-value bucket, so killing the host (SIGKILL)
//! in the middle of fan-ins loses nothing: after a restart every flow completes with its results
//! merged in order.

mod common;

use asya_host::message::envelope::{Envelope, Phase, Route};
use asya_host::transport::nats::{self, NatsSettings, NatsTransport};
use common::nats::{HostProcess, NatsServer};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

const NS: &str = "default";

fn start(server: &NatsServer, manifests: &Path, components: &[(String, PathBuf)]) -> HostProcess {
    let pairs: Vec<(&str, &Path)> = components
        .iter()
        .map(|(n, p)| (n.as_str(), p.as_path()))
        .collect();
    HostProcess::start(&server.url(), manifests, &pairs, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_in_is_durable_across_a_host_crash() {
    let (manifests, components) = common::fan_flow("nats-flow");
    let server = NatsServer::start();
    let host = start(&server, &manifests, &components);
    let client = nats::connect(&server.url()).await.unwrap();
    let transport = NatsTransport::new(client, NS, NatsSettings::default())
        .await
        .unwrap();
    let results = transport.results().await.unwrap();

    let mut ids = Vec::new();
    let messages = 40;
    for i in 0..messages {
        let items: Vec<i64> = (0..(i % 5 + 20)).collect();
        let env = Envelope::new(
            Route::through(&["start-fan"]).unwrap(),
            json!({"text": format!("m{i}"), "items": items, "i": i}),
            "2026-11-25T00:00:00Z",
        );
        ids.push((env.id.clone(), i));
        asya_host::transport::Transport::publish(
            &transport,
            "start-fan",
            asya_host::transport::Outbound {
                bytes: env.to_bytes(),
                dedup_id: format!("{}:client", env.id),
            },
        )
        .await
        .unwrap();
    }
    // Kill the host while fan-ins are open: children and parked parents are in flight.
    let fanin = transport
        .jetstream()
        .get_key_value("ASYA_FANIN_DEFAULT")
        .await
        .expect("the host created the durable fan-in bucket");
    let mut waited = 0;
    loop {
        let done = results.ids().await.unwrap().len();
        let open = fanin.keys().await.is_ok();
        if done >= 3 || waited > 200 {
            assert!(open);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    let finished_before = results.ids().await.unwrap().len();
    host.kill9();
    assert!(
        finished_before < messages as usize,
        "the crash must happen mid-run (all {finished_before} had finished)"
    );

    let _host = start(&server, &manifests, &components);
    for (id, i) in &ids {
        let env = results.wait(id, Duration::from_secs(120)).await.unwrap();
        let status = env.status.as_ref().unwrap();
        assert_eq!(status.phase, Phase::Succeeded, "{id}: {:?}", status);
        let n = i % 5 + 20;
        let squares: Vec<Value> = (0..n)
            .map(|j| json!({"item": j, "square": j * j}))
            .collect();
        assert_eq!(env.payload["squares"], Value::Array(squares), "message {i}");
        assert_eq!(env.payload["i"], json!(i));
        assert_eq!(env.payload["pair"][0]["i"], json!(i), "no crosstalk");
        assert_eq!(
            env.payload["total"],
            json!((0..n).map(|j| j * j).sum::<i64>())
        );
    }
    // Every fan-out completed: what is left of each is its `.done` marker (its parts and index
    // were purged when it merged).
    let mut keys = fanin.keys().await.unwrap();
    let mut tombstones = 0;
    while let Some(key) = futures::StreamExt::next(&mut keys).await {
        let key = key.unwrap();
        assert!(key.ends_with(".done"), "fan-in part {key} left behind");
        tombstones += 1;
    }
    // Each message fans out three times (squares, the gather pair, an empty check list merges
    // without the aggregator).
    assert!(
        tombstones >= 2 * messages as usize,
        "{tombstones} fan-ins recorded"
    );
}
