//! Benchmark: a 3-actor pipeline of a trivial handler on the embedded transport, against the
//! same handler called in a loop by native CPython, measured in the same run.
//!
//! Run: `cargo bench -p asya-host --bench pipeline` (set `BENCH_MESSAGES` to change the size).
//! Prints hops/s on one core, per-hop latency p50/p99, the handler call alone, the host's
//! overhead per hop (hop latency minus the call) and the ratios to native CPython.

#[path = "../../tests/common/mod.rs"]
mod common;

/// mimalloc: the host allocates small JSON values on every hop; glibc malloc showed up in profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use asya_host::app::local::{ActorDef, LocalHost};
use asya_host::runtime::executor::Executor;
use hdrhistogram::Histogram;
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

const ROUTE: [&str; 3] = ["a", "b", "c"];

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
    let (call_us, latency, hops_per_s) = runtime.block_on(async {
        let actors = ROUTE
            .iter()
            .map(|name| ActorDef::new(*name, component.clone()))
            .collect();
        let mut host = LocalHost::start(actors, common::cache()).await?;
        let payload = json!({"text": "hello world", "n": 1});

        // Warm up every instance and code path.
        host.run_batch(
            &route,
            vec![payload.clone(); 500],
            32,
            Duration::from_secs(60),
        )
        .await?;

        // 1. The handler call alone, on a warm pooled instance.
        let executor = host.executor("a").unwrap().clone();
        let input = payload.to_string();
        let calls = messages.max(5_000);
        let started = Instant::now();
        for _ in 0..calls {
            executor.call(input.clone(), Duration::from_secs(5)).await;
        }
        let call_us = started.elapsed().as_secs_f64() * 1e6 / calls as f64;

        // 2. Per-hop latency: one message in flight, end to end divided by the 3 actor hops
        //    (the delivery to the sink counts as part of the last hop).
        let mut latency = Histogram::<u64>::new(3)?;
        for _ in 0..(messages / 10).max(500) {
            let t = Instant::now();
            host.send(&route, payload.clone()).await?;
            host.next_result(Duration::from_secs(10)).await?;
            latency.record(t.elapsed().as_nanos() as u64 / ROUTE.len() as u64)?;
        }

        // 3. Throughput with many messages in flight.
        let started = Instant::now();
        host.run_batch(
            &route,
            vec![payload.clone(); messages],
            256,
            Duration::from_secs(120),
        )
        .await?;
        let elapsed = started.elapsed().as_secs_f64();
        let hops_per_s = (messages * ROUTE.len()) as f64 / elapsed;
        host.shutdown().await?;
        anyhow::Ok((call_us, latency, hops_per_s))
    })?;

    let native = native_python_call_us(messages)?;
    let p50 = latency.value_at_quantile(0.50) as f64 / 1000.0;
    let p99 = latency.value_at_quantile(0.99) as f64 / 1000.0;
    let per_hop_at_throughput = 1e6 / hops_per_s;
    let overhead = per_hop_at_throughput - call_us;
    println!("asya pipeline benchmark: 3 actors (behaviours.behave), embedded transport, one core");
    println!("  messages                         {messages}");
    println!("  throughput                       {hops_per_s:>10.0} hops/s   (target >= 50000)");
    println!(
        "  per-hop latency p50 / p99        {p50:>10.1} / {p99:.1} us  (one message in flight)"
    );
    println!("  handler call on a warm instance  {call_us:>10.1} us");
    println!("  per hop at full throughput       {per_hop_at_throughput:>10.1} us");
    println!("  host overhead per hop            {overhead:>10.1} us  (per hop minus the call; target <= 20)");
    println!("  native CPython call              {native:>10.2} us");
    println!(
        "  ratio hop / native call          {:>10.1} x",
        per_hop_at_throughput / native
    );
    println!(
        "  ratio call (wasm) / native call  {:>10.1} x",
        call_us / native
    );
    Ok(())
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
