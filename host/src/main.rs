//! `asya-host`: the asya host binary.
//!
//! `asya-host dev` runs a pipeline of WASM actors in this one process on the embedded transport
//! (what `asya dev` calls after building the components).

use anyhow::{bail, Context, Result};
use asya_host::component_cache::{default_cache_dir, ComponentCache};
use asya_host::end_actors::Finished;
use asya_host::envelope::{is_end_actor, Envelope, SUMP};
use asya_host::local::{ActorDef, LocalHost};
use asya_host::manifest;
use clap::{Parser, Subcommand};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "asya-host",
    version,
    about = "The asya host: sandboxed WASM actors and their sidecar"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline locally: every actor in this process, on the embedded transport.
    Dev(DevArgs),
}

#[derive(clap::Args)]
struct DevArgs {
    /// Directory of AsyncActor manifests (YAML).
    #[arg(long)]
    manifests: PathBuf,
    /// Built component of an actor, as NAME=PATH (repeat for each actor).
    #[arg(long = "component", value_name = "NAME=PATH", required = true)]
    components: Vec<String>,
    /// The route every payload takes, comma-separated actor names.
    #[arg(long, value_delimiter = ',', required = true)]
    route: Vec<String>,
    /// One payload (a JSON object).
    #[arg(long, conflicts_with = "input")]
    payload: Option<String>,
    /// A file of JSON payloads, one per line ('-' for stdin); results are written as JSON lines.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Show each hop as it happens (default: on for one payload, off for a batch).
    #[arg(long, overrides_with = "no_hops")]
    hops: bool,
    /// Do not show hops.
    #[arg(long)]
    no_hops: bool,
    /// Payloads in flight at once in a batch.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Give up waiting for a result after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Write results here instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("ASYA_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_target(true)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let code = runtime.block_on(async {
        match cli.command {
            Command::Dev(args) => dev(args).await,
        }
    })?;
    std::process::exit(code);
}

fn parse_payload(text: &str, origin: &str) -> Result<Value> {
    let value: Value =
        serde_json::from_str(text).with_context(|| format!("{origin}: the payload is not JSON"))?;
    if !value.is_object() {
        bail!(
            "{origin}: the payload must be a JSON object, got {}",
            text.trim()
        );
    }
    Ok(value)
}

fn read_payloads(args: &DevArgs) -> Result<(Vec<Value>, bool)> {
    if let Some(text) = &args.payload {
        return Ok((vec![parse_payload(text, "--payload")?], true));
    }
    let reader: Box<dyn BufRead> = match args.input.as_deref() {
        None => bail!("give --payload JSON or --input FILE ('-' for stdin)"),
        Some(p) if p.as_os_str() == "-" => Box::new(std::io::stdin().lock()),
        Some(p) => Box::new(std::io::BufReader::new(
            std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?,
        )),
    };
    let mut payloads = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.context("reading the input")?;
        if line.trim().is_empty() {
            continue;
        }
        payloads.push(parse_payload(&line, &format!("input line {}", n + 1))?);
    }
    Ok((payloads, false))
}

async fn dev(args: DevArgs) -> Result<i32> {
    let (payloads, single) = read_payloads(&args)?;
    let mut components = HashMap::new();
    for spec in &args.components {
        let (name, path) = spec
            .split_once('=')
            .with_context(|| format!("--component '{spec}' is not NAME=PATH"))?;
        components.insert(name.to_owned(), PathBuf::from(path));
    }
    let manifests = manifest::load_dir(&args.manifests)?;
    let mut actors = Vec::new();
    for (_, actor) in &manifests {
        let Some(path) = components.remove(actor.name()) else {
            continue;
        };
        actors.push(ActorDef::from_manifest(actor, path)?);
    }
    if let Some(name) = components.keys().next() {
        bail!(
            "--component {name}=...: no AsyncActor named '{name}' in {}",
            args.manifests.display()
        );
    }
    for step in &args.route {
        if !is_end_actor(step) && !actors.iter().any(|a| &a.name == step) {
            bail!(
                "route step '{step}' has no actor (known: {})",
                actors
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let started = Instant::now();
    let mut host = LocalHost::start(actors, ComponentCache::new(default_cache_dir())).await?;
    let cached = host.loaded.iter().filter(|l| l.from_cache).count();
    eprintln!(
        "asya host: {} actors on the embedded transport, loaded in {} ms ({cached}/{} compiled components from cache)",
        host.loaded.len(),
        started.elapsed().as_millis(),
        host.loaded.len()
    );
    for l in &host.loaded {
        eprintln!(
            "  {:<18} {:<38} {:<8} {:>5} ms{}",
            l.name,
            l.handler,
            format!("{:?}", l.mode).to_lowercase(),
            l.load_time.as_millis(),
            if l.from_cache {
                " (cached)"
            } else {
                " (compiled)"
            }
        );
    }
    let show_hops = (single || args.hops) && !args.no_hops;
    let printer = show_hops.then(|| {
        let mut tap = host.tap();
        let t0 = Instant::now();
        tokio::spawn(async move {
            while let Some(hop) = tap.recv().await {
                eprintln!(
                    "{}",
                    describe_hop(t0.elapsed(), &hop.destination, &hop.bytes)
                );
            }
        })
    });
    let timeout = Duration::from_secs(args.timeout);
    let results = host
        .run_batch(&args.route, payloads, args.window, timeout)
        .await?;
    // Let the hop printer catch up before the final output.
    tokio::time::sleep(Duration::from_millis(20)).await;
    if let Some(printer) = printer {
        printer.abort();
    }
    host.shutdown().await?;
    write_results(&args, &results, single)?;
    let failed = results.iter().filter(|r| r.end_actor == SUMP).count();
    if failed > 0 {
        eprintln!(
            "{failed} of {} messages failed (ended at x-sump)",
            results.len()
        );
        return Ok(2);
    }
    Ok(0)
}

fn describe_hop(elapsed: Duration, destination: &str, bytes: &[u8]) -> String {
    let ms = elapsed.as_secs_f64() * 1000.0;
    let Ok(env) = serde_json::from_slice::<Envelope>(bytes) else {
        return format!("{ms:>9.2} ms  (raw bytes) → {destination}");
    };
    let short_id = &env.id[..env.id.len().min(8)];
    let status = env.status.as_ref();
    let from = if is_end_actor(destination) {
        status.and_then(|s| s.actor.clone()).unwrap_or_default()
    } else {
        env.route
            .prev
            .last()
            .cloned()
            .unwrap_or_else(|| "client".into())
    };
    let mut line = format!("{ms:>9.2} ms  {short_id}  {from:>18} → {destination}");
    if let Some(status) = status {
        if is_end_actor(destination) {
            line.push_str(&format!(
                "  [{}]",
                status.reason.map(|r| r.as_str()).unwrap_or("?")
            ));
            if let Some(err) = &status.error {
                line.push_str(&format!(" {}: {}", err.kind, err.message));
            }
        } else if !env.route.next.is_empty() {
            line.push_str(&format!("  (then {})", env.route.next.join(" → ")));
        }
    }
    line
}

fn write_results(args: &DevArgs, results: &[Finished], single: bool) -> Result<()> {
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    for result in results {
        if single {
            serde_json::to_writer_pretty(&mut out, &result.envelope)?;
        } else {
            serde_json::to_writer(&mut out, &result.envelope)?;
        }
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}
