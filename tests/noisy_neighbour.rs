//! The noisy-neighbour test, in its own test binary so no other test competes for the CPU while
//! it measures: a well-behaved actor's p50 latency stays within 2x of its baseline while another
//! actor in the same host spins into its deadline again and again.

mod common;

use asya_host::app::local::{ActorDef, LocalHost};
use asya_host::runtime::sandbox::SandboxLimits;
use serde_json::json;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

fn behave() -> std::path::PathBuf {
    common::component("behaviours.behave", "payload")
}

fn strict(name: &str) -> ActorDef {
    let mut def = ActorDef::new(name, behave());
    def.limits = SandboxLimits {
        cpu_timeout: Duration::from_millis(500),
        ..SandboxLimits::default()
    };
    def
}

async fn start(actors: Vec<ActorDef>) -> LocalHost {
    LocalHost::start(actors, common::cache())
        .await
        .expect("host starts")
}

/// p50 latency of 60 messages through `good`, one at a time.
async fn good_p50(host: &mut LocalHost) -> Duration {
    let route = vec!["good".to_string()];
    let mut times = Vec::new();
    for i in 0..60 {
        let t = Instant::now();
        let id = host.send(&route, json!({"i": i})).await.unwrap();
        while host.next_result(WAIT).await.unwrap().envelope.id != id {}
        times.push(t.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_neighbour_does_not_slow_a_well_behaved_actor() {
    // On this 2-core machine the offender may use one core; the other stays for the neighbour.
    let mut bad = strict("bad");
    bad.limits.max_instances = 1;
    bad.settings.concurrency = 1;
    let mut host = start(vec![ActorDef::new("good", behave()), bad]).await;
    let baseline = good_p50(&mut host).await;
    // The offender spins until its deadline, again and again.
    for _ in 0..8 {
        host.send(&["bad".to_string()], json!({"do": "loop"}))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let noisy = good_p50(&mut host).await;
    assert!(
        noisy <= baseline * 2 + Duration::from_micros(500),
        "good actor p50 went from {baseline:?} to {noisy:?} while the neighbour misbehaved"
    );
    host.shutdown().await.unwrap();
}
