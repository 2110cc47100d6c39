//! Benchmark: a shared host pool. One `asya-host run --pool` process on a real nats-server serves
//! `POOL_ACTORS` actors (default 500) from `POOL_NAMESPACES` tenants (default 50), as the
//! operator's pool Deployment does. It reports:
//!
//! - the time to register an actor: at start-up (all of them) and in the running host (a batch
//!   of new manifests picked up by the hot reload), per actor;
//! - idle RSS per actor (the pool's RSS less a one-actor host's, over the extra actors);
//! - first message to a parked actor, p50 / p99 (publish to stored result), and a warm one;
//! - a noisy tenant: one tenant's actor spinning into its CPU deadline at full load, while
//!   another tenant's p50 is measured against its quiet figure (target within 2x);
//! - the same actors laid out one Deployment per actor (`placement: dedicated`): pods, and memory
//!   as the one-actor host's RSS times the actors, against the pool's one pod.
//!
//! Only messages whose stored result is `succeeded` count in the latencies; a missing or failed
//! result is a failure by kind, and more than 1% of them fails the bench.
//!
//! Run: `cargo bench -p asya-host --bench pool_density` (short: `POOL_ACTORS=100
//! POOL_NAMESPACES=10`).

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use anyhow::{Context, Result};
use asya_host::message::envelope::{Envelope, Route};
use common::nats::{HostProcess, NatsServer};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};
use support::{Outcomes, Report};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn tenant(i: usize) -> String {
    format!("tenant-{i:03}")
}

fn manifest(namespace: &str, name: &str, component: &Path, sandbox: &str) -> String {
    format!(
        "apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         spec:\n  handler: behaviours.behave\n  component: {}\n  sandbox: {sandbox}\n",
        component.display()
    )
}

/// Writes the manifests of `actors` spread over `namespaces` tenants (`offset` numbers the
/// actors after those already written); returns (namespace, actor) of each.
fn write_actors(
    dir: &Path,
    component: &Path,
    namespaces: usize,
    actors: usize,
    offset: usize,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in offset..offset + actors {
        let (ns, name) = (tenant(i % namespaces), format!("actor-{i:04}"));
        // The noisy tenant's actor: bounded by one instance and its CPU deadline, the policy
        // that keeps one tenant from taking the pool's cores.
        let sandbox = if i == 0 {
            "{cpuTimeout: 300ms, maxInstances: 1, maxConcurrency: 1}"
        } else {
            "{}"
        };
        std::fs::write(
            dir.join(format!("{ns}.{name}.yaml")),
            manifest(&ns, &name, component, sandbox),
        )
        .unwrap();
        out.push((ns, name));
    }
    out
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// `text` without terminal colour sequences (the host's log has them).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The last `elapsed_ms=` of a log line containing `what`, waiting up to `timeout` for it to
/// appear after `skip` such lines.
fn logged_ms(log: &Path, what: &str, skip: usize, timeout: Duration) -> Result<f64> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = strip_ansi(&std::fs::read_to_string(log).unwrap_or_default());
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(what)).collect();
        if let Some(line) = lines.get(skip) {
            let value = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("elapsed_ms="))
                .context("no elapsed_ms in the log line")?;
            return Ok(value.parse()?);
        }
        anyhow::ensure!(Instant::now() < deadline, "no '{what}' in the host's log");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends one message to each actor in turn and waits for its stored result; records
/// publish-to-result latencies of the successful ones.
async fn one_at_a_time(
    client: &async_nats::Client,
    results: &mut HashMap<String, async_nats::Subscriber>,
    actors: &[(String, String)],
    payload: serde_json::Value,
    outcomes: &mut Outcomes,
) -> Result<Histogram<u64>> {
    let js = async_nats::jetstream::new(client.clone());
    let mut latency = Histogram::<u64>::new(3)?;
    let timeout = Duration::from_secs(20);
    for (ns, actor) in actors {
        if !results.contains_key(ns) {
            let sub = client
                .subscribe(asya_spec::names::results_subject(ns))
                .await?;
            results.insert(ns.clone(), sub);
        }
        let stored = results.get_mut(ns).expect("subscribed");
        let env = Envelope::new(
            Route::through(std::slice::from_ref(actor)).unwrap(),
            payload.clone(),
            "2026-12-02T00:00:00Z",
        );
        let t = Instant::now();
        js.publish(asya_spec::names::subject(ns, actor), env.to_bytes().into())
            .await?
            .await?;
        let deadline = t + timeout;
        let result = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(msg) = tokio::time::timeout(left, stored.next()).await else {
                break None;
            };
            let msg = msg.context("the results subscription ended")?;
            let Ok(result) = serde_json::from_slice::<Envelope>(&msg.payload) else {
                continue;
            };
            if result.id == env.id {
                break Some(result);
            }
        };
        let took = t.elapsed();
        match result {
            Some(result) if outcomes.ended(&result) => {
                latency.record(took.as_micros() as u64)?;
            }
            Some(_) => {}
            None => outcomes.fail(format!("no stored result within {timeout:?}")),
        }
    }
    Ok(latency)
}

fn p(h: &Histogram<u64>, q: f64) -> f64 {
    support::quantile(h, q) / 1000.0
}

fn main() -> Result<()> {
    let actors = env_usize("POOL_ACTORS", 500);
    let namespaces = env_usize("POOL_NAMESPACES", 50).clamp(2, actors);
    let added = env_usize("POOL_ADDED", 100);
    let sampled = env_usize("POOL_SAMPLED", 200).min(actors - 1);
    let component = common::component("behaviours.behave", "payload");
    let server = NatsServer::start();
    let work = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    // The one-actor host: what each pod of the one-Deployment-per-actor layout runs.
    let single_dir = work.path().join("single");
    std::fs::create_dir_all(&single_dir)?;
    std::fs::write(
        single_dir.join("a.yaml"),
        manifest("solo", "only", &component, "{}"),
    )?;
    let single = HostProcess::start(&server.url(), &single_dir, &[], &[]);
    std::thread::sleep(Duration::from_secs(2));
    let single_rss = rss_bytes(single.child.id());
    drop(single);

    // The pool.
    let dir = work.path().join("pool");
    std::fs::create_dir_all(&dir)?;
    let members = write_actors(&dir, &component, namespaces, actors, 0);
    let log = work.path().join("pool.log");
    let spawned = Instant::now();
    let host = HostProcess::start_logging(
        &server.url(),
        &dir,
        &[],
        &["--pool", "bench/pool", "--reload-interval", "200ms"],
        Some(&log),
    );
    let ready_after = spawned.elapsed();
    let startup_ms = logged_ms(&log, "actors registered", 0, Duration::from_secs(5))?;
    std::thread::sleep(Duration::from_secs(3));
    let pool_rss = rss_bytes(host.child.id());

    // Registering in the running host: a batch of new manifests, picked up by the hot reload.
    // The RSS they add, over their number, is the idle cost of one more pooled actor.
    let new = write_actors(&dir, &component, namespaces, added, actors);
    let reload_ms = logged_ms(&log, "manifests reloaded", 0, Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_secs(3));
    let grown_rss = rss_bytes(host.child.id());
    let per_actor_rss = grown_rss.saturating_sub(pool_rss) as f64 / added as f64;

    let mut cold_out = Outcomes::new("first messages to parked actors");
    let mut warm_out = Outcomes::new("second messages (warm)");
    let mut quiet_out = Outcomes::new("tenant B, quiet");
    let mut noisy_out = Outcomes::new("tenant B, noisy neighbour");
    let (cold, warm, quiet, noisy) = runtime.block_on(async {
        let client = async_nats::connect(server.url()).await?;
        let mut results = HashMap::new();
        // Parked actors (never called) across every tenant, and the newly added ones.
        let mut sample: Vec<(String, String)> = members[1..=sampled].to_vec();
        sample.extend(new.iter().take(20).cloned());
        let echo = json!({"do": "echo"});
        let cold =
            one_at_a_time(&client, &mut results, &sample, echo.clone(), &mut cold_out).await?;
        let warm =
            one_at_a_time(&client, &mut results, &sample, echo.clone(), &mut warm_out).await?;
        // Tenant B's actor, quiet; then with tenant A's actor spinning at full load.
        let b = vec![members[1].clone(); 60];
        let quiet = one_at_a_time(&client, &mut results, &b, echo.clone(), &mut quiet_out).await?;
        let js = async_nats::jetstream::new(client.clone());
        let (a_ns, a_actor) = &members[0];
        for _ in 0..40 {
            let env = Envelope::new(
                Route::through(std::slice::from_ref(a_actor)).unwrap(),
                json!({"do": "loop"}),
                "2026-12-02T00:00:00Z",
            );
            js.publish(
                asya_spec::names::subject(a_ns, a_actor),
                env.to_bytes().into(),
            )
            .await?
            .await?;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let noisy = one_at_a_time(&client, &mut results, &b, echo, &mut noisy_out).await?;
        anyhow::Ok((cold, warm, quiet, noisy))
    })?;
    drop(host);

    let mib = |b: f64| b / (1024.0 * 1024.0);
    let register_start = startup_ms / actors as f64;
    let register_running = reload_ms / added as f64;
    let (quiet_p50, noisy_p50) = (p(&quiet, 0.5), p(&noisy, 0.5));
    println!(
        "pool density: {actors} actors from {namespaces} tenants in one `asya-host run --pool` (nats-server, one shared component)"
    );
    println!("  concurrency: one message in flight at a time; the noisy tenant: 40 CPU-bound messages queued at once");
    println!(
        "  start-up: ready after {:.2} s; registering all {actors}: {startup_ms:.0} ms = {register_start:.2} ms/actor",
        ready_after.as_secs_f64()
    );
    println!(
        "  running host: {added} actors added by hot reload in {reload_ms:.0} ms = {register_running:.2} ms/actor"
    );
    println!(
        "  RSS: pool of {actors} {:.1} MiB, of {} {:.1} MiB: {:.1} KiB per added idle actor; one-actor host {:.1} MiB",
        mib(pool_rss as f64),
        actors + added,
        mib(grown_rss as f64),
        per_actor_rss / 1024.0,
        mib(single_rss as f64),
    );
    println!(
        "  first message to a parked actor p50 / p99: {:.2} / {:.2} ms ({} actors); warm p50 {:.2} ms",
        p(&cold, 0.5),
        p(&cold, 0.99),
        cold.len(),
        p(&warm, 0.5)
    );
    println!(
        "  tenant B p50: quiet {quiet_p50:.2} ms, tenant A at full CPU load {noisy_p50:.2} ms ({:.2}x)",
        noisy_p50 / quiet_p50
    );
    println!(
        "  layout cost for {actors} actors: pool 1 pod, {:.0} MiB | one Deployment per actor: {actors} pods, {:.0} MiB ({:.0}x the memory)",
        mib(pool_rss as f64),
        mib(single_rss as f64 * actors as f64),
        single_rss as f64 * actors as f64 / pool_rss as f64
    );
    let mut report = Report::new();
    report
        .outcomes(&cold_out)
        .outcomes(&warm_out)
        .outcomes(&quiet_out)
        .outcomes(&noisy_out)
        .at_most(
            "register an actor in a running host",
            1.0,
            register_running,
            " ms",
        )
        .at_most("register an actor at start-up", 1.0, register_start, " ms")
        .at_most(
            "idle RSS per pooled actor",
            1024.0,
            per_actor_rss / 1024.0,
            " KiB",
        )
        .at_most(
            "first message to a parked actor p50",
            5.0,
            p(&cold, 0.5),
            " ms",
        )
        .at_most(
            "noisy tenant: other tenant's p50 vs quiet",
            2.0,
            noisy_p50 / quiet_p50,
            "x",
        );
    report.finish()
}
