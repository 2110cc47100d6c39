//! Benchmark: what a compiled flow's routers cost. The review flow (examples/review-flow: clean →
//! if → english → reviewed) against the same two actors on a static route, in one host on the
//! embedded transport, both measured in the same run: per-message latency with one message in
//! flight and throughput with many, and their ratios (router hops are the difference).
//!
//! Run: `cargo bench -p asya-host --bench flow` (BENCH_MESSAGES sets the batch size).
//! Target: none stated (the README describes it as a comparison).
//!
//! Both routes get the same concurrency: one message in flight for latency, `WINDOW` for
//! throughput. Every figure counts only the messages that ended at `x-sink` with the expected
//! result; the others are counted as failures, printed by kind, and more than 1% of them fails
//! the bench.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use asya_host::actor::manifest;
use asya_host::app::local::{ActorDef, LocalHost};
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{Outcomes, Report};

/// Messages in flight in the throughput runs.
const WINDOW: usize = 128;

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
    let positive =
        |env: &asya_host::message::envelope::Envelope| env.payload["sentiment"] == "positive";
    let mut report = Report::new();
    let (lat_flow, lat_fixed, tput_flow, tput_fixed) = runtime.block_on(async {
        let mut host = LocalHost::start(defs, common::cache()).await?;
        for route in [&flow, &fixed] {
            let warm = host
                .run_batch(
                    route,
                    vec![payload.clone(); 200],
                    32,
                    Duration::from_secs(60),
                )
                .await?;
            support::check_warm_up(&warm)?;
        }
        let mut p50 = Vec::new();
        for (name, route) in [("flow", &flow), ("static", &fixed)] {
            let mut sent = Outcomes::new(format!("{name} messages, one in flight"));
            let mut samples = Vec::new();
            for _ in 0..(messages / 10).max(300) {
                let t = Instant::now();
                let done = support::round_trip(
                    &mut host,
                    route,
                    payload.clone(),
                    Duration::from_secs(10),
                    &mut sent,
                )
                .await?;
                let took = t.elapsed();
                if done.is_some_and(|done| sent.finished_as(&done, positive)) {
                    samples.push(took);
                }
            }
            p50.push(support::median_ms(samples) * 1e3);
            report.outcomes(&sent);
        }
        let mut rate = Vec::new();
        for (name, route) in [("flow", &flow), ("static", &fixed)] {
            let mut batch = Outcomes::new(format!("{name} messages, {WINDOW} in flight"));
            let t = Instant::now();
            let results = host
                .run_batch(
                    route,
                    vec![payload.clone(); messages],
                    WINDOW,
                    Duration::from_secs(300),
                )
                .await?;
            let elapsed = t.elapsed().as_secs_f64();
            rate.push(batch.batch_as(&results, positive) as f64 / elapsed);
            report.outcomes(&batch);
        }
        host.shutdown().await?;
        anyhow::Ok((p50[0], p50[1], rate[0], rate[1]))
    })?;
    println!(
        "flow benchmark: review flow (2 actors + 2 router hops) vs the 2 actors on a static route"
    );
    println!(
        "  concurrency: both routes 1 message in flight for latency, {WINDOW} in flight for throughput"
    );
    println!("  messages                           {messages}");
    println!(
        "  latency p50, one in flight         flow {lat_flow:>8.1} us   static {lat_fixed:>8.1} us   ratio {:.2}x",
        lat_flow / lat_fixed
    );
    println!(
        "  throughput                         flow {tput_flow:>8.0} msg/s static {tput_fixed:>8.0} msg/s ratio {:.2}x",
        tput_fixed / tput_flow
    );
    println!(
        "  cost of one router hop (p50)       {:>8.1} us",
        (lat_flow - lat_fixed) / 2.0
    );
    report.finish()
}
