//! `asya-gateway`: `serve` in front of NATS JetStream (hosts run separately and report each
//! hop), or `dev`: the gateway and every actor of a pipeline in one process on the embedded
//! transport, with no servers.

use anyhow::{Context, Result};
use asya_gateway::api;
use asya_gateway::config::Config;
use asya_gateway::log::{self, MemoryTaskLog};
use asya_gateway::nats_log::NatsTaskLog;
use asya_gateway::service::{Backends, Gateway, Namespace};
use asya_host::app::local::{self, LocalHost};
use asya_host::runtime::component_cache::{default_cache_dir, ComponentCache};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Connections the kernel queues before the gateway accepts them.
const LISTEN_BACKLOG: u32 = 4096;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "asya-gateway",
    version,
    about = "Submit work to asya actors over HTTP and MCP, watch it, pause it for a human."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve in front of NATS JetStream (hosts run separately).
    Serve(ServeArgs),
    /// Run the gateway and a pipeline's actors in one process, on the embedded transport.
    Dev(DevArgs),
    /// Check a configuration file and say what it holds.
    Check {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ASYA_GATEWAY_LISTEN", default_value = "0.0.0.0:8089")]
    listen: SocketAddr,
    /// The configuration file (tenants, key digests, limits, tools).
    #[arg(long, env = "ASYA_GATEWAY_CONFIG")]
    config: PathBuf,
    /// NATS server URL.
    #[arg(long, env = "ASYA_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats: String,
}

#[derive(clap::Args)]
struct DevArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8089")]
    listen: SocketAddr,
    /// The configuration file (tenants, key digests, limits, tools).
    #[arg(long)]
    config: PathBuf,
    #[command(flatten)]
    actors: local::DevActors,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("ASYA_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Dev(args) => dev(args).await,
            Command::Check { config } => {
                let config = Config::load(&config)?;
                println!(
                    "ok: {} tenants, {} tools",
                    config.tenants.len(),
                    config.tools.len()
                );
                Ok(())
            }
        }
    })
}

/// Cancelled on SIGINT or SIGTERM.
fn shutdown_signal() -> CancellationToken {
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        }
        token.cancel();
    });
    shutdown
}

async fn listen(
    gateway: Arc<Gateway>,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> Result<()> {
    let tools = gateway.config().tools.len();
    // A deep accept queue: a burst of clients (a thousand tasks created at once, each with its
    // event stream) is queued, not dropped and retried a second later by the client's kernel.
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }?;
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .with_context(|| format!("listening on {addr}"))?;
    let listener = socket
        .listen(LISTEN_BACKLOG)
        .with_context(|| format!("listening on {addr}"))?;
    let bound = listener.local_addr()?;
    eprintln!(
        "asya gateway: listening on http://{bound}/ (MCP: http://{bound}/mcp), {tools} tools"
    );
    let app = api::router(gateway, shutdown.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("serving HTTP")
}

async fn serve(args: ServeArgs) -> Result<()> {
    let config = Config::load(&args.config)?;
    let client = asya_host::transport::nats::connect(&args.nats).await?;
    let shutdown = shutdown_signal();
    let log = Arc::new(NatsTaskLog::open(client.clone(), shutdown.clone()).await?);
    let backends = Backends::Nats {
        client,
        opened: Default::default(),
    };
    // Open every configured namespace now, so a bad server fails at start, not at first call.
    for namespace in config.namespaces() {
        backends
            .namespace(&namespace)
            .await
            .with_context(|| format!("opening namespace {namespace}"))?;
    }
    let gateway = Arc::new(Gateway::new(config, log, backends));
    listen(gateway, args.listen, shutdown).await
}

async fn dev(args: DevArgs) -> Result<()> {
    let config = Config::load(&args.config)?;
    let actors = local::actor_defs(&args.actors)?;
    for tool in &config.tools {
        for step in &tool.route {
            if step != asya_spec::names::PAUSE && !actors.iter().any(|a| &a.name == step) {
                anyhow::bail!(
                    "tool {:?}: route step {step:?} has no actor (known: {})",
                    tool.name,
                    actors
                        .iter()
                        .map(|a| a.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
    }
    let started = Instant::now();
    let log = Arc::new(MemoryTaskLog::default());
    let host = LocalHost::start_with(
        actors,
        ComponentCache::new(default_cache_dir()),
        Some(log::reporter(&log)),
    )
    .await?;
    eprintln!(
        "asya host: {} actors on the embedded transport, loaded in {} ms",
        host.loaded.len(),
        started.elapsed().as_millis()
    );
    let backends = Backends::Local(Namespace {
        transport: host.transport(),
        results: host.results_store(),
    });
    let gateway = Arc::new(Gateway::new(config, log, backends));
    let shutdown = shutdown_signal();
    let served = listen(gateway, args.listen, shutdown).await;
    host.shutdown().await?;
    served
}
