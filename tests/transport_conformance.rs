//! One conformance suite, every transport: the same scenarios run unchanged on NATS JetStream,
//! RabbitMQ (a real `rabbitmq-server`, results and fan-ins in JetStream buckets via
//! `--store nats://`) and SQS (moto's server mode, results and fan-ins in its DynamoDB), each
//! with the real `asya-host run` process and real components. Servers start on free loopback
//! ports and stop after each test.
//!
//! Scenarios: routing through a 3-actor route; at-least-once with SIGKILL of the host
//! mid-stream (every result stored exactly once); delayed retries with the policy's backoff and
//! poison messages to `x-sump`; a broker outage mid-stream (NATS and RabbitMQ restart on the same
//! storage; moto keeps its state in memory, so its process is paused instead: an SQS outage as a
//! client sees one); SIGTERM drain; oversize and malformed input; fan-out/fan-in of a compiled
//! flow across a host crash. Then the broker's own bad input (`broker_faults`): unreachable at
//! start-up, wrong credentials (RabbitMQ's user, SQS's access key), a queue deleted underneath
//! a running host.

mod common;

use asya_host::message::envelope::{Envelope, Phase, Reason, Route, SINK, SUMP};
use asya_host::transport::dynamodb::{DynamoState, DynamoTable};
use asya_host::transport::nats::{self, NatsResults, NatsSettings, NatsTransport};
use asya_host::transport::rabbitmq::{RabbitConnection, RabbitSettings, RabbitTransport};
use asya_host::transport::results::ResultStore;
use asya_host::transport::sqs::{SqsHealth, SqsSettings, SqsTransport};
use asya_host::transport::{Outbound, Transport};
use common::nats::{signal, HostProcess, NatsServer};
use common::rabbitmq::RabbitServer;
use common::sqs::{aws_env, MotoServer};
use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The namespace of the suite's own actors.
const NS: &str = "conformance";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Nats,
    Rabbitmq,
    Sqs,
}

/// The servers one test runs against.
struct Broker {
    kind: Kind,
    /// The NATS transport's server, or RabbitMQ's state store.
    nats: Option<NatsServer>,
    rabbit: Option<RabbitServer>,
    moto: Option<MotoServer>,
}

/// Final envelopes as the host stored them, read back from the state store it used.
enum Results {
    Nats(Box<NatsResults>),
    Dynamo(DynamoState),
}

impl Results {
    /// Every stored result, and how many writes the store accepted in all (equal to the number
    /// of results when each was stored exactly once).
    async fn all(&self) -> (Vec<Envelope>, u64) {
        match self {
            Results::Nats(results) => (
                results.all().await.unwrap(),
                results.accepted().await.unwrap(),
            ),
            Results::Dynamo(state) => {
                let all = state.all_results().await.unwrap();
                let writes = all.iter().map(|(_, w)| w).sum();
                (all.into_iter().map(|(e, _)| e).collect(), writes)
            }
        }
    }

    async fn ended(&self) -> usize {
        match self {
            Results::Nats(results) => results.stored().await.unwrap() as usize,
            Results::Dynamo(_) => self.all().await.0.len(),
        }
    }

    async fn get(&self, id: &str) -> Option<Envelope> {
        match self {
            Results::Nats(results) => results.get(id).await.unwrap(),
            Results::Dynamo(state) => state.get(id).await.unwrap(),
        }
    }

    async fn wait(&self, id: &str, timeout: Duration) -> Envelope {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(env) = self.get(id).await {
                return env;
            }
            assert!(
                Instant::now() < deadline,
                "no result for {id} within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_for_ended(&self, at_least: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.ended().await;
            if n >= at_least || Instant::now() > deadline {
                return n;
            }
            // A DynamoDB scan costs more than reading the bucket's stream state.
            let poll = match self {
                Results::Nats(_) => 20,
                Results::Dynamo(_) => 250,
            };
            tokio::time::sleep(Duration::from_millis(poll)).await;
        }
    }

    async fn find(&self, pred: impl Fn(&Envelope) -> bool) -> Envelope {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(env) = self.all().await.0.into_iter().find(|e| pred(e)) {
                return env;
            }
            assert!(Instant::now() < deadline, "no matching result");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A client's view of a namespace: its queues and results.
struct Client {
    transport: Arc<dyn Transport>,
    results: Results,
}

impl Broker {
    fn start(kind: Kind) -> Self {
        match kind {
            Kind::Nats => Broker {
                kind,
                nats: Some(NatsServer::start()),
                rabbit: None,
                moto: None,
            },
            Kind::Rabbitmq => Broker {
                kind,
                nats: Some(NatsServer::start()),
                rabbit: Some(RabbitServer::start_with(false)),
                moto: None,
            },
            Kind::Sqs => Broker {
                kind,
                nats: None,
                rabbit: None,
                moto: Some(MotoServer::start()),
            },
        }
    }

    /// `asya-host run` flags selecting this transport and its store.
    fn host_args(&self) -> Vec<String> {
        match self.kind {
            Kind::Nats => vec![
                "--transport".into(),
                "nats".into(),
                "--nats".into(),
                self.nats.as_ref().unwrap().url(),
            ],
            Kind::Rabbitmq => vec![
                "--transport".into(),
                "rabbitmq".into(),
                "--rabbitmq-url".into(),
                self.rabbit.as_ref().unwrap().url(),
                "--store".into(),
                self.nats.as_ref().unwrap().url(),
            ],
            Kind::Sqs => vec!["--transport".into(), "sqs".into()],
        }
    }

    fn host_env(&self) -> Vec<(String, String)> {
        match &self.moto {
            Some(moto) => aws_env(&moto.endpoint()),
            None => Vec::new(),
        }
    }

    fn host(&self, manifests: &Path, components: &[(&str, &Path)], extra: &[&str]) -> HostProcess {
        HostProcess::start_on(
            &self.host_args(),
            &self.host_env(),
            manifests,
            components,
            extra,
            None,
        )
    }

    async fn aws(&self) -> aws_config::SdkConfig {
        let endpoint = self.moto.as_ref().unwrap().endpoint();
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .load()
            .await
    }

    async fn nats_results(&self, namespace: &str) -> NatsResults {
        let client = nats::connect(&self.nats.as_ref().unwrap().url())
            .await
            .unwrap();
        NatsTransport::new(client, namespace, NatsSettings::default())
            .await
            .unwrap()
            .results()
            .await
            .unwrap()
    }

    async fn client(&self, namespace: &str) -> Client {
        match self.kind {
            Kind::Nats => {
                let client = nats::connect(&self.nats.as_ref().unwrap().url())
                    .await
                    .unwrap();
                let transport = NatsTransport::new(client, namespace, NatsSettings::default())
                    .await
                    .unwrap();
                let results = Results::Nats(Box::new(transport.results().await.unwrap()));
                Client {
                    transport: Arc::new(transport),
                    results,
                }
            }
            Kind::Rabbitmq => {
                let connection = RabbitConnection::connect(&self.rabbit.as_ref().unwrap().url())
                    .await
                    .unwrap();
                Client {
                    transport: Arc::new(RabbitTransport::new(
                        connection,
                        namespace,
                        RabbitSettings::default(),
                    )),
                    results: Results::Nats(Box::new(self.nats_results(namespace).await)),
                }
            }
            Kind::Sqs => {
                let aws = self.aws().await;
                let table = DynamoTable::open(
                    aws_sdk_dynamodb::Client::new(&aws),
                    asya_spec::names::DEFAULT_STATE_TABLE,
                    true,
                )
                .await
                .unwrap();
                Client {
                    transport: Arc::new(SqsTransport::new(
                        aws_sdk_sqs::Client::new(&aws),
                        namespace,
                        SqsSettings::default(),
                        SqsHealth::default(),
                    )),
                    results: Results::Dynamo(table.namespace(namespace, Duration::from_secs(3600))),
                }
            }
        }
    }

    /// The broker goes away for a few seconds and comes back with its messages.
    fn outage(&mut self) {
        match self.kind {
            Kind::Nats => self.nats.as_mut().unwrap().restart(),
            Kind::Rabbitmq => self.rabbit.as_mut().unwrap().restart(),
            Kind::Sqs => {
                let moto = self.moto.as_ref().unwrap();
                moto.pause();
                std::thread::sleep(Duration::from_secs(5));
                moto.resume();
            }
        }
    }
}

/// The suite's actors: `first`, `second`, `third` (echo) and `poison` (retries a LookupError
/// three times 400 ms apart; a ValueError is not retried), all one component.
fn manifests() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for name in ["first", "second", "third"] {
        text.push_str(&format!(
            "apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  handler: behaviours.behave\n  sandbox: {{maxInstances: 8, cpuTimeout: 2s}}\n---\n"
        ));
    }
    text.push_str(&format!(
        "apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {{name: poison, namespace: {NS}}}\nspec:\n  handler: behaviours.behave\n  resiliency:\n    actorTimeout: 5s\n    policies:\n      default: {{maxAttempts: 3, backoff: constant, initialInterval: 400ms}}\n    rules:\n      - {{errors: [LookupError], policy: default}}\n    nonRetryableErrors: [ValueError]\n"
    ));
    std::fs::write(dir.path().join("actors.yaml"), text).unwrap();
    let path = dir.path().to_path_buf();
    (dir, path)
}

fn start_host(broker: &Broker, manifests: &Path, extra: &[&str]) -> HostProcess {
    let component = common::component("behaviours.behave", "payload");
    let components: Vec<(&str, &Path)> = ["first", "second", "third", "poison"]
        .into_iter()
        .map(|name| (name, component.as_path()))
        .collect();
    broker.host(manifests, &components, extra)
}

/// Publishes `n` envelopes along `route` (32 publishes in flight); returns their ids.
async fn publish_many(client: &Client, route: &[&str], n: usize, payload: Value) -> Vec<String> {
    let envelopes: Vec<Envelope> = (0..n)
        .map(|i| {
            let mut p = payload.clone();
            p["i"] = json!(i);
            Envelope::new(Route::through(route).unwrap(), p, "2026-11-25T00:00:00Z")
        })
        .collect();
    let ids = envelopes.iter().map(|e| e.id.clone()).collect();
    futures::stream::iter(envelopes)
        .map(|env| {
            let transport = client.transport.clone();
            let first = route[0].to_owned();
            async move {
                transport
                    .publish(
                        &first,
                        Outbound {
                            bytes: env.to_bytes(),
                            dedup_id: format!("{}:client", env.id),
                        },
                    )
                    .await
                    .unwrap()
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    ids
}

async fn publish_one(client: &Client, actor: &str, env: &Envelope) {
    client
        .transport
        .publish(
            actor,
            Outbound {
                bytes: env.to_bytes(),
                dedup_id: env.id.clone(),
            },
        )
        .await
        .unwrap();
}

async fn routes_through_three_actors(kind: Kind) {
    let broker = Broker::start(kind);
    let (_dir, manifests) = manifests();
    let _host = start_host(&broker, &manifests, &[]);
    let client = broker.client(NS).await;
    let ids = publish_many(
        &client,
        &["first", "second", "third"],
        50,
        json!({"text": "hi"}),
    )
    .await;
    for id in ids {
        let env = client.results.wait(&id, Duration::from_secs(60)).await;
        assert_eq!(env.route.curr, SINK);
        assert_eq!(env.route.prev, ["first", "second", "third"], "{kind:?}");
        assert_eq!(env.payload["seen_by"], json!(3), "each actor ran once");
        assert_eq!(env.status.unwrap().phase, Phase::Succeeded);
    }
}

async fn kill_9_mid_stream_stores_every_result_exactly_once(kind: Kind) {
    let broker = Broker::start(kind);
    let (_dir, manifests) = manifests();
    let flags = ["--ack-wait", "3s", "--batch", "10"];
    let host = start_host(&broker, &manifests, &flags);
    let client = broker.client(NS).await;
    let n = 600;
    // A short sleep in the handler keeps the stream busy long enough to kill the host mid-way.
    let ids = publish_many(
        &client,
        &["first", "second"],
        n,
        json!({"do": "sleep", "seconds": 0.02}),
    )
    .await;
    let before = client
        .results
        .wait_for_ended(100, Duration::from_secs(120))
        .await;
    assert!(
        (100..n).contains(&before),
        "killed mid-stream (after {before})"
    );
    host.kill9();
    let _host = start_host(&broker, &manifests, &flags);
    let total = client
        .results
        .wait_for_ended(n, Duration::from_secs(240))
        .await;
    assert_eq!(total, n, "{kind:?}: every message ended");
    // Redeliveries past the redelivery timer would show now.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (all, writes) = client.results.all().await;
    assert_eq!(all.len(), n);
    assert_eq!(
        writes, n as u64,
        "{kind:?}: exactly once: each result was stored once"
    );
    assert!(all.iter().all(|env| env.route.curr == SINK));
    let stored: HashSet<String> = all.into_iter().map(|env| env.id).collect();
    let sent: HashSet<String> = ids.into_iter().collect();
    assert_eq!(stored, sent, "the store holds exactly the ids sent");
}

async fn retries_wait_out_the_backoff_then_poison_ends_at_the_sump(kind: Kind) {
    let broker = Broker::start(kind);
    let (_dir, manifests) = manifests();
    let _host = start_host(&broker, &manifests, &[]);
    let client = broker.client(NS).await;
    let started = Instant::now();
    let env = Envelope::new(
        Route::through(&["poison"]).unwrap(),
        json!({"do": "raise"}),
        "2026-11-25T00:00:00Z",
    );
    publish_one(&client, "poison", &env).await;
    let done = client.results.wait(&env.id, Duration::from_secs(60)).await;
    let elapsed = started.elapsed();
    let status = done.status.unwrap();
    assert_eq!(done.route.curr, SUMP);
    assert_eq!(status.reason, Some(Reason::MaxRetriesExhausted));
    assert_eq!((status.attempt, status.max_attempts), (3, 3));
    assert_eq!(status.error.unwrap().kind, "KeyError");
    assert!(
        elapsed >= Duration::from_millis(800) && elapsed < Duration::from_secs(20),
        "{kind:?}: two 400 ms backoffs were observed ({elapsed:?})"
    );

    let env = Envelope::new(
        Route::through(&["poison"]).unwrap(),
        json!({"do": "no-such-action"}),
        "2026-11-25T00:00:00Z",
    );
    publish_one(&client, "poison", &env).await;
    let status = client
        .results
        .wait(&env.id, Duration::from_secs(30))
        .await
        .status
        .unwrap();
    assert_eq!(status.reason, Some(Reason::NonRetryable));
    assert_eq!(status.attempt, 1);
}

async fn a_broker_outage_mid_stream_loses_nothing(kind: Kind) {
    let mut broker = Broker::start(kind);
    let (_dir, manifests) = manifests();
    let host = start_host(&broker, &manifests, &["--ack-wait", "5s"]);
    let client = broker.client(NS).await;
    let n = 600;
    publish_many(
        &client,
        &["first"],
        n,
        json!({"do": "sleep", "seconds": 0.01}),
    )
    .await;
    let before = client
        .results
        .wait_for_ended(60, Duration::from_secs(60))
        .await;
    assert!(before < n, "the outage happens mid-stream (after {before})");
    broker.outage();
    // The host reconnects by itself; a fresh client reads the results.
    let client = broker.client(NS).await;
    let total = client
        .results
        .wait_for_ended(n, Duration::from_secs(240))
        .await;
    assert_eq!(total, n, "{kind:?}: every message arrived after the outage");
    assert_eq!(
        common::nats::http_get(host.http_port, "/readyz").map(|(c, _)| c),
        Some(200),
        "{kind:?}: ready again"
    );
}

async fn sigterm_finishes_in_flight_work_and_exits_zero(kind: Kind) {
    let broker = Broker::start(kind);
    let (_dir, manifests) = manifests();
    let flags = ["--ack-wait", "3s", "--grace", "20s"];
    let mut host = start_host(&broker, &manifests, &flags);
    let client = broker.client(NS).await;
    publish_many(
        &client,
        &["first"],
        40,
        json!({"do": "sleep", "seconds": 0.3}),
    )
    .await;
    client
        .results
        .wait_for_ended(4, Duration::from_secs(30))
        .await;
    let stopping = Instant::now();
    signal(&host.child, 15);
    let status = host.child.wait().unwrap();
    assert!(
        status.success(),
        "{kind:?}: exit code 0 after SIGTERM ({status:?})"
    );
    assert!(
        stopping.elapsed() < Duration::from_secs(20),
        "within the grace period"
    );
    let _next = start_host(&broker, &manifests, &flags);
    let total = client
        .results
        .wait_for_ended(40, Duration::from_secs(90))
        .await;
    assert_eq!(total, 40, "{kind:?}: nothing lost across the drain");
}

async fn malformed_and_oversize_input_ends_at_the_sump_with_the_reason(kind: Kind) {
    let broker = Broker::start(kind);
    let (_dir, manifests) = manifests();
    let _host = start_host(&broker, &manifests, &["--max-message-bytes", "65536"]);
    let client = broker.client(NS).await;
    client
        .transport
        .publish(
            "first",
            Outbound {
                bytes: b"\xff\xfenot an envelope".to_vec(),
                dedup_id: "raw-1".into(),
            },
        )
        .await
        .unwrap();
    let parse = client
        .results
        .find(|e| e.payload.get("raw_base64").is_some())
        .await;
    assert_eq!(parse.status.unwrap().reason, Some(Reason::ParseError));
    assert_eq!(parse.route.curr, SUMP);

    let env = Envelope::new(
        Route::through(&["first"]).unwrap(),
        json!({"blob": "x".repeat(100_000)}),
        "2026-11-25T00:00:00Z",
    );
    publish_one(&client, "first", &env).await;
    let big = client
        .results
        .find(|e| {
            e.status
                .as_ref()
                .and_then(|s| s.error.as_ref())
                .is_some_and(|err| err.message.contains("exceeds the limit"))
        })
        .await;
    let error = big.status.unwrap().error.unwrap();
    assert!(
        error.message.contains("65536"),
        "{kind:?}: {}",
        error.message
    );
}

async fn a_compiled_flow_fans_out_and_in_across_a_host_crash(kind: Kind) {
    let (manifests, components) = common::fan_flow(&format!("conformance-flow-{kind:?}"));
    let broker = Broker::start(kind);
    let pairs: Vec<(&str, &Path)> = components
        .iter()
        .map(|(n, p)| (n.as_str(), p.as_path()))
        .collect();
    let host = broker.host(&manifests, &pairs, &[]);
    let client = broker.client("default").await;
    let messages = 40;
    let mut ids = Vec::new();
    for i in 0..messages {
        let items: Vec<i64> = (0..(i % 5 + 20)).collect();
        let env = Envelope::new(
            Route::through(&["start-fan"]).unwrap(),
            json!({"text": format!("m{i}"), "items": items, "i": i}),
            "2026-11-25T00:00:00Z",
        );
        ids.push((env.id.clone(), i));
        publish_one(&client, "start-fan", &env).await;
    }
    let before = client
        .results
        .wait_for_ended(3, Duration::from_secs(120))
        .await;
    host.kill9();
    assert!(
        before < messages as usize,
        "the crash happens mid-run ({before} finished)"
    );
    let _host = broker.host(&manifests, &pairs, &[]);
    for (id, i) in &ids {
        let env = client.results.wait(id, Duration::from_secs(180)).await;
        let status = env.status.as_ref().unwrap();
        assert_eq!(status.phase, Phase::Succeeded, "{kind:?} {id}: {status:?}");
        let n = i % 5 + 20;
        let squares: Vec<Value> = (0..n)
            .map(|j| json!({"item": j, "square": j * j}))
            .collect();
        assert_eq!(env.payload["squares"], Value::Array(squares), "message {i}");
        assert_eq!(env.payload["pair"][0]["i"], json!(i), "no crosstalk");
        assert_eq!(
            env.payload["total"],
            json!((0..n).map(|j| j * j).sum::<i64>())
        );
    }
}

/// `asya-host run` started without waiting for it to be ready, its log in `log`.
fn spawn_host(
    broker_args: &[String],
    env: &[(String, String)],
    log: &Path,
) -> (std::process::Child, u16, tempfile::TempDir) {
    let (dir, manifests) = manifests();
    let component = common::component("behaviours.behave", "payload");
    let port = common::nats::free_port();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_asya-host"));
    cmd.arg("run")
        .args(broker_args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg("--manifests")
        .arg(&manifests)
        .args(["--http", &format!("127.0.0.1:{port}")])
        .env("ASYA_LOG", "info")
        .stderr(std::fs::File::create(log).unwrap());
    for name in ["first", "second", "third", "poison"] {
        cmd.arg("--component")
            .arg(format!("{name}={}", component.display()));
    }
    (cmd.spawn().unwrap(), port, dir)
}

/// Waits until the host's log contains `text`; returns the log.
fn wait_for_log(log: &Path, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logged = std::fs::read_to_string(log).unwrap_or_default();
        if logged.contains(text) {
            return logged;
        }
        assert!(
            Instant::now() < deadline,
            "no {text:?} in the host's log:\n{logged}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Bad input at the broker's end: unreachable at start-up, refused credentials, a queue
/// deleted underneath a running host.
mod broker_faults {
    use super::*;

    #[test]
    fn an_unreachable_broker_at_start_up_is_retried_and_the_host_is_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        let nobody = common::nats::free_port();
        for (name, args, env) in [
            (
                "RabbitMQ",
                vec![
                    "--transport".to_owned(),
                    "rabbitmq".into(),
                    "--rabbitmq-url".into(),
                    format!("amqp://guest:guest@127.0.0.1:{nobody}/%2f"),
                ],
                vec![],
            ),
            (
                "SQS",
                vec!["--transport".to_owned(), "sqs".into()],
                aws_env(&format!("http://127.0.0.1:{nobody}")),
            ),
        ] {
            let log = dir.path().join(format!("{name}.log"));
            let (mut child, port, _manifests) = spawn_host(&args, &env, &log);
            let logged = wait_for_log(&log, &format!("{name} is not reachable yet"));
            assert!(logged.contains("retry_in"), "{logged}");
            let ready = common::nats::http_get(port, "/readyz");
            assert_eq!(
                ready.as_ref().map(|(c, _)| *c),
                Some(503),
                "{name}: {ready:?}"
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "{name}: the host keeps retrying"
            );
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    #[test]
    fn wrong_rabbitmq_credentials_name_the_transport_and_the_user() {
        let rabbit = RabbitServer::start_with(false);
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("host.log");
        let url = format!(
            "amqp://mallory:not-the-password@127.0.0.1:{}/%2f",
            rabbit.port
        );
        let (mut child, port, _manifests) = spawn_host(
            &[
                "--transport".into(),
                "rabbitmq".into(),
                "--rabbitmq-url".into(),
                url,
            ],
            &[],
            &log,
        );
        let logged = wait_for_log(&log, "refused user 'mallory'");
        assert!(
            logged.contains("RabbitMQ at amqp://mallory:***@127.0.0.1"),
            "{logged}"
        );
        assert!(
            !logged.contains("not-the-password"),
            "the password is never logged"
        );
        assert_eq!(
            common::nats::http_get(port, "/readyz").map(|(c, _)| c),
            Some(503)
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn refused_aws_credentials_name_the_transport_and_the_access_key() {
        // moto checks every request against its IAM users: the host's key is unknown.
        let moto = MotoServer::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("host.log");
        let (mut child, port, _manifests) = spawn_host(
            &["--transport".into(), "sqs".into()],
            &aws_env(&moto.endpoint()),
            &log,
        );
        let logged = wait_for_log(&log, "SQS refused access key testing");
        assert!(logged.contains("check the AWS credentials"), "{logged}");
        assert_eq!(
            common::nats::http_get(port, "/readyz").map(|(c, _)| c),
            Some(503)
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the host keeps retrying"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Deletes the queue of `first` under a running host, then sends through it.
    async fn a_deleted_queue_is_recreated(kind: Kind) {
        let broker = Broker::start(kind);
        let (_dir, manifests) = manifests();
        let _host = start_host(&broker, &manifests, &[]);
        let client = broker.client(NS).await;
        let queue = asya_spec::names::queue_name(NS, "first");
        match kind {
            Kind::Rabbitmq => {
                let connection = lapin::Connection::connect(
                    &broker.rabbit.as_ref().unwrap().url(),
                    lapin::ConnectionProperties::default(),
                )
                .await
                .unwrap();
                let channel = connection.create_channel().await.unwrap();
                channel
                    .queue_delete(queue.as_str().into(), Default::default())
                    .await
                    .unwrap();
            }
            Kind::Sqs => {
                let sqs = aws_sdk_sqs::Client::new(&broker.aws().await);
                // The host creates its queues as it subscribes, which may finish just after it
                // reports ready (its built-in actors subscribe too): wait for the queue first.
                let deadline = Instant::now() + Duration::from_secs(30);
                let url = loop {
                    match sqs.get_queue_url().queue_name(&queue).send().await {
                        Ok(url) => break url,
                        Err(_) if Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(err) => panic!("queue {queue} never appeared: {err:?}"),
                    }
                };
                sqs.delete_queue()
                    .queue_url(url.queue_url().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
            Kind::Nats => unreachable!("NATS has no per-actor queue to delete"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let ids = publish_many(&client, &["first", "second"], 20, json!({"text": "hi"})).await;
        for id in ids {
            let env = client.results.wait(&id, Duration::from_secs(90)).await;
            assert_eq!(env.route.curr, SINK, "{kind:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deleted_rabbitmq_queue_is_declared_again() {
        a_deleted_queue_is_recreated(Kind::Rabbitmq).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deleted_sqs_queue_is_created_again() {
        a_deleted_queue_is_recreated(Kind::Sqs).await;
    }
}

/// The scenarios above, once per transport.
macro_rules! conformance {
    ($module:ident, $kind:expr) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn routes_through_three_actors() {
                super::routes_through_three_actors($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn kill_9_mid_stream_stores_every_result_exactly_once() {
                super::kill_9_mid_stream_stores_every_result_exactly_once($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn retries_wait_out_the_backoff_then_poison_ends_at_the_sump() {
                super::retries_wait_out_the_backoff_then_poison_ends_at_the_sump($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_broker_outage_mid_stream_loses_nothing() {
                super::a_broker_outage_mid_stream_loses_nothing($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sigterm_finishes_in_flight_work_and_exits_zero() {
                super::sigterm_finishes_in_flight_work_and_exits_zero($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn malformed_and_oversize_input_ends_at_the_sump_with_the_reason() {
                super::malformed_and_oversize_input_ends_at_the_sump_with_the_reason($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_compiled_flow_fans_out_and_in_across_a_host_crash() {
                super::a_compiled_flow_fans_out_and_in_across_a_host_crash($kind).await;
            }
        }
    };
}

conformance!(on_nats, Kind::Nats);
conformance!(on_rabbitmq, Kind::Rabbitmq);
conformance!(on_sqs, Kind::Sqs);
