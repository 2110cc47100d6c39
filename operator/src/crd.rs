//! The custom resources: `AsyncActor` (namespaced; short names `asya`/`asyas`) and `Flavor`
//! (cluster-scoped preset), group `asya.sh`, version `v1alpha1`.
//!
//! The Rust types are the source of truth: [`crds`] generates both CustomResourceDefinitions
//! (with the extra validation the derive cannot express: actor name, reserved names, CEL rules),
//! and `charts/asya/crds/` is a copy of its output that a test keeps in sync.

use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The API group of both resources.
pub const GROUP: &str = "asya.sh";
/// The served (and stored) version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of both resources.
pub const API_VERSION: &str = "asya.sh/v1alpha1";
/// A valid actor name: a DNS label (it names the Deployment, the consumer and the subject).
pub const ACTOR_NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// Names of the host's built-in actors (the end actors and the flow fan-in); no AsyncActor may
/// take them.
pub const RESERVED_NAMES: [&str; 3] = ["x-sink", "x-sump", "x-fanin"];
/// A duration as the host parses it: `500ms`, `5s`, `2m`, `1h` or bare seconds.
pub const DURATION_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)?$";

/// Where the handler runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
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

/// The message transport between actors.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// NATS JetStream (the only transport a cluster runs on).
    #[default]
    Nats,
}

/// Retry delay growth.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    /// The same delay every time.
    Constant,
    /// Delay grows by the initial interval each attempt.
    Linear,
    /// Delay doubles each attempt.
    Exponential,
}

/// A Kubernetes quantity: an integer or a string such as `256Mi`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum Quantity {
    /// A plain number.
    Number(i64),
    /// A suffixed quantity (`256Mi`, `500m`, `1G`).
    Text(String),
}

impl JsonSchema for Quantity {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "x-kubernetes-int-or-string": true,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
        })
    }
}

impl Quantity {
    /// The quantity as Kubernetes writes it (a string).
    pub fn to_k8s_string(&self) -> String {
        match self {
            Quantity::Number(n) => n.to_string(),
            Quantity::Text(t) => t.clone(),
        }
    }
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
    #[schemars(range(min = 0))]
    pub min_replica_count: Option<i32>,
    /// Most replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_replica_count: Option<i32>,
    /// Alias of `minReplicaCount` (the tutorial's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_replicas: Option<i32>,
    /// Alias of `maxReplicaCount` (the tutorial's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_replicas: Option<i32>,
    /// Messages waiting per replica before scaling out (KEDA `lagThreshold`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub queue_length: Option<i32>,
    /// Seconds between queue checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub polling_interval: Option<i32>,
    /// Seconds of an empty queue before scaling to zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
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
    #[schemars(range(min = 1))]
    pub max_attempts: Option<i32>,
    /// Delay growth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// First delay (`1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)?$"))]
    pub initial_interval: Option<String>,
    /// Largest delay (`1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)?$"))]
    pub max_interval: Option<String>,
    /// Random spread of each delay as a fraction (0.2 = ±20%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub jitter: Option<f64>,
    /// Give up once this long has passed since the first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)?$"))]
    pub max_duration: Option<String>,
    /// Actors a message goes to when attempts run out (default `x-sump`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)?$"))]
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
    pub memory: Option<Quantity>,
    /// CPU deadline per message (`5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)?$"))]
    pub cpu_timeout: Option<String>,
    /// Instances (handler calls running at once) at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_instances: Option<i32>,
    /// Messages in flight at most (received, not yet acknowledged); default `maxInstances`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_in_flight: Option<i32>,
    /// Largest handler result in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<Quantity>,
    /// Hosts the handler may reach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)?$"))]
    pub idle_timeout: Option<String>,
    /// Discard an instance after this many calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
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
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[kube(
    group = "asya.sh",
    version = "v1alpha1",
    kind = "AsyncActor",
    plural = "asyncactors",
    namespaced,
    status = "AsyncActorStatus",
    shortname = "asya",
    shortname = "asyas",
    category = "asya",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Runtime","type":"string","jsonPath":".status.runtime"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.replicas"}"#,
    printcolumn = r#"{"name":"Transport","type":"string","jsonPath":".status.transport"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
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
    /// `nats` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
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
}

/// The spec of a `Flavor`: a cluster-wide preset of actor settings, merged into every actor that
/// lists it in `spec.flavors` (see [`crate::flavor`]).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[kube(
    group = "asya.sh",
    version = "v1alpha1",
    kind = "Flavor",
    plural = "flavors",
    category = "asya",
    printcolumn = r#"{"name":"Runtime","type":"string","jsonPath":".spec.runtime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct FlavorSpec {
    /// `wasm` or `python`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    /// Image for `runtime: python` actors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `nats`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
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

/// CEL rule (and message) keeping `minReplicaCount` and its alias from disagreeing.
const ALIAS_RULES: [(&str, &str); 3] = [
    (
        "!has(self.minReplicaCount) || !has(self.minReplicas) || self.minReplicaCount == self.minReplicas",
        "scaling: minReplicaCount and its alias minReplicas disagree; set one of them",
    ),
    (
        "!has(self.maxReplicaCount) || !has(self.maxReplicas) || self.maxReplicaCount == self.maxReplicas",
        "scaling: maxReplicaCount and its alias maxReplicas disagree; set one of them",
    ),
    (
        "(has(self.minReplicaCount) ? self.minReplicaCount : (has(self.minReplicas) ? self.minReplicas : 0)) <= (has(self.maxReplicaCount) ? self.maxReplicaCount : (has(self.maxReplicas) ? self.maxReplicas : 2147483647))",
        "scaling: the minimum replica count is larger than the maximum",
    ),
];

fn rule(rule: &str, message: &str) -> Value {
    json!({"rule": rule, "message": message})
}

fn pointer_mut<'a>(value: &'a mut Value, path: &str) -> &'a mut Value {
    value
        .pointer_mut(path)
        .unwrap_or_else(|| panic!("generated CRD has no {path}"))
}

fn add_rules(schema: &mut Value, rules: Vec<Value>) {
    let obj = schema.as_object_mut().expect("schema object");
    let list = obj
        .entry("x-kubernetes-validations")
        .or_insert_with(|| json!([]));
    list.as_array_mut().expect("validations list").extend(rules);
}

fn add_scaling_rules(spec_schema: &mut Value) {
    let scaling = pointer_mut(spec_schema, "/properties/scaling");
    add_rules(
        scaling,
        ALIAS_RULES.iter().map(|(r, m)| rule(r, m)).collect(),
    );
    let advanced = pointer_mut(spec_schema, "/properties/scaling/properties/advanced");
    add_rules(
        advanced,
        vec![rule(
            "!has(self.formula) || (has(self.target) && self.target != '')",
            "scaling.advanced.formula needs scaling.advanced.target (the value the formula is scaled to)",
        )],
    );
}

const VERSION_SCHEMA: &str = "/spec/versions/0/schema/openAPIV3Schema";

/// Gives int-or-string fields the conventional `anyOf: [{type: integer}, {type: string}]`
/// (kube's structural rewrite leaves the alternatives empty, which validates nothing).
fn int_or_string_types(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
                map.insert(
                    "anyOf".into(),
                    json!([{"type": "integer"}, {"type": "string"}]),
                );
            }
            map.values_mut().for_each(int_or_string_types);
        }
        Value::Array(items) => items.iter_mut().for_each(int_or_string_types),
        _ => {}
    }
}

/// The `AsyncActor` CRD, as applied to a cluster.
pub fn async_actor_crd() -> Value {
    let mut crd = serde_json::to_value(AsyncActor::crd()).expect("CRD serialises");
    int_or_string_types(&mut crd);
    let root = pointer_mut(&mut crd, VERSION_SCHEMA);
    // Actor names become Deployment names, consumer names and subjects: DNS labels, and not
    // the end actors' names.
    root["properties"]["metadata"] = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 63, "pattern": ACTOR_NAME_PATTERN}
        }
    });
    add_rules(
        root,
        vec![
            rule(
                "self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 63",
                "actor name must be 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit",
            ),
            rule(
                "!(self.metadata.name in ['x-sink', 'x-sump', 'x-fanin'])",
                "actor names x-sink, x-sump and x-fanin are reserved for the host's built-in actors",
            ),
        ],
    );
    let spec = pointer_mut(root, "/properties/spec");
    add_scaling_rules(spec);
    add_rules(
        spec,
        vec![
            rule(
                "!has(self.runtime) || self.runtime != 'python' || has(self.image)",
                "runtime: python needs spec.image (the user's image running python -m asya.runtime)",
            ),
            rule(
                "!has(self.component) || self.component.startsWith('oci://')",
                "spec.component must be an oci:// reference in a cluster",
            ),
        ],
    );
    crd
}

/// The `Flavor` CRD.
pub fn flavor_crd() -> Value {
    let mut crd = serde_json::to_value(Flavor::crd()).expect("CRD serialises");
    int_or_string_types(&mut crd);
    let spec = pointer_mut(&mut crd, &format!("{VERSION_SCHEMA}/properties/spec"));
    add_scaling_rules(spec);
    crd
}

/// Both CRDs, in the order they should be applied.
pub fn crds() -> Vec<Value> {
    vec![async_actor_crd(), flavor_crd()]
}

/// Both CRDs as one multi-document YAML text (what `asya-operator crd` prints and what
/// `charts/asya/crds/asya.sh_crds.yaml` holds).
pub fn crds_yaml() -> String {
    let mut out = String::from(
        "# Generated by `asya-operator crd` from operator/src/crd.rs: do not edit by hand.\n",
    );
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd).expect("CRD as YAML"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_both_replica_spellings() {
        let a: AsyncActorSpec =
            serde_yaml_ng::from_str("scaling: {minReplicaCount: 0, maxReplicaCount: 5}").unwrap();
        let b: AsyncActorSpec =
            serde_yaml_ng::from_str("scaling: {minReplicas: 0, maxReplicas: 5}").unwrap();
        let (a, b) = (a.scaling.unwrap(), b.scaling.unwrap());
        assert_eq!((a.min(), a.max()), (Some(0), Some(5)));
        assert_eq!((b.min(), b.max()), (Some(0), Some(5)));
    }

    #[test]
    fn crd_has_names_columns_and_rules() {
        let crd = async_actor_crd();
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["asya", "asyas"]));
        let columns: Vec<&str> = crd["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            columns,
            ["Phase", "Runtime", "Ready", "Desired", "Transport", "Age"]
        );
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        assert_eq!(
            schema["properties"]["spec"]["properties"]["runtime"]["enum"],
            json!(["wasm", "python"])
        );
        assert_eq!(
            schema["properties"]["metadata"]["properties"]["name"]["pattern"],
            ACTOR_NAME_PATTERN
        );
        let advanced =
            &schema["properties"]["spec"]["properties"]["scaling"]["properties"]["advanced"];
        assert_eq!(advanced["required"], json!(["formula", "target"]));
        assert!(advanced["x-kubernetes-validations"][0]["message"]
            .as_str()
            .unwrap()
            .contains("needs scaling.advanced.target"));
        assert!(crd["spec"]["versions"][0]["subresources"]["status"].is_object());
        let flavor = flavor_crd();
        assert_eq!(flavor["spec"]["scope"], "Cluster");
        let memory = &schema["properties"]["spec"]["properties"]["sandbox"]["properties"]["memory"];
        assert_eq!(memory["x-kubernetes-int-or-string"], true);
        assert_eq!(
            memory["anyOf"],
            json!([{"type": "integer"}, {"type": "string"}])
        );
    }

    #[test]
    fn accepts_the_seed_manifests() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = vec![root.join("tests/fixtures/actors/echo.yaml")];
        for dir in [
            "examples/text-pipeline/actors",
            "examples/gpu-embedder/actors",
        ] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                files.push(entry.unwrap().path());
            }
        }
        let mut count = 0;
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for doc in serde_yaml_ng::Deserializer::from_str(&text) {
                let value = serde_yaml_ng::Value::deserialize(doc).unwrap();
                let actor: AsyncActor = serde_yaml_ng::from_value(value)
                    .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                assert!(!actor.spec.handler.as_deref().unwrap_or("").is_empty());
                count += 1;
            }
        }
        assert!(count >= 9, "read {count} actors");
    }
}
