//! The objects an actor needs, as pure data: [`desired_objects`] turns an actor and its merged
//! spec into a ConfigMap (the manifest the host reads), a Deployment, a KEDA ScaledObject (with
//! a TriggerAuthentication on RabbitMQ and SQS) and, on NATS, the JetStream stream and consumer.
//! Nothing here talks to a cluster or to a broker.
//!
//! - `runtime: wasm`: one container, `asya-sidecar` (the host image), running `asya-host run`
//!   on the manifest; the host pulls the component from its `oci://` reference. The handler's
//!   `spec.env` reaches it through the manifest, and its Secrets are mounted read-only at
//!   `/var/run/asya/secrets/<secret>` for the host to read at start-up: their values are never
//!   in the ConfigMap.
//! - `runtime: python`: the user's image runs `python3 -m asya.runtime` in `asya-runtime` (an
//!   init container of the host image writes the runtime's files first, as Asya injects its
//!   runtime) and the host runs beside it as `asya-sidecar` (Asya's container names); they
//!   share the emptyDir `/var/run/asya` where the runtime's socket lives.
//!
//! Transports (`spec.transport`, see [`Transport`]): the host container gets `ASYA_TRANSPORT`.
//! - `nats`: the operator owns the stream, consumers and results bucket (the host runs with
//!   `--no-create`); KEDA's `nats-jetstream` scaler reads the consumer's lag.
//! - `rabbitmq` / `sqs`: the host declares its own queues (`asya-<namespace>-<actor>`, see
//!   [`queue_name`]) at start, so the operator needs no broker connection and the host runs
//!   without `--no-create`. Credentials never appear in a rendered object: the AMQP URL (which
//!   holds the password) and AWS keys reach the host through `secretKeyRef`s and KEDA through a
//!   TriggerAuthentication's `secretTargetRef`s; by default SQS uses pod identity. The Secrets
//!   live in the actor's namespace (a pod and a TriggerAuthentication only read their own).

use crate::crd::{AsyncActor, AsyncActorSpec, Runtime, Transport, API_VERSION};
/// Stream, subject and queue names of a namespace, from the shared contract.
pub use asya_spec::names::{queue_name, stream_name, subject};
use asya_spec::workload::{effective_runtime, RUNTIME_CONTAINER, SIDECAR_CONTAINER};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "asya-operator";
/// Label on every object the operator makes: the actor's name.
pub const ACTOR_LABEL: &str = "asya.sh/actor";
/// Pod annotation: hash of the manifest, so a spec change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "asya.sh/config-hash";
/// Where the host reads its manifest in the pod.
pub const MANIFEST_DIR: &str = "/etc/asya/actors";
/// The shared emptyDir of a python actor's pod.
pub const SOCKET_DIR: &str = "/var/run/asya";
/// The python runtime's socket (the host's default).
pub const RUNTIME_SOCKET: &str = "/var/run/asya/runtime.sock";
/// Where the init container of a python actor writes the runtime's files, first on the
/// `asya-runtime` container's `PYTHONPATH` (the user's image needs nothing from asya).
pub const RUNTIME_FILES_DIR: &str = "/opt/asya";
/// Where a wasm actor's Secrets are mounted (`<dir>/<secret>/<key>`), the host's default.
pub const SECRETS_DIR: &str = "/var/run/asya/secrets";
/// Where the host caches pulled and compiled components.
pub const CACHE_DIR: &str = "/var/cache/asya";
/// Name of the KEDA trigger; a scaling formula refers to it.
pub const TRIGGER_NAME: &str = "queue";
/// The consumers of the host's built-in actors (end actors, the flow fan-in and x-pause), which every
/// host of a namespace reads from (with `--no-create` it expects them to exist).
pub const BUILTIN_ACTORS: [&str; 4] = asya_spec::names::RESERVED_NAMES;

/// Key of the RabbitMQ Secret holding the AMQP URL the host connects with
/// (`amqp://user:password@host:5672/vhost`).
pub const RABBITMQ_URL_KEY: &str = "url";
/// Key of the RabbitMQ Secret holding the AMQP URL KEDA's `rabbitmq` scaler reads (its
/// TriggerAuthentication parameter `host`; usually the same URL as [`RABBITMQ_URL_KEY`]).
pub const RABBITMQ_HOST_KEY: &str = "host";
/// Keys of the AWS credentials Secret (`--aws-credentials-secret`), named as the AWS SDKs name
/// the environment variables.
pub const AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
/// See [`AWS_ACCESS_KEY_ID`].
pub const AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
/// `--rabbitmq-store` value keeping results and fan-ins in DynamoDB.
pub const STORE_DYNAMODB: &str = "dynamodb";

/// Cluster-wide settings of the operator (flags of `asya-operator run`, values of the chart).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Image of the asya host.
    pub host_image: String,
    /// Pull policy of the host image (none: Kubernetes' default).
    pub image_pull_policy: Option<String>,
    /// NATS URL the hosts connect to.
    pub nats_url: String,
    /// `host:port` of the NATS monitoring endpoint KEDA reads the consumer lag from.
    pub nats_monitoring_endpoint: String,
    /// NATS account of the streams (`$G` without accounts).
    pub nats_account: String,
    /// Port of the host's `/metrics`, `/healthz`, `/readyz`.
    pub host_http_port: u16,
    /// How long results stay in a namespace's results bucket.
    pub results_ttl: std::time::Duration,
    /// The results TTL of particular namespaces.
    pub results_ttl_for: BTreeMap<String, std::time::Duration>,
    /// Secret (in each actor's namespace) with the AMQP URL of RabbitMQ: key
    /// [`RABBITMQ_URL_KEY`] for the host, key [`RABBITMQ_HOST_KEY`] for KEDA.
    pub rabbitmq_secret: String,
    /// Where hosts of `rabbitmq` actors keep results and fan-ins: [`STORE_DYNAMODB`] or a
    /// `nats://` URL (the host's `ASYA_STORE`).
    pub rabbitmq_store: String,
    /// AWS region of SQS and DynamoDB.
    pub aws_region: String,
    /// Endpoint of an SQS/DynamoDB-compatible server instead of AWS (local clusters).
    pub aws_endpoint: Option<String>,
    /// Secret (in each actor's namespace) with [`AWS_ACCESS_KEY_ID`] and
    /// [`AWS_SECRET_ACCESS_KEY`]; none: pod identity (the host's service account, and KEDA's
    /// `podIdentity: {provider: aws}`).
    pub aws_credentials_secret: Option<String>,
    /// DynamoDB table of results and fan-ins (all namespaces; keys are prefixed by namespace).
    pub dynamodb_table: String,
    /// Base URL where KEDA reaches the operator (a NATS pool's `metrics-api` trigger reads
    /// `<url>/v1/pools/<namespace>/<pool>/backlog`).
    pub operator_url: String,
}

impl Settings {
    /// The results TTL of `namespace`.
    pub fn results_ttl_of(&self, namespace: &str) -> std::time::Duration {
        self.results_ttl_for
            .get(namespace)
            .copied()
            .unwrap_or(self.results_ttl)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            host_image: format!("ghcr.io/asya-sh/asya-host:{}", env!("CARGO_PKG_VERSION")),
            image_pull_policy: None,
            nats_url: "nats://nats.nats.svc:4222".into(),
            nats_monitoring_endpoint: "nats.nats.svc:8222".into(),
            nats_account: "$G".into(),
            host_http_port: 9090,
            results_ttl: asya_spec::names::DEFAULT_RESULTS_TTL,
            results_ttl_for: BTreeMap::new(),
            rabbitmq_secret: "asya-rabbitmq".into(),
            rabbitmq_store: STORE_DYNAMODB.into(),
            aws_region: "us-east-1".into(),
            aws_endpoint: None,
            aws_credentials_secret: None,
            dynamodb_table: asya_spec::names::DEFAULT_STATE_TABLE.into(),
            operator_url: "http://asya-operator-metrics.asya-system.svc:8080".into(),
        }
    }
}

/// Whether `store` is a value `--rabbitmq-store` accepts: [`STORE_DYNAMODB`] or a `nats://`
/// URL without credentials (the store is a literal `ASYA_STORE` in every pod spec).
pub fn valid_rabbitmq_store(store: &str) -> bool {
    store == STORE_DYNAMODB
        || store
            .strip_prefix("nats://")
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('@'))
}

/// The JetStream stream of a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// `ASYA_<NAMESPACE>`.
    pub name: String,
    /// `asya.<namespace>.>`.
    pub subjects: Vec<String>,
    /// How long results stay in the namespace's results bucket.
    pub results_ttl: std::time::Duration,
}

/// A durable pull consumer of an actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// The stream it reads.
    pub stream: String,
    /// The durable name: the actor's name.
    pub name: String,
    /// `asya.<namespace>.<actor>`.
    pub filter_subject: String,
}

/// Everything an actor needs.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The actor's effective transport.
    pub transport: Transport,
    /// The actor's manifest for the host (`actor.yaml`).
    pub config_map: ConfigMap,
    /// The workload.
    pub deployment: Deployment,
    /// The KEDA ScaledObject (`None` when scaling is off).
    pub scaled_object: Option<Value>,
    /// The KEDA TriggerAuthentication the ScaledObject's trigger refers to (`rabbitmq` and
    /// `sqs` actors with scaling on; see [`trigger_authentication_name`]).
    pub trigger_authentication: Option<Value>,
    /// The namespace's stream (used on `nats` only).
    pub stream: StreamSpec,
    /// The actor's consumer (used on `nats` only).
    pub consumer: ConsumerSpec,
    /// The consumers of the namespace's built-in actors (used on `nats` only).
    pub end_consumers: Vec<ConsumerSpec>,
}

impl Desired {
    /// The Kubernetes objects, in apply order, as JSON (the TriggerAuthentication before the
    /// ScaledObject that refers to it).
    pub fn objects(&self) -> Vec<Value> {
        let mut out = vec![
            serde_json::to_value(&self.config_map).expect("ConfigMap serialises"),
            serde_json::to_value(&self.deployment).expect("Deployment serialises"),
        ];
        out.extend(self.trigger_authentication.clone());
        out.extend(self.scaled_object.clone());
        out
    }

    /// Whether the operator owns the actor's queue (JetStream stream and consumers): on `nats`
    /// only. On `rabbitmq` and `sqs` the host declares its queues itself.
    pub fn uses_jetstream(&self) -> bool {
        self.transport == Transport::Nats
    }
}

/// The TriggerAuthentication of an actor: `asya-<actor>-auth`.
///
/// One per actor (not one shared per namespace), owned by the actor like its other objects: it
/// is deleted with the actor by the garbage collector, and no two actors' applies share (and
/// fight over the owner references of) one object. Its content is the same for every actor of
/// a namespace (which Secret, or pod identity).
pub fn trigger_authentication_name(actor: &str) -> String {
    format!("asya-{actor}-auth")
}

/// The name of the ConfigMap holding an actor's manifest.
pub fn config_map_name(actor: &str) -> String {
    format!("{actor}-asya")
}

/// Whether KEDA scales this actor: `scaling` is given and not `enabled: false`.
pub fn scaling_enabled(spec: &AsyncActorSpec) -> bool {
    spec.scaling
        .as_ref()
        .is_some_and(|s| s.enabled.unwrap_or(true))
}

/// Replicas when KEDA does not scale the actor: `minReplicaCount`, else 1.
pub fn fixed_replicas(spec: &AsyncActorSpec) -> i32 {
    spec.scaling.as_ref().and_then(|s| s.min()).unwrap_or(1)
}

pub(crate) fn labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), name.to_owned()),
        ("app.kubernetes.io/component".to_owned(), "actor".to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            FIELD_MANAGER.to_owned(),
        ),
        (ACTOR_LABEL.to_owned(), name.to_owned()),
    ])
}

/// The controller owner reference to the actor (absent when the actor has no uid yet, as when
/// rendering a file offline: a reference to a made-up uid would get the objects collected).
fn owner_references(actor: &AsyncActor) -> Value {
    match &actor.metadata.uid {
        Some(uid) => json!([{
            "apiVersion": API_VERSION,
            "kind": "AsyncActor",
            "name": actor.name_any(),
            "uid": uid,
            "controller": true,
            "blockOwnerDeletion": true,
        }]),
        None => Value::Null,
    }
}

fn metadata(actor: &AsyncActor, name: &str) -> Value {
    let mut meta = json!({
        "name": name,
        "namespace": actor.namespace().unwrap_or_else(|| "default".into()),
        "labels": labels(&actor.name_any()),
    });
    let owners = owner_references(actor);
    if !owners.is_null() {
        meta["ownerReferences"] = owners;
    }
    meta
}

/// The manifest the host reads: the actor with its merged spec (flavors already applied).
pub fn host_manifest(actor: &AsyncActor, spec: &AsyncActorSpec) -> String {
    let mut spec = spec.clone();
    spec.flavors.clear();
    spec.runtime = Some(effective_runtime(&spec));
    let doc = json!({
        "apiVersion": API_VERSION,
        "kind": "AsyncActor",
        "metadata": {
            "name": actor.name_any(),
            "namespace": actor.namespace().unwrap_or_else(|| "default".into()),
        },
        "spec": spec,
    });
    serde_yaml_ng::to_string(&doc).expect("manifest as YAML")
}

fn env_list(pairs: &[(&str, String)], user: &BTreeMap<String, String>) -> Vec<Value> {
    let mut env: Vec<Value> = pairs
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    for (name, value) in user {
        if !pairs.iter().any(|(n, _)| n == name) {
            env.push(json!({"name": name, "value": value}));
        }
    }
    env
}

fn resources(spec: &AsyncActorSpec) -> Option<Value> {
    spec.resources.as_ref().map(resource_requirements)
}

/// A container's `resources` from the spec's.
pub(crate) fn resource_requirements(resources: &crate::crd::Resources) -> Value {
    let side = |map: &BTreeMap<String, crate::crd::Quantity>| -> Value {
        map.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.to_k8s_string())))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let mut out = json!({});
    if !resources.limits.is_empty() {
        out["limits"] = side(&resources.limits);
    }
    if !resources.requests.is_empty() {
        out["requests"] = side(&resources.requests);
    }
    out
}

pub(crate) fn security_context() -> Value {
    json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
}

/// An env var from a Secret's key (never the value itself).
fn secret_key_env(name: &str, secret: &str, key: &str) -> Value {
    json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
}

/// The host's env for its transport and state store (`ASYA_TRANSPORT` first). Secrets come by
/// reference: no URL with a password, no key is ever a literal here.
pub(crate) fn transport_env(transport: Transport, settings: &Settings) -> Vec<Value> {
    let literal = |name: &str, value: &str| json!({"name": name, "value": value});
    let mut env = vec![literal("ASYA_TRANSPORT", transport.as_str())];
    let store = match transport {
        Transport::Rabbitmq => {
            env.push(secret_key_env(
                "ASYA_RABBITMQ_URL",
                &settings.rabbitmq_secret,
                RABBITMQ_URL_KEY,
            ));
            settings.rabbitmq_store.as_str()
        }
        Transport::Sqs => STORE_DYNAMODB,
        // NATS keeps results and fan-ins in JetStream key-value buckets.
        Transport::Nats | Transport::Pubsub => {
            env.push(literal("ASYA_NATS_URL", &settings.nats_url));
            return env;
        }
    };
    env.push(literal("ASYA_STORE", store));
    // SQS, and DynamoDB as a store, need the AWS settings.
    if transport == Transport::Sqs || store == STORE_DYNAMODB {
        env.push(literal("AWS_REGION", &settings.aws_region));
        if let Some(endpoint) = &settings.aws_endpoint {
            env.push(literal("AWS_ENDPOINT_URL", endpoint));
        }
        if store == STORE_DYNAMODB {
            env.push(literal("ASYA_DYNAMODB_TABLE", &settings.dynamodb_table));
        }
        if let Some(secret) = &settings.aws_credentials_secret {
            env.push(secret_key_env(AWS_ACCESS_KEY_ID, secret, AWS_ACCESS_KEY_ID));
            env.push(secret_key_env(
                AWS_SECRET_ACCESS_KEY,
                secret,
                AWS_SECRET_ACCESS_KEY,
            ));
        }
    }
    env
}

/// The host container (the only one of a wasm actor, the sidecar of a python actor).
fn host_container(
    actor: &AsyncActor,
    spec: &AsyncActorSpec,
    settings: &Settings,
    python: bool,
) -> Value {
    let name = actor.name_any();
    let transport = spec.transport.unwrap_or_default();
    let mut args = vec![
        "run".to_owned(),
        "--manifests".to_owned(),
        MANIFEST_DIR.to_owned(),
    ];
    // On NATS the operator owns the streams and consumers; on RabbitMQ and SQS the host
    // declares its queues itself.
    if transport == Transport::Nats {
        args.push("--no-create".to_owned());
    }
    args.push("--http".to_owned());
    args.push(format!("0.0.0.0:{}", settings.host_http_port));
    if python {
        args.push("--python-socket".to_owned());
        args.push(format!("{name}={RUNTIME_SOCKET}"));
    }
    let handler = spec.handler.clone().unwrap_or_default();
    let mode = spec.mode.unwrap_or_default().as_str().to_owned();
    let mut env = transport_env(transport, settings);
    // The handler's own env reaches a wasm handler through the manifest, not the host.
    env.extend(env_list(
        &[
            ("ASYA_CACHE_DIR", CACHE_DIR.to_owned()),
            ("ASYA_SECRETS_DIR", SECRETS_DIR.to_owned()),
            ("ASYA_HANDLER", handler),
            ("ASYA_HANDLER_MODE", mode),
        ],
        &BTreeMap::new(),
    ));
    let mut container = host_container_of(
        settings,
        args,
        env,
        vec![
            json!({"name": "manifest", "mountPath": MANIFEST_DIR, "readOnly": true}),
            json!({"name": "cache", "mountPath": CACHE_DIR}),
        ],
    );
    if python {
        container["volumeMounts"]
            .as_array_mut()
            .expect("mounts")
            .push(json!({"name": "runtime-socket", "mountPath": SOCKET_DIR}));
    } else {
        let mounts = container["volumeMounts"].as_array_mut().expect("mounts");
        for (i, secret) in spec.secret_refs.iter().enumerate() {
            mounts.push(json!({
                "name": secret_volume(i),
                "mountPath": format!("{SECRETS_DIR}/{secret}"),
                "readOnly": true,
            }));
        }
        if let Some(resources) = resources(spec) {
            container["resources"] = resources;
        }
    }
    container
}

/// The `asya-sidecar` container running `asya-host` with `args`: its HTTP port, probes on
/// `/healthz` and `/readyz`, and the restricted security context (a dedicated actor's host and a
/// pool's hosts alike).
pub(crate) fn host_container_of(
    settings: &Settings,
    args: Vec<String>,
    env: Vec<Value>,
    mounts: Vec<Value>,
) -> Value {
    let mut container = json!({
        "name": SIDECAR_CONTAINER,
        "image": settings.host_image,
        "args": args,
        "env": env,
        "ports": [{"name": "http", "containerPort": settings.host_http_port, "protocol": "TCP"}],
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
        "volumeMounts": mounts,
        "securityContext": security_context(),
    });
    if let Some(policy) = &settings.image_pull_policy {
        container["imagePullPolicy"] = json!(policy);
    }
    container
}

/// The volume of the `i`th Secret of `spec.secretRefs` (by index: a Secret's name may be longer
/// than a volume name may be).
fn secret_volume(i: usize) -> String {
    format!("secret-{i}")
}

fn secret_env(spec: &AsyncActorSpec) -> Value {
    spec.secret_refs
        .iter()
        .map(|name| json!({"secretRef": {"name": name}}))
        .collect()
}

/// The init container of a python actor: the host image writes the runtime's files (standard
/// library only) where the user's container imports them from, as Asya injects its runtime.
fn install_runtime_container(settings: &Settings) -> Value {
    let mut container = json!({
        "name": "asya-install-runtime",
        "image": settings.host_image,
        "args": ["install-runtime", RUNTIME_FILES_DIR],
        "volumeMounts": [{"name": "runtime-files", "mountPath": RUNTIME_FILES_DIR}],
        "securityContext": security_context(),
    });
    if let Some(policy) = &settings.image_pull_policy {
        container["imagePullPolicy"] = json!(policy);
    }
    container
}

/// The user's container of a python actor: the native runtime on the shared socket.
fn handler_container(spec: &AsyncActorSpec) -> Value {
    // The runtime's files first; a PYTHONPATH of the user's own follows them.
    let python_path = match spec.env.get("PYTHONPATH") {
        Some(own) if !own.is_empty() => format!("{RUNTIME_FILES_DIR}:{own}"),
        _ => RUNTIME_FILES_DIR.to_owned(),
    };
    let mut container = json!({
        "name": RUNTIME_CONTAINER,
        "image": spec.image.clone().unwrap_or_default(),
        "command": ["python3", "-m", "asya.runtime"],
        "env": env_list(
            &[
                ("ASYA_HANDLER", spec.handler.clone().unwrap_or_default()),
                ("ASYA_HANDLER_MODE", spec.mode.unwrap_or_default().as_str().to_owned()),
                ("ASYA_RUNTIME_SOCKET", RUNTIME_SOCKET.to_owned()),
                ("PYTHONPATH", python_path),
            ],
            &spec.env,
        ),
        "volumeMounts": [
            {"name": "runtime-socket", "mountPath": SOCKET_DIR},
            {"name": "runtime-files", "mountPath": RUNTIME_FILES_DIR, "readOnly": true},
        ],
        "securityContext": security_context(),
    });
    if !spec.secret_refs.is_empty() {
        container["envFrom"] = secret_env(spec);
    }
    if let Some(resources) = resources(spec) {
        container["resources"] = resources;
    }
    container
}

fn deployment(
    actor: &AsyncActor,
    spec: &AsyncActorSpec,
    settings: &Settings,
    manifest_hash: &str,
) -> Deployment {
    let name = actor.name_any();
    let python = effective_runtime(spec) == Runtime::Python;
    let mut containers = Vec::new();
    if python {
        containers.push(handler_container(spec));
    }
    containers.push(host_container(actor, spec, settings, python));
    let mut volumes = vec![
        json!({"name": "manifest", "configMap": {"name": config_map_name(&name)}}),
        json!({"name": "cache", "emptyDir": {}}),
    ];
    if python {
        volumes.push(json!({"name": "runtime-socket", "emptyDir": {}}));
        volumes.push(json!({"name": "runtime-files", "emptyDir": {}}));
    } else {
        for (i, secret) in spec.secret_refs.iter().enumerate() {
            volumes.push(json!({"name": secret_volume(i), "secret": {"secretName": secret}}));
        }
    }
    let mut pod_spec = json!({
        "containers": containers,
        "volumes": volumes,
        // The host's grace period for in-flight messages is 30s.
        "terminationGracePeriodSeconds": 45,
    });
    if python {
        pod_spec["initContainers"] = json!([install_runtime_container(settings)]);
    }
    if !spec.node_selector.is_empty() {
        pod_spec["nodeSelector"] = json!(spec.node_selector);
    }
    if !spec.tolerations.is_empty() {
        pod_spec["tolerations"] = json!(spec.tolerations);
    }
    let mut deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(actor, &name),
        "spec": {
            "selector": {"matchLabels": {ACTOR_LABEL: name}},
            "template": {
                "metadata": {
                    "labels": labels(&name),
                    "annotations": {
                        CONFIG_HASH_ANNOTATION: manifest_hash,
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": settings.host_http_port.to_string(),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod_spec,
            },
        },
    });
    // With KEDA scaling, the replica count belongs to the autoscaler: not applying it keeps
    // this field manager from fighting over it.
    if !scaling_enabled(spec) {
        deployment["spec"]["replicas"] = json!(fixed_replicas(spec));
    }
    serde_json::from_value(deployment).expect("a valid Deployment")
}

/// The KEDA trigger of an actor's queue, named [`TRIGGER_NAME`]; `queue_length` is the target
/// backlog per replica.
fn trigger(
    actor: &AsyncActor,
    transport: Transport,
    queue_length: i32,
    settings: &Settings,
) -> Value {
    let name = actor.name_any();
    let namespace = actor.namespace().unwrap_or_else(|| "default".into());
    let auth = json!({"name": trigger_authentication_name(&name)});
    match transport {
        // The AMQP URL comes from the TriggerAuthentication's `host`: KEDA needs no management
        // API (`protocol: amqp` counts the queue's ready messages).
        Transport::Rabbitmq => json!({
            "type": "rabbitmq",
            "name": TRIGGER_NAME,
            "metadata": {
                "protocol": "amqp",
                "queueName": queue_name(&namespace, &name),
                "mode": "QueueLength",
                "value": queue_length.to_string(),
            },
            "authenticationRef": auth,
        }),
        // The queue's name (KEDA accepts it for the URL when it is unambiguous); KEDA counts
        // visible and in-flight messages.
        Transport::Sqs => {
            let mut metadata = json!({
                "queueURL": queue_name(&namespace, &name),
                "queueLength": queue_length.to_string(),
                "awsRegion": settings.aws_region,
            });
            if let Some(endpoint) = &settings.aws_endpoint {
                metadata["awsEndpoint"] = json!(endpoint);
            }
            json!({
                "type": "aws-sqs-queue",
                "name": TRIGGER_NAME,
                "metadata": metadata,
                "authenticationRef": auth,
            })
        }
        Transport::Nats | Transport::Pubsub => json!({
            "type": "nats-jetstream",
            "name": TRIGGER_NAME,
            "metadata": {
                "natsServerMonitoringEndpoint": settings.nats_monitoring_endpoint,
                "account": settings.nats_account,
                "stream": stream_name(&namespace),
                "consumer": name,
                "lagThreshold": queue_length.to_string(),
                "activationLagThreshold": "0",
                "useHttps": "false",
            },
        }),
    }
}

/// The KEDA TriggerAuthentication of a `rabbitmq` or `sqs` actor with scaling on (`None`
/// otherwise): where KEDA's scaler finds the broker's credentials, by reference to the Secret
/// in the actor's namespace, or AWS pod identity (KEDA's own IAM role) when no AWS credentials
/// Secret is configured.
fn trigger_authentication(
    actor: &AsyncActor,
    spec: &AsyncActorSpec,
    settings: &Settings,
) -> Option<Value> {
    if !scaling_enabled(spec) {
        return None;
    }
    let auth = keda_authentication(spec.transport.unwrap_or_default(), settings)?;
    Some(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": metadata(actor, &trigger_authentication_name(&actor.name_any())),
        "spec": auth,
    }))
}

/// The `spec` of a TriggerAuthentication for KEDA's scaler of `transport` (none on NATS):
/// RabbitMQ's URL from the Secret's `host` key; SQS's keys from the credentials Secret, or pod
/// identity.
pub(crate) fn keda_authentication(transport: Transport, settings: &Settings) -> Option<Value> {
    Some(match transport {
        Transport::Rabbitmq => json!({"secretTargetRef": [{
            "parameter": "host",
            "name": settings.rabbitmq_secret,
            "key": RABBITMQ_HOST_KEY,
        }]}),
        Transport::Sqs => match &settings.aws_credentials_secret {
            Some(secret) => json!({"secretTargetRef": [
                {"parameter": "awsAccessKeyID", "name": secret, "key": AWS_ACCESS_KEY_ID},
                {"parameter": "awsSecretAccessKey", "name": secret, "key": AWS_SECRET_ACCESS_KEY},
            ]}),
            None => json!({"podIdentity": {"provider": "aws"}}),
        },
        Transport::Nats | Transport::Pubsub => return None,
    })
}

/// The KEDA ScaledObject of an actor with scaling on.
fn scaled_object(actor: &AsyncActor, spec: &AsyncActorSpec, settings: &Settings) -> Option<Value> {
    if !scaling_enabled(spec) {
        return None;
    }
    let scaling = spec.scaling.clone().unwrap_or_default();
    let name = actor.name_any();
    let transport = spec.transport.unwrap_or_default();
    let queue_length = scaling.queue_length.unwrap_or(5);
    let mut object = json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": metadata(actor, &name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicaCount": scaling.min().unwrap_or(0),
            "maxReplicaCount": scaling.max().unwrap_or(10),
            "triggers": [trigger(actor, transport, queue_length, settings)],
        },
    });
    if let Some(interval) = scaling.polling_interval {
        object["spec"]["pollingInterval"] = json!(interval);
    }
    if let Some(cooldown) = scaling.cooldown_period {
        object["spec"]["cooldownPeriod"] = json!(cooldown);
    }
    if let Some(advanced) = &scaling.advanced {
        let mut modifiers = json!({"formula": advanced.formula, "target": advanced.target});
        if let Some(activation) = &advanced.activation_target {
            modifiers["activationTarget"] = json!(activation);
        }
        if let Some(metric_type) = &advanced.metric_type {
            modifiers["metricType"] = json!(metric_type);
        }
        object["spec"]["advanced"] = json!({"scalingModifiers": modifiers});
    }
    Some(object)
}

/// The objects an actor needs, from the actor (name, namespace, uid) and its merged spec.
pub fn desired_objects(actor: &AsyncActor, spec: &AsyncActorSpec, settings: &Settings) -> Desired {
    let name = actor.name_any();
    let namespace = actor.namespace().unwrap_or_else(|| "default".into());
    let manifest = host_manifest(actor, spec);
    let hash = hex::encode(Sha256::digest(manifest.as_bytes()));
    let config_map: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(actor, &config_map_name(&name)),
        "data": {"actor.yaml": manifest},
    }))
    .expect("a valid ConfigMap");
    let stream = StreamSpec {
        name: stream_name(&namespace),
        subjects: vec![asya_spec::names::stream_subjects(&namespace)],
        results_ttl: settings.results_ttl_of(&namespace),
    };
    let consumer_of = |actor: &str| ConsumerSpec {
        stream: stream.name.clone(),
        name: actor.to_owned(),
        filter_subject: subject(&namespace, actor),
    };
    Desired {
        transport: spec.transport.unwrap_or_default(),
        config_map,
        deployment: deployment(actor, spec, settings, &hash[..16]),
        scaled_object: scaled_object(actor, spec, settings),
        trigger_authentication: trigger_authentication(actor, spec, settings),
        consumer: consumer_of(&name),
        end_consumers: BUILTIN_ACTORS.iter().map(|a| consumer_of(a)).collect(),
        stream,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(yaml: &str) -> AsyncActor {
        let mut actor: AsyncActor = serde_yaml_ng::from_str(yaml).unwrap();
        actor.metadata.uid = Some("0b9e2c1e-5a57-4d4e-8d7e-2f1a8c9b0001".into());
        actor
    }

    fn render(yaml: &str) -> Desired {
        let actor = actor(yaml);
        desired_objects(&actor, &actor.spec.clone(), &Settings::default())
    }

    const WASM: &str = r#"
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: preprocess, namespace: text-pipeline}
spec:
  handler: preprocessor.process
  component: oci://localhost:5000/text-pipeline/preprocess:v1
  scaling: {enabled: true, minReplicaCount: 0, maxReplicaCount: 5, queueLength: 10}
  sandbox: {memory: 128Mi}
  env: {LOG_LEVEL: debug}
"#;

    const PYTHON: &str = r#"
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: embed, namespace: gpu-embedder}
spec:
  runtime: python
  image: registry.local/gpu-embedder:v1
  handler: embedder.Embedder.process
  secretRefs: [hf-token]
  resources: {limits: {nvidia.com/gpu: 1, memory: 8Gi}}
  nodeSelector: {nvidia.com/gpu.present: "true"}
  tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
"#;

    #[test]
    fn wasm_actor_runs_the_host_on_its_manifest() {
        let desired = render(WASM);
        let pod = desired
            .deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap();
        assert_eq!(pod.containers.len(), 1);
        let host = &pod.containers[0];
        assert_eq!(host.name, "asya-sidecar");
        assert_eq!(
            host.args.as_ref().unwrap()[..4],
            ["run", "--manifests", MANIFEST_DIR, "--no-create"]
        );
        let env: BTreeMap<_, _> = host
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| (e.name.as_str(), e.value.clone().unwrap()))
            .collect();
        assert_eq!(env["ASYA_HANDLER"], "preprocessor.process");
        assert_eq!(env["ASYA_HANDLER_MODE"], "payload");
        // The handler's env reaches it through the manifest, not the host's container.
        assert!(!env.contains_key("LOG_LEVEL"));
        assert!(
            desired.config_map.data.as_ref().unwrap()["actor.yaml"].contains("LOG_LEVEL: debug")
        );
        // KEDA owns the replica count.
        assert_eq!(desired.deployment.spec.as_ref().unwrap().replicas, None);
        let manifest = &desired.config_map.data.as_ref().unwrap()["actor.yaml"];
        assert!(manifest.contains("oci://localhost:5000/text-pipeline/preprocess:v1"));
        let owners = desired
            .deployment
            .metadata
            .owner_references
            .as_ref()
            .unwrap();
        assert_eq!(owners[0].kind, "AsyncActor");
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(desired.stream.name, "ASYA_TEXT_PIPELINE");
        assert_eq!(desired.stream.subjects, ["asya.text-pipeline.>"]);
        assert_eq!(desired.consumer.name, "preprocess");
        assert_eq!(
            desired.consumer.filter_subject,
            "asya.text-pipeline.preprocess"
        );
    }

    #[test]
    fn scale_to_zero_scaled_object() {
        let so = render(WASM).scaled_object.unwrap();
        assert_eq!(so["spec"]["minReplicaCount"], 0);
        assert_eq!(so["spec"]["maxReplicaCount"], 5);
        let trigger = &so["spec"]["triggers"][0];
        assert_eq!(trigger["type"], "nats-jetstream");
        assert_eq!(trigger["metadata"]["stream"], "ASYA_TEXT_PIPELINE");
        assert_eq!(trigger["metadata"]["consumer"], "preprocess");
        assert_eq!(trigger["metadata"]["lagThreshold"], "10");
        assert_eq!(trigger["metadata"]["account"], "$G");
    }

    #[test]
    fn python_actor_has_the_host_as_sidecar_on_a_shared_socket() {
        let desired = render(PYTHON);
        let pod = desired
            .deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .clone()
            .unwrap();
        let names: Vec<_> = pod.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["asya-runtime", "asya-sidecar"]);
        let (handler, host) = (&pod.containers[0], &pod.containers[1]);
        assert_eq!(
            handler.image.as_deref(),
            Some("registry.local/gpu-embedder:v1")
        );
        let mount = |c: &k8s_openapi::api::core::v1::Container| {
            c.volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .any(|m| m.name == "runtime-socket" && m.mount_path == SOCKET_DIR)
        };
        assert!(mount(handler) && mount(host));
        assert!(pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .any(|v| v.name == "runtime-socket" && v.empty_dir.is_some()));
        let limits = handler.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(limits["nvidia.com/gpu"].0, "1");
        assert!(host.resources.is_none());
        assert_eq!(
            handler.env_from.as_ref().unwrap()[0]
                .secret_ref
                .as_ref()
                .unwrap()
                .name,
            "hf-token"
        );
        assert!(host
            .args
            .as_ref()
            .unwrap()
            .contains(&format!("embed={RUNTIME_SOCKET}")));
        assert_eq!(
            pod.tolerations.unwrap()[0].key.as_deref(),
            Some("nvidia.com/gpu")
        );
        // No scaling section: a fixed single replica and no ScaledObject.
        assert!(desired.scaled_object.is_none());
        assert_eq!(desired.deployment.spec.unwrap().replicas, Some(1));
    }

    #[test]
    fn formula_and_disabled_scaling() {
        let mut spec = actor(WASM).spec;
        let scaling = spec.scaling.as_mut().unwrap();
        scaling.advanced = Some(crate::crd::ScalingFormula {
            formula: "queue / 2".into(),
            target: "5".into(),
            activation_target: None,
            metric_type: None,
        });
        let a = actor(WASM);
        let so = desired_objects(&a, &spec, &Settings::default())
            .scaled_object
            .unwrap();
        assert_eq!(
            so["spec"]["advanced"]["scalingModifiers"],
            json!({"formula": "queue / 2", "target": "5"})
        );
        spec.scaling.as_mut().unwrap().enabled = Some(false);
        spec.scaling.as_mut().unwrap().min_replica_count = Some(2);
        let desired = desired_objects(&a, &spec, &Settings::default());
        assert!(desired.scaled_object.is_none());
        assert_eq!(desired.deployment.spec.unwrap().replicas, Some(2));
    }

    #[test]
    fn a_spec_change_changes_the_pod_template() {
        let a = actor(WASM);
        let hash = |spec: &AsyncActorSpec| {
            desired_objects(&a, spec, &Settings::default())
                .deployment
                .spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()[CONFIG_HASH_ANNOTATION]
                .clone()
        };
        let mut changed = a.spec.clone();
        changed.sandbox.as_mut().unwrap().cpu_timeout = Some("9s".into());
        assert_ne!(hash(&a.spec), hash(&changed));
        assert_eq!(hash(&a.spec), hash(&a.spec.clone()));
    }
    const RABBITMQ: &str = r#"
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: classify, namespace: nlp}
spec:
  transport: rabbitmq
  handler: classifier.classify
  component: oci://localhost:5000/nlp/classify:v1
  scaling: {minReplicaCount: 0, maxReplicaCount: 7, queueLength: 12}
"#;

    const SQS: &str = r#"
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: embed, namespace: gpu}
spec:
  transport: sqs
  runtime: python
  image: registry.local/embed:v1
  handler: embedder.embed
  scaling: {minReplicas: 0, maxReplicas: 3, queueLength: 4}
"#;

    fn render_with(yaml: &str, settings: &Settings) -> Desired {
        let actor = actor(yaml);
        desired_objects(&actor, &actor.spec.clone(), settings)
    }

    fn host(desired: &Desired) -> k8s_openapi::api::core::v1::Container {
        let pod = desired
            .deployment
            .spec
            .clone()
            .unwrap()
            .template
            .spec
            .unwrap();
        pod.containers
            .into_iter()
            .find(|c| c.name == SIDECAR_CONTAINER)
            .unwrap()
    }

    /// The host's literal env values, by name.
    fn literal_env(desired: &Desired) -> BTreeMap<String, String> {
        host(desired)
            .env
            .unwrap()
            .into_iter()
            .filter_map(|e| Some((e.name, e.value?)))
            .collect()
    }

    /// The host's env from Secrets, by name: (secret, key).
    fn secret_env(desired: &Desired) -> BTreeMap<String, (String, String)> {
        host(desired)
            .env
            .unwrap()
            .into_iter()
            .filter_map(|e| {
                assert!(
                    e.value.is_none() || e.value_from.is_none(),
                    "{}: both a value and a reference",
                    e.name
                );
                let r = e.value_from?.secret_key_ref?;
                Some((e.name, (r.name, r.key)))
            })
            .collect()
    }

    fn everything(desired: &Desired) -> String {
        serde_json::to_string(&desired.objects()).unwrap()
    }

    #[test]
    fn nats_actors_name_their_transport_and_get_no_trigger_authentication() {
        let desired = render(WASM);
        assert!(desired.uses_jetstream());
        let env = literal_env(&desired);
        assert_eq!(env["ASYA_TRANSPORT"], "nats");
        assert_eq!(env["ASYA_NATS_URL"], "nats://nats.nats.svc:4222");
        assert!(!env.contains_key("ASYA_STORE"));
        assert!(secret_env(&desired).is_empty());
        assert!(host(&desired)
            .args
            .unwrap()
            .contains(&"--no-create".to_owned()));
        assert!(desired.trigger_authentication.is_none());
        assert_eq!(desired.objects().len(), 3);
    }

    #[test]
    fn rabbitmq_actor_gets_the_url_from_the_secret_and_declares_its_queue() {
        let desired = render(RABBITMQ);
        assert_eq!(desired.transport, Transport::Rabbitmq);
        assert!(!desired.uses_jetstream());
        let env = literal_env(&desired);
        assert_eq!(env["ASYA_TRANSPORT"], "rabbitmq");
        assert_eq!(env["ASYA_STORE"], "dynamodb");
        assert_eq!(env["AWS_REGION"], "us-east-1");
        assert_eq!(env["ASYA_DYNAMODB_TABLE"], "asya-state");
        assert!(!env.contains_key("ASYA_NATS_URL"));
        assert!(!env.contains_key("ASYA_RABBITMQ_URL"), "never a literal");
        assert_eq!(
            secret_env(&desired),
            BTreeMap::from([(
                "ASYA_RABBITMQ_URL".to_owned(),
                ("asya-rabbitmq".to_owned(), "url".to_owned())
            )])
        );
        // The host declares its queues: no --no-create.
        let args = host(&desired).args.unwrap();
        assert!(!args.contains(&"--no-create".to_owned()), "{args:?}");
        assert_eq!(args[..3], ["run", "--manifests", MANIFEST_DIR]);

        let so = desired.scaled_object.clone().unwrap();
        let trigger = &so["spec"]["triggers"][0];
        assert_eq!(trigger["type"], "rabbitmq");
        assert_eq!(trigger["name"], TRIGGER_NAME);
        assert_eq!(
            trigger["metadata"],
            json!({"protocol": "amqp", "queueName": "asya-nlp-classify", "mode": "QueueLength", "value": "12"})
        );
        assert_eq!(
            trigger["authenticationRef"],
            json!({"name": "asya-classify-auth"})
        );
        assert_eq!(so["spec"]["maxReplicaCount"], 7);

        let auth = desired.trigger_authentication.clone().unwrap();
        assert_eq!(auth["apiVersion"], "keda.sh/v1alpha1");
        assert_eq!(auth["kind"], "TriggerAuthentication");
        assert_eq!(auth["metadata"]["name"], "asya-classify-auth");
        assert_eq!(auth["metadata"]["namespace"], "nlp");
        assert_eq!(auth["metadata"]["ownerReferences"][0]["kind"], "AsyncActor");
        assert_eq!(
            auth["spec"],
            json!({"secretTargetRef": [{"parameter": "host", "name": "asya-rabbitmq", "key": "host"}]})
        );
        // Applied before the ScaledObject that refers to it.
        let kinds: Vec<_> = desired
            .objects()
            .iter()
            .map(|o| o["kind"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            kinds,
            [
                "ConfigMap",
                "Deployment",
                "TriggerAuthentication",
                "ScaledObject"
            ]
        );
    }

    #[test]
    fn rabbitmq_settings_and_a_nats_store() {
        let settings = Settings {
            rabbitmq_secret: "broker".into(),
            rabbitmq_store: "nats://nats.nats.svc:4222".into(),
            ..Settings::default()
        };
        let desired = render_with(RABBITMQ, &settings);
        let env = literal_env(&desired);
        assert_eq!(env["ASYA_STORE"], "nats://nats.nats.svc:4222");
        // No DynamoDB, so no AWS settings.
        for absent in ["AWS_REGION", "ASYA_DYNAMODB_TABLE", "AWS_ENDPOINT_URL"] {
            assert!(!env.contains_key(absent), "{absent}");
        }
        assert_eq!(secret_env(&desired)["ASYA_RABBITMQ_URL"].0, "broker");
        let auth = desired.trigger_authentication.unwrap();
        assert_eq!(auth["spec"]["secretTargetRef"][0]["name"], "broker");
        assert!(valid_rabbitmq_store("dynamodb"));
        assert!(valid_rabbitmq_store("nats://nats:4222"));
        for bad in ["", "nats://", "redis://r:6379", "nats://user:pw@nats:4222"] {
            assert!(!valid_rabbitmq_store(bad), "{bad}");
        }
    }

    #[test]
    fn no_credential_is_ever_a_literal() {
        // The Secrets hold e.g. `amqp://asya:s3cr3t-Pa55@rabbitmq.rabbitmq.svc:5672/`; the
        // operator never reads them, and nothing it renders may carry such a value.
        let password = "s3cr3t-Pa55";
        let settings = Settings {
            aws_credentials_secret: Some("aws-keys".into()),
            ..Settings::default()
        };
        for yaml in [RABBITMQ, SQS] {
            let desired = render_with(yaml, &settings);
            let text = everything(&desired);
            assert!(!text.contains(password));
            assert!(!text.contains("amqp://"), "{text}");
            assert!(!text.contains("@rabbitmq"), "{text}");
            // Every credential env is a reference, never a value.
            let env = literal_env(&desired);
            for name in [
                "ASYA_RABBITMQ_URL",
                AWS_ACCESS_KEY_ID,
                AWS_SECRET_ACCESS_KEY,
            ] {
                assert!(!env.contains_key(name), "{name}");
            }
            assert!(!secret_env(&desired).is_empty());
        }
    }

    #[test]
    fn sqs_actor_uses_pod_identity_by_default() {
        let desired = render(SQS);
        assert!(!desired.uses_jetstream());
        let env = literal_env(&desired);
        assert_eq!(env["ASYA_TRANSPORT"], "sqs");
        assert_eq!(env["ASYA_STORE"], "dynamodb");
        assert_eq!(env["AWS_REGION"], "us-east-1");
        assert_eq!(env["ASYA_DYNAMODB_TABLE"], "asya-state");
        assert!(!env.contains_key("AWS_ENDPOINT_URL"));
        assert!(!env.contains_key("ASYA_NATS_URL"));
        // Pod identity: no keys at all.
        assert!(secret_env(&desired).is_empty());
        // The python actor's own container gets none of the transport's env.
        let pod = desired
            .deployment
            .spec
            .clone()
            .unwrap()
            .template
            .spec
            .unwrap();
        let runtime = &pod.containers[0];
        assert_eq!(runtime.name, RUNTIME_CONTAINER);
        assert!(!runtime
            .env
            .as_ref()
            .unwrap()
            .iter()
            .any(|e| e.name.starts_with("AWS_") || e.name == "ASYA_TRANSPORT"));
        assert!(!host(&desired)
            .args
            .unwrap()
            .contains(&"--no-create".to_owned()));

        let so = desired.scaled_object.clone().unwrap();
        let trigger = &so["spec"]["triggers"][0];
        assert_eq!(trigger["type"], "aws-sqs-queue");
        assert_eq!(
            trigger["metadata"],
            json!({"queueURL": "asya-gpu-embed", "queueLength": "4", "awsRegion": "us-east-1"})
        );
        assert_eq!(
            trigger["authenticationRef"],
            json!({"name": "asya-embed-auth"})
        );
        let auth = desired.trigger_authentication.unwrap();
        assert_eq!(auth["metadata"]["name"], "asya-embed-auth");
        assert_eq!(auth["spec"], json!({"podIdentity": {"provider": "aws"}}));
    }

    #[test]
    fn sqs_actor_with_an_endpoint_and_a_credentials_secret() {
        let settings = Settings {
            aws_region: "eu-west-1".into(),
            aws_endpoint: Some("http://elasticmq.aws.svc:9324".into()),
            aws_credentials_secret: Some("aws-keys".into()),
            dynamodb_table: "asya-results".into(),
            ..Settings::default()
        };
        let desired = render_with(SQS, &settings);
        let env = literal_env(&desired);
        assert_eq!(env["AWS_REGION"], "eu-west-1");
        assert_eq!(env["AWS_ENDPOINT_URL"], "http://elasticmq.aws.svc:9324");
        assert_eq!(env["ASYA_DYNAMODB_TABLE"], "asya-results");
        let keys = |k: &str| ("aws-keys".to_owned(), k.to_owned());
        assert_eq!(
            secret_env(&desired),
            BTreeMap::from([
                (AWS_ACCESS_KEY_ID.to_owned(), keys(AWS_ACCESS_KEY_ID)),
                (
                    AWS_SECRET_ACCESS_KEY.to_owned(),
                    keys(AWS_SECRET_ACCESS_KEY)
                ),
            ])
        );
        let so = desired.scaled_object.clone().unwrap();
        let metadata = &so["spec"]["triggers"][0]["metadata"];
        assert_eq!(metadata["awsEndpoint"], "http://elasticmq.aws.svc:9324");
        assert_eq!(metadata["awsRegion"], "eu-west-1");
        let auth = desired.trigger_authentication.unwrap();
        assert_eq!(
            auth["spec"],
            json!({"secretTargetRef": [
                {"parameter": "awsAccessKeyID", "name": "aws-keys", "key": "AWS_ACCESS_KEY_ID"},
                {"parameter": "awsSecretAccessKey", "name": "aws-keys", "key": "AWS_SECRET_ACCESS_KEY"},
            ]})
        );
        // A rabbitmq actor on DynamoDB gets the same AWS settings and keys.
        let rabbit = render_with(RABBITMQ, &settings);
        assert_eq!(
            literal_env(&rabbit)["AWS_ENDPOINT_URL"],
            "http://elasticmq.aws.svc:9324"
        );
        assert_eq!(secret_env(&rabbit).len(), 3);
    }

    #[test]
    fn no_trigger_authentication_without_scaling() {
        let mut a = actor(RABBITMQ);
        a.spec.scaling.as_mut().unwrap().enabled = Some(false);
        let desired = desired_objects(&a, &a.spec.clone(), &Settings::default());
        assert!(desired.scaled_object.is_none());
        assert!(desired.trigger_authentication.is_none());
        // The host still reads the URL from the Secret.
        assert_eq!(secret_env(&desired)["ASYA_RABBITMQ_URL"].1, "url");
    }
}
