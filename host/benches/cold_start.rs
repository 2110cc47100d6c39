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
//! Target (README): a fresh instance of an actor that ran before (resident: instantiate + first
//! call) <= 1 ms; printed for both allocators (the README reaches it with pooling).
//!
//! A round whose cold start fails (instantiation or a call) is counted as a failure by kind and
//! left out of the medians; more than 1% of them fails the bench.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use asya_host::runtime::sandbox::{PoolingSettings, SandboxEngine, SandboxLimits};
use asya_host::runtime::wasm::WasmExecutor;
use std::time::Duration;
use support::{Outcomes, Report};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let mut report = Report::new();
    for pooling in [None, Some(PoolingSettings::default())] {
        let allocator = if pooling.is_some() {
            "pooling"
        } else {
            "on-demand"
        };
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
            let mut starts = Outcomes::new(format!("cold starts, {allocator} allocator"));
            for _ in 0..rounds {
                executor.park_now();
                for times in [&mut parked, &mut resident] {
                    match executor.time_cold_start(input).await {
                        Ok(measured) => {
                            starts.add_ok(1);
                            for (slot, t) in times.iter_mut().zip(measured) {
                                slot.push(t);
                            }
                        }
                        Err(e) => starts.fail(format!("{e:#}")),
                    }
                }
            }
            println!(
                "cold start of one CPython component, {rounds} rounds, medians in ms, {allocator} allocator"
            );
            println!("  concurrency: one cold start at a time");
            println!("                      map     instantiate  first call  warm call   total");
            let mut fresh_instance = f64::NAN;
            for (name, t) in [("parked", parked), ("resident", resident)] {
                let m: Vec<f64> = t.into_iter().map(support::median_ms).collect();
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
                if name == "resident" {
                    fresh_instance = m[0] + m[1] + m[2];
                }
            }
            report.outcomes(&starts).at_most(
                &format!("fresh instance (resident total), {allocator}"),
                1.0,
                fresh_instance,
                " ms",
            );
            anyhow::Ok(())
        })?;
    }
    report.finish()
}
