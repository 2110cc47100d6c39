//! Benchmark: host start from an `oci://` reference to the first message processed, with an
//! empty cache (pull + compile) and with a warm cache (by tag: one manifest request; by digest:
//! no network). Uses a real registry (Debian's docker-registry) on a free port.
//!
//! Run: `cargo bench -p asya-host --bench oci_start`. Target with a warm cache: <= 50 ms.
//!
//! A start whose first message does not end at `x-sink` (or never arrives) is counted as a
//! failure by kind and left out of the figures; more than 1% of them fails the bench.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use asya_host::app::local::{ActorDef, LocalHost};
use asya_host::runtime::component_cache::ComponentCache;
use common::nats::free_port;
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{Outcomes, Report};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Starts a host on `reference` and sends it one message: the time to its successful result,
/// or `None` when it failed (counted in `outcomes`).
async fn first_message(
    reference: &str,
    cache: &std::path::Path,
    outcomes: &mut Outcomes,
) -> anyhow::Result<Option<Duration>> {
    let started = Instant::now();
    let mut host = LocalHost::start(
        vec![ActorDef::new("a", reference)],
        ComponentCache::new(Some(cache.to_path_buf())),
    )
    .await?;
    let done = support::round_trip(
        &mut host,
        &["a".to_string()],
        json!({"text": "hi"}),
        Duration::from_secs(60),
        outcomes,
    )
    .await?;
    let elapsed = started.elapsed();
    host.shutdown().await?;
    Ok(done.filter(|done| outcomes.finished(done)).map(|_| elapsed))
}

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let config = dir.path().join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\n",
            dir.path().join("storage").display()
        ),
    )?;
    let mut registry = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting docker-registry (run scripts/setup.sh): {e}"))?;
    std::thread::sleep(Duration::from_millis(500));
    let component = common::component("behaviours.behave", "payload");
    let tag = format!("oci://127.0.0.1:{port}/bench/behave:v1");
    let pushed = Command::new(common::asya_cli())
        .arg("push")
        .arg(&component)
        .arg(&tag)
        .output()?;
    anyhow::ensure!(
        pushed.status.success(),
        "push failed: {}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let manifest_digest = String::from_utf8(pushed.stdout)?
        .trim()
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    let by_digest = format!("oci://127.0.0.1:{port}/bench/behave@{manifest_digest}");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut starts = Outcomes::new("host starts to a first message");
    let result = runtime.block_on(async {
        let cache = dir.path().join("cache");
        let cold = first_message(&tag, &cache, &mut starts).await?;
        let mut warm_tag = Vec::new();
        let mut warm_digest = Vec::new();
        for _ in 0..5 {
            warm_tag.extend(first_message(&tag, &cache, &mut starts).await?);
            warm_digest.extend(first_message(&by_digest, &cache, &mut starts).await?);
        }
        anyhow::Ok((cold, warm_tag, warm_digest))
    });
    let _ = registry.kill();
    let _ = registry.wait();
    let (cold, warm_tag, warm_digest) = result?;
    let cold = cold.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    let (tag_n, digest_n) = (warm_tag.len(), warm_digest.len());
    let warm_tag = support::median_ms(warm_tag);
    let warm_digest = support::median_ms(warm_digest);
    println!("asya OCI start benchmark: host start from an oci:// reference to the first message processed");
    println!("  concurrency: one host start at a time, one message");
    let line = |label: String, ms: f64, note: &str| println!("  {label:<36} {ms:>8.1} ms{note}");
    line("empty cache (pull + compile)".into(), cold, "");
    line(
        format!("warm cache, by tag (median of {tag_n})"),
        warm_tag,
        "",
    );
    line(
        format!("warm cache, by digest (median of {digest_n})"),
        warm_digest,
        "   (no network)",
    );
    Report::new()
        .outcomes(&starts)
        .at_most("warm cache start, by tag", 50.0, warm_tag, " ms")
        .finish()
}
