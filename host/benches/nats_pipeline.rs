//! Benchmark: a 3-hop pipeline over a local nats-server (JetStream), trivial handler, measured in
//! the same run against
//!   (a) a raw async-nats consume → publish → ack loop with no handler (the transport's limit),
//!       three hops, run twice: bare, and with a sink stage that stores each result in a
//!       key-value bucket (asya stores every result: its last hop puts it in the bucket),
//!   (a') asya ending messages through the x-sink queue (`--end-queues`), the end actor storing
//!       them: the cost of the extra queue hop that storing in the last hop saves,
//!   (b) a plain Python worker on nats-py running the same handler (what a user would write).
//!
//! Each side runs once per round (`BENCH_ROUNDS`, 5), the order rotating between rounds; the
//! ratios are per round, reported as the median and range. asya's instances exist before the
//! clock starts, as in a running host.
//!
//! Both sides keep `BENCH_CONCURRENCY` (32) messages in flight per hop; asya runs them on
//! `BENCH_INSTANCES` (4) instances per actor (`sandbox.maxInFlight: 32, maxInstances: 4`): on two
//! cores, more CPython instances only thrash the caches (32 instances per actor halves throughput).
//!
//! Run: `cargo bench -p asya-host --bench nats_pipeline` (`BENCH_MESSAGES`, default 5000).
//! Targets: asya >= 50% of the raw loop's throughput, >= 3x the Python worker's, per-hop p50 <= 1 ms.

#[path = "../../tests/common/mod.rs"]
mod common;

/// mimalloc: the host allocates small JSON values on every hop; glibc malloc showed up in profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Result;
use asya_host::actor::end_actors::run_end_actors;
use asya_host::actor::sidecar::{Sidecar, SidecarSettings};
use asya_host::message::envelope::{Envelope, Route};
use asya_host::runtime::executor::Executor;
use asya_host::runtime::sandbox::{SandboxEngine, SandboxLimits};
use asya_host::runtime::wasm::WasmExecutor;
use asya_host::transport::nats::{self, NatsResults, NatsSettings, NatsTransport};
use asya_host::transport::Transport;
use async_nats::jetstream::{self, consumer, stream};
use common::nats::NatsServer;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

const HOPS: [&str; 3] = ["a", "b", "c"];
fn concurrency() -> usize {
    std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}

fn instances() -> usize {
    std::env::var("BENCH_INSTANCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

/// The sides of the comparison, run in turn within each round.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    RawStoring,
    Asya,
    AsyaViaQueue,
    RawBare,
}

const SIDES: [Side; 4] = [
    Side::RawStoring,
    Side::Asya,
    Side::AsyaViaQueue,
    Side::RawBare,
];

/// One side's figures in one round.
#[derive(Clone, Copy, Default)]
struct Measured {
    /// Hops/s to the last arrival at the sink subject (NaN where nothing arrives there).
    to_sink: f64,
    /// Hops/s to the last stored result (NaN where nothing is stored).
    stored: f64,
    /// This process's CPU per hop, in microseconds.
    cpu_per_hop: f64,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn span(values: &[f64]) -> (f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// Runs one side of the comparison once.
async fn run_side(url: &str, side: Side, messages: usize, round: usize) -> Result<Measured> {
    Ok(match side {
        Side::RawStoring | Side::RawBare => {
            let storing = side == Side::RawStoring;
            let r = raw_loop(url, messages, storing, round).await?;
            Measured {
                to_sink: r.hops,
                stored: if storing { r.stored } else { f64::NAN },
                cpu_per_hop: r.cpu_per_hop,
            }
        }
        Side::Asya | Side::AsyaViaQueue => {
            let end = if side == Side::Asya {
                EndOfRoute::Stored
            } else {
                EndOfRoute::Queued
            };
            let r = asya_pipeline(url, messages, end, round).await?;
            Measured {
                to_sink: r.to_sink,
                stored: r.rate,
                cpu_per_hop: r.cpu_per_hop,
            }
        }
    })
}

fn main() -> Result<()> {
    let messages: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let server = NatsServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // `BENCH_SIDES=asya` (say) runs only those sides, for profiling one of them.
    let wanted: Vec<Side> = match std::env::var("BENCH_SIDES") {
        Ok(names) => names
            .split(',')
            .filter_map(|name| match name.trim() {
                "raw" => Some(Side::RawStoring),
                "bare" => Some(Side::RawBare),
                "asya" => Some(Side::Asya),
                "queue" => Some(Side::AsyaViaQueue),
                _ => None,
            })
            .collect(),
        Err(_) => SIDES.to_vec(),
    };
    if wanted.len() < SIDES.len() {
        runtime.block_on(async {
            for round in 0..rounds {
                for &side in &wanted {
                    let m = run_side(&server.url(), side, messages, round).await?;
                    let rate = if m.stored.is_nan() {
                        m.to_sink
                    } else {
                        m.stored
                    };
                    println!("round {round}: {rate:.0} hops/s");
                }
            }
            anyhow::Ok(())
        })?;
        return Ok(());
    }
    // Every side runs once per round, the order rotating from round to round, so that drift on
    // a noisy machine (and the server's growing store) falls on every side alike; ratios are
    // taken within a round, then the median over rounds is reported.
    let (table, latency) = runtime.block_on(async {
        let mut table: Vec<[Measured; 4]> = Vec::new();
        for round in 0..rounds {
            let mut row = [Measured::default(); 4];
            for turn in 0..SIDES.len() {
                let index = (turn + round) % SIDES.len();
                let side = SIDES[index];
                row[index] = run_side(&server.url(), side, messages, round).await?;
            }
            table.push(row);
        }
        let latency = asya_latency(&server.url()).await?;
        anyhow::Ok((table, latency))
    })?;
    let py_messages = (messages / 2).max(500);
    let py_seconds = python_worker(&server.url(), py_messages)?;
    let py_rate = (py_messages * HOPS.len()) as f64 / py_seconds;

    let column = |side: Side, f: fn(&Measured) -> f64| -> Vec<f64> {
        let index = SIDES.iter().position(|s| *s == side).unwrap();
        table.iter().map(|row| f(&row[index])).collect()
    };
    let asya = column(Side::Asya, |m| m.stored);
    let ratios = |other: Vec<f64>| -> Vec<f64> {
        asya.iter().zip(other).map(|(a, b)| a / b * 100.0).collect()
    };
    let of_bare = ratios(column(Side::RawBare, |m| m.to_sink));
    let of_storing = ratios(column(Side::RawStoring, |m| m.stored));
    let of_queue = ratios(column(Side::AsyaViaQueue, |m| m.stored));
    let cpu = |side: Side| median(column(side, |m| m.cpu_per_hop));
    let med = |side: Side, f: fn(&Measured) -> f64| median(column(side, f));

    println!("asya NATS benchmark: 3 hops over a local nats-server (JetStream, file storage), {messages} messages, {rounds} rounds");
    println!("  medians over the rounds; hops/s to the last arrival at the sink subject | to the last result stored in the key-value bucket");
    println!(
        "  raw async-nats loop, no handler  {:>10.0} | {:>8.0} hops/s   (client CPU {:.1} us/hop; its sink stage stores the results)",
        med(Side::RawStoring, |m| m.to_sink),
        med(Side::RawStoring, |m| m.stored),
        cpu(Side::RawStoring)
    );
    println!(
        "  raw loop without the sink stage  {:>10.0} |        - hops/s   (client CPU {:.1} us/hop; the bare hop rate: nothing stored)",
        med(Side::RawBare, |m| m.to_sink),
        cpu(Side::RawBare)
    );
    println!(
        "  asya host (WASM handler)                  - | {:>8.0} hops/s   (host CPU {:.1} us/hop; the last hop stores the result; {} in flight on {} instances per actor)",
        med(Side::Asya, |m| m.stored),
        cpu(Side::Asya),
        concurrency(),
        instances()
    );
    println!(
        "  asya host, ends via x-sink queue {:>10.0} | {:>8.0} hops/s   (host CPU {:.1} us/hop; `asya-host run --end-queues`)",
        med(Side::AsyaViaQueue, |m| m.to_sink),
        med(Side::AsyaViaQueue, |m| m.stored),
        cpu(Side::AsyaViaQueue)
    );
    println!("  python nats-py worker            {py_rate:>10.0} |        - hops/s   ({py_messages} messages; stores no results)");
    println!(
        "  asya per-hop latency p50 / p99   {:>10.2} / {:.2} ms  (one message in flight, publish to stored result; target p50 <= 1 ms)",
        latency.0, latency.1
    );
    let line = |name: &str, values: &[f64], note: &str| {
        let (lo, hi) = span(values);
        println!(
            "  {name:<32} {:>10.0} %   (rounds {lo:.0}-{hi:.0} %; {note})",
            median(values.to_vec())
        );
    };
    line("ratio asya / raw loop, bare", &of_bare, "target >= 50%");
    line(
        "ratio asya / raw loop storing",
        &of_storing,
        "the raw loop doing asya's work: every result stored",
    );
    line(
        "ratio asya / asya via x-sink",
        &of_queue,
        "the last hop storing, against one more queue hop",
    );
    println!(
        "  ratio asya / python worker       {:>10.1} x   (asya to stored results; target >= 3x)",
        med(Side::Asya, |m| m.stored) / py_rate
    );
    Ok(())
}

/// CPU seconds this process has used (user + system), from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(") ")
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

async fn count_on(stream: &stream::Stream, subject: &str) -> Result<usize> {
    let mut info = stream.info_with_subjects(subject).await?;
    let mut total = 0;
    while let Some(entry) = info.next().await {
        let (s, n) = entry?;
        if s == subject {
            total += n;
        }
    }
    Ok(total)
}

async fn wait_for(stream: &stream::Stream, subject: &str, n: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while count_on(stream, subject).await? < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out waiting for {n} on {subject}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

async fn prepublish(js: &jetstream::Context, subject: &str, messages: usize) -> Result<()> {
    let mut acks = Vec::new();
    for i in 0..messages {
        let env = Envelope::new(
            Route::through(&HOPS).unwrap(),
            json!({"text": "hello world", "n": i}),
            "2026-11-25T00:00:00Z",
        );
        acks.push(
            js.publish(subject.to_owned(), env.to_bytes().into())
                .await?,
        );
        if acks.len() >= 1000 {
            for ack in acks.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in acks {
        ack.await?;
    }
    Ok(())
}

/// Throughput of one side of the comparison.
struct Rates {
    /// Hops per second until the last message reached the sink subject.
    hops: f64,
    /// Hops per second until the last result was stored (the whole pipeline's work done).
    stored: f64,
    /// This process's CPU per hop while the pipeline ran, in microseconds.
    cpu_per_hop: f64,
}

/// Waits until `bucket` holds `n` values.
async fn wait_stored(store: &async_nats::jetstream::kv::Store, n: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut stream = store.stream.clone();
    while stream.info().await?.state.messages < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out waiting for {n} results"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// (a) The transport's limit: the same pipeline written directly on async-nats with no handler.
/// Three consume → publish → ack stages, then a sink stage that stores each result in a
/// key-value bucket and acks (what asya's x-sink does), each with the same concurrency as asya.
/// With `store_results` off, the sink stage is left out (the transport's bare hop rate).
async fn raw_loop(url: &str, messages: usize, store_results: bool, round: usize) -> Result<Rates> {
    let client = nats::connect(url).await?;
    let js = jetstream::new(client);
    let prefix = if store_results {
        format!("raw{round}")
    } else {
        format!("rawhops{round}")
    };
    let stream = js
        .get_or_create_stream(stream::Config {
            name: prefix.to_uppercase(),
            subjects: vec![format!("{prefix}.>")],
            ..Default::default()
        })
        .await?;
    let results = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: format!("{}_RESULTS", prefix.to_uppercase()),
            history: 1,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    prepublish(&js, &format!("{prefix}.a"), messages).await?;
    let started = Instant::now();
    let cpu_started = cpu_seconds();
    let stop = CancellationToken::new();
    let stages = [
        ("a", Some("b")),
        ("b", Some("c")),
        ("c", Some("sink")),
        ("sink", None),
    ];
    let stages = if store_results {
        &stages[..]
    } else {
        &stages[..3]
    };
    for &(hop, next) in stages {
        let next = next.map(|n| format!("{prefix}.{n}"));
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                hop,
                consumer::pull::Config {
                    durable_name: Some(hop.to_string()),
                    filter_subject: format!("{prefix}.{hop}"),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ..Default::default()
                },
            )
            .await?;
        let (js, stop, results) = (js.clone(), stop.clone(), results.clone());
        tokio::spawn(async move {
            let mut msgs = consumer
                .stream()
                .max_messages_per_batch(concurrency())
                .messages()
                .await
                .unwrap();
            let slots = Arc::new(Semaphore::new(concurrency()));
            loop {
                let permit = slots.clone().acquire_owned().await.unwrap();
                let msg = tokio::select! {
                    _ = stop.cancelled() => break,
                    m = msgs.next() => match m { Some(Ok(m)) => m, _ => break },
                };
                let (js, results, next) = (js.clone(), results.clone(), next.clone());
                tokio::spawn(async move {
                    match next {
                        Some(next) => {
                            let ack = js.publish(next, msg.payload.clone()).await.unwrap();
                            ack.await.unwrap();
                        }
                        None => {
                            let key = format!("r{}", msg.info().unwrap().stream_sequence);
                            results.put(key, msg.payload.clone()).await.unwrap();
                        }
                    }
                    msg.ack().await.unwrap();
                    drop(permit);
                });
            }
        });
    }
    wait_for(&stream, &format!("{prefix}.sink"), messages).await?;
    let hops = (messages * HOPS.len()) as f64 / started.elapsed().as_secs_f64();
    if store_results {
        wait_stored(&results, messages as u64).await?;
    }
    let stored = (messages * HOPS.len()) as f64 / started.elapsed().as_secs_f64();
    let cpu_per_hop = (cpu_seconds() - cpu_started) * 1e6 / (messages * HOPS.len()) as f64;
    stop.cancel();
    Ok(Rates {
        hops,
        stored,
        cpu_per_hop,
    })
}

/// How asya's pipeline ends a message.
#[derive(Clone, Copy, PartialEq)]
enum EndOfRoute {
    /// The last hop stores the result in the bucket (the default).
    Stored,
    /// The last hop publishes to the x-sink queue; the end actor stores it (`--end-queues`).
    Queued,
}

/// What one asya run measured.
struct AsyaRun {
    /// Hops per second until every result was stored.
    rate: f64,
    /// Hops per second until the last message reached the x-sink subject (queued ends only).
    to_sink: f64,
    /// Host CPU per hop while the pipeline ran (this process also runs the end actors), in
    /// microseconds.
    cpu_per_hop: f64,
}

/// asya's three actors (sidecars with real WASM executors) on one namespace of the NATS
/// transport, with the host's end actors, not yet consuming.
struct AsyaPipeline {
    client: async_nats::Client,
    namespace: String,
    transport: NatsTransport,
    stream: stream::Stream,
    results: Arc<NatsResults>,
    shared: Arc<dyn Transport>,
    sidecars: Vec<Arc<Sidecar>>,
}

impl AsyaPipeline {
    async fn new(url: &str, namespace: String, end: EndOfRoute) -> Result<Self> {
        let component = common::component("behaviours.behave", "payload");
        let engine = SandboxEngine::new()?;
        let loaded = common::cache().load_file(engine.engine(), &component)?;
        let client = nats::connect(url).await?;
        let transport = NatsTransport::new(
            client.clone(),
            &namespace,
            NatsSettings {
                batch: concurrency(),
                ..NatsSettings::default()
            },
        )
        .await?;
        let stream = transport.stream().await?;
        let results = Arc::new(transport.results().await?);
        let shared: Arc<dyn Transport> = Arc::new(transport.clone());
        let mut sidecars = Vec::new();
        for hop in HOPS {
            let limits = SandboxLimits {
                max_instances: instances(),
                ..SandboxLimits::default()
            };
            let executor =
                Arc::new(WasmExecutor::load(hop, engine.clone(), &loaded, limits).await?);
            // A running host's instances already exist: create them before the clock starts
            // (one call on each at once), so the run measures hops, not instantiation, which
            // the cold_start bench measures.
            let warm = (0..instances())
                .map(|_| executor.call(r#"{"do":"echo"}"#.to_owned(), Duration::from_secs(30)));
            futures::future::join_all(warm).await;
            let settings = SidecarSettings {
                concurrency: concurrency(),
                ..SidecarSettings::default()
            };
            let mut sidecar =
                Sidecar::new(hop, executor as Arc<dyn Executor>, shared.clone(), settings);
            if end == EndOfRoute::Stored {
                sidecar = sidecar.with_results(results.clone());
            }
            sidecars.push(Arc::new(sidecar));
        }
        Ok(AsyaPipeline {
            client,
            namespace,
            transport,
            stream,
            results,
            shared,
            sidecars,
        })
    }

    /// Starts consuming (actors and end actors) until `stop`.
    fn start(&self, stop: &CancellationToken) {
        tokio::spawn(run_end_actors(
            self.shared.clone(),
            self.results.clone(),
            stop.clone(),
        ));
        for sidecar in &self.sidecars {
            tokio::spawn(sidecar.clone().run(stop.clone()));
        }
    }
}

/// (main) Throughput: `messages` already queued at the first actor, until all are stored.
async fn asya_pipeline(
    url: &str,
    messages: usize,
    end: EndOfRoute,
    round: usize,
) -> Result<AsyaRun> {
    let namespace = match end {
        EndOfRoute::Stored => format!("bench{round}"),
        EndOfRoute::Queued => format!("benchq{round}"),
    };
    let asya = AsyaPipeline::new(url, namespace, end).await?;
    prepublish(
        asya.transport.jetstream(),
        &nats::subject(&asya.namespace, "a"),
        messages,
    )
    .await?;
    let stop = CancellationToken::new();
    let started = Instant::now();
    let cpu_started = cpu_seconds();
    asya.start(&stop);
    let mut to_sink = f64::NAN;
    if end == EndOfRoute::Queued {
        wait_for(
            &asya.stream,
            &nats::subject(&asya.namespace, "x-sink"),
            messages,
        )
        .await?;
        to_sink = (messages * HOPS.len()) as f64 / started.elapsed().as_secs_f64();
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while asya.results.stored().await? < messages as u64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out waiting for {messages} results"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = (messages * HOPS.len()) as f64 / started.elapsed().as_secs_f64();
    let cpu_per_hop = (cpu_seconds() - cpu_started) * 1e6 / (messages * HOPS.len()) as f64;
    stop.cancel();
    Ok(AsyaRun {
        rate,
        to_sink,
        cpu_per_hop,
    })
}

/// (main) Latency: one message at a time, publish → its result stored, divided by the three
/// hops; p50 and p99 in ms.
async fn asya_latency(url: &str) -> Result<(f64, f64)> {
    let asya = AsyaPipeline::new(url, "benchlatency".into(), EndOfRoute::Stored).await?;
    let stop = CancellationToken::new();
    asya.start(&stop);
    let mut stored = asya
        .client
        .subscribe(nats::results_subject(&asya.namespace))
        .await?;
    let mut latency = Histogram::<u64>::new(3)?;
    for i in 0..500 {
        let env = Envelope::new(
            Route::through(&HOPS).unwrap(),
            json!({"text": "hello", "n": i}),
            "2026-11-25T00:00:00Z",
        );
        let t = Instant::now();
        asya.transport
            .publish(
                "a",
                asya_host::transport::Outbound {
                    bytes: env.to_bytes(),
                    dedup_id: env.id.clone(),
                },
            )
            .await?;
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), stored.next())
                .await?
                .unwrap();
            if serde_json::from_slice::<Envelope>(&msg.payload)?.id == env.id {
                break;
            }
        }
        latency.record(t.elapsed().as_micros() as u64 / HOPS.len() as u64)?;
    }
    stop.cancel();
    Ok((
        latency.value_at_quantile(0.5) as f64 / 1000.0,
        latency.value_at_quantile(0.99) as f64 / 1000.0,
    ))
}

/// (b) The nats-py worker script; returns its seconds for `messages` messages.
fn python_worker(url: &str, messages: usize) -> Result<f64> {
    let root = common::repo_root();
    let out = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("host/benches/nats_py_worker.py"))
        .args([url, "PYBENCH", "py", &messages.to_string()])
        .arg(root.join("tests/fixtures/handlers"))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "python worker failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}
