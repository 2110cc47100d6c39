//! Benchmark: the gateway under load on NATS, against `asya send` (envelopes published straight
//! onto the first actor's queue, results read from the results bucket) in the same run.
//!
//! One nats-server, one `asya-host run` serving a two-actor route (`a → b`, the echo handler
//! `behaviours.behave`), one `asya-gateway serve`, all on loopback; the client is this process.
//!
//! - **gateway**: `BENCH_TASKS` (1000) tasks at once, each `POST /v1/tasks` on tool `pipe`, then
//!   its SSE event stream read to the end, then `GET /v1/tasks/{id}`; a task counts only if that
//!   final status is `succeeded` with the echoed payload.
//! - **asya send**: the same number of envelopes published at once to `a` (what `asya send`
//!   does), done when the results bucket has accepted that many more results.
//!
//! Each side runs once per round (`BENCH_ROUNDS`, 3), the order alternating; the ratio of the
//! two wall times is taken within each round and reported as the median and range. Then
//! **SSE fan-out**: `BENCH_SUBSCRIBERS` (100) clients subscribe to one task's events (a route
//! whose steps sleep 0.3 s each, so most join mid-way and get the history replayed); each must
//! see every event in order; the spread between the first and the last subscriber seeing the
//! end is reported.
//!
//! Run: `cargo bench -p asya-gateway --bench gateway_load`.
//! Targets: no task lost (every task succeeded); every subscriber saw every event; gateway
//! throughput at least 50% of `asya send`'s (its extra work per task: a task-log write per hop,
//! an HTTP create, an SSE stream with a JetStream consumer, a status read). Printed as MET or
//! NOT MET; a miss does not fail the run.

#[path = "../../tests/common/mod.rs"]
mod common;

use anyhow::{bail, Context, Result};
use asya_host::message::envelope::{Envelope, Route};
use asya_host::transport::nats::{self, NatsSettings, NatsTransport};
use asya_host::transport::results::ResultStore;
use asya_host::transport::{Outbound, Transport};
use common::nats::{free_port, HostProcess, NatsServer};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "bench-key";
const NS: &str = "bench";

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the bench's path");
    exe.parent().and_then(Path::parent).unwrap().join(name)
}

struct GatewayProcess {
    child: Child,
    port: u16,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_gateway(nats: &str, dir: &Path) -> Result<GatewayProcess> {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(KEY.as_bytes()));
    let config = dir.join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "tenants:\n- namespace: {NS}\n  apiKeys: [{{name: bench, sha256: {digest}}}]\n\
             limits: {{ratePerSecond: 100000, burst: 100000}}\n\
             tools:\n- {{name: pipe, namespace: {NS}, route: [a, b]}}\n"
        ),
    )?;
    let port = free_port();
    let child = Command::new(sibling_binary("asya-gateway"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--nats",
            nats,
        ])
        .arg("--config")
        .arg(&config)
        .env("ASYA_LOG", "warn")
        .spawn()
        .context("starting asya-gateway (cargo build --release --workspace --bins first)")?;
    let gateway = GatewayProcess { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while common::nats::http_get(port, "/healthz").map(|r| r.0) != Some(200) {
        if Instant::now() > deadline {
            bail!("the gateway did not start");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(gateway)
}

/// One HTTP/1.0 request on a new connection (the server closes it after the body, so an SSE
/// stream is read to its end): the status and the body. A plain client keeps the benchmark's
/// dependencies those of the workspace build (no client library with features of its own).
async fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no HTTP response")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    Ok((status, body.to_owned()))
}

/// One task through the gateway: create, follow its events to the end, read its status.
/// Returns the event kinds seen and the latency, if it succeeded.
async fn one_task(port: u16, payload: Value, tool: &str) -> Result<(Vec<String>, Duration)> {
    let started = Instant::now();
    let (status, created) = http(
        port,
        "POST",
        "/v1/tasks",
        Some(&json!({"tool": tool, "payload": payload})),
    )
    .await?;
    if status != 201 {
        bail!("create: {status} {created}");
    }
    let created: Value = serde_json::from_str(&created)?;
    let id = created["id"].as_str().context("no id")?.to_owned();
    let kinds = read_events(port, &id).await?;
    let (_, status) = http(port, "GET", &format!("/v1/tasks/{id}"), None).await?;
    let status: Value = serde_json::from_str(&status)?;
    if status["phase"] != "succeeded" || status["result"]["seen_by"] != 2 {
        bail!("task {id} did not succeed: {status}");
    }
    Ok((kinds, started.elapsed()))
}

/// The kinds of task `id`'s events, read from its SSE stream until the server ends it.
async fn read_events(port: u16, id: &str) -> Result<Vec<String>> {
    let (status, text) = http(port, "GET", &format!("/v1/tasks/{id}/events"), None).await?;
    if status != 200 {
        bail!("events of {id}: {status} {text}");
    }
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .map(str::to_owned)
        .collect())
}

async fn gateway_round(port: u16, tasks: usize) -> (Duration, usize, Vec<Duration>) {
    let started = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for i in 0..tasks {
        running.spawn(async move { one_task(port, json!({"i": i}), "pipe").await });
    }
    let mut ok = 0;
    let mut latencies = Vec::with_capacity(tasks);
    while let Some(done) = running.join_next().await {
        match done.expect("a task panicked") {
            Ok((_, latency)) => {
                ok += 1;
                latencies.push(latency);
            }
            Err(err) => eprintln!("  gateway task failed: {err:#}"),
        }
    }
    (started.elapsed(), ok, latencies)
}

async fn send_round(transport: &NatsTransport, tasks: usize) -> Result<(Duration, usize)> {
    let results = transport.results().await?;
    let before = results.accepted().await?;
    let started = Instant::now();
    let envelopes: Vec<Envelope> = (0..tasks)
        .map(|i| {
            Envelope::new(
                Route::through(&["a", "b"]).unwrap(),
                json!({"i": i}),
                &asya_host::message::envelope::now_rfc3339(),
            )
        })
        .collect();
    let ids: Vec<String> = envelopes.iter().map(|e| e.id.clone()).collect();
    let publishes = envelopes.into_iter().map(|env| {
        let dedup_id = env.id.clone();
        async move {
            transport
                .publish(
                    "a",
                    Outbound {
                        bytes: env.to_bytes(),
                        dedup_id,
                    },
                )
                .await
        }
    });
    for published in futures::future::join_all(publishes).await {
        published?;
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while ((results.accepted().await? - before) as usize) < tasks && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    // After the clock: only messages that ended at x-sink with the echoed payload count, as on
    // the gateway side.
    let mut succeeded = 0;
    for id in &ids {
        if let Some(env) = results.get(id).await? {
            if env.route.curr == asya_host::message::envelope::SINK && env.payload["seen_by"] == 2 {
                succeeded += 1;
            }
        }
    }
    Ok((elapsed, succeeded))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<()> {
    let rounds = env_number("BENCH_ROUNDS", 3).max(1);
    let tasks = env_number("BENCH_TASKS", 1000).max(1);
    let subscribers = env_number("BENCH_SUBSCRIBERS", 100).max(1);
    let server = NatsServer::start();
    let dir = std::env::temp_dir().join(format!("asya-gateway-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("actors.yaml"),
        format!(
            "apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {{name: a, namespace: {NS}}}\n\
             spec: {{handler: behaviours.behave, sandbox: {{maxInstances: 8}}}}\n---\n\
             apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {{name: b, namespace: {NS}}}\n\
             spec: {{handler: behaviours.behave, sandbox: {{maxInstances: 8}}}}\n"
        ),
    )?;
    let component = common::component("behaviours.behave", "payload");
    let _host = HostProcess::start(
        &server.url(),
        &dir,
        &[("a", component.as_path()), ("b", component.as_path())],
        &[],
    );
    let gateway = start_gateway(&server.url(), &dir)?;
    let port = gateway.port;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let nats_client = nats::connect(&server.url()).await?;
        let transport = NatsTransport::new(nats_client, NS, NatsSettings::default()).await?;
        // Warm up both paths (instances, consumers, connections).
        gateway_round(port, 20).await;
        send_round(&transport, 20).await?;
        println!("gateway load: {tasks} tasks at once through a 2-actor route on NATS, {rounds} rounds");
        let mut ratios = Vec::new();
        let mut lost = 0usize;
        let mut all_latencies = Vec::new();
        for round in 0..rounds {
            let (gw, send) = if round % 2 == 0 {
                let gw = gateway_round(port, tasks).await;
                let send = send_round(&transport, tasks).await?;
                (gw, send)
            } else {
                let send = send_round(&transport, tasks).await?;
                let gw = gateway_round(port, tasks).await;
                (gw, send)
            };
            let (gw_time, gw_ok, mut latencies) = gw;
            let (send_time, send_ok) = send;
            lost += tasks - gw_ok;
            latencies.sort();
            let gw_rate = gw_ok as f64 / gw_time.as_secs_f64();
            let send_rate = send_ok as f64 / send_time.as_secs_f64();
            let ratio = gw_rate / send_rate;
            ratios.push(ratio);
            println!(
                "  round {}: gateway {gw_ok}/{tasks} succeeded in {:.2} s ({gw_rate:.0} tasks/s, create→final status p50 {:.0} ms, p99 {:.0} ms); \
                 asya send {send_ok}/{tasks} in {:.2} s ({send_rate:.0}/s); gateway/send {:.0}%",
                round + 1,
                gw_time.as_secs_f64(),
                percentile(&latencies, 0.5).as_secs_f64() * 1e3,
                percentile(&latencies, 0.99).as_secs_f64() * 1e3,
                send_time.as_secs_f64(),
                ratio * 100.0
            );
            all_latencies.extend(latencies);
        }
        ratios.sort_by(f64::total_cmp);
        let median = ratios[ratios.len() / 2];
        println!(
            "  gateway/send throughput: median {:.0}%, range {:.0}–{:.0}% over {rounds} rounds",
            median * 100.0,
            ratios[0] * 100.0,
            ratios[ratios.len() - 1] * 100.0
        );

        // SSE fan-out: many subscribers of one task.
        let (_, created) = http(
            port,
            "POST",
            "/v1/tasks",
            Some(&json!({"tool": "pipe", "payload": {"do": "sleep", "seconds": 0.3}})),
        )
        .await?;
        let created: Value = serde_json::from_str(&created)?;
        let id = created["id"].as_str().context("no id")?.to_owned();
        let mut watching = tokio::task::JoinSet::new();
        for _ in 0..subscribers {
            let id = id.clone();
            watching.spawn(async move {
                let kinds = read_events(port, &id).await;
                (kinds, Instant::now())
            });
        }
        let expected = ["created", "hop", "succeeded"];
        let mut complete = 0;
        let mut ends = Vec::new();
        while let Some(done) = watching.join_next().await {
            let (kinds, at) = done.expect("a subscriber panicked");
            match kinds {
                Ok(kinds) if kinds == expected => {
                    complete += 1;
                    ends.push(at);
                }
                Ok(kinds) => eprintln!("  subscriber saw {kinds:?}, not {expected:?}"),
                Err(err) => eprintln!("  subscriber failed: {err:#}"),
            }
        }
        ends.sort();
        let spread = match (ends.first(), ends.last()) {
            (Some(first), Some(last)) => *last - *first,
            _ => Duration::ZERO,
        };
        println!(
            "  SSE: {complete}/{subscribers} subscribers saw every event of one task in order; \
             first to last seeing its end: {:.1} ms",
            spread.as_secs_f64() * 1e3
        );
        let verdict = |met: bool| if met { "MET" } else { "NOT MET" };
        println!("targets:");
        println!("  no task lost ({lost} lost of {}): {}", tasks * rounds, verdict(lost == 0));
        println!(
            "  every SSE subscriber saw every event ({complete}/{subscribers}): {}",
            verdict(complete == subscribers)
        );
        println!(
            "  gateway throughput >= 50% of asya send (median {:.0}%): {}",
            median * 100.0,
            verdict(median >= 0.5)
        );
        anyhow::Ok(())
    })?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
