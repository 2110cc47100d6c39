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
//! The nats-py worker is given the same in-flight number (its 6th argument).
//!
//! Run: `cargo bench -p asya-host --bench nats_pipeline` (`BENCH_MESSAGES`, default 5000).
//! Targets: asya >= 50% of the raw loop's throughput, >= 3x the Python worker's, per-hop p50 <= 1 ms.
//!
//! Every figure counts only successful outcomes: asya's rates count the stored results whose
//! status is `succeeded` (a result that ended at `x-sump` is a failure), the x-sink rate only
//! what reached x-sink, and the raw loops only the messages they carried to the end (a failed
//! publish, store or ack is a failure). Failures are printed by kind; more than 1% of them fails
//! the bench.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

/// mimalloc: the host allocates small JSON values on every hop; glibc malloc showed up in profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context, Result};
use asya_host::actor::end_actors::run_end_actors;
use asya_host::actor::sidecar::{Sidecar, SidecarSettings};
use asya_host::message::envelope::{Envelope, Route, SINK, SUMP};
use asya_host::runtime::executor::Executor;
use asya_host::runtime::sandbox::{SandboxEngine, SandboxLimits};
use asya_host::runtime::wasm::WasmExecutor;
use asya_host::transport::nats::{self, NatsResults, NatsSettings, NatsTransport};
use asya_host::transport::Transport;
use async_nats::jetstream::{self, consumer, stream, AckKind};
use common::nats::NatsServer;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use std::future::Future;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Outcomes, Report};
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

impl Side {
    /// What this side's operations are, for its failure line.
    fn what(self) -> &'static str {
        match self {
            Side::RawStoring => "raw loop storing: messages",
            Side::Asya => "asya: messages",
            Side::AsyaViaQueue => "asya via x-sink queue: messages",
            Side::RawBare => "raw loop bare: messages",
        }
    }
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

/// Runs one side of the comparison once, counting its messages' outcomes in `outcomes`.
async fn run_side(
    url: &str,
    side: Side,
    messages: usize,
    round: usize,
    outcomes: &mut Outcomes,
) -> Result<Measured> {
    Ok(match side {
        Side::RawStoring | Side::RawBare => {
            let storing = side == Side::RawStoring;
            let r = raw_loop(url, messages, storing, round, outcomes).await?;
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
            let r = asya_pipeline(url, messages, end, round, outcomes).await?;
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
    let mut outcomes: Vec<Outcomes> = SIDES.iter().map(|s| Outcomes::new(s.what())).collect();
    let slot = |side: Side| SIDES.iter().position(|s| *s == side).unwrap();
    if wanted.len() < SIDES.len() {
        runtime.block_on(async {
            for round in 0..rounds {
                for &side in &wanted {
                    let out = &mut outcomes[slot(side)];
                    let m = run_side(&server.url(), side, messages, round, out).await?;
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
        let mut report = Report::new();
        for &side in &wanted {
            report.outcomes(&outcomes[slot(side)]);
        }
        let why = "BENCH_SIDES runs only some sides";
        return report
            .at_least_unmeasured("asya / raw loop bare", 50.0, "%", why)
            .at_least_unmeasured("asya / python worker", 3.0, "x", why)
            .at_most_unmeasured("asya per-hop latency p50", 1.0, " ms", why)
            .finish();
    }
    // Every side runs once per round, the order rotating from round to round, so that drift on
    // a noisy machine (and the server's growing store) falls on every side alike; ratios are
    // taken within a round, then the median over rounds is reported.
    let mut latency_out = Outcomes::new("asya: messages, one in flight");
    let (table, latency) = runtime.block_on(async {
        let mut table: Vec<[Measured; 4]> = Vec::new();
        for round in 0..rounds {
            let mut row = [Measured::default(); 4];
            for turn in 0..SIDES.len() {
                let index = (turn + round) % SIDES.len();
                let side = SIDES[index];
                let out = &mut outcomes[index];
                row[index] = run_side(&server.url(), side, messages, round, out).await?;
            }
            table.push(row);
        }
        let latency = asya_latency(&server.url(), &mut latency_out).await?;
        anyhow::Ok((table, latency))
    })?;
    let py_messages = (messages / 2).max(500);
    let py_seconds = python_worker(&server.url(), py_messages, concurrency())?;
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
    println!(
        "  concurrency: raw loops {c} in flight per stage; asya {c} in flight per actor on {i} instances; nats-py worker given {c} in flight per hop (its 6th argument)",
        c = concurrency(),
        i = instances()
    );
    println!("  medians over the rounds; hops/s (successful messages only) to the last arrival at the sink subject | to the last result stored in the key-value bucket");
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
        "  asya per-hop latency p50 / p99   {:>10.2} / {:.2} ms  (one message in flight, publish to stored result)",
        latency.0, latency.1
    );
    let line = |name: &str, values: &[f64], note: &str| {
        let (lo, hi) = span(values);
        println!(
            "  {name:<32} {:>10.0} %   (rounds {lo:.0}-{hi:.0} %; {note})",
            median(values.to_vec())
        );
    };
    line(
        "ratio asya / raw loop, bare",
        &of_bare,
        "the transport's bare hop rate",
    );
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
    let of_python = med(Side::Asya, |m| m.stored) / py_rate;
    println!("  ratio asya / python worker       {of_python:>10.1} x   (asya to stored results)");
    let mut report = Report::new();
    for out in &outcomes {
        report.outcomes(out);
    }
    report
        .outcomes(&latency_out)
        .at_least("asya / raw loop bare", 50.0, median(of_bare), "%")
        .at_least("asya / python worker", 3.0, of_python, "x")
        .at_most("asya per-hop latency p50", 1.0, latency.0, " ms")
        .finish()
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

/// How many messages have arrived on an end actor's subject: what its consumer has been
/// delivered plus what waits for it (with work-queue retention the stream removes what the
/// end actor acknowledged, so the stream's count of the subject is no measure).
async fn arrived_at(stream: &stream::Stream, subject: &str) -> Result<usize> {
    let name = subject.rsplit('.').next().unwrap_or(subject);
    let Ok(mut consumer) = stream.get_consumer::<consumer::pull::Config>(name).await else {
        return Ok(0);
    };
    let info = consumer.info().await?;
    Ok(info.delivered.consumer_sequence as usize + info.num_pending as usize)
}

/// Polls `done` every 5 ms until it returns a value; an error after 300 s, naming `what`.
async fn wait_until<T, F, Fut>(what: &str, mut done: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(value) = done().await? {
            return Ok(value);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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

/// How many values `bucket` holds.
async fn count_stored(store: &async_nats::jetstream::kv::Store) -> Result<usize> {
    let mut stream = store.stream.clone();
    Ok(stream.info().await?.state.messages as usize)
}

/// (a) The transport's limit: the same pipeline written directly on async-nats with no handler.
/// Three consume → publish → ack stages, then a sink stage that stores each result in a
/// key-value bucket and acks (what asya's x-sink does), each with the same concurrency as asya.
/// With `store_results` off, the sink stage is left out (the transport's bare hop rate).
///
/// Only the messages it carried to the end count: a failed publish or store is a failure of
/// that message (terminated, it goes no further); a failed ack is a failure too (the message
/// went on, but would be delivered again).
async fn raw_loop(
    url: &str,
    messages: usize,
    store_results: bool,
    round: usize,
    outcomes: &mut Outcomes,
) -> Result<Rates> {
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
            // The retention asya's namespace streams use (acknowledged messages removed), so
            // both sides pay the same server work.
            retention: stream::RetentionPolicy::WorkQueue,
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
    // Messages that failed before reaching the sink subject, and those that failed to be stored.
    let lost_in_hops = Arc::new(AtomicUsize::new(0));
    let lost_at_sink = Arc::new(AtomicUsize::new(0));
    // Messages the last hop put on the sink subject (counted as they are confirmed: with
    // work-queue retention the sink stage removes what it acknowledges, so the stream's count
    // of the subject is no measure).
    let reached_sink = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Outcomes::default()));
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
        let mut msgs = consumer
            .stream()
            .max_messages_per_batch(concurrency())
            .messages()
            .await?;
        let lost = if next.is_some() {
            lost_in_hops.clone()
        } else {
            lost_at_sink.clone()
        };
        let (js, stop, results, failures, reached_sink) = (
            js.clone(),
            stop.clone(),
            results.clone(),
            failures.clone(),
            reached_sink.clone(),
        );
        let to_sink = hop == "c";
        tokio::spawn(async move {
            let fail = move |failures: &Mutex<Outcomes>, kind: String| {
                failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .fail(format!("raw stage {hop}: {kind}"));
            };
            let slots = Arc::new(Semaphore::new(concurrency()));
            loop {
                let permit = slots.clone().acquire_owned().await.unwrap();
                let msg = tokio::select! {
                    _ = stop.cancelled() => break,
                    m = msgs.next() => match m {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => {
                            fail(&failures, format!("receive: {e}"));
                            continue;
                        }
                        None => break,
                    },
                };
                let (js, results, next, failures, lost, reached_sink) = (
                    js.clone(),
                    results.clone(),
                    next.clone(),
                    failures.clone(),
                    lost.clone(),
                    reached_sink.clone(),
                );
                tokio::spawn(async move {
                    let forwarded: std::result::Result<(), String> = async {
                        match next {
                            Some(next) => {
                                let ack = js
                                    .publish(next, msg.payload.clone())
                                    .await
                                    .map_err(|e| format!("publish: {e}"))?;
                                ack.await
                                    .map_err(|e| format!("publish not confirmed: {e}"))?;
                                if to_sink {
                                    reached_sink.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            None => {
                                let seq = msg
                                    .info()
                                    .map_err(|e| format!("message info: {e}"))?
                                    .stream_sequence;
                                results
                                    .put(format!("r{seq}"), msg.payload.clone())
                                    .await
                                    .map_err(|e| format!("store: {e}"))?;
                            }
                        }
                        Ok(())
                    }
                    .await;
                    match forwarded {
                        Ok(()) => {
                            if let Err(e) = msg.ack().await {
                                fail(&failures, format!("ack: {e}"));
                            }
                        }
                        Err(kind) => {
                            fail(&failures, kind);
                            lost.fetch_add(1, Ordering::Relaxed);
                            let _ = msg.ack_with(AckKind::Term).await;
                        }
                    }
                    drop(permit);
                });
            }
        });
    }
    let sink = format!("{prefix}.sink");
    let arrived = wait_until(
        &format!("{messages} messages to reach {sink} or fail"),
        || {
            let (reached, lost) = (&reached_sink, &lost_in_hops);
            async move {
                let arrived = reached.load(Ordering::Relaxed);
                Ok((arrived + lost.load(Ordering::Relaxed) >= messages).then_some(arrived))
            }
        },
    )
    .await?;
    let hops = (arrived * HOPS.len()) as f64 / started.elapsed().as_secs_f64();
    let mut completed = arrived;
    if store_results {
        completed = wait_until(&format!("{messages} results to be stored or fail"), || {
            let (results, lost, lost_at_sink) = (&results, &lost_in_hops, &lost_at_sink);
            async move {
                let stored = count_stored(results).await?;
                let lost = lost.load(Ordering::Relaxed) + lost_at_sink.load(Ordering::Relaxed);
                Ok((stored + lost >= messages).then_some(stored))
            }
        })
        .await?;
    }
    let stored = (completed * HOPS.len()) as f64 / started.elapsed().as_secs_f64();
    let cpu_per_hop = (cpu_seconds() - cpu_started) * 1e6 / (completed * HOPS.len()) as f64;
    stop.cancel();
    outcomes.add_ok(completed as u64);
    outcomes.merge(&failures.lock().unwrap_or_else(|e| e.into_inner()));
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
    /// Hops per second of the successful messages until every result was stored.
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
            let mut warmed = Outcomes::new("warm-up calls");
            for outcome in futures::future::join_all(warm).await {
                warmed.call(&outcome);
            }
            anyhow::ensure!(
                warmed.failures() == 0,
                "{} of {} warm-up calls on {hop} failed",
                warmed.failures(),
                warmed.total()
            );
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

/// (main) Throughput: `messages` already queued at the first actor, until all have ended; the
/// rates count only the results stored as `succeeded` (and, for the queued end, what reached
/// x-sink), each stored result's outcome counted in `outcomes`.
async fn asya_pipeline(
    url: &str,
    messages: usize,
    end: EndOfRoute,
    round: usize,
    outcomes: &mut Outcomes,
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
        let sink = nats::subject(&asya.namespace, SINK);
        let sump = nats::subject(&asya.namespace, SUMP);
        let at_sink = wait_until(&format!("{messages} messages at {sink} or {sump}"), || {
            let (stream, sink, sump) = (&asya.stream, &sink, &sump);
            async move {
                let at_sink = arrived_at(stream, sink).await?;
                let ended = at_sink + arrived_at(stream, sump).await?;
                Ok((ended >= messages).then_some(at_sink))
            }
        })
        .await?;
        to_sink = (at_sink * HOPS.len()) as f64 / started.elapsed().as_secs_f64();
    }
    // Every message's result is stored, whether it ended at x-sink or x-sump.
    wait_until(&format!("{messages} results"), || {
        let results = &asya.results;
        async move { Ok((results.stored().await? >= messages as u64).then_some(())) }
    })
    .await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_started;
    stop.cancel();
    // Only the results that ended successfully count.
    let mut run = Outcomes::default();
    for envelope in asya.results.all().await? {
        run.ended(&envelope);
    }
    outcomes.merge(&run);
    let succeeded_hops = (run.ok() as usize * HOPS.len()) as f64;
    Ok(AsyaRun {
        rate: succeeded_hops / elapsed,
        to_sink,
        cpu_per_hop: cpu * 1e6 / succeeded_hops,
    })
}

/// (main) Latency: one message at a time, publish → its result stored, divided by the three
/// hops; p50 and p99 in ms, of the messages that succeeded (each counted in `outcomes`).
async fn asya_latency(url: &str, outcomes: &mut Outcomes) -> Result<(f64, f64)> {
    let asya = AsyaPipeline::new(url, "benchlatency".into(), EndOfRoute::Stored).await?;
    let stop = CancellationToken::new();
    asya.start(&stop);
    let mut stored = asya
        .client
        .subscribe(nats::results_subject(&asya.namespace))
        .await?;
    let mut latency = Histogram::<u64>::new(3)?;
    let timeout = Duration::from_secs(10);
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
        // Its own result: results of earlier messages that timed out are skipped.
        let deadline = t + timeout;
        let result = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(msg) = tokio::time::timeout(left, stored.next()).await else {
                break None;
            };
            let msg = msg.context("the results subscription ended")?;
            let result: Envelope = serde_json::from_slice(&msg.payload)?;
            if result.id == env.id {
                break Some(result);
            }
        };
        let took = t.elapsed();
        match result {
            Some(result) => {
                if outcomes.ended(&result) {
                    latency.record(took.as_micros() as u64 / HOPS.len() as u64)?;
                }
            }
            None => outcomes.fail(format!("no stored result within {timeout:?}")),
        }
    }
    stop.cancel();
    Ok((
        support::quantile(&latency, 0.5) / 1000.0,
        support::quantile(&latency, 0.99) / 1000.0,
    ))
}

/// How long the nats-py worker may take before it is stopped and the bench fails.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(300);

/// (b) The nats-py worker script with `in_flight` messages in flight per hop (its 6th
/// argument); returns its seconds for `messages` messages. It prints them only once every
/// message has been through the three hops (it stores no results); an error or a stall fails
/// the bench, with its stderr (which is otherwise not shown: it writes tracebacks of its
/// cancelled tasks on a normal exit).
fn python_worker(url: &str, messages: usize, in_flight: usize) -> Result<f64> {
    let root = common::repo_root();
    let mut child = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("host/benches/nats_py_worker.py"))
        .args([url, "PYBENCH", "py", &messages.to_string()])
        .arg(root.join("tests/fixtures/handlers"))
        .arg(in_flight.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Read both pipes while it runs, so that a full pipe cannot stall it.
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + PYTHON_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!(
                "python worker: not done with {messages} messages in {PYTHON_TIMEOUT:?}: {}",
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = stdout.join().unwrap_or_default();
    anyhow::ensure!(
        status.success(),
        "python worker failed ({status}): {}",
        stderr.join().unwrap_or_default()
    );
    Ok(stdout.trim().parse()?)
}
