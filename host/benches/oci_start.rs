//! Benchmark: host start from an `oci://` reference to the first message processed, with an
//! empty cache (pull + compile) and with a warm cache (by tag: one manifest request; by digest:
//! no network). Uses a real registry (Debian's docker-registry) on a free port.
//!
//! Run: `cargo bench -p asya-host --bench oci_start`. Target with a warm cache: <= 50 ms.

#[path = "../../tests/common/mod.rs"]
mod common;

use asya_host::app::local::{ActorDef, LocalHost};
use asya_host::runtime::component_cache::ComponentCache;
use common::nats::free_port;
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn first_message(reference: &str, cache: &std::path::Path) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut host = LocalHost::start(
        vec![ActorDef::new("a", reference)],
        ComponentCache::new(Some(cache.to_path_buf())),
    )
    .await?;
    host.send(&["a".to_string()], json!({"text": "hi"})).await?;
    host.next_result(Duration::from_secs(60)).await?;
    let elapsed = started.elapsed();
    host.shutdown().await?;
    Ok(elapsed)
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
    let result = runtime.block_on(async {
        let cache = dir.path().join("cache");
        let cold = first_message(&tag, &cache).await?;
        let mut warm_tag = Vec::new();
        let mut warm_digest = Vec::new();
        for _ in 0..5 {
            warm_tag.push(first_message(&tag, &cache).await?);
            warm_digest.push(first_message(&by_digest, &cache).await?);
        }
        warm_tag.sort();
        warm_digest.sort();
        anyhow::Ok((cold, warm_tag[2], warm_digest[2]))
    });
    let _ = registry.kill();
    let (cold, warm_tag, warm_digest) = result?;
    println!("asya OCI start benchmark: host start from an oci:// reference to the first message processed");
    println!(
        "  empty cache (pull + compile)      {:>8.1} ms",
        cold.as_secs_f64() * 1e3
    );
    println!(
        "  warm cache, by tag (median of 5)  {:>8.1} ms   (target <= 50 ms)",
        warm_tag.as_secs_f64() * 1e3
    );
    println!(
        "  warm cache, by digest (median)    {:>8.1} ms   (no network)",
        warm_digest.as_secs_f64() * 1e3
    );
    Ok(())
}
