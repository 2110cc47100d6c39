//! Benchmark: what a compiled flow's routers cost. The review flow (examples/review-flow: clean →
//! if → english → reviewed) against the same two actors on a static route, in one host on the
//! embedded transport, both measured in the same run: per-message latency with one message in
//! flight and throughput with many, and their ratios (router hops are the difference).
//!
//! Run: `cargo bench -p asya-host --bench flow` (BENCH_MESSAGES sets the batch size).
//! Target (issue 15): a router hop costs at most 2x a handler hop (p50, one message in flight).
//! A router hop's cost is the flow's latency minus the static route's, divided by the number
//! of router hops the flow's messages took (counted from their routes); a handler hop's is the
//! static route's latency divided by its two hops. Where the time goes: each actor's executor
//! call alone (the handler in its sandbox, JSON in and out) is timed on the inputs a real
//! message gave it, and the rest of a hop (envelope check, routing, transport) is the difference.
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
use asya_host::runtime::executor::Executor;
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
    let mut router_names = std::collections::HashSet::new();
    for (_, actor) in manifest::load_dir(&compiled.join("actors"))? {
        router_names.insert(actor.name().to_owned());
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
    let (lat_flow, lat_fixed, tput_flow, tput_fixed, router_hops, calls) =
        runtime.block_on(async {
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
            // The route one flow message took (router hops counted), and each hop's input.
            let mut tap = host.tap();
            let mut one = Outcomes::new("flow message for the hop breakdown");
            let done = support::round_trip(
                &mut host,
                &flow,
                payload.clone(),
                Duration::from_secs(10),
                &mut one,
            )
            .await?
            .filter(|done| one.finished_as(done, positive))
            .ok_or_else(|| anyhow::anyhow!("the breakdown's flow message did not succeed"))?;
            let router_hops = done
                .envelope
                .route
                .prev
                .iter()
                .filter(|a| router_names.contains(*a))
                .count();
            let mut inputs = Vec::new();
            while let Ok(hop) = tap.try_recv() {
                if let Some(executor) = host.executor(&hop.destination) {
                    let env: asya_host::message::envelope::Envelope =
                        serde_json::from_slice(&hop.bytes)?;
                    let input = asya_host::message::routing::handler_input(executor.mode(), &env);
                    inputs.push((hop.destination.clone(), input));
                }
            }
            drop(tap);
            // Each executor call alone, on that input, one at a time.
            let mut calls = Vec::new();
            for (actor, input) in &inputs {
                let executor = host.executor(actor).expect("executor");
                let mut samples = Vec::new();
                let mut ok = Outcomes::new(format!("{actor} executor calls"));
                for _ in 0..300 {
                    let t = Instant::now();
                    let outcome = executor.call(input.clone(), Duration::from_secs(5)).await;
                    let took = t.elapsed();
                    if ok.call(&outcome) {
                        samples.push(took);
                    }
                }
                report.outcomes(&ok);
                calls.push((
                    actor.clone(),
                    router_names.contains(actor),
                    support::median_ms(samples) * 1e3,
                    input.len(),
                ));
            }
            host.shutdown().await?;
            anyhow::Ok((p50[0], p50[1], rate[0], rate[1], router_hops, calls))
        })?;
    println!(
        "flow benchmark: review flow (2 actors + {router_hops} router hops) vs the 2 actors on a static route"
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
    let router_hop = (lat_flow - lat_fixed) / router_hops.max(1) as f64;
    let handler_hop = lat_fixed / 2.0;
    println!("  handler hop (p50)                  {handler_hop:>8.1} us");
    println!(
        "  router hop (p50)                   {router_hop:>8.1} us   ratio {:.2}x a handler hop",
        router_hop / handler_hop
    );
    println!("  where a hop's time goes: the executor call alone (sandboxed handler, JSON in and out), p50 of 300:");
    for (actor, is_router, call, bytes) in &calls {
        let kind = if *is_router { "router " } else { "handler" };
        println!("    {kind} {actor:<34} {call:>8.1} us  ({bytes} bytes in)");
    }
    let mean = |routers: bool| {
        let picked: Vec<f64> = calls
            .iter()
            .filter(|c| c.1 == routers)
            .map(|c| c.2)
            .collect();
        picked.iter().sum::<f64>() / picked.len().max(1) as f64
    };
    let (router_call, handler_call) = (mean(true), mean(false));
    println!(
        "    mean: router call {router_call:.1} us, handler call {handler_call:.1} us; the rest of a hop (check, route, transport): router {:.1} us, handler {:.1} us",
        router_hop - router_call,
        handler_hop - handler_call
    );
    report.at_most(
        "router hop / handler hop (p50)",
        2.0,
        router_hop / handler_hop,
        "x",
    );
    report.finish()
}
