//! Benchmark: what a compiled flow's routers cost. The review flow (examples/review-flow: clean →
//! if → english → reviewed) against the same two actors on a static route, in one host on the
//! embedded transport, both measured in the same run: per-message latency with one message in
//! flight and throughput with many, and their ratios (router hops are the difference).
//!
//! Run: `cargo bench -p asya-host --bench flow` (BENCH_MESSAGES sets the batch size).

#[path = "../../tests/common/mod.rs"]
mod common;

use asya_host::actor::manifest;
use asya_host::app::local::{ActorDef, LocalHost};
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let messages: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let example = common::repo_root().join("examples/review-flow");
    let work = common::repo_root().join("target/asya-fixtures/bench-flow");
    let compiled = work.join("compiled");
    let status = Command::new(common::asya_cli())
        .args(["flow", "compile"])
        .arg(example.join("flow.py"))
        .arg("--output-dir")
        .arg(&compiled)
        .arg("--actors")
        .arg(example.join("actors"))
        .arg("--overwrite")
        .status()?;
    anyhow::ensure!(status.success(), "asya flow compile failed");
    let routers = common::component_from(
        &compiled,
        "routers.dispatch",
        "envelope",
        &work.join("routers.wasm"),
    );
    let mut defs = Vec::new();
    for (_, actor) in manifest::load_dir(&compiled.join("actors"))? {
        defs.push(ActorDef::from_manifest(&actor, routers.clone())?);
    }
    for (_, actor) in manifest::load_dir(&example.join("actors"))? {
        let handler = actor.spec.handler.clone().unwrap_or_default();
        let wasm = common::component_from(
            &example,
            &handler,
            "payload",
            &work.join(format!("{}.wasm", actor.name())),
        );
        defs.push(ActorDef::from_manifest(&actor, wasm)?);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let flow: Vec<String> = vec!["start-review-flow".into()];
    let fixed: Vec<String> = vec!["clean-text".into(), "english-sentiment".into()];
    let payload = json!({"text": "  Great product, I love it!  "});
    let (lat_flow, lat_fixed, tput_flow, tput_fixed) = runtime.block_on(async {
        let mut host = LocalHost::start(defs, common::cache()).await?;
        for route in [&flow, &fixed] {
            host.run_batch(
                route,
                vec![payload.clone(); 200],
                32,
                Duration::from_secs(60),
            )
            .await?;
        }
        let mut p50 = Vec::new();
        for route in [&flow, &fixed] {
            let mut samples = Vec::new();
            for _ in 0..(messages / 10).max(300) {
                let t = Instant::now();
                host.send(route, payload.clone()).await?;
                let done = host.next_result(Duration::from_secs(10)).await?;
                anyhow::ensure!(done.envelope.payload["sentiment"] == "positive");
                samples.push(t.elapsed());
            }
            samples.sort();
            p50.push(samples[samples.len() / 2]);
        }
        let mut rate = Vec::new();
        for route in [&flow, &fixed] {
            let t = Instant::now();
            host.run_batch(
                route,
                vec![payload.clone(); messages],
                128,
                Duration::from_secs(300),
            )
            .await?;
            rate.push(messages as f64 / t.elapsed().as_secs_f64());
        }
        host.shutdown().await?;
        anyhow::Ok((p50[0], p50[1], rate[0], rate[1]))
    })?;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "flow benchmark: review flow (2 actors + 2 router hops) vs the 2 actors on a static route"
    );
    println!("  messages                           {messages}");
    println!(
        "  latency p50, one in flight         flow {:>8.1} us   static {:>8.1} us   ratio {:.2}x",
        us(lat_flow),
        us(lat_fixed),
        lat_flow.as_secs_f64() / lat_fixed.as_secs_f64()
    );
    println!(
        "  throughput                         flow {tput_flow:>8.0} msg/s static {tput_fixed:>8.0} msg/s ratio {:.2}x",
        tput_fixed / tput_flow
    );
    println!(
        "  cost of one router hop (p50)       {:>8.1} us",
        (us(lat_flow) - us(lat_fixed)) / 2.0
    );
    Ok(())
}
