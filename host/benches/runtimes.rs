//! Benchmark: per-message overhead of the native-Python path against the WASM path, the same
//! handler, the same sidecar, measured in the same run.
//!
//! Run: `cargo bench -p asya-host --bench runtimes` (`BENCH_MESSAGES`, default 5000).

#[path = "../../tests/common/mod.rs"]
mod common;

use asya_host::app::local::{ActorDef, LocalHost};
use asya_host::runtime::executor::Executor;
use asya_host::runtime::executor::Mode;
use asya_host::runtime::python::{PythonRuntimeConfig, SpawnSpec};
use hdrhistogram::Histogram;
use serde_json::json;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let messages: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let dir = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut python = ActorDef::new("native", std::path::PathBuf::new());
        python.python = Some(PythonRuntimeConfig {
            socket: dir.path().join("native.sock"),
            spawn: Some(SpawnSpec {
                python: common::repo_root().join(".venv/bin/python"),
                handler: "behaviours.behave".into(),
                mode: Mode::Payload,
                source_dir: common::repo_root().join("tests/fixtures/handlers"),
                env: vec![],
            }),
            ready_timeout: Duration::from_secs(60),
            max_in_flight: 4,
            max_output_bytes: 8 << 20,
        });
        let wasm = ActorDef::new("wasm", common::component("behaviours.behave", "payload"));
        let mut host = LocalHost::start(vec![wasm, python], common::cache()).await?;
        let payload = json!({"text": "hello world", "n": 1});
        println!("asya runtimes benchmark: behaviours.behave, {messages} messages each");
        let mut results = Vec::new();
        for actor in ["wasm", "native"] {
            let route = vec![actor.to_string()];
            host.run_batch(&route, vec![payload.clone(); 200], 8, Duration::from_secs(30)).await?;
            let executor: std::sync::Arc<dyn Executor> = match actor {
                "wasm" => host.executor(actor).unwrap().clone(),
                _ => host.python_executor(actor).unwrap().clone(),
            };
            let input = payload.to_string();
            let started = Instant::now();
            for _ in 0..messages {
                executor.call(input.clone(), Duration::from_secs(5)).await;
            }
            let call_us = started.elapsed().as_secs_f64() * 1e6 / messages as f64;
            let mut hop = Histogram::<u64>::new(3)?;
            for _ in 0..messages.min(2_000) {
                let t = Instant::now();
                host.send(&route, payload.clone()).await?;
                host.next_result(Duration::from_secs(10)).await?;
                hop.record(t.elapsed().as_nanos() as u64)?;
            }
            let p50 = hop.value_at_quantile(0.5) as f64 / 1000.0;
            let p99 = hop.value_at_quantile(0.99) as f64 / 1000.0;
            println!("  {actor:<7} call {call_us:>8.1} us   message through the sidecar p50 {p50:>8.1} us  p99 {p99:>8.1} us");
            results.push((call_us, p50));
        }
        println!("  ratio native / wasm: call {:.2}x, message p50 {:.2}x", results[1].0 / results[0].0, results[1].1 / results[0].1);
        host.shutdown().await?;
        anyhow::Ok(())
    })
}
