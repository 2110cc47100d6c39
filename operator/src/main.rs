//! `asya-operator`: `run` the controller, print the `crd`s, or `render` actor files offline.

use anyhow::{Context, Result};
use asya_operator::controller::{self, Context as ReconcileContext};
use asya_operator::jetstream::NatsAdmin;
use asya_operator::leader::{self, LeaseSettings};
use asya_operator::metrics::{self, Metrics};
use asya_operator::queues::{BrokerAdmin, RabbitAdmin, SqsAdmin};
use asya_operator::render::{self, Settings};
use asya_operator::{crd, offline};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "asya-operator",
    version,
    about = "The asya Kubernetes operator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (with leader election) and serve /healthz, /readyz, /metrics.
    Run(RunArgs),
    /// Print the CustomResourceDefinitions (AsyncActor, Flavor) as YAML.
    Crd,
    /// Print the objects the operator would apply for AsyncActor files, as YAML.
    Render(RenderArgs),
}

#[derive(clap::Args, Clone)]
struct SettingsArgs {
    /// Image of the asya host.
    #[arg(long, env = "ASYA_HOST_IMAGE")]
    host_image: Option<String>,
    /// Pull policy of the host image.
    #[arg(long, env = "ASYA_HOST_IMAGE_PULL_POLICY")]
    host_image_pull_policy: Option<String>,
    /// NATS URL for the operator and the hosts.
    #[arg(
        long,
        env = "ASYA_NATS_URL",
        default_value = "nats://nats.nats.svc:4222"
    )]
    nats_url: String,
    /// NATS monitoring endpoint (host:port) KEDA reads consumer lag from.
    #[arg(
        long,
        env = "ASYA_NATS_MONITORING",
        default_value = "nats.nats.svc:8222"
    )]
    nats_monitoring: String,
    /// NATS account of the streams.
    #[arg(long, env = "ASYA_NATS_ACCOUNT", default_value = "$G")]
    nats_account: String,
    /// How long results stay in a namespace's results bucket.
    #[arg(long, env = "ASYA_RESULTS_TTL", default_value = "24h")]
    results_ttl: String,
    /// The results TTL of particular namespaces, as NAMESPACE=DURATION, comma-separated.
    #[arg(
        long,
        env = "ASYA_RESULTS_TTL_FOR",
        value_delimiter = ',',
        value_name = "NAMESPACE=DURATION"
    )]
    results_ttl_for: Vec<String>,
    /// Secret (in each actor's namespace) with RabbitMQ's AMQP URL: key `url` for the hosts,
    /// key `host` for KEDA's rabbitmq scaler.
    #[arg(long, env = "ASYA_RABBITMQ_SECRET", default_value = "asya-rabbitmq")]
    rabbitmq_secret: String,
    /// Where hosts of rabbitmq actors keep results and fan-ins: `dynamodb` or a nats:// URL.
    #[arg(long, env = "ASYA_RABBITMQ_STORE", default_value = "dynamodb")]
    rabbitmq_store: String,
    /// AWS region of SQS and DynamoDB.
    #[arg(long, env = "ASYA_AWS_REGION", default_value = "us-east-1")]
    aws_region: String,
    /// Endpoint of an SQS/DynamoDB-compatible server instead of AWS (e.g. a local one).
    #[arg(long, env = "ASYA_AWS_ENDPOINT")]
    aws_endpoint: Option<String>,
    /// Secret (in each actor's namespace) with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for
    /// the hosts and KEDA; without it, pod identity.
    #[arg(long, env = "ASYA_AWS_CREDENTIALS_SECRET")]
    aws_credentials_secret: Option<String>,
    /// DynamoDB table of results and fan-ins.
    #[arg(long, env = "ASYA_DYNAMODB_TABLE", default_value = asya_spec::names::DEFAULT_STATE_TABLE)]
    dynamodb_table: String,
    /// Base URL where KEDA reaches this operator's HTTP port (NATS pools scale on
    /// `<url>/v1/pools/<namespace>/<pool>/backlog`).
    #[arg(
        long,
        env = "ASYA_OPERATOR_URL",
        default_value = "http://asya-operator-metrics.asya-system.svc:8080"
    )]
    operator_url: String,
    /// AMQP URL the operator declares RabbitMQ actors' queues with (none: their hosts declare
    /// them when they start).
    #[arg(long, env = "ASYA_RABBITMQ_ADMIN_URL", hide_env_values = true)]
    rabbitmq_admin_url: Option<String>,
    /// Create SQS actors' queues (with the operator's AWS credentials, `--aws-region`,
    /// `--aws-endpoint`); off: their hosts create them when they start.
    #[arg(long, env = "ASYA_MANAGE_SQS_QUEUES")]
    manage_sqs_queues: bool,
}

impl SettingsArgs {
    fn settings(&self) -> anyhow::Result<Settings> {
        let defaults = Settings::default();
        let duration = |flag: &str, text: &str| {
            asya_spec::parse_duration(text).map_err(|e| anyhow::anyhow!("{flag} {text}: {e}"))
        };
        let mut results_ttl_for = std::collections::BTreeMap::new();
        for spec in self.results_ttl_for.iter().filter(|s| !s.trim().is_empty()) {
            let (namespace, ttl) = spec.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("--results-ttl-for '{spec}' is not NAMESPACE=DURATION")
            })?;
            results_ttl_for.insert(
                namespace.trim().to_owned(),
                duration("--results-ttl-for", ttl.trim())?,
            );
        }
        if !render::valid_rabbitmq_store(&self.rabbitmq_store) {
            anyhow::bail!(
                "--rabbitmq-store {}: must be {} or a nats:// URL",
                self.rabbitmq_store,
                render::STORE_DYNAMODB
            );
        }
        // An empty value (an unset chart value) means none.
        let optional = |value: &Option<String>| value.clone().filter(|v| !v.trim().is_empty());
        Ok(Settings {
            rabbitmq_secret: self.rabbitmq_secret.clone(),
            rabbitmq_store: self.rabbitmq_store.clone(),
            aws_region: self.aws_region.clone(),
            aws_endpoint: optional(&self.aws_endpoint),
            aws_credentials_secret: optional(&self.aws_credentials_secret),
            dynamodb_table: self.dynamodb_table.clone(),
            operator_url: self.operator_url.clone(),
            results_ttl: duration("--results-ttl", &self.results_ttl)?,
            results_ttl_for,
            host_image: self.host_image.clone().unwrap_or(defaults.host_image),
            image_pull_policy: self.host_image_pull_policy.clone(),
            nats_url: self.nats_url.clone(),
            nats_monitoring_endpoint: self.nats_monitoring.clone(),
            nats_account: self.nats_account.clone(),
            host_http_port: defaults.host_http_port,
        })
    }
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    settings: SettingsArgs,
    /// Serve /healthz, /readyz and /metrics here.
    #[arg(long, default_value = "0.0.0.0:8080")]
    http: SocketAddr,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "asya-operator")]
    lease_name: String,
    /// Namespace of the Lease (the operator's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "asya-system")]
    lease_namespace: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME")]
    holder: Option<String>,
    /// Seconds a lease lasts without renewal.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// Run without leader election (a single replica).
    #[arg(long)]
    no_leader_election: bool,
}

#[derive(clap::Args)]
struct RenderArgs {
    #[command(flatten)]
    settings: SettingsArgs,
    /// AsyncActor files (several documents per file are fine; Flavors in them are used too).
    #[arg(short = 'f', long = "file", required = true)]
    files: Vec<PathBuf>,
    /// Flavor files.
    #[arg(long = "flavor")]
    flavors: Vec<PathBuf>,
    /// Namespace of actors that have none.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Render owner references to an actor with this uid.
    #[arg(long)]
    owner_uid: Option<String>,
    /// Render every actor as `placement: dedicated` (one Deployment each), to compare with the
    /// pooled layout.
    #[arg(long)]
    dedicated: bool,
}

fn main() -> Result<()> {
    // kube-leader-election logs (through `log`) "lease is held by ..." at info on every round
    // of every replica that does not lead; `leader` logs the changes.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("ASYA_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,kube_leader_election=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", crd::crds_yaml());
            Ok(())
        }
        Command::Render(args) => {
            let mut paths = args.files.clone();
            paths.extend(args.flavors.iter().cloned());
            let docs = offline::read_files(&paths)?;
            let text = offline::render(
                &docs,
                &args.settings.settings()?,
                &args.namespace,
                args.owner_uid.as_deref(),
                args.dedicated,
            )?;
            print!("{text}");
            Ok(())
        }
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(run(args)),
    }
}

async fn run(args: RunArgs) -> Result<()> {
    asya_operator::install_tls_provider();
    let metrics = Arc::new(Metrics::new());
    let backlog = Arc::new(asya_operator::backlog::PoolBacklog::default());
    tokio::spawn(metrics::serve(
        args.http,
        metrics.clone(),
        asya_operator::backlog::router(backlog.clone()),
    ));
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    client
        .apiserver_version()
        .await
        .context("asking the Kubernetes API for its version")?;
    metrics.set_ready(true);
    let settings = args.settings.settings()?;
    let jetstream = Arc::new(NatsAdmin::connect(&settings.nats_url).await?);
    let queues = BrokerAdmin {
        rabbitmq: args
            .settings
            .rabbitmq_admin_url
            .as_deref()
            .filter(|url| !url.is_empty())
            .map(RabbitAdmin::new),
        sqs: if args.settings.manage_sqs_queues {
            Some(SqsAdmin::from_env(&settings.aws_region, settings.aws_endpoint.as_deref()).await)
        } else {
            None
        },
    };
    backlog.connect(client.clone(), jetstream.clone());
    let ctx = Arc::new(
        ReconcileContext::new(
            client.clone(),
            jetstream,
            settings,
            metrics.clone(),
            args.holder.clone(),
        )
        .with_queues(Arc::new(queues)),
    );
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing the SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
            tracing::info!("shutting down");
            shutdown.cancel();
        });
    }
    if args.no_leader_election {
        metrics.set_leader(true);
        controller::run(ctx, shutdown.cancelled_owned()).await;
        return Ok(());
    }
    let holder = args.holder.clone().unwrap_or_else(|| {
        std::env::var("HOSTNAME")
            .unwrap_or_else(|_| format!("asya-operator-{}", std::process::id()))
    });
    let settings = LeaseSettings {
        namespace: args.lease_namespace.clone(),
        name: args.lease_name.clone(),
        holder,
        ttl: Duration::from_secs(args.lease_seconds.max(3)),
    };
    let (tx, mut leading) = tokio::sync::watch::channel(false);
    tokio::spawn(leader::hold(client, settings.clone(), tx));
    tracing::info!(holder = %settings.holder, lease = %settings.name, "waiting for leadership");
    tokio::select! {
        _ = leading.wait_for(|l| *l) => {}
        _ = shutdown.cancelled() => return Ok(()),
    }
    metrics.set_leader(true);
    tracing::info!("leading: starting the controller");
    let mut lost = leading.clone();
    let lost_leadership = async move {
        let _ = lost.wait_for(|l| !*l).await;
    };
    let stopping = shutdown.clone();
    tokio::spawn(async move {
        lost_leadership.await;
        stopping.cancel();
    });
    controller::run(ctx, shutdown.cancelled_owned()).await;
    if !*leading.borrow() {
        metrics.set_leader(false);
        // Another replica leads now: exit so this one restarts as a candidate.
        anyhow::bail!("lost the leader lease");
    }
    Ok(())
}
