//! `asya-host`: the asya host binary.
//!
//! `asya-host dev` runs a pipeline of WASM actors in this one process on the embedded transport
//! (what `asya dev` calls after building the components).

/// mimalloc: the host allocates small JSON values on every hop; glibc malloc showed up in profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{bail, Context, Result};
use asya_host::actor::manifest;
use asya_host::app::local::{self, LocalHost};
use asya_host::app::serve::{self, RunConfig};
use asya_host::message::envelope::Route;
use asya_host::message::envelope::{is_end_actor, Envelope, SUMP};
use asya_host::runtime::component_cache::{default_cache_dir, ComponentCache};
use asya_host::transport::backend::{BackendConfig, TransportKind};
use asya_host::transport::nats::{self, NatsSettings, NatsTransport};
use asya_host::transport::results::Finished;
use asya_host::transport::{Outbound, Transport};
use clap::{Parser, Subcommand};
use serde_json::Value;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
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
    /// Serve every actor of a manifest directory from NATS JetStream until SIGTERM.
    Run(RunArgs),
    /// Publish a payload into a route on NATS; with --wait, print the final envelope.
    Send(SendArgs),
    /// Pull an `oci://` component into the cache (verifying its digest) and print where it is.
    Pull {
        /// `oci://registry/repo:tag` or `oci://registry/repo@sha256:...`.
        reference: String,
        /// Also copy the component here.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Write the native-Python runtime (standard library only) under DIR, for a user image to
    /// run as `PYTHONPATH=DIR python3 -m asya.runtime` (the operator's init container does).
    InstallRuntime {
        /// Where to write the `asya` package.
        dir: PathBuf,
    },
    /// Describe a component: handler, mode, SDK version, digest, WIT imports and exports (JSON).
    Inspect {
        /// The component file.
        component: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// The broker: nats (JetStream), rabbitmq or sqs.
    #[arg(long, env = "ASYA_TRANSPORT", value_enum, default_value = "nats")]
    transport: TransportKind,
    /// NATS server URL (--transport nats).
    #[arg(long, env = "ASYA_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// AMQP URL of RabbitMQ, e.g. amqp://user:password@rabbitmq:5672/%2f (--transport rabbitmq).
    #[arg(long, env = "ASYA_RABBITMQ_URL", hide_env_values = true)]
    rabbitmq_url: Option<String>,
    /// Where results and fan-ins live on RabbitMQ and SQS: `dynamodb` (the default; AWS settings
    /// from the usual AWS_* environment) or a nats:// URL (JetStream buckets).
    #[arg(long, env = "ASYA_STORE")]
    store: Option<String>,
    /// The DynamoDB table of results and fan-ins (created when missing).
    #[arg(long, env = "ASYA_DYNAMODB_TABLE", default_value = asya_spec::names::DEFAULT_STATE_TABLE)]
    dynamodb_table: String,
    /// Directory of AsyncActor manifests (YAML).
    #[arg(long, env = "ASYA_MANIFESTS")]
    manifests: PathBuf,
    /// Component of an actor, as NAME=PATH (overrides spec.component).
    #[arg(long = "component", value_name = "NAME=PATH")]
    components: Vec<String>,
    /// Do not create missing streams, consumers, buckets, queues and tables (the operator owns
    /// them).
    #[arg(long)]
    no_create: bool,
    /// Redeliver a message not acknowledged within this time (e.g. 60s): JetStream's ack wait,
    /// SQS's visibility timeout (extended while a handler runs).
    #[arg(long, default_value = "60s")]
    ack_wait: String,
    /// Messages fetched per pull (RabbitMQ: prefetch; SQS: per receive, at most 10).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// How long results stay in a namespace's results bucket (the bucket's max_age).
    #[arg(long, default_value = "24h")]
    results_ttl: String,
    /// A fan-out whose children have not all reached the aggregator this long after its first
    /// part did ends at x-sump (or its try frame) with FanInTimeout.
    #[arg(long, default_value = "1h")]
    fanin_timeout: String,
    /// /healthz fails (so Kubernetes restarts the pod) once a queue loop, end actor or fan-in
    /// has stayed down this long despite restarts.
    #[arg(long, default_value = "60s")]
    unhealthy_after: String,
    /// The results TTL of one namespace, as NAMESPACE=DURATION (repeat for several).
    #[arg(long = "results-ttl-for", value_name = "NAMESPACE=DURATION")]
    results_ttl_for: Vec<String>,
    /// Serve /metrics, /healthz and /readyz here.
    #[arg(long, default_value = "127.0.0.1:9090")]
    http: String,
    /// Time allowed to finish in-flight messages after SIGTERM.
    #[arg(long, default_value = "30s")]
    grace: String,
    /// Reject inputs larger than this many bytes (default 16 MiB).
    #[arg(long)]
    max_message_bytes: Option<usize>,
    /// How often the manifest directory is checked for added, changed or removed actors
    /// (`0` turns reloading off).
    #[arg(long, default_value = "2s")]
    reload_interval: String,
    /// Socket of a `runtime: python` actor's runtime, as NAME=PATH
    /// (default /var/run/asya/runtime.sock).
    #[arg(long = "python-socket", value_name = "NAME=PATH")]
    python_sockets: Vec<String>,
    /// Publish messages that end here to the x-sink / x-sump queues, for the end actors to
    /// store, instead of storing them in the results bucket directly (one more queue hop per
    /// message; for deployments where something else consumes those queues).
    #[arg(long)]
    end_queues: bool,
    /// Where the Secrets of `spec.secretRefs` are mounted, one directory per Secret and one
    /// file per key (the operator mounts them here); a wasm handler sees their keys as env.
    #[arg(long, env = "ASYA_SECRETS_DIR", default_value = asya_host::actor::secrets::DEFAULT_SECRETS_DIR)]
    secrets_dir: PathBuf,
    /// Serve a shared host pool (NAMESPACE/NAME, as the operator renders it): an actor that
    /// does not load is reported and left out while the others start and serve, and an empty
    /// manifest directory is a pool without members yet.
    #[arg(long, env = "ASYA_POOL")]
    pool: Option<String>,
}

#[derive(clap::Args)]
struct SendArgs {
    /// NATS server URL.
    #[arg(long, env = "ASYA_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// Namespace of the actors.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Route, comma-separated actor names.
    #[arg(long, value_delimiter = ',', required = true)]
    route: Vec<String>,
    /// The payload, a JSON object.
    #[arg(long)]
    payload: String,
    /// Wait for the message to end and print the final envelope.
    #[arg(long)]
    wait: bool,
    /// Seconds to wait with --wait.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

#[derive(clap::Args)]
struct DevArgs {
    #[command(flatten)]
    actors: local::DevActors,
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
            Command::Run(args) => run(args).await,
            Command::Send(args) => send(args).await,
            Command::Pull { reference, output } => pull(reference, output).await,
            Command::Inspect { component } => inspect(component).await,
            Command::InstallRuntime { dir } => {
                asya_host::runtime::python_files::install(&dir)?;
                eprintln!("asya runtime written to {}", dir.display());
                Ok(0)
            }
        }
    })?;
    std::process::exit(code);
}

async fn run(args: RunArgs) -> Result<i32> {
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing the SIGTERM handler");
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            }
            shutdown.cancel();
        });
    }
    let ack_wait = manifest::parse_duration(&args.ack_wait).context("--ack-wait")?;
    let config = RunConfig {
        backend: BackendConfig {
            transport: args.transport,
            nats_url: args.nats,
            nats: NatsSettings {
                create: !args.no_create,
                ack_wait,
                batch: args.batch.max(1),
                results_ttl: manifest::parse_duration(&args.results_ttl)
                    .context("--results-ttl")?,
                ..NatsSettings::default()
            },
            rabbitmq_url: args.rabbitmq_url,
            store: args.store,
            dynamodb_table: args.dynamodb_table,
            create: !args.no_create,
            ack_wait,
            batch: args.batch.max(1),
        },
        manifests: args.manifests,
        components: local::parse_named_paths(&args.components)?,
        fanin_timeout: manifest::parse_duration(&args.fanin_timeout).context("--fanin-timeout")?,
        unhealthy_after: manifest::parse_duration(&args.unhealthy_after)
            .context("--unhealthy-after")?,
        results_ttl_for: args
            .results_ttl_for
            .iter()
            .map(|spec| {
                let (namespace, ttl) = spec.split_once('=').with_context(|| {
                    format!("--results-ttl-for '{spec}' is not NAMESPACE=DURATION")
                })?;
                let ttl = manifest::parse_duration(ttl)
                    .with_context(|| format!("--results-ttl-for {spec}"))?;
                Ok((namespace.to_owned(), ttl))
            })
            .collect::<Result<_>>()?,
        http_addr: Some(
            args.http
                .parse()
                .with_context(|| format!("--http {}", args.http))?,
        ),
        grace: manifest::parse_duration(&args.grace).context("--grace")?,
        max_message_bytes: args.max_message_bytes,
        cache: ComponentCache::new(default_cache_dir()),
        python_sockets: local::parse_named_paths(&args.python_sockets)?,
        reload_interval: match args.reload_interval.trim() {
            "0" | "0s" | "off" => None,
            every => Some(manifest::parse_duration(every).context("--reload-interval")?),
        },
        end_queues: args.end_queues,
        secrets_dir: args.secrets_dir,
        pool: args.pool,
    };
    serve::run(config, shutdown).await?;
    Ok(0)
}

async fn send(args: SendArgs) -> Result<i32> {
    let payload = parse_payload(&args.payload, "--payload")?;
    let route = Route::through(&args.route).context("--route is empty")?;
    let envelope = Envelope::new(route, payload, &asya_host::message::envelope::now_rfc3339());
    let client = nats::connect(&args.nats).await?;
    let transport = NatsTransport::new(client, &args.namespace, NatsSettings::default()).await?;
    transport
        .publish(
            &envelope.route.curr,
            Outbound {
                bytes: envelope.to_bytes(),
                dedup_id: format!("{}:client", envelope.id),
            },
        )
        .await?;
    if !args.wait {
        println!("{}", envelope.id);
        return Ok(0);
    }
    let results = transport.results().await?;
    let finished = results
        .wait(&envelope.id, Duration::from_secs(args.timeout))
        .await?;
    println!("{}", serde_json::to_string_pretty(&finished)?);
    let failed = finished.route.curr == SUMP;
    Ok(if failed { 2 } else { 0 })
}

async fn pull(reference: String, output: Option<PathBuf>) -> Result<i32> {
    let root = default_cache_dir().context("no cache directory (set ASYA_CACHE_DIR)")?;
    let fetched = asya_host::runtime::oci::OciFetcher::new(&root)
        .fetch(&reference)
        .await?;
    if let Some(output) = &output {
        std::fs::copy(&fetched.path, output)
            .with_context(|| format!("writing {}", output.display()))?;
    }
    println!(
        "{}",
        serde_json::json!({
            "reference": reference,
            "manifest_digest": fetched.manifest_digest,
            "digest": fetched.digest,
            "path": output.unwrap_or(fetched.path),
            "from_cache": fetched.from_cache,
        })
    );
    Ok(0)
}

async fn inspect(component: PathBuf) -> Result<i32> {
    let engine = asya_host::runtime::sandbox::SandboxEngine::new()?;
    let loaded = ComponentCache::new(default_cache_dir()).load_file_in(&engine, &component)?;
    let ty = loaded.component.component_type();
    let imports: Vec<String> = ty
        .imports(loaded.component.engine())
        .map(|(name, _)| name.to_owned())
        .collect();
    let exports: Vec<String> = ty
        .exports(loaded.component.engine())
        .map(|(name, _)| name.to_owned())
        .collect();
    let executor = asya_host::runtime::wasm::WasmExecutor::load(
        "inspect",
        engine.clone(),
        &loaded,
        asya_host::runtime::sandbox::SandboxLimits::default(),
    )
    .await?;
    let d = executor.descriptor();
    println!(
        "{}",
        serde_json::json!({
            "handler": d.handler,
            "mode": d.mode,
            "sdk_version": d.sdk_version,
            "digest": loaded.digest,
            "imports": imports,
            "exports": exports,
        })
    );
    Ok(0)
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
    let actors = local::actor_defs(&args.actors)?;
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
