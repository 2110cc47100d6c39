//! Benchmark: where the first message to a cold actor spends its time. For one CPython component
//! (the fixture handler) it repeats, `BENCH_ROUNDS` times: map the compiled artifact again (the
//! actor was parked), instantiate from the snapshot, first call, second call on the same instance;
//! and the same with the component resident. Prints medians and the ratio of a first call to a
//! warm one (what the snapshot's untouched pages cost).
//!
//! Both instance allocators run in the same process: on-demand (the default) and pooling
//! (`ASYA_POOLING=1`), so the ratio between them is measured on the same machine state.
//!
//! Run: `cargo bench -p asya-host --bench cold_start`.

#[path = "../../tests/common/mod.rs"]
mod common;

use asya_host::runtime::sandbox::{PoolingSettings, SandboxEngine, SandboxLimits};
use asya_host::runtime::wasm::WasmExecutor;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let path = common::component("behaviours.behave", "payload");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    for pooling in [None, Some(PoolingSettings::default())] {
        rt.block_on(async {
            let engine = SandboxEngine::with_pooling(pooling)?;
            let cache = common::cache();
            let loaded = cache.load_file(engine.engine(), &path)?;
            anyhow::ensure!(loaded.reload.is_some(), "the compile cache is off");
            let executor =
                WasmExecutor::load("a", engine.clone(), &loaded, SandboxLimits::default()).await?;
            drop(loaded);
            let input = r#"{"text": "hello", "do": "echo"}"#;
            let mut parked: [Vec<Duration>; 4] = Default::default();
            let mut resident: [Vec<Duration>; 4] = Default::default();
            for _ in 0..rounds {
                executor.park_now();
                for (slot, t) in parked
                    .iter_mut()
                    .zip(executor.time_cold_start(input).await?)
                {
                    slot.push(t);
                }
                for (slot, t) in resident
                    .iter_mut()
                    .zip(executor.time_cold_start(input).await?)
                {
                    slot.push(t);
                }
            }
            println!(
                "cold start of one CPython component, {rounds} rounds, medians in ms, {} allocator",
                if pooling.is_some() {
                    "pooling"
                } else {
                    "on-demand"
                }
            );
            println!("                      map     instantiate  first call  warm call   total");
            for (name, t) in [("parked", parked), ("resident", resident)] {
                let m: Vec<f64> = t.into_iter().map(median).collect();
                println!(
                    "  {name:<10}  {:>9.3}  {:>11.3}  {:>10.3}  {:>9.3}  {:>7.3}",
                    m[0],
                    m[1],
                    m[2],
                    m[3],
                    m[0] + m[1] + m[2]
                );
                println!(
                    "    first call / warm call: {:.1}x   total / warm call: {:.1}x",
                    m[2] / m[3],
                    (m[0] + m[1] + m[2]) / m[3]
                );
            }
            anyhow::Ok(())
        })?;
    }
    Ok(())
}
