//! Benchmark: an LLM-style handler (one HTTP call to a model that answers in 200 ms) as an
//! `async def` WASM actor with ONE instance, against the same call made by a plain function with
//! `maxInstances` 4 and 64, and against the native-Python runtime, all in one run.
//!
//! Run: `cargo bench -p asya-host --bench async_calls` (`BENCH_IN_FLIGHT`, default 500;
//! `BENCH_ROUNDS`, default 3; `BENCH_LATENCY_MS`, default 200).
//! Targets (issue 19): 500 calls in flight in one instance; its throughput within 10% of
//! in-flight / latency; under 100 KiB of host RSS per call in flight.
//!
//! The fake model server is this binary again (`serve-model PORT_FILE`), a separate process, so
//! its connections do not count in the host's RSS. Every configuration is offered the same
//! messages in flight (the sidecar's window); what differs is how many calls its executor can
//! run at once. Only messages that end at `x-sink` with the model's answer count.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use asya_host::app::local::{ActorDef, LocalHost};
use asya_host::runtime::outbound::HostAllowlist;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Outcomes, Report};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The fake model: every request is answered after `latency`, with a small JSON completion.
fn serve_model(port_file: &str, latency: Duration) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        use axum::routing::any;
        let app = axum::Router::new().route(
            "/{*path}",
            // A model reads the whole prompt, then thinks.
            any(move |_prompt: String| async move {
                tokio::time::sleep(latency).await;
                r#"{"choices": [{"message": {"content": "a fine answer"}}]}"#
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        std::fs::write(port_file, listener.local_addr()?.port().to_string())?;
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}

struct Model {
    child: std::process::Child,
    port: u16,
}

impl Model {
    fn start(latency: Duration) -> anyhow::Result<Model> {
        let dir = tempfile::tempdir()?;
        let port_file = dir.path().join("port");
        let child = std::process::Command::new(std::env::current_exe()?)
            .args(["serve-model", port_file.to_str().unwrap_or_default()])
            .env("BENCH_LATENCY_MS", latency.as_millis().to_string())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                if let Ok(port) = text.trim().parse() {
                    return Ok(Model { child, port });
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the fake model server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One configuration's result.
struct Run {
    name: &'static str,
    capacity: usize,
    per_second: f64,
    peak_in_flight: usize,
    rss_per_call_kib: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let latency = Duration::from_millis(env_or("BENCH_LATENCY_MS", 200));
    if args.get(1).map(String::as_str) == Some("serve-model") {
        return serve_model(&args[2], latency);
    }
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let in_flight = env_or("BENCH_IN_FLIGHT", 500) as usize;
    let rounds = env_or("BENCH_ROUNDS", 3).max(1) as usize;
    let model = Model::start(latency)?;
    let url = format!("http://127.0.0.1:{}/v1/chat/completions", model.port);
    let allow = Arc::new(HostAllowlist::parse(&[format!(
        "127.0.0.1:{}",
        model.port
    )])?);
    let dir = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        println!(
            "asya async-calls benchmark: one model call of {} ms per message, {in_flight} messages offered in flight to every configuration, {rounds} rounds of the async actor",
            latency.as_millis()
        );
        let wait = common::component("waits.wait", "payload");
        let behave = common::component("behaviours.behave", "payload");
        let sidecar = |def: &mut ActorDef| {
            def.settings.concurrency = in_flight;
            def.settings.timeout = Duration::from_secs(60);
            def.limits.allowed_hosts = allow.clone();
            def.limits.cpu_timeout = Duration::from_secs(60);
        };
        let mut async_one = ActorDef::new("async-1", wait.clone());
        sidecar(&mut async_one);
        async_one.limits.max_instances = 1;
        async_one.limits.max_concurrency = in_flight;
        let mut sync_4 = ActorDef::new("sync-4", behave.clone());
        sidecar(&mut sync_4);
        sync_4.limits.max_instances = 4;
        let mut sync_64 = ActorDef::new("sync-64", behave);
        sidecar(&mut sync_64);
        sync_64.limits.max_instances = 64;
        let mut native = ActorDef::new("native", std::path::PathBuf::new());
        sidecar(&mut native);
        native.python = Some(support::native_runtime(
            common::repo_root().join(".venv/bin/python"),
            common::repo_root().join("tests/fixtures/handlers"),
            "waits.wait",
            dir.path().join("native.sock"),
            in_flight,
        ));
        let mut host =
            LocalHost::start(vec![async_one, sync_4, sync_64, native], common::cache()).await?;
        let async_payload = json!({"do": "fetch", "method": "POST", "url": url, "body": "{\"prompt\": \"judge this\"}"});
        let sync_payload = json!({"do": "fetch", "url": url, "body": {"prompt": "judge this"}});
        let answered = |env: &asya_host::message::envelope::Envelope| -> bool {
            match &env.payload["body"] {
                Value::String(text) => text.contains("a fine answer"),
                other => other.to_string().contains("a fine answer"),
            }
        };
        let mut report = Report::new();
        let mut runs: Vec<Run> = Vec::new();
        let mut async_rates = Vec::new();
        let configs: [(&'static str, usize, &Value); 4] = [
            ("async-1", in_flight, &async_payload),
            ("sync-4", 4, &sync_payload),
            ("sync-64", 64, &sync_payload),
            ("native", in_flight, &async_payload),
        ];
        for (name, capacity, payload) in configs {
            let route = vec![name.to_owned()];
            // Warm: one instance (or the runtime) up, then the resident set to compare with.
            let warm = host.run_batch(&route, vec![payload.clone(); 2], 2, Duration::from_secs(60)).await?;
            support::check_warm_up(&warm)?;
            let times = if name == "async-1" { rounds } else { 1 };
            let mut best: Option<Run> = None;
            let mut outcomes = Outcomes::new(format!("{name} messages"));
            for _ in 0..times {
                // Ten latencies' worth of calls at full capacity (at least 40 messages), so that
                // the first and last waves weigh little.
                let messages = (capacity * 10).max(40).min(in_flight * 10);
                let rss_before = support::rss_bytes();
                let peak_rss = Arc::new(AtomicU64::new(rss_before));
                let peak_calls = Arc::new(AtomicU64::new(0));
                let sampling = Arc::new(AtomicBool::new(true));
                let sampler = {
                    let (peak_rss, peak_calls, sampling) =
                        (peak_rss.clone(), peak_calls.clone(), sampling.clone());
                    let executor = host.executor(name).cloned();
                    tokio::spawn(async move {
                        while sampling.load(Ordering::Relaxed) {
                            peak_rss.fetch_max(support::rss_bytes(), Ordering::Relaxed);
                            if let Some(executor) = &executor {
                                peak_calls.fetch_max(executor.calls_in_flight() as u64, Ordering::Relaxed);
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    })
                };
                let started = Instant::now();
                let results = host
                    .run_batch(&route, vec![payload.clone(); messages], in_flight, Duration::from_secs(120))
                    .await?;
                let took = started.elapsed();
                sampling.store(false, Ordering::Relaxed);
                sampler.await?;
                let ok = outcomes.batch_as(&results, answered);
                if let Some(failed) = results.iter().find(|r| !answered(&r.envelope)) {
                    let error = failed.envelope.status.as_ref().and_then(|s| s.error.as_ref());
                    println!("  {name}: first failure: {}", error.map_or_else(|| failed.envelope.payload.to_string(), |e| format!("{}: {}", e.kind, e.message)));
                }
                let per_second = ok as f64 / took.as_secs_f64();
                let observed = peak_calls.load(Ordering::Relaxed) as usize;
                let peak_in_flight = if observed > 0 { observed } else { capacity.min(in_flight) };
                let grown = peak_rss.load(Ordering::Relaxed).saturating_sub(rss_before);
                let rss_per_call_kib = (name == "async-1" && observed > 0)
                    .then(|| grown as f64 / 1024.0 / observed as f64);
                if name == "async-1" {
                    async_rates.push(per_second);
                }
                let run = Run { name, capacity, per_second, peak_in_flight, rss_per_call_kib };
                if best.as_ref().is_none_or(|b| run.per_second > b.per_second) {
                    best = Some(run);
                }
            }
            report.outcomes(&outcomes);
            runs.push(best.expect("at least one round"));
        }
        let ideal = |in_flight: usize| in_flight as f64 / latency.as_secs_f64();
        println!("  {:<8} {:>9} {:>12} {:>11} {:>10} {:>14}", "config", "capacity", "in flight", "msgs/s", "of ideal", "RSS/in-flight");
        for run in &runs {
            println!(
                "  {:<8} {:>9} {:>12} {:>11.1} {:>9.0}% {:>14}",
                run.name,
                run.capacity,
                run.peak_in_flight,
                run.per_second,
                100.0 * run.per_second / ideal(run.peak_in_flight.min(run.capacity)),
                run.rss_per_call_kib.map_or("-".to_owned(), |k| format!("{k:.1} KiB")),
            );
        }
        async_rates.sort_by(f64::total_cmp);
        println!(
            "  async-1 over {rounds} rounds: {:.1}-{:.1} msgs/s",
            async_rates.first().copied().unwrap_or(f64::NAN),
            async_rates.last().copied().unwrap_or(f64::NAN)
        );
        let async_run = &runs[0];
        for other in &runs[1..] {
            println!("  ratio async-1 / {}: {:.1}x", other.name, async_run.per_second / other.per_second);
        }
        report.at_least(
            "calls in flight in one async instance",
            in_flight as f64,
            async_run.peak_in_flight as f64,
            "",
        );
        report.at_least(
            "async-1 throughput, share of in-flight / latency",
            90.0,
            100.0 * async_run.per_second / ideal(async_run.peak_in_flight),
            "%",
        );
        report.at_most(
            "host RSS per call in flight (async-1)",
            100.0,
            async_run.rss_per_call_kib.unwrap_or(f64::INFINITY),
            "KiB",
        );
        host.shutdown().await?;
        drop(model);
        report.finish()
    })
}
