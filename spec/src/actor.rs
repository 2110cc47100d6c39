//! The resource types: `AsyncActor` (namespaced; short names `asya`/`asyas`) and `Flavor`
//! (cluster-scoped preset), group `asya.sh`, version `v1alpha1`. With the `crd` feature the
//! Kubernetes `CustomResource` derive adds the `AsyncActor`/`Flavor` objects (see [`crate::crd`]);
//! without it, [`ActorDocument`] reads a manifest file.
//!
//! Field rules that need more than a type (durations, byte sizes, ranges) are declared here
//! once, through the schema of each field, and checked by [`crate::check`].

use crate::quantity::Quantity;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The API group of both resources.
pub const GROUP: &str = "asya.sh";
/// The served (and stored) version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of both resources.
pub const API_VERSION: &str = "asya.sh/v1alpha1";

/// Where the handler runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
#[schemars(extend("x-asya-message" = "must be wasm or python"))]
pub enum Runtime {
    /// A WebAssembly component inside the host (the default).
    #[default]
    Wasm,
    /// The user's image runs the native Python runtime; the host runs beside it as sidecar.
    Python,
}

impl Runtime {
    /// `wasm` or `python`.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Wasm => "wasm",
            Runtime::Python => "python",
        }
    }
}

/// What the handler receives.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
#[schemars(extend("x-asya-message" = "must be payload or envelope"))]
pub enum Mode {
    /// The payload only (default).
    #[default]
    Payload,
    /// The whole envelope (may change future route steps).
    Envelope,
}

impl Mode {
    /// `payload` or `envelope`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Payload => "payload",
            Mode::Envelope => "envelope",
        }
    }
}

/// The message transport between actors. Every transport Asya's manifests name is a known
/// value, so a manifest naming one this build does not run is refused with a message saying so
/// ([`Transport::runs_here`]), not with "unknown variant".
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
#[schemars(extend("x-asya-message" = "must be nats, rabbitmq, sqs or pubsub"))]
pub enum Transport {
    /// NATS JetStream.
    #[default]
    Nats,
    /// RabbitMQ (quorum queues, publisher confirms).
    Rabbitmq,
    /// Amazon SQS (results and fan-ins in DynamoDB).
    Sqs,
    /// Google Pub/Sub (Asya's; not run by this build).
    Pubsub,
}

impl Transport {
    /// The name as manifests write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Nats => "nats",
            Transport::Rabbitmq => "rabbitmq",
            Transport::Sqs => "sqs",
            Transport::Pubsub => "pubsub",
        }
    }

    /// Whether this build runs actors on the transport.
    pub fn runs_here(self) -> bool {
        matches!(self, Transport::Nats | Transport::Rabbitmq | Transport::Sqs)
    }
}

/// Where a `runtime: wasm` actor's handler runs in a cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
#[schemars(extend("x-asya-message" = "must be pool or dedicated"))]
pub enum Placement {
    /// In a shared host pool (the namespace's default pool, or `spec.pool`): many actors, one
    /// process, each in its own sandbox. The default for `runtime: wasm`.
    #[default]
    Pool,
    /// In a Deployment of its own (always so for `runtime: python`).
    Dedicated,
}

impl Placement {
    /// The name as manifests write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::Pool => "pool",
            Placement::Dedicated => "dedicated",
        }
    }
}

/// Retry delay growth.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(extend("x-asya-message" = "must be constant, linear or exponential"))]
pub enum Backoff {
    /// The same delay every time.
    Constant,
    /// Delay grows by the initial interval each attempt.
    Linear,
    /// Delay doubles each attempt.
    Exponential,
}

/// `spec.scaling.advanced`: a KEDA scaling-modifier formula over the queue trigger (named
/// `queue`), e.g. `formula: "queue / 2"`, `target: "5"`. A formula always needs a target.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingFormula {
    /// Expression over trigger names (the queue trigger is `queue`).
    pub formula: String,
    /// Target value of the formula's result (required with a formula).
    pub target: String,
    /// Activation target of the composed metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_target: Option<String>,
    /// `AverageValue` (default) or `Value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_type: Option<String>,
}

/// `spec.scaling`: KEDA autoscaling on the actor's queue length.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scaling {
    /// Autoscale with KEDA (default true when `scaling` is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Fewest replicas; 0 scales to zero while the queue is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("x-asya-message" = "must be at least 0"))]
    pub min_replica_count: Option<i32>,
    /// Most replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1), extend("x-asya-message" = "must be at least 1"))]
    pub max_replica_count: Option<i32>,
    /// Alias of `minReplicaCount` (the tutorial's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("x-asya-message" = "must be at least 0"))]
    pub min_replicas: Option<i32>,
    /// Alias of `maxReplicaCount` (the tutorial's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1), extend("x-asya-message" = "must be at least 1"))]
    pub max_replicas: Option<i32>,
    /// Messages waiting per replica before scaling out (KEDA `lagThreshold`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1), extend("x-asya-message" = "must be at least 1"))]
    pub queue_length: Option<i32>,
    /// Seconds between queue checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1), extend("x-asya-message" = "must be at least 1"))]
    pub polling_interval: Option<i32>,
    /// Seconds of an empty queue before scaling to zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("x-asya-message" = "must be at least 0"))]
    pub cooldown_period: Option<i32>,
    /// A scaling formula (KEDA `scalingModifiers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advanced: Option<ScalingFormula>,
}

impl Scaling {
    /// `minReplicaCount`, or its alias `minReplicas`.
    pub fn min(&self) -> Option<i32> {
        self.min_replica_count.or(self.min_replicas)
    }

    /// `maxReplicaCount`, or its alias `maxReplicas`.
    pub fn max(&self) -> Option<i32> {
        self.max_replica_count.or(self.max_replicas)
    }
}

/// A retry policy of `spec.resiliency.policies`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000), extend("x-asya-message" = "must be between 1 and 1000"))]
    pub max_attempts: Option<i32>,
    /// Delay growth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// First delay (`1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::duration::schema")]
    pub initial_interval: Option<String>,
    /// Largest delay (`1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::duration::schema")]
    pub max_interval: Option<String>,
    /// Random spread of each delay as a fraction (0.2 = ±20%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0), extend("x-asya-message" = "must be between 0 and 1"))]
    pub jitter: Option<f64>,
    /// Give up once this long has passed since the first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::duration::schema")]
    pub max_duration: Option<String>,
    /// Actors a message goes to when attempts run out (default `x-sump`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::names::actor_list_schema")]
    pub on_exhausted: Vec<String>,
}

/// An error-to-policy rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct RetryRule {
    /// Exception class names (or host reasons such as `Timeout`).
    pub errors: Vec<String>,
    /// A policy name of `policies`.
    pub policy: String,
}

/// `spec.resiliency`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resiliency {
    /// Timeout of one handler call (`30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::duration::schema")]
    pub actor_timeout: Option<String>,
    /// Named retry policies; `default` applies to errors no rule matches.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub policies: BTreeMap<String, RetryPolicy>,
    /// Error-to-policy rules, first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RetryRule>,
    /// Errors never retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub non_retryable_errors: Vec<String>,
}

/// `spec.sandbox`: limits of the WASM sandbox (and of the python runtime's concurrency).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    /// Memory cap of one instance (`256Mi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::quantity::bytes_schema")]
    pub memory: Option<Quantity>,
    /// CPU deadline per message (`5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::duration::schema")]
    pub cpu_timeout: Option<String>,
    /// Instances (handler calls running at once) at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024), extend("x-asya-message" = "must be between 1 and 1024"))]
    pub max_instances: Option<i32>,
    /// Messages in flight at most (received, not yet acknowledged); default `maxInstances`, or
    /// `maxInstances` × `maxConcurrency` for an `async def` handler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65536), extend("x-asya-message" = "must be between 1 and 65536"))]
    pub max_in_flight: Option<i32>,
    /// Calls running at once in one instance of an `async def` handler (default 64): each
    /// awaits on its own asyncio task inside the instance. Plain functions run one call per
    /// instance and ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000), extend("x-asya-message" = "must be between 1 and 10000"))]
    pub max_concurrency: Option<i32>,
    /// Largest handler result in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::quantity::bytes_schema")]
    pub max_output_bytes: Option<Quantity>,
    /// Hosts the handler may reach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::hosts::schema")]
    pub allowed_hosts: Vec<String>,
    /// Environment the handler sees (nothing else is visible inside the sandbox).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Keep one instance ready while idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_warm: Option<bool>,
    /// Keep the compiled component mapped while idle (by default an idle actor parks it and maps
    /// it again from the compile cache on its next message, in milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_loaded: Option<bool>,
    /// Drop idle instances after this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::duration::schema")]
    pub idle_timeout: Option<String>,
    /// Discard an instance after this many calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1), extend("x-asya-message" = "must be at least 1"))]
    pub recycle_after_calls: Option<i64>,
}

/// Compute resources of the container that runs the handler.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
pub struct Resources {
    /// Limits (`cpu`, `memory`, `nvidia.com/gpu`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, Quantity>,
    /// Requests.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Quantity>,
}

/// A pod toleration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Toleration {
    /// Taint key (empty with `Exists` matches every taint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Exists` or `Equal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Exists", "Equal"]))]
    pub operator: Option<String>,
    /// Taint value (with `Equal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["NoSchedule", "PreferNoSchedule", "NoExecute"]))]
    pub effect: Option<String>,
    /// Seconds a `NoExecute` taint is tolerated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

/// The spec of an `AsyncActor`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[cfg_attr(feature = "crd", derive(kube::CustomResource))]
#[cfg_attr(
    feature = "crd",
    kube(
        group = "asya.sh",
        version = "v1alpha1",
        kind = "AsyncActor",
        plural = "asyncactors",
        namespaced,
        status = "AsyncActorStatus",
        shortname = "asya",
        shortname = "asyas",
        category = "asya-all",
        printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
        printcolumn = r#"{"name":"Runtime","type":"string","jsonPath":".status.runtime"}"#,
        printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
        printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.replicas"}"#,
        printcolumn = r#"{"name":"Transport","type":"string","jsonPath":".status.transport"}"#,
        printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AsyncActorSpec {
    /// `module.func` or `module.Class.method`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    /// `payload` (default) or `envelope`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// `wasm` (default) or `python`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    /// The component (`oci://registry/repo:tag`), for `runtime: wasm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// The user's image running `python -m asya.runtime`, for `runtime: python`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `nats` (default), `rabbitmq` or `sqs`; Asya's `pubsub` is refused with a message (this
    /// build does not run it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    /// `pool` (the default for `runtime: wasm`: a shared host pool) or `dedicated` (a
    /// Deployment of its own; `runtime: python` actors always are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// The named host pool (`AsyncActorPool`) to join: `name` in the actor's namespace or
    /// `namespace/name`; unset: the namespace's default pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// KEDA autoscaling on the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<Scaling>,
    /// Timeouts and retry policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resiliency: Option<Resiliency>,
    /// Sandbox limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Sandbox>,
    /// Environment variables of the handler's container.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Secrets whose keys become environment variables of the handler's container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_refs: Vec<String>,
    /// Compute resources of the handler's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Node selector of the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Flavors (cluster presets) merged in order before this spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flavors: Vec<String>,
    /// Asya's one-flavor form: `flavor: x` means `flavors: [x]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<String>,
    /// Asya's pod template: its `asya-runtime` container gives the image, the handler and mode
    /// (`ASYA_HANDLER`, `ASYA_HANDLER_MODE` env), env and resources, and makes the actor
    /// `runtime: python` (see [`crate::workload`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<crate::workload::Workload>,
}

/// A status condition (`QueueReady`, `WorkloadReady`, `ScalingReady`, `SpecValid`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition's type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the status last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// The generation the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The status of an `AsyncActor`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AsyncActorStatus {
    /// `Pending`, `Ready`, `ScaledToZero`, `Failed` or `Terminating`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Desired replicas of the Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Ready replicas of the Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// The generation last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The effective runtime (flavors merged, default `wasm`), shown by `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// The effective transport (default `nats`), shown by `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// The host pool serving the actor (`namespace/name`); unset when it has its own
    /// Deployment or was not placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// The spec of a `Flavor`: a cluster-wide preset of actor settings, merged into every actor that
/// lists it in `spec.flavors` (see [`crate::flavor`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[cfg_attr(feature = "crd", derive(kube::CustomResource))]
#[cfg_attr(
    feature = "crd",
    kube(
        group = "asya.sh",
        version = "v1alpha1",
        kind = "Flavor",
        plural = "flavors",
        category = "asya-all",
        printcolumn = r#"{"name":"Runtime","type":"string","jsonPath":".spec.runtime"}"#,
        printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
    )
)]
#[serde(rename_all = "camelCase")]
pub struct FlavorSpec {
    /// `wasm` or `python`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    /// Image for `runtime: python` actors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `nats` (see [`AsyncActorSpec::transport`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    /// `pool` or `dedicated` (see [`AsyncActorSpec::placement`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// KEDA autoscaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<Scaling>,
    /// Timeouts and retry policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resiliency: Option<Resiliency>,
    /// Sandbox limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Sandbox>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Secrets exposed as environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_refs: Vec<String>,
    /// Compute resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Node selector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

/// The spec of an `AsyncActorPool`: a named pool of hosts that serves the `runtime: wasm`
/// actors which name it in `spec.pool`, from its own namespace and the namespaces it admits.
/// Tenants share its processes only through the WASM sandbox.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[cfg_attr(feature = "crd", derive(kube::CustomResource))]
#[cfg_attr(
    feature = "crd",
    kube(
        group = "asya.sh",
        version = "v1alpha1",
        kind = "AsyncActorPool",
        plural = "asyncactorpools",
        namespaced,
        status = "AsyncActorPoolStatus",
        shortname = "asyapool",
        category = "asya-all",
        printcolumn = r#"{"name":"Actors","type":"integer","jsonPath":".status.actors"}"#,
        printcolumn = r#"{"name":"Max","type":"integer","jsonPath":".spec.maxActors"}"#,
        printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
        printcolumn = r#"{"name":"Transport","type":"string","jsonPath":".spec.transport"}"#,
        printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AsyncActorPoolSpec {
    /// Other namespaces whose actors may join (the pool's own namespace always may); `*`
    /// admits every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// The most actors the pool takes; later ones are refused with a `Placed` condition
    /// (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2000))]
    pub max_actors: Option<i32>,
    /// The transport its hosts serve (default `nats`); actors on another are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    /// Fewest hosts (default 1: one warm host; 0 only when every member actor allows zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_replicas: Option<i32>,
    /// Most hosts (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_replicas: Option<i32>,
    /// Backlog per host that KEDA aims for (default 100 messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub queue_length: Option<i32>,
    /// Compute resources of each host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Node selector of the hosts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
}

/// The status of an `AsyncActorPool`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AsyncActorPoolStatus {
    /// Actors placed in the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actors: Option<i32>,
    /// Actors that asked for the pool and were refused (full, not admitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<i32>,
    /// Ready hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
}

/// `metadata` of a manifest file: the fields outside a cluster that matter.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
pub struct DocumentMetadata {
    /// The actor's name: its queue and its step name in routes.
    pub name: String,
    /// The tenant; `default` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// An `AsyncActor` manifest as a file holds it (the host's and the SDK's view: no Kubernetes
/// object metadata beyond name and namespace).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActorDocument {
    /// Must be `asya.sh/v1alpha1`.
    pub api_version: String,
    /// Must be `AsyncActor`.
    pub kind: String,
    /// Name and namespace.
    pub metadata: DocumentMetadata,
    /// The actor's specification.
    #[serde(default)]
    pub spec: AsyncActorSpec,
}

impl ActorDocument {
    /// The actor's name.
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// The actor's namespace (`default` when unset).
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }

    /// The document with Asya's forms (`workload`, `flavor`) turned into this project's fields
    /// ([`crate::workload::resolve`]) and then checked ([`ActorDocument::check`]).
    pub fn resolved(&self) -> Result<ActorDocument, crate::SpecError> {
        let resolved = ActorDocument {
            spec: crate::workload::resolve(&self.spec)?,
            ..self.clone()
        };
        resolved.check()?;
        Ok(resolved)
    }

    /// Checks the whole document: apiVersion, kind, name and every rule of the spec.
    pub fn check(&self) -> Result<(), crate::SpecError> {
        if self.api_version != API_VERSION {
            return Err(crate::SpecError::new(
                "apiVersion",
                format!("must be {API_VERSION:?} (got {:?})", self.api_version),
            ));
        }
        if self.kind != "AsyncActor" {
            return Err(crate::SpecError::new(
                "kind",
                format!("must be \"AsyncActor\" (got {:?})", self.kind),
            ));
        }
        crate::names::check_actor_name(self.name())?;
        crate::check::check_spec(&crate::workload::resolve(&self.spec)?)
    }
}
