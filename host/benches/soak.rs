//! Chaos soak (issue 14), not run in CI: load through a compiled flow with fan-out (the `fan`
//! flow of `tests/fixtures/flows`) on a real nats-server and the real `asya-host run`, with the
//! host killed by SIGKILL every 30 s and nats-server restarted every 2 minutes. At the end:
//! every message ended, exactly once, with the right result; the stream is back to empty and the
//! store's disk bounded; latency p50/p99 of the messages sent outside the chaos windows.
//!
//! Run: `cargo bench -p asya-host --bench soak` (SOAK_SECONDS=600, SOAK_RATE=20 messages/s,
//! SOAK_KILL_EVERY=30, SOAK_NATS_EVERY=120). Exits non-zero on a lost or duplicated result.

#[path = "../../tests/common/mod.rs"]
mod common;

use asya_host::message::envelope::{parse_rfc3339, Envelope, Phase, Route};
use asya_host::transport::nats::{self, NatsSettings, NatsTransport};
use asya_host::transport::results::ResultStore;
use asya_host::transport::{Outbound, Transport};
use common::nats::{HostProcess, NatsServer};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn start_host(
    server: &NatsServer,
    manifests: &Path,
    components: &[(String, std::path::PathBuf)],
) -> HostProcess {
    let pairs: Vec<(&str, &Path)> = components
        .iter()
        .map(|(n, p)| (n.as_str(), p.as_path()))
        .collect();
    HostProcess::start(&server.url(), manifests, &pairs, &["--ack-wait", "5s"])
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            total += if path.is_dir() {
                dir_bytes(&path)
            } else {
                entry.metadata().map(|m| m.len()).unwrap_or(0)
            };
        }
    }
    total
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let seconds = env_secs("SOAK_SECONDS", 600);
    let rate = env_secs("SOAK_RATE", 20).max(1);
    let kill_every = Duration::from_secs(env_secs("SOAK_KILL_EVERY", 30));
    let nats_every = Duration::from_secs(env_secs("SOAK_NATS_EVERY", 120));
    let (manifests, components) = common::fan_flow("soak");
    let mut server = NatsServer::start();
    let mut host = Some(start_host(&server, &manifests, &components));
    let client = nats::connect(&server.url()).await?;
    let transport = NatsTransport::new(client, "default", NatsSettings::default()).await?;
    let results = transport.results().await?;

    let started = Instant::now();
    let wall = |at: Instant| time::OffsetDateTime::now_utc() - (Instant::now() - at);
    let mut sent: Vec<(String, usize, time::OffsetDateTime)> = Vec::new();
    let mut events: Vec<(time::OffsetDateTime, &str)> = Vec::new();
    let (mut next_kill, mut next_nats) = (started + kill_every, started + nats_every);
    let mut peak_disk = 0u64;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut next_send = started;
    println!("soak: {seconds} s at {rate} messages/s, SIGKILL every {kill_every:?}, nats-server restart every {nats_every:?}");
    while started.elapsed() < Duration::from_secs(seconds) {
        let now = Instant::now();
        if now >= next_nats {
            // Both at once when they coincide: the host dies, NATS restarts, a new host starts.
            events.push((wall(now), "nats restart"));
            if let Some(h) = host.take() {
                h.kill9();
            }
            server.restart();
            host = Some(start_host(&server, &manifests, &components));
            next_nats += nats_every;
            next_kill = Instant::now() + kill_every;
            continue;
        }
        if now >= next_kill {
            events.push((wall(now), "host SIGKILL"));
            if let Some(h) = host.take() {
                h.kill9();
            }
            host = Some(start_host(&server, &manifests, &components));
            next_kill += kill_every;
            continue;
        }
        if now >= next_send {
            let i = sent.len();
            let n = i % 5 + 20;
            let env = Envelope::new(
                Route::through(&["start-fan"]).expect("a route"),
                json!({"text": format!("m{i}"), "items": (0..n).collect::<Vec<_>>(), "i": i}),
                &asya_host::message::envelope::now_rfc3339(),
            );
            let at = time::OffsetDateTime::now_utc();
            // Published until the server confirms it (it may be restarting).
            loop {
                let published = transport
                    .publish(
                        "start-fan",
                        Outbound {
                            bytes: env.to_bytes(),
                            dedup_id: format!("{}:client", env.id),
                        },
                    )
                    .await;
                if published.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            sent.push((env.id.clone(), i, at));
            next_send += interval;
            if sent.len().is_multiple_of(rate as usize * 30) {
                let disk = dir_bytes(server.store_dir());
                peak_disk = peak_disk.max(disk);
                println!(
                    "  {:>4} s: {} sent, {} ended, store {:.1} MiB",
                    started.elapsed().as_secs(),
                    sent.len(),
                    results.stored().await.unwrap_or(0),
                    disk as f64 / (1 << 20) as f64
                );
            }
            continue;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Drain: every message must end.
    let deadline = Instant::now() + Duration::from_secs(300);
    while (results.stored().await.unwrap_or(0) as usize) < sent.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let stored = results.stored().await? as usize;
    let accepted = results.accepted().await? as usize;
    let mut lost = 0;
    let mut wrong = 0;
    let mut latencies = Vec::new();
    let mut in_windows = 0;
    for (id, i, at) in &sent {
        let Some(env) = results.get(id).await? else {
            lost += 1;
            continue;
        };
        let status = env
            .status
            .clone()
            .unwrap_or_else(|| asya_host::message::envelope::Status::new_pending(""));
        let n = i % 5 + 20;
        let squares: Vec<Value> = (0..n)
            .map(|j| json!({"item": j, "square": j * j}))
            .collect();
        if status.phase != Phase::Succeeded || env.payload["squares"] != Value::Array(squares) {
            wrong += 1;
            continue;
        }
        let Some(ended) = status.updated_at.as_deref().and_then(parse_rfc3339) else {
            continue;
        };
        // Outside the chaos windows: nothing happened from 2 s before it was sent to its end.
        let touched = events
            .iter()
            .any(|(t, _)| *t >= *at - time::Duration::seconds(2) && *t <= ended);
        if touched {
            in_windows += 1;
        } else {
            latencies.push((ended - *at).as_seconds_f64() * 1e3);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let mut stream = transport.stream().await?;
    let state = stream.info().await?.state.clone();
    let disk = dir_bytes(server.store_dir());
    peak_disk = peak_disk.max(disk);
    let kills = events.iter().filter(|e| e.1 == "host SIGKILL").count();
    let restarts = events.iter().filter(|e| e.1 == "nats restart").count();
    println!(
        "soak results ({} s, {kills} host SIGKILLs, {restarts} nats-server restarts):",
        started.elapsed().as_secs()
    );
    println!("  messages sent                    {}", sent.len());
    println!("  ended (results stored)           {stored}");
    println!("  lost                             {lost}   (target 0)");
    println!("  stored twice                     {}   (target 0: bucket writes {accepted} for {stored} results)", accepted.saturating_sub(stored));
    println!("  wrong or failed results          {wrong}");
    println!(
        "  stream at the end                {} messages, {} bytes (work-queue retention: 0)",
        state.messages, state.bytes
    );
    println!(
        "  nats store on disk               {:.1} MiB at the end, {:.1} MiB peak",
        disk as f64 / (1 << 20) as f64,
        peak_disk as f64 / (1 << 20) as f64
    );
    println!(
        "  latency outside chaos windows    p50 {:.0} ms, p99 {:.0} ms over {} messages ({in_windows} in windows left out)",
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        latencies.len()
    );
    drop(host);
    anyhow::ensure!(
        lost == 0 && accepted == stored && wrong == 0,
        "the soak lost, duplicated or broke results"
    );
    Ok(())
}
