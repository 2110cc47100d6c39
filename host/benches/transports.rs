//! Benchmark: asya's hop rate on each of its broker transports, against a raw client loop on the
//! same broker doing the same queue work, measured in one run:
//!
//! - **nats**: a local nats-server (JetStream, file storage, work-queue retention), raw loop on
//!   async-nats;
//! - **rabbitmq**: a local rabbitmq-server (durable quorum queues, persistent messages), raw loop
//!   on lapin;
//! - **sqs**: a local moto server (the AWS mock), raw loop on aws-sdk-sqs.
//!
//! Both sides carry the same envelopes through a 3-hop pipeline (a → b → c) to a final queue:
//!
//! - **raw loop**: three stages, each consuming its queue and publishing the same bytes to the
//!   next queue, waiting for the broker's confirmation (JetStream ack / publisher confirm /
//!   `SendMessage` response), then acknowledging the input (JetStream ack / `basic.ack` /
//!   `DeleteMessage`); a final stage consumes and acknowledges what reaches the last queue and
//!   counts it. No handler.
//! - **asya**: three actors' sidecars ([`Sidecar`] with a [`WasmExecutor`] running the trivial
//!   echo handler, `behaviours.behave`) on the transport ([`NatsTransport`], [`RabbitTransport`],
//!   [`SqsTransport`]), with no results store, so the last hop publishes to the `x-sink` queue
//!   (`asya-host run --end-queues`); a consumer on `x-sink` (and `x-sump`) acknowledges and
//!   counts the arrivals. The same queue work as the raw loop, plus asya's envelope handling and
//!   the handler call.
//!
//! Both sides keep `BENCH_CONCURRENCY` (32) messages in flight per hop: the raw stages with a
//! semaphore of that size (and a prefetch / pull batch of that size on NATS and RabbitMQ), asya
//! with `SidecarSettings::concurrency` (and the transport's pull batch / prefetch set to it) on
//! `BENCH_INSTANCES` (4) WASM instances per actor, created before the clock starts. On SQS both
//! receive batches of 10 with long polling (20 s); the raw stage takes 10 of its 32 slots before
//! each receive, asya's poller buffers one batch ahead of its sidecar. On RabbitMQ the raw stages
//! publish on one confirm-mode channel each; asya's transport has one for all its actors.
//!
//! Each transport's server starts when its turn comes and stops after it. Each side runs once
//! per round (`BENCH_ROUNDS`, 3) on fresh queues, the order alternating between rounds; the
//! ratio asya / raw is taken within each round and reported as the median and range over the
//! rounds. Messages: `BENCH_MESSAGES` (2000) on nats and rabbitmq, `BENCH_SQS_MESSAGES` (300) on
//! sqs (every SQS call is an HTTP round trip to moto, a Python server: the SQS figures measure
//! moto as much as either client). `BENCH_TRANSPORTS=nats,sqs` (say) runs only those.
//!
//! Run: `cargo bench -p asya-host --bench transports`.
//! Target, per transport: asya >= 50% of the raw loop's rate. A missed target does not fail the
//! bench; failed messages do.
//!
//! Every figure counts only successful outcomes: asya's rate counts the messages that reached
//! `x-sink` with status `succeeded` (an arrival at `x-sump` is a failure), the raw loop's the
//! messages its final stage consumed and acknowledged (a failed publish or ack is a failure).
//! Failures are printed by kind; more than 1% of them fails the bench.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

/// mimalloc, as the host binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context, Result};
use asya_host::actor::sidecar::{Sidecar, SidecarSettings};
use asya_host::message::envelope::{Envelope, Route, SINK, SUMP};
use asya_host::runtime::component_cache::LoadedComponent;
use asya_host::runtime::executor::Executor;
use asya_host::runtime::sandbox::{SandboxEngine, SandboxLimits};
use asya_host::runtime::wasm::WasmExecutor;
use asya_host::transport::nats::{self, NatsSettings, NatsTransport};
use asya_host::transport::rabbitmq::{RabbitConnection, RabbitSettings, RabbitTransport};
use asya_host::transport::sqs::{SqsHealth, SqsSettings, SqsTransport};
use asya_host::transport::{next_delivery, Outbound, Subscription, Transport};
use async_nats::jetstream::{self, consumer, stream, AckKind};
use aws_sdk_sqs::types::QueueAttributeName;
use common::nats::NatsServer;
use common::rabbitmq::RabbitServer;
use common::sqs::MotoServer;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Confirmation, ConnectionProperties};
use serde_json::json;
use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Outcomes, Report};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

const HOPS: [&str; 3] = ["a", "b", "c"];
/// The raw loop's stages: each queue and the next (the last one only consumes).
const RAW_STAGES: [(&str, Option<&str>); 4] = [
    ("a", Some("b")),
    ("b", Some("c")),
    ("c", Some("end")),
    ("end", None),
];
/// The target: asya's rate as a share of the raw loop's, in percent.
const TARGET_PERCENT: f64 = 50.0;
/// How long one side may take before the bench gives up.
const SIDE_TIMEOUT: Duration = Duration::from_secs(300);

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn concurrency() -> usize {
    env_number("BENCH_CONCURRENCY", 32).max(1)
}

fn instances() -> usize {
    env_number("BENCH_INSTANCES", 4).max(1)
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Nats,
    Rabbitmq,
    Sqs,
}

const KINDS: [Kind; 3] = [Kind::Nats, Kind::Rabbitmq, Kind::Sqs];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Nats => "nats",
            Kind::Rabbitmq => "rabbitmq",
            Kind::Sqs => "sqs",
        }
    }

    /// Messages per side and round.
    fn messages(self) -> usize {
        match self {
            Kind::Sqs => env_number("BENCH_SQS_MESSAGES", 300),
            _ => env_number("BENCH_MESSAGES", 2_000),
        }
        .max(1)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Raw,
    Asya,
}

const SIDES: [Side; 2] = [Side::Raw, Side::Asya];

/// A running broker of one kind.
enum Broker {
    Nats(NatsServer),
    Rabbitmq(RabbitServer),
    /// The server (kept running while this lives) and a client configuration for it.
    Sqs {
        _moto: MotoServer,
        aws: Box<aws_config::SdkConfig>,
    },
}

impl Broker {
    /// Starts `kind`'s server (blocking until it is ready).
    fn start(kind: Kind, runtime: &tokio::runtime::Runtime) -> Broker {
        match kind {
            Kind::Nats => Broker::Nats(NatsServer::start()),
            Kind::Rabbitmq => Broker::Rabbitmq(RabbitServer::start_with(false)),
            Kind::Sqs => {
                let moto = MotoServer::start();
                let aws = runtime.block_on(
                    aws_config::defaults(aws_config::BehaviorVersion::latest())
                        .endpoint_url(moto.endpoint())
                        .region(aws_config::Region::new("us-east-1"))
                        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                            "testing", "testing", None, None, "bench",
                        ))
                        .load(),
                );
                Broker::Sqs {
                    _moto: moto,
                    aws: Box::new(aws),
                }
            }
        }
    }

    /// asya's transport for `namespace` on this broker, its queues resolved where that is
    /// possible before the clock starts.
    async fn transport(&self, namespace: &str) -> Result<Arc<dyn Transport>> {
        Ok(match self {
            Broker::Nats(server) => {
                let client = nats::connect(&server.url()).await?;
                let settings = NatsSettings {
                    batch: concurrency(),
                    ..NatsSettings::default()
                };
                Arc::new(NatsTransport::new(client, namespace, settings).await?)
            }
            Broker::Rabbitmq(server) => {
                let connection = RabbitConnection::connect(&server.url()).await?;
                let settings = RabbitSettings {
                    prefetch: concurrency().min(u16::MAX as usize) as u16,
                    ..RabbitSettings::default()
                };
                Arc::new(RabbitTransport::new(connection, namespace, settings))
            }
            Broker::Sqs { aws, .. } => {
                let transport = SqsTransport::new(
                    aws_sdk_sqs::Client::new(aws),
                    namespace,
                    SqsSettings::default(),
                    SqsHealth::default(),
                );
                for actor in HOPS.into_iter().chain([SINK, SUMP]) {
                    transport.url(&transport.queue(actor)).await?;
                }
                Arc::new(transport)
            }
        })
    }
}

/// One side's figures in one round.
#[derive(Clone, Copy, Default)]
struct Measured {
    /// Successful messages per second, to the last one that ended.
    rate: f64,
    /// This process's CPU per hop (its client work; the brokers run apart), in microseconds.
    cpu_per_hop: f64,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
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

/// Polls `done` every 5 ms until it returns a value; an error after [`SIDE_TIMEOUT`].
async fn wait_until<T, F, Fut>(what: &str, mut done: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + SIDE_TIMEOUT;
    loop {
        if let Some(value) = done().await? {
            return Ok(value);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The envelopes both sides carry: `messages` of them, routed through the three hops.
fn envelopes(messages: usize) -> Vec<Envelope> {
    (0..messages)
        .map(|i| {
            Envelope::new(
                Route::through(&HOPS).unwrap(),
                json!({"text": "hello world", "n": i}),
                "2026-11-25T00:00:00Z",
            )
        })
        .collect()
}

/// What ends a side's run: messages that arrived at the end, and those lost on the way.
#[derive(Default)]
struct Tally {
    /// Messages that arrived at the last queue (successfully, for asya) and were acknowledged.
    arrived: AtomicUsize,
    /// Messages that will not arrive (a failed publish, an arrival at `x-sump`).
    lost: AtomicUsize,
    /// Failures by kind (no successes: those are `arrived`).
    failures: Mutex<Outcomes>,
}

impl Tally {
    fn fail(&self, kind: String) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fail(kind);
    }

    fn lose(&self, kind: String) {
        self.fail(kind);
        self.lost.fetch_add(1, Ordering::Relaxed);
    }

    fn arrive(&self) {
        self.arrived.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits until every message arrived or was lost, stops the side (`stop`), and counts its
    /// outcomes into `outcomes`.
    async fn finish(
        &self,
        messages: usize,
        started: Instant,
        cpu_started: f64,
        stop: &CancellationToken,
        outcomes: &mut Outcomes,
    ) -> Result<Measured> {
        let waited = wait_until(&format!("{messages} messages to arrive or fail"), || {
            let arrived = self.arrived.load(Ordering::Relaxed);
            let ended = arrived + self.lost.load(Ordering::Relaxed);
            async move { Ok((ended >= messages).then_some(arrived)) }
        })
        .await;
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu_started;
        stop.cancel();
        let arrived = waited?.min(messages);
        outcomes.add_ok(arrived as u64);
        outcomes.merge(&self.failures.lock().unwrap_or_else(|e| e.into_inner()));
        let hops = (arrived * HOPS.len()) as f64;
        Ok(Measured {
            rate: arrived as f64 / elapsed,
            cpu_per_hop: cpu * 1e6 / hops,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Raw loops
// ---------------------------------------------------------------------------------------------

/// The raw loop on async-nats: a work-queue stream `RAW<round>` (as asya's namespace streams
/// are), one durable pull consumer per stage.
async fn raw_nats(
    url: &str,
    messages: usize,
    round: usize,
    outcomes: &mut Outcomes,
) -> Result<Measured> {
    let js = jetstream::new(nats::connect(url).await?);
    let prefix = format!("raw{round}");
    let stream = js
        .get_or_create_stream(stream::Config {
            name: prefix.to_uppercase(),
            subjects: vec![format!("{prefix}.>")],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await?;
    let mut acks = Vec::new();
    for env in envelopes(messages) {
        acks.push(
            js.publish(format!("{prefix}.a"), env.to_bytes().into())
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
    let tally = Arc::new(Tally::default());
    let stop = CancellationToken::new();
    let started = Instant::now();
    let cpu_started = cpu_seconds();
    for (hop, next) in RAW_STAGES {
        let next = next.map(|n| format!("{prefix}.{n}"));
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                hop,
                consumer::pull::Config {
                    durable_name: Some(hop.to_owned()),
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
        let (js, tally, stop) = (js.clone(), tally.clone(), stop.clone());
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(concurrency()));
            loop {
                let permit = slots.clone().acquire_owned().await.unwrap();
                let msg = tokio::select! {
                    _ = stop.cancelled() => break,
                    m = msgs.next() => match m {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => {
                            tally.fail(format!("raw stage {hop}: receive: {e}"));
                            continue;
                        }
                        None => break,
                    },
                };
                let (js, next, tally) = (js.clone(), next.clone(), tally.clone());
                tokio::spawn(async move {
                    if let Some(next) = &next {
                        let published =
                            async { js.publish(next.clone(), msg.payload.clone()).await?.await }
                                .await;
                        if let Err(e) = published {
                            tally.lose(format!("raw stage {hop}: publish: {e}"));
                            let _ = msg.ack_with(AckKind::Term).await;
                            return;
                        }
                    }
                    match msg.ack().await {
                        Ok(()) if next.is_none() => tally.arrive(),
                        Ok(()) => {}
                        Err(e) if next.is_none() => {
                            tally.lose(format!("raw stage {hop}: ack: {e}"))
                        }
                        Err(e) => tally.fail(format!("raw stage {hop}: ack: {e}")),
                    }
                    drop(permit);
                });
            }
        });
    }
    tally
        .finish(messages, started, cpu_started, &stop, outcomes)
        .await
}

/// The raw loop on lapin: durable quorum queues `raw<round>-<stage>` (as asya declares its
/// queues), persistent messages; each stage consumes on a channel of its own (prefetch: the
/// in-flight limit) and publishes on a confirm-mode channel of its own.
async fn raw_rabbitmq(
    url: &str,
    messages: usize,
    round: usize,
    outcomes: &mut Outcomes,
) -> Result<Measured> {
    let connection = lapin::Connection::connect(url, ConnectionProperties::default()).await?;
    let queue = |stage: &str| format!("raw{round}-{stage}");
    let setup = connection.create_channel().await?;
    for (stage, _) in RAW_STAGES {
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("quorum")),
        );
        setup
            .queue_declare(
                queue(stage).as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                arguments,
            )
            .await?;
    }
    setup
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let persistent = || BasicProperties::default().with_delivery_mode(2);
    let mut confirms = Vec::new();
    for env in envelopes(messages) {
        confirms.push(
            setup
                .basic_publish(
                    "".into(),
                    queue("a").as_str().into(),
                    BasicPublishOptions::default(),
                    &env.to_bytes(),
                    persistent(),
                )
                .await?,
        );
        if confirms.len() >= 1000 {
            for confirm in confirms.drain(..) {
                anyhow::ensure!(
                    matches!(confirm.await?, Confirmation::Ack(_)),
                    "not confirmed"
                );
            }
        }
    }
    for confirm in confirms {
        anyhow::ensure!(
            matches!(confirm.await?, Confirmation::Ack(_)),
            "not confirmed"
        );
    }
    let tally = Arc::new(Tally::default());
    let stop = CancellationToken::new();
    let started = Instant::now();
    let cpu_started = cpu_seconds();
    for (hop, next) in RAW_STAGES {
        let next = next.map(queue);
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(
                concurrency().min(u16::MAX as usize) as u16,
                BasicQosOptions::default(),
            )
            .await?;
        let mut consumer = channel
            .basic_consume(
                queue(hop).as_str().into(),
                format!("raw-{hop}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let publisher = connection.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let (tally, stop) = (tally.clone(), stop.clone());
        tokio::spawn(async move {
            // The consuming channel lives as long as the stage.
            let _channel = channel;
            let slots = Arc::new(Semaphore::new(concurrency()));
            loop {
                let permit = slots.clone().acquire_owned().await.unwrap();
                let delivery = tokio::select! {
                    _ = stop.cancelled() => break,
                    d = consumer.next() => match d {
                        Some(Ok(d)) => d,
                        Some(Err(e)) => {
                            tally.fail(format!("raw stage {hop}: receive: {e}"));
                            continue;
                        }
                        None => break,
                    },
                };
                let (publisher, next, tally) = (publisher.clone(), next.clone(), tally.clone());
                tokio::spawn(async move {
                    if let Some(next) = &next {
                        let published = async {
                            let confirm = publisher
                                .basic_publish(
                                    "".into(),
                                    next.as_str().into(),
                                    BasicPublishOptions::default(),
                                    &delivery.data,
                                    persistent(),
                                )
                                .await?
                                .await?;
                            Ok::<_, lapin::Error>(confirm)
                        }
                        .await;
                        let failed = match published {
                            Ok(Confirmation::Ack(_)) => None,
                            Ok(other) => Some(format!("not confirmed ({other:?})")),
                            Err(e) => Some(e.to_string()),
                        };
                        if let Some(why) = failed {
                            tally.lose(format!("raw stage {hop}: publish: {why}"));
                            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                            return;
                        }
                    }
                    match delivery.acker.ack(BasicAckOptions::default()).await {
                        Ok(_) if next.is_none() => tally.arrive(),
                        Ok(_) => {}
                        Err(e) if next.is_none() => {
                            tally.lose(format!("raw stage {hop}: ack: {e}"))
                        }
                        Err(e) => tally.fail(format!("raw stage {hop}: ack: {e}")),
                    }
                    drop(permit);
                });
            }
        });
    }
    let measured = tally
        .finish(messages, started, cpu_started, &stop, outcomes)
        .await;
    let _ = connection.close(200, "bench done".into()).await;
    measured
}

/// Messages received per SQS call (the most SQS returns).
const SQS_BATCH: i32 = 10;

/// The raw loop on aws-sdk-sqs: standard queues `raw<round>-<stage>`; each stage long-polls
/// (20 s) batches of 10, taking 10 of its in-flight slots before each receive.
async fn raw_sqs(
    aws: &aws_config::SdkConfig,
    messages: usize,
    round: usize,
    outcomes: &mut Outcomes,
) -> Result<Measured> {
    let client = aws_sdk_sqs::Client::new(aws);
    let mut urls = Vec::new();
    for (stage, _) in RAW_STAGES {
        let created = client
            .create_queue()
            .queue_name(format!("raw{round}-{stage}"))
            .attributes(QueueAttributeName::VisibilityTimeout, "60")
            .send()
            .await
            .context("creating a raw SQS queue")?;
        urls.push(created.queue_url().unwrap_or_default().to_owned());
    }
    let first = urls[0].clone();
    let sent: Vec<Result<()>> = futures::stream::iter(envelopes(messages))
        .map(|env| {
            let (client, first) = (client.clone(), first.clone());
            async move {
                client
                    .send_message()
                    .queue_url(first)
                    .message_body(String::from_utf8(env.to_bytes())?)
                    .send()
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    sent.into_iter().collect::<Result<Vec<()>>>()?;
    let tally = Arc::new(Tally::default());
    let stop = CancellationToken::new();
    let started = Instant::now();
    let cpu_started = cpu_seconds();
    for (index, (hop, _)) in RAW_STAGES.into_iter().enumerate() {
        let url = urls[index].clone();
        let next = urls.get(index + 1).cloned();
        let (client, tally, stop) = (client.clone(), tally.clone(), stop.clone());
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(concurrency()));
            let batch = SQS_BATCH.min(concurrency() as i32);
            loop {
                let mut permits = tokio::select! {
                    _ = stop.cancelled() => break,
                    p = slots.clone().acquire_many_owned(batch as u32) => p.unwrap(),
                };
                let received = tokio::select! {
                    _ = stop.cancelled() => break,
                    r = client
                        .receive_message()
                        .queue_url(&url)
                        .max_number_of_messages(batch)
                        .wait_time_seconds(20)
                        .send() => r,
                };
                let received = match received {
                    Ok(received) => received,
                    Err(e) => {
                        tally.fail(format!("raw stage {hop}: receive: {e}"));
                        drop(permits);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                for message in received.messages.unwrap_or_default() {
                    let permit = permits.split(1).expect("a slot per message received");
                    let (client, url, next, tally) =
                        (client.clone(), url.clone(), next.clone(), tally.clone());
                    tokio::spawn(async move {
                        let receipt = message.receipt_handle().unwrap_or_default().to_owned();
                        if let Some(next) = &next {
                            let published = client
                                .send_message()
                                .queue_url(next)
                                .message_body(message.body().unwrap_or_default())
                                .send()
                                .await;
                            if let Err(e) = published {
                                tally.lose(format!("raw stage {hop}: publish: {e}"));
                                let _ = client
                                    .delete_message()
                                    .queue_url(&url)
                                    .receipt_handle(receipt)
                                    .send()
                                    .await;
                                return;
                            }
                        }
                        let deleted = client
                            .delete_message()
                            .queue_url(&url)
                            .receipt_handle(receipt)
                            .send()
                            .await;
                        match deleted {
                            Ok(_) if next.is_none() => tally.arrive(),
                            Ok(_) => {}
                            Err(e) if next.is_none() => {
                                tally.lose(format!("raw stage {hop}: delete: {e}"))
                            }
                            Err(e) => tally.fail(format!("raw stage {hop}: delete: {e}")),
                        }
                        drop(permit);
                    });
                }
                // Slots not used by this batch go back with `permits`.
            }
        });
    }
    tally
        .finish(messages, started, cpu_started, &stop, outcomes)
        .await
}

// ---------------------------------------------------------------------------------------------
// asya
// ---------------------------------------------------------------------------------------------

/// The handler component, compiled once for the whole run.
struct Handler {
    engine: Arc<SandboxEngine>,
    loaded: LoadedComponent,
}

impl Handler {
    fn load() -> Result<Self> {
        let component = common::component("behaviours.behave", "payload");
        let engine = SandboxEngine::new()?;
        let loaded = common::cache().load_file(engine.engine(), &component)?;
        Ok(Handler { engine, loaded })
    }

    /// An actor's executor with its instances already created (one call on each at once), as
    /// in a running host: the run measures hops, not instantiation.
    async fn executor(&self, actor: &str) -> Result<Arc<WasmExecutor>> {
        let limits = SandboxLimits {
            max_instances: instances(),
            ..SandboxLimits::default()
        };
        let executor =
            Arc::new(WasmExecutor::load(actor, self.engine.clone(), &self.loaded, limits).await?);
        let warm = (0..instances())
            .map(|_| executor.call(r#"{"do":"echo"}"#.to_owned(), Duration::from_secs(30)));
        let mut warmed = Outcomes::new("warm-up calls");
        for outcome in futures::future::join_all(warm).await {
            warmed.call(&outcome);
        }
        anyhow::ensure!(
            warmed.failures() == 0,
            "{} of {} warm-up calls on {actor} failed",
            warmed.failures(),
            warmed.total()
        );
        Ok(executor)
    }
}

/// Consumes an end queue (`x-sink` or `x-sump`) of asya's pipeline until `stop`, with the
/// in-flight limit of the raw loop's final stage: acknowledges each arrival, then counts it (once
/// per envelope id) as arrived when it reached `x-sink` with status `succeeded`, else as lost.
fn count_ends(
    end: &'static str,
    mut subscription: Box<dyn Subscription>,
    tally: Arc<Tally>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(concurrency()));
        let seen = Arc::new(Mutex::new(HashSet::new()));
        loop {
            let permit = slots.clone().acquire_owned().await.unwrap();
            let Some(delivery) = next_delivery(subscription.as_mut(), &stop, end).await else {
                break;
            };
            let (tally, seen) = (tally.clone(), seen.clone());
            tokio::spawn(async move {
                let parsed = serde_json::from_slice::<Envelope>(&delivery.bytes);
                if let Err(e) = delivery.acker.ack().await {
                    tally.fail(format!("{end}: ack: {e:#}"));
                    drop(permit);
                    return;
                }
                match parsed {
                    Ok(env) => {
                        let first = seen
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(env.id.clone());
                        if first {
                            let mut outcome = Outcomes::default();
                            if outcome.ended(&env) && end == SINK {
                                tally.arrive();
                            } else {
                                if outcome.failures() == 0 {
                                    outcome = Outcomes::default();
                                    outcome.fail(format!("{end}: status succeeded"));
                                }
                                tally.lost.fetch_add(1, Ordering::Relaxed);
                                tally
                                    .failures
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .merge(&outcome);
                            }
                        }
                    }
                    Err(e) => tally.lose(format!("{end}: not an envelope: {e}")),
                }
                drop(permit);
            });
        }
    });
}

/// asya's pipeline: three sidecars on `broker`'s transport (namespace `bench<round>`), ending
/// at the `x-sink` queue, where [`count_ends`] counts what arrives.
async fn asya(
    broker: &Broker,
    handler: &Handler,
    messages: usize,
    round: usize,
    outcomes: &mut Outcomes,
) -> Result<Measured> {
    let transport = broker.transport(&format!("bench{round}")).await?;
    let mut sidecars = Vec::new();
    for hop in HOPS {
        let executor = handler.executor(hop).await?;
        let settings = SidecarSettings {
            concurrency: concurrency(),
            ..SidecarSettings::default()
        };
        // No results store: the last hop publishes to x-sink (`--end-queues`).
        sidecars.push(Arc::new(Sidecar::new(
            hop,
            executor as Arc<dyn Executor>,
            transport.clone(),
            settings,
        )));
    }
    let published: Vec<Result<()>> = futures::stream::iter(envelopes(messages))
        .map(|env| {
            let transport = transport.clone();
            async move {
                let outbound = Outbound {
                    bytes: env.to_bytes(),
                    dedup_id: format!("{}:client", env.id),
                };
                transport.publish(HOPS[0], outbound).await
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    published.into_iter().collect::<Result<Vec<()>>>()?;
    let tally = Arc::new(Tally::default());
    let stop = CancellationToken::new();
    let started = Instant::now();
    let cpu_started = cpu_seconds();
    for end in [SINK, SUMP] {
        let subscription = transport.subscribe(end).await?;
        count_ends(end, subscription, tally.clone(), stop.clone());
    }
    for sidecar in sidecars {
        let stop = stop.clone();
        tokio::spawn(async move {
            let name = sidecar.name().to_owned();
            if let Err(e) = sidecar.run(stop).await {
                eprintln!("asya actor {name} stopped: {e:#}");
            }
        });
    }
    tally
        .finish(messages, started, cpu_started, &stop, outcomes)
        .await
}

async fn run_side(
    broker: &Broker,
    handler: &Handler,
    side: Side,
    messages: usize,
    round: usize,
    outcomes: &mut Outcomes,
) -> Result<Measured> {
    let measured = match (side, broker) {
        (Side::Asya, _) => asya(broker, handler, messages, round, outcomes).await,
        (Side::Raw, Broker::Nats(server)) => {
            raw_nats(&server.url(), messages, round, outcomes).await
        }
        (Side::Raw, Broker::Rabbitmq(server)) => {
            raw_rabbitmq(&server.url(), messages, round, outcomes).await
        }
        (Side::Raw, Broker::Sqs { aws, .. }) => raw_sqs(aws, messages, round, outcomes).await,
    }?;
    // Let the stopped side's tasks wind down before the next one starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(measured)
}

/// One transport's figures over the rounds.
struct Row {
    kind: Kind,
    messages: usize,
    raw: Vec<Measured>,
    asya: Vec<Measured>,
    outcomes: [Outcomes; 2],
}

impl Row {
    /// asya / raw per round, in percent.
    fn ratios(&self) -> Vec<f64> {
        self.asya
            .iter()
            .zip(&self.raw)
            .map(|(a, r)| a.rate / r.rate * 100.0)
            .collect()
    }
}

fn main() -> Result<()> {
    let rounds = env_number("BENCH_ROUNDS", 3).max(1);
    let kinds: Vec<Kind> = match std::env::var("BENCH_TRANSPORTS") {
        Ok(names) => KINDS
            .into_iter()
            .filter(|k| names.split(',').any(|n| n.trim() == k.name()))
            .collect(),
        Err(_) => KINDS.to_vec(),
    };
    anyhow::ensure!(
        !kinds.is_empty(),
        "BENCH_TRANSPORTS names none of nats, rabbitmq, sqs"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let handler = Handler::load()?;
    let mut rows = Vec::new();
    for kind in kinds {
        let messages = kind.messages();
        let broker = Broker::start(kind, &runtime);
        let mut row = Row {
            kind,
            messages,
            raw: Vec::new(),
            asya: Vec::new(),
            outcomes: [
                Outcomes::new(format!("{}: raw loop: messages", kind.name())),
                Outcomes::new(format!("{}: asya: messages", kind.name())),
            ],
        };
        runtime.block_on(async {
            for round in 0..rounds {
                // The order alternates, so drift on a noisy machine (and the broker's growing
                // state) falls on both sides alike.
                for turn in 0..SIDES.len() {
                    let index = (turn + round) % SIDES.len();
                    let side = SIDES[index];
                    let out = &mut row.outcomes[index];
                    let measured = run_side(&broker, &handler, side, messages, round, out)
                        .await
                        .with_context(|| {
                            format!(
                                "{} {}, round {round}",
                                kind.name(),
                                if side == Side::Raw {
                                    "raw loop"
                                } else {
                                    "asya"
                                }
                            )
                        })?;
                    match side {
                        Side::Raw => row.raw.push(measured),
                        Side::Asya => row.asya.push(measured),
                    }
                    eprintln!(
                        "{} round {round}: {} {:.0} msg/s",
                        kind.name(),
                        if side == Side::Raw { "raw " } else { "asya" },
                        measured.rate
                    );
                }
            }
            anyhow::Ok(())
        })?;
        drop(broker);
        rows.push(row);
    }

    println!(
        "asya transports benchmark: 3 hops (a -> b -> c -> end queue), trivial WASM handler (asya) vs raw client loop, {rounds} rounds"
    );
    println!(
        "  in flight per hop: {c} on both sides (asya: {c} per actor on {i} instances); msg/s counts successful messages only (hops/s = 3 x msg/s)",
        c = concurrency(),
        i = instances()
    );
    println!(
        "  {:<9} {:>8}  {:>24}  {:>24}  {:>22}  {:>17}  target >= {TARGET_PERCENT:.0}% of raw",
        "transport",
        "messages",
        "raw msg/s [min-max]",
        "asya msg/s [min-max]",
        "asya/raw med [min-max]",
        "CPU us/hop raw|asya"
    );
    let mut report = Report::new();
    for row in &rows {
        let rates = |m: &[Measured]| m.iter().map(|m| m.rate).collect::<Vec<f64>>();
        let cpu = |m: &[Measured]| median(m.iter().map(|m| m.cpu_per_hop).collect());
        let range = |values: &[f64]| {
            let (lo, hi) = span(values);
            format!("{:.0} [{lo:.0}-{hi:.0}]", median(values.to_vec()))
        };
        let ratios = row.ratios();
        let ratio = median(ratios.clone());
        let (lo, hi) = span(&ratios);
        println!(
            "  {:<9} {:>8}  {:>24}  {:>24}  {:>22}  {:>17}  {}",
            row.kind.name(),
            row.messages,
            range(&rates(&row.raw)),
            range(&rates(&row.asya)),
            format!("{ratio:.0}% [{lo:.0}-{hi:.0}%]"),
            format!("{:.0} | {:.0}", cpu(&row.raw), cpu(&row.asya)),
            if ratio >= TARGET_PERCENT {
                "MET"
            } else {
                "NOT MET"
            }
        );
    }
    if rows.iter().any(|r| r.kind == Kind::Sqs) {
        println!("  (sqs runs against moto, a Python server answering each call over HTTP: its figures measure moto as much as either client)");
    }
    for row in &rows {
        for out in &row.outcomes {
            report.outcomes(out);
        }
    }
    for row in &rows {
        report.at_least(
            &format!("{}: asya / raw loop", row.kind.name()),
            TARGET_PERCENT,
            median(row.ratios()),
            "%",
        );
    }
    report.finish()
}
