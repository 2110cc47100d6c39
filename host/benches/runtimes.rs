//! Benchmark: per-message overhead of the native-Python path against the WASM path, the same
//! handler, the same sidecar, measured in the same run.
//!
//! Run: `cargo bench -p asya-host --bench runtimes` (`BENCH_MESSAGES`, default 5000;
//! `BENCH_ROUNDS`, default 5).
//! Target: a native call costs at most 50 us (p50 over the rounds) with 64 calls in flight over
//! the runtime's one persistent connection (issue 19); printed against the WASM call with the
//! same 64 in flight, in the same run.
//!
//! Both sides get the same concurrency: handler calls one at a time, then 64 at a time (each
//! round's cost per call is its wall time over its successful calls), and messages through the
//! sidecar one in flight.
//! Every figure counts only successful outcomes: a failed call, or a message that ended at
//! `x-sump` or never arrived, is counted as a failure, printed by kind, and more than 1% of them
//! fails the bench.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use asya_host::app::local::{ActorDef, LocalHost};
use asya_host::runtime::executor::Executor;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use std::time::{Duration, Instant};
use support::{Outcomes, Report};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let messages: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    const IN_FLIGHT: usize = 64;
    let dir = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut python = ActorDef::new("native", std::path::PathBuf::new());
        python.python = Some(support::native_runtime(
            common::repo_root().join(".venv/bin/python"),
            common::repo_root().join("tests/fixtures/handlers"),
            "behaviours.behave",
            dir.path().join("native.sock"),
            IN_FLIGHT,
        ));
        let mut wasm = ActorDef::new("wasm", common::component("behaviours.behave", "payload"));
        wasm.limits.max_instances = IN_FLIGHT;
        let mut host = LocalHost::start(vec![wasm, python], common::cache()).await?;
        let payload = json!({"text": "hello world", "n": 1});
        println!("asya runtimes benchmark: behaviours.behave, {messages} messages each");
        println!("  concurrency: each side calls its handler 1 at a time, then {IN_FLIGHT} at a time ({rounds} rounds), then sends 1 message in flight at a time through the sidecar");
        let mut report = Report::new();
        let mut results = Vec::new();
        for actor in ["wasm", "native"] {
            let route = vec![actor.to_string()];
            let warm = host
                .run_batch(&route, vec![payload.clone(); 200], 8, Duration::from_secs(30))
                .await?;
            support::check_warm_up(&warm)?;
            let executor: std::sync::Arc<dyn Executor> = match actor {
                "wasm" => host.executor(actor).unwrap().clone(),
                _ => host.python_executor(actor).unwrap().clone(),
            };
            let input = payload.to_string();
            let mut calls = Outcomes::new(format!("{actor} handler calls"));
            let mut ok_time = Duration::ZERO;
            for _ in 0..messages {
                let started = Instant::now();
                let outcome = executor.call(input.clone(), Duration::from_secs(5)).await;
                let took = started.elapsed();
                if calls.call(&outcome) {
                    ok_time += took;
                }
            }
            let call_us = ok_time.as_secs_f64() * 1e6 / calls.ok() as f64;
            let mut parallel = Outcomes::new(format!("{actor} handler calls, {IN_FLIGHT} in flight"));
            let mut per_call = Vec::new();
            for _ in 0..rounds {
                let before = parallel.ok();
                let started = Instant::now();
                let outcomes: Vec<_> = futures::stream::iter(0..messages)
                    .map(|_| executor.call(input.clone(), Duration::from_secs(10)))
                    .buffer_unordered(IN_FLIGHT)
                    .collect()
                    .await;
                let took = started.elapsed();
                for outcome in &outcomes {
                    parallel.call(outcome);
                }
                let ok = parallel.ok() - before;
                if ok > 0 {
                    per_call.push(took.as_secs_f64() * 1e6 / ok as f64);
                }
            }
            per_call.sort_by(f64::total_cmp);
            let parallel_p50 = per_call.get(per_call.len() / 2).copied().unwrap_or(f64::NAN);
            println!(
                "  {actor:<7} call, {IN_FLIGHT} in flight: {:.1}-{:.1} us per call over {rounds} rounds (p50 {parallel_p50:.1} us)",
                per_call.first().copied().unwrap_or(f64::NAN),
                per_call.last().copied().unwrap_or(f64::NAN),
            );
            let mut sent = Outcomes::new(format!("{actor} messages through the sidecar"));
            let mut hop = Histogram::<u64>::new(3)?;
            for _ in 0..messages.min(2_000) {
                let t = Instant::now();
                let done = support::round_trip(
                    &mut host,
                    &route,
                    payload.clone(),
                    Duration::from_secs(10),
                    &mut sent,
                )
                .await?;
                let took = t.elapsed();
                if done.is_some_and(|done| sent.finished(&done)) {
                    hop.record(took.as_nanos() as u64)?;
                }
            }
            let p50 = support::quantile(&hop, 0.5) / 1000.0;
            let p99 = support::quantile(&hop, 0.99) / 1000.0;
            println!("  {actor:<7} call {call_us:>8.1} us   message through the sidecar p50 {p50:>8.1} us  p99 {p99:>8.1} us");
            report.outcomes(&calls).outcomes(&parallel).outcomes(&sent);
            results.push((call_us, p50, parallel_p50));
        }
        println!(
            "  ratio native / wasm: call {:.2}x, call with {IN_FLIGHT} in flight {:.2}x, message p50 {:.2}x",
            results[1].0 / results[0].0,
            results[1].2 / results[0].2,
            results[1].1 / results[0].1
        );
        report.at_most(
            &format!("native call with {IN_FLIGHT} in flight on one connection, p50 over rounds"),
            50.0,
            results[1].2,
            "us",
        );
        host.shutdown().await?;
        report.finish()
    })
}
