//! Benchmark: how many idle actors one host holds. N distinct components (the fixture handler with
//! a distinct custom section each, so each has its own digest and compiled artifact) are registered
//! in one host; it reports RSS per idle registered actor, the time to load them all with an empty
//! and with a warm compiled-component cache, the first-message latency of a cold actor (parked:
//! no instance and no compiled code mapped; map + instantiate from the snapshot + call) against a
//! warm one, and the same figures when every actor keeps its component mapped (`keepLoaded`, no
//! instance while idle) and when all N
//! actors share one component.
//!
//! A further scenario registers `DENSITY_REGISTERED` actors (default 1,000) over the N distinct
//! components (each component under several actor names): a parked actor maps nothing, so its
//! cost does not depend on which component it has.
//!
//! Run: `DENSITY_ACTORS=16 cargo bench -p asya-host --bench density` (each distinct component
//! compiles in ~7 s on 2 cores and its artifact takes ~36 MB of cache; 1,000 distinct components
//! would take two hours and 36 GB, so N is a parameter and figures are per actor).
//!
//! Targets (this file and the README): RSS per idle parked actor <= 1 MiB, first message to a
//! parked actor p50 <= 5 ms, a fresh instance (resident cold - warm) p50 <= 1 ms.
//!
//! A message that does not end at `x-sink` (or never arrives) is counted as a failure by kind
//! and left out of the latencies; more than 1% of them fails the bench.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use asya_host::app::local::{ActorDef, LocalHost};
use asya_host::runtime::component_cache::ComponentCache;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{Outcomes, Report};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn leb128(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The component with a custom section appended: same code, different digest.
fn distinct(base: &[u8], i: usize, dir: &Path) -> PathBuf {
    let name = b"asya-density";
    let data = format!("{i}");
    let mut body = Vec::new();
    leb128(name.len(), &mut body);
    body.extend_from_slice(name);
    body.extend_from_slice(data.as_bytes());
    let mut bytes = base.to_vec();
    bytes.push(0);
    leb128(body.len(), &mut bytes);
    bytes.extend_from_slice(&body);
    let path = dir.join(format!("actor{i}.wasm"));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Figures {
    load: Duration,
    rss: u64,
    /// Median of the successful first messages, ms (NaN when none succeeded).
    cold: f64,
    /// Median of the successful second messages, ms.
    warm: f64,
    /// Every message's outcome.
    sent: Outcomes,
}

async fn measure(paths: &[PathBuf], cache: &Path, keep_loaded: bool) -> anyhow::Result<Figures> {
    let defs: Vec<ActorDef> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut def = ActorDef::new(format!("a{i}"), p.clone());
            def.limits.keep_loaded = keep_loaded;
            def
        })
        .collect();
    let started = Instant::now();
    let mut host = LocalHost::start(defs, ComponentCache::new(Some(cache.to_path_buf()))).await?;
    let load = started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss = support::rss_bytes();
    if std::env::var_os("DENSITY_SMAPS").is_some() {
        // Where the resident memory is: anonymous (heaps, linear memories) vs file/shmem.
        let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
        for line in rollup.lines().filter(|l| {
            [
                "Rss:",
                "Anonymous:",
                "Shared_Clean:",
                "Private_Clean:",
                "Private_Dirty:",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        }) {
            eprintln!("  [{} actors] {line}", paths.len());
        }
    }
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    let mut sent = Outcomes::new("messages");
    // At most 64 actors are messaged: enough for a median, and a 1,000-actor host stays quick.
    let step = (paths.len() / 64).max(1);
    for i in (0..paths.len()).step_by(step) {
        for round in 0..2 {
            let t = Instant::now();
            let done = support::round_trip(
                &mut host,
                &[format!("a{i}")],
                json!({"do": "echo"}),
                Duration::from_secs(30),
                &mut sent,
            )
            .await?;
            let took = t.elapsed();
            if !done.is_some_and(|done| sent.finished(&done)) {
                continue;
            }
            if round == 0 {
                cold.push(took)
            } else {
                warm.push(took)
            }
        }
    }
    host.shutdown().await?;
    Ok(Figures {
        load,
        rss,
        cold: support::median_ms(cold),
        warm: support::median_ms(warm),
        sent,
    })
}

/// One scenario in a fresh process (RSS of a process that ran another scenario is meaningless):
/// prints the messages' outcomes (JSON) on one line, then `load_ms rss_bytes cold_ms warm_ms`.
fn child(scenario: &str, n: usize, dir: &Path, cache: &Path) -> anyhow::Result<()> {
    let distinct: usize = std::env::var("DENSITY_DISTINCT")?.parse()?;
    let paths: Vec<PathBuf> = match scenario {
        "shared" => (0..n).map(|_| dir.join("actor0.wasm")).collect(),
        _ => (0..n)
            .map(|i| dir.join(format!("actor{}.wasm", i % distinct)))
            .collect(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let f = rt.block_on(measure(&paths, cache, scenario == "resident"))?;
    println!("{}", f.sent.to_json());
    println!("{} {} {} {}", ms(f.load), f.rss, f.cold, f.warm);
    Ok(())
}

/// Runs `scenario` with `n` actors in a child process; `label` names its messages' outcomes.
fn run_child(
    label: &str,
    scenario: &str,
    n: usize,
    distinct: usize,
    dir: &Path,
    cache: &Path,
) -> anyhow::Result<Figures> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .env("DENSITY_ROLE", scenario)
        .env("DENSITY_N", n.to_string())
        .env("DENSITY_DISTINCT", distinct.to_string())
        .env("DENSITY_DIR", dir)
        .env("DENSITY_CACHE", cache)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "scenario {scenario} failed");
    let text = String::from_utf8(out.stdout)?;
    let lines: Vec<&str> = text.lines().collect();
    anyhow::ensure!(lines.len() >= 2, "scenario {scenario} printed no figures");
    let mut sent = Outcomes::new(format!("messages, {label}"));
    sent.merge(&Outcomes::from_json(lines[lines.len() - 2])?);
    let v: Vec<f64> = lines[lines.len() - 1]
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(f64::NAN))
        .collect();
    anyhow::ensure!(v.len() == 4, "scenario {scenario} printed no figures");
    Ok(Figures {
        load: Duration::from_secs_f64(v[0] / 1e3),
        rss: v[1] as u64,
        cold: v[2],
        warm: v[3],
        sent,
    })
}

fn main() -> anyhow::Result<()> {
    if let Ok(role) = std::env::var("DENSITY_ROLE") {
        let n: usize = std::env::var("DENSITY_N")?.parse()?;
        let dir = PathBuf::from(std::env::var("DENSITY_DIR")?);
        let cache = PathBuf::from(std::env::var("DENSITY_CACHE")?);
        return child(&role, n, &dir, &cache);
    }
    let n: usize = std::env::var("DENSITY_ACTORS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
        .max(2);
    let base = std::fs::read(common::component("behaviours.behave", "payload"))?;
    let dir = tempfile::tempdir()?;
    for i in 0..n {
        distinct(&base, i, dir.path());
    }
    let registered: usize = std::env::var("DENSITY_REGISTERED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
        .max(n);
    let cache = tempfile::tempdir()?;
    let (d, c) = (dir.path(), cache.path());
    let fresh = run_child(
        &format!("{n} parked, empty compile cache"),
        "distinct",
        n,
        n,
        d,
        c,
    )?;
    let cached = run_child(&format!("{n} parked"), "distinct", n, n, d, c)?;
    let single = run_child("1 parked", "distinct", 1, n, d, c)?;
    let resident = run_child(&format!("{n} resident"), "resident", n, n, d, c)?;
    let shared = run_child(&format!("{n} sharing one component"), "shared", n, n, d, c)?;
    let many = run_child(
        &format!("{registered} parked"),
        "distinct",
        registered,
        n,
        d,
        c,
    )?;
    let per_actor =
        |f: &Figures, count: usize| (f.rss as f64 - single.rss as f64) / (count - 1) as f64;
    let mib = (1u64 << 20) as f64;
    // Cold - warm; NaN (not 0) when either side had no successful message.
    let fresh_instance = match resident.cold - resident.warm {
        d if d < 0.0 => 0.0,
        d => d,
    };
    println!("density: {n} distinct components, idle actors in one host (embedded transport), each scenario in a fresh process");
    println!("  concurrency: one message in flight at a time (a first and a second message to each of up to 64 actors)");
    println!(
        "  load all, empty compile cache:  {:>9.0} ms  ({:.0} ms per actor: Cranelift)",
        ms(fresh.load),
        ms(fresh.load) / n as f64
    );
    println!(
        "  load all, warm compile cache:   {:>9.1} ms  ({:.2} ms per actor)  ratio {:.0}x faster",
        ms(cached.load),
        ms(cached.load) / n as f64,
        fresh.load.as_secs_f64() / cached.load.as_secs_f64()
    );
    println!(
        "  host RSS with 1 actor {:.1} MiB, with {n} parked: {:.1} MiB, {n} resident: {:.1} MiB",
        single.rss as f64 / mib,
        cached.rss as f64 / mib,
        resident.rss as f64 / mib
    );
    println!(
        "  RSS per idle actor, parked (default):      {:>6.3} MiB",
        per_actor(&cached, n) / mib
    );
    println!(
        "  RSS per idle actor, resident (keepLoaded): {:>6.2} MiB   ratio resident/parked {:.0}x",
        per_actor(&resident, n) / mib,
        per_actor(&resident, n) / per_actor(&cached, n).max(1.0)
    );
    println!(
        "  RSS per idle actor, one shared component:  {:>6.3} MiB",
        per_actor(&shared, n) / mib
    );
    println!(
        "  {registered} registered actors over the {n} components: host RSS {:.1} MiB, {:.3} MiB per actor, registered in {:.1} s",
        many.rss as f64 / mib,
        per_actor(&many, registered) / mib,
        many.load.as_secs_f64()
    );
    println!(
        "  first message to a cold (parked) actor p50: {:>6.2} ms   ({registered} actors: {:.2} ms)   warm p50: {:.2} ms   ratio {:.1}x",
        cached.cold,
        many.cold,
        cached.warm,
        cached.cold / cached.warm
    );
    println!(
        "  first message to a resident actor with no instance p50: {:>6.2} ms, shared component {:.2} ms",
        resident.cold,
        shared.cold
    );
    println!("  fresh instance (resident cold - warm) p50:  {fresh_instance:>6.2} ms");
    let mut report = Report::new();
    for f in [&fresh, &cached, &single, &resident, &shared, &many] {
        report.outcomes(&f.sent);
    }
    report
        .at_most(
            "RSS per idle parked actor",
            1.0,
            per_actor(&cached, n) / mib,
            " MiB",
        )
        .at_most(
            "first message to a parked actor p50",
            5.0,
            cached.cold,
            " ms",
        )
        .at_most("fresh instance p50", 1.0, fresh_instance, " ms")
        .finish()
}
