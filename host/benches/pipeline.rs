//! Benchmark: a 3-actor pipeline of a trivial handler on the embedded transport, against the
//! same handler called in a loop by native CPython, measured in the same run.
//!
//! Run: `cargo bench -p asya-host --bench pipeline` (set `BENCH_MESSAGES` to change the size).
//! Prints hops/s on one core, per-hop latency p50/p99, the handler call alone, the host's
//! overhead per hop (hop latency minus the call) and the ratios to native CPython.
//! Targets (README): >= 50,000 hops/s on one core, host overhead <= 20 us per hop.
//!
//! Every figure counts only successful outcomes: a handler call that failed, a message that
//! ended at `x-sump` or never arrived is counted as a failure, printed by kind, and more than 1%
//! of them fails the bench.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

/// mimalloc: the host allocates small JSON values on every hop; glibc malloc showed up in profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use asya_host::app::local::{ActorDef, LocalHost};
use asya_host::runtime::executor::Executor;
use hdrhistogram::Histogram;
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{Outcomes, Report};

const ROUTE: [&str; 3] = ["a", "b", "c"];
/// Messages in flight in the throughput run.
const WINDOW: usize = 256;

fn main() -> anyhow::Result<()> {
    let messages: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let component = common::component("behaviours.behave", "payload");
    // One core: a single-threaded async runtime runs every actor, sidecar and end actor.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let route: Vec<String> = ROUTE.iter().map(|s| s.to_string()).collect();
    let mut calls_out = Outcomes::new("handler calls");
    let mut latency_out = Outcomes::new("messages, one in flight");
    let mut batch_out = Outcomes::new("messages, many in flight");
    let (call_us, latency, hops_per_s) = runtime.block_on(async {
        let actors = ROUTE
            .iter()
            .map(|name| ActorDef::new(*name, component.clone()))
            .collect();
        let mut host = LocalHost::start(actors, common::cache()).await?;
        let payload = json!({"text": "hello world", "n": 1});

        // Warm up every instance and code path.
        let warm = host
            .run_batch(
                &route,
                vec![payload.clone(); 500],
                32,
                Duration::from_secs(60),
            )
            .await?;
        support::check_warm_up(&warm)?;

        // 1. The handler call alone, on a warm pooled instance: the mean of the successful calls.
        let executor = host.executor("a").unwrap().clone();
        let input = payload.to_string();
        let calls = messages.max(5_000);
        let mut ok_time = Duration::ZERO;
        for _ in 0..calls {
            let started = Instant::now();
            let outcome = executor.call(input.clone(), Duration::from_secs(5)).await;
            let took = started.elapsed();
            if calls_out.call(&outcome) {
                ok_time += took;
            }
        }
        let call_us = ok_time.as_secs_f64() * 1e6 / calls_out.ok() as f64;

        // 2. Per-hop latency: one message in flight, end to end divided by the 3 actor hops
        //    (the delivery to the sink counts as part of the last hop).
        let mut latency = Histogram::<u64>::new(3)?;
        for _ in 0..(messages / 10).max(500) {
            let t = Instant::now();
            let done = support::round_trip(
                &mut host,
                &route,
                payload.clone(),
                Duration::from_secs(10),
                &mut latency_out,
            )
            .await?;
            let took = t.elapsed();
            if done.is_some_and(|done| latency_out.finished(&done)) {
                latency.record(took.as_nanos() as u64 / ROUTE.len() as u64)?;
            }
        }

        // 3. Throughput with many messages in flight: the hops of the messages that succeeded.
        let started = Instant::now();
        let results = host
            .run_batch(
                &route,
                vec![payload.clone(); messages],
                WINDOW,
                Duration::from_secs(120),
            )
            .await?;
        let elapsed = started.elapsed().as_secs_f64();
        let succeeded = batch_out.batch(&results);
        let hops_per_s = (succeeded as usize * ROUTE.len()) as f64 / elapsed;
        host.shutdown().await?;
        anyhow::Ok((call_us, latency, hops_per_s))
    })?;

    let native = native_python_call_us(messages)?;
    let p50 = support::quantile(&latency, 0.50) / 1000.0;
    let p99 = support::quantile(&latency, 0.99) / 1000.0;
    let per_hop_at_throughput = 1e6 / hops_per_s;
    let overhead = per_hop_at_throughput - call_us;
    println!("asya pipeline benchmark: 3 actors (behaviours.behave), embedded transport, one core");
    println!(
        "  concurrency: asya handler calls 1 at a time, latency 1 message in flight, throughput \
         {WINDOW} in flight; native CPython calls 1 at a time (one core each)"
    );
    println!("  messages                         {messages}");
    println!("  throughput                       {hops_per_s:>10.0} hops/s");
    println!(
        "  per-hop latency p50 / p99        {p50:>10.1} / {p99:.1} us  (one message in flight)"
    );
    println!("  handler call on a warm instance  {call_us:>10.1} us");
    println!("  per hop at full throughput       {per_hop_at_throughput:>10.1} us");
    println!("  host overhead per hop            {overhead:>10.1} us  (per hop minus the call)");
    println!("  native CPython call              {native:>10.2} us");
    println!(
        "  ratio hop / native call          {:>10.1} x",
        per_hop_at_throughput / native
    );
    println!(
        "  ratio call (wasm) / native call  {:>10.1} x",
        call_us / native
    );
    Report::new()
        .outcomes(&calls_out)
        .outcomes(&latency_out)
        .outcomes(&batch_out)
        .at_least("throughput on one core", 50_000.0, hops_per_s, " hops/s")
        .at_most("host overhead per hop", 20.0, overhead, " us")
        .finish()
}

/// The same handler called in a loop by the machine's native CPython, per call in microseconds.
fn native_python_call_us(messages: usize) -> anyhow::Result<f64> {
    let handlers = common::repo_root().join("tests/fixtures/handlers");
    let script = format!(
        "import sys, time\nsys.path.insert(0, {dir:?})\nfrom behaviours import behave\n\
         p = {{'text': 'hello world', 'n': 1}}\nfor _ in range(1000): behave(p)\n\
         n = {n}\nt = time.perf_counter()\nfor _ in range(n): behave(p)\n\
         print((time.perf_counter() - t) / n * 1e6)\n",
        dir = handlers.display().to_string(),
        n = messages.max(100_000)
    );
    let python = common::repo_root().join(".venv/bin/python");
    let out = Command::new(python).arg("-c").arg(script).output()?;
    anyhow::ensure!(
        out.status.success(),
        "native python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}
