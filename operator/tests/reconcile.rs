//! `reconcile()` against an in-memory Kubernetes API (kube-fake-client) and an in-memory
//! JetStream: create, update, delete, flavor conflict, scaling off/on, python vs wasm, and the
//! RabbitMQ and SQS transports (which need no JetStream).

use asya_operator::controller::{self, conditions, Context, FINALIZER};
use asya_operator::crd::{AsyncActor, AsyncActorPool, AsyncActorStatus, Condition, Flavor};
use asya_operator::jetstream::MemoryJetStream;
use asya_operator::metrics::Metrics;
use asya_operator::queues::{BrokerAdmin, MemoryQueues, QueueAdmin};
use asya_operator::render::{Settings, CONFIG_HASH_ANNOTATION};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, CustomResource, ResourceExt};
use kube_fake_client::{interceptor, ClientBuilder, PatchType};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// KEDA's ScaledObject, only so the fake API server knows the resource (as a cluster with
/// KEDA installed does). The operator itself applies it as a dynamic object.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "ScaledObject",
    namespaced
)]
struct ScaledObjectSpec {
    triggers: Vec<serde_json::Value>,
}

/// KEDA's TriggerAuthentication, for the same reason.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "TriggerAuthentication",
    namespaced
)]
struct TriggerAuthenticationSpec {
    #[serde(default, rename = "secretTargetRef")]
    secret_target_ref: Vec<serde_json::Value>,
    #[serde(default, rename = "podIdentity")]
    pod_identity: Option<serde_json::Value>,
}

/// An AsyncActor as the fake API server stores it, for `json_patch_as_the_api_server_does`
/// (kube-fake-client reads objects into types that implement `Default`).
mod stored {
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
    #[kube(
        group = "asya.sh",
        version = "v1alpha1",
        kind = "AsyncActor",
        plural = "asyncactors",
        namespaced,
        status = "serde_json::Value",
        derive = "Default"
    )]
    pub struct AsyncActorSpec(serde_json::Value);
}

const NS: &str = "text-pipeline";

fn actor(yaml: &str) -> AsyncActor {
    let mut actor: AsyncActor = serde_yaml_ng::from_str(yaml).unwrap();
    actor.metadata.uid = Some(format!("uid-{}", actor.name_any()));
    actor.metadata.generation = Some(1);
    actor
}

fn flavor(yaml: &str) -> Flavor {
    serde_yaml_ng::from_str(yaml).unwrap()
}

const WASM: &str = r#"
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: preprocess, namespace: text-pipeline}
spec:
  runtime: wasm
  placement: dedicated
  handler: preprocessor.process
  component: oci://localhost:5000/text-pipeline/preprocess:v1
  scaling: {enabled: true, minReplicaCount: 0, maxReplicaCount: 5, queueLength: 10}
  sandbox: {memory: 128Mi, cpuTimeout: 2s, maxInstances: 4}
"#;

const PYTHON: &str = r#"
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: embed, namespace: text-pipeline}
spec:
  runtime: python
  image: registry.local/gpu-embedder:v1
  handler: embedder.Embedder.process
  flavors: [gpu-inference]
"#;

const GPU_FLAVOR: &str = r#"
apiVersion: asya.sh/v1alpha1
kind: Flavor
metadata: {name: gpu-inference}
spec:
  resources: {limits: {nvidia.com/gpu: 1}}
  nodeSelector: {nvidia.com/gpu.present: "true"}
  tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
  scaling: {minReplicaCount: 0, maxReplicaCount: 2, queueLength: 4}
"#;

type FlavorStore = Arc<Mutex<BTreeMap<String, serde_json::Value>>>;

struct Harness {
    client: Client,
    flavors: FlavorStore,
    jetstream: Arc<MemoryJetStream>,
    ctx: Arc<Context>,
}

async fn harness(actors: Vec<AsyncActor>, flavors: Vec<Flavor>, keda: bool) -> Harness {
    harness_with(actors, flavors, keda, Arc::new(BrokerAdmin::default())).await
}

/// A harness whose operator manages RabbitMQ and SQS queues through `queues`.
async fn harness_with(
    actors: Vec<AsyncActor>,
    flavors: Vec<Flavor>,
    keda: bool,
    queues: Arc<dyn QueueAdmin>,
) -> Harness {
    harness_full(actors, flavors, keda, queues, vec![]).await
}

/// A harness with AsyncActorPools.
async fn harness_with_pools(actors: Vec<AsyncActor>, pools: Vec<AsyncActorPool>) -> Harness {
    harness_full(
        actors,
        vec![],
        true,
        Arc::new(BrokerAdmin::default()),
        pools,
    )
    .await
}

async fn harness_full(
    actors: Vec<AsyncActor>,
    flavors: Vec<Flavor>,
    keda: bool,
    queues: Arc<dyn QueueAdmin>,
    pools: Vec<AsyncActorPool>,
) -> Harness {
    let mut builder = ClientBuilder::new()
        .with_resource::<AsyncActor>()
        .with_resource::<Flavor>()
        .with_resource::<AsyncActorPool>();
    if keda {
        builder = builder
            .with_resource::<ScaledObject>()
            .with_resource::<TriggerAuthentication>();
    }
    for a in actors {
        builder = builder.with_object(a);
    }
    for p in pools {
        builder = builder.with_object(p);
    }
    // kube-fake-client 0.3 treats every custom resource as namespaced, so cluster-scoped
    // Flavors are served by a GET interceptor: a GET without a namespace is only ever the
    // reconciler reading a Flavor.
    let store: FlavorStore = Arc::new(Mutex::new(
        flavors
            .into_iter()
            .map(|f| (f.name_any(), serde_json::to_value(&f).unwrap()))
            .collect(),
    ));
    let served = store.clone();
    builder = builder.with_interceptor_funcs(
        interceptor::Funcs::new()
            .get(move |ctx| {
                if ctx.namespace.is_empty() {
                    if let Some(flavor) = served.lock().unwrap().get(ctx.name) {
                        return Ok(Some(flavor.clone()));
                    }
                }
                Ok(None)
            })
            .patch(json_patch_as_the_api_server_does),
    );
    let client = builder.build().await.expect("fake client");
    let jetstream = Arc::new(MemoryJetStream::new());
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            jetstream.clone(),
            Settings {
                host_image: "ghcr.io/asya-sh/asya-host:test".into(),
                ..Settings::default()
            },
            Arc::new(Metrics::new()),
            None,
        )
        .with_queues(queues),
    );
    Harness {
        client,
        flavors: store,
        jetstream,
        ctx,
    }
}

/// kube-fake-client 0.3 applies a JSON patch with the json-patch crate, whose `test` fails
/// ("path is invalid", 422) on a path that does not exist; the API server (evanphx/json-patch)
/// lets a `test` against `null` pass there. kube's finalizer helper relies on that: it adds the
/// first finalizer with `[{"op": "test", "path": "/metadata/finalizers", "value": null},
/// {"op": "add", ...}]`. Applies such a patch as the API server does. (The only JSON patches
/// the reconciler sends are the finalizer helper's, on AsyncActors.)
fn json_patch_as_the_api_server_does(
    ctx: interceptor::PatchContext,
) -> kube_fake_client::Result<Option<serde_json::Value>> {
    let Some(ops) = ctx.patch.as_array() else {
        return Ok(None);
    };
    if ctx.patch_type != PatchType::JsonPatch {
        return Ok(None);
    }
    let stored: stored::AsyncActor = ctx.client.get(ctx.namespace, ctx.name)?;
    let mut object = serde_json::to_value(&stored)?;
    let absent_null_test = |op: &&serde_json::Value| {
        op["op"] == "test"
            && op["value"].is_null()
            && op["path"]
                .as_str()
                .is_some_and(|path| object.pointer(path).is_none())
    };
    if !ops.iter().any(|op| absent_null_test(&op)) {
        return Ok(None);
    }
    let kept: Vec<_> = ops.iter().filter(|op| !absent_null_test(op)).collect();
    let kept: json_patch::Patch = serde_json::from_value(json!(kept))?;
    json_patch::patch(&mut object, &kept)?;
    let patched: stored::AsyncActor = serde_json::from_value(object)?;
    let updated = ctx
        .client
        .update(ctx.namespace, &patched, &PostParams::default())?;
    Ok(Some(serde_json::to_value(updated)?))
}

impl Harness {
    fn actors(&self) -> Api<AsyncActor> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn get(&self, name: &str) -> AsyncActor {
        self.actors().get(name).await.unwrap()
    }

    /// Reconciles the stored actor like the controller does after each change.
    async fn reconcile(&self, name: &str) -> Action {
        let actor = self.get(name).await;
        controller::reconcile(Arc::new(actor), self.ctx.clone())
            .await
            .unwrap_or_else(|e| panic!("reconcile {name}: {e:?}"))
    }

    /// First reconcile adds the finalizer; the second applies.
    async fn settle(&self, name: &str) {
        self.reconcile(name).await;
        assert!(self
            .get(name)
            .await
            .finalizers()
            .contains(&FINALIZER.to_owned()));
        self.reconcile(name).await;
    }

    async fn status(&self, name: &str) -> AsyncActorStatus {
        self.get(name).await.status.expect("status written")
    }

    async fn deployment(&self, name: &str) -> Option<Deployment> {
        Api::<Deployment>::namespaced(self.client.clone(), NS)
            .get_opt(name)
            .await
            .unwrap()
    }

    async fn scaled_object(&self, name: &str) -> Option<DynamicObject> {
        Api::<DynamicObject>::namespaced_with(
            self.client.clone(),
            NS,
            &controller::scaled_object_resource(),
        )
        .get_opt(name)
        .await
        .unwrap()
    }

    async fn trigger_authentication(&self, name: &str) -> Option<DynamicObject> {
        Api::<DynamicObject>::namespaced_with(
            self.client.clone(),
            NS,
            &controller::trigger_authentication_resource(),
        )
        .get_opt(name)
        .await
        .unwrap()
    }

    async fn edit(&self, name: &str, spec_patch: serde_json::Value) {
        let mut actor = self.get(name).await;
        let mut spec = serde_json::to_value(&actor.spec).unwrap();
        json_merge(&mut spec, &spec_patch);
        actor.spec = serde_json::from_value(spec).unwrap();
        actor.metadata.generation = Some(actor.metadata.generation.unwrap_or(1) + 1);
        self.actors()
            .replace(name, &PostParams::default(), &actor)
            .await
            .unwrap();
    }

    /// Plays the Deployment controller: `ready` replicas of the Deployment are ready.
    async fn deployment_ready(&self, name: &str, replicas: i32, ready: i32) {
        let api = Api::<Deployment>::namespaced(self.client.clone(), NS);
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": replicas, "readyReplicas": ready}})),
        )
        .await
        .unwrap();
    }
}

fn json_merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    json_merge(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn cond<'a>(status: &'a AsyncActorStatus, type_: &str) -> &'a Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status:?}"))
}

#[tokio::test]
async fn create_wasm_actor_applies_everything_and_reports_status() {
    let h = harness(vec![actor(WASM)], vec![], true).await;
    h.settle("preprocess").await;

    // JetStream: the namespace's stream, the actor's consumer, the end actors' consumers and
    // the results bucket.
    assert_eq!(
        h.jetstream.stream("ASYA_TEXT_PIPELINE").unwrap(),
        ["asya.text-pipeline.>"]
    );
    assert_eq!(
        h.jetstream
            .consumer("ASYA_TEXT_PIPELINE", "preprocess")
            .as_deref(),
        Some("asya.text-pipeline.preprocess")
    );
    for end in ["x-sink", "x-sump", "x-fanin"] {
        assert!(h.jetstream.consumer("ASYA_TEXT_PIPELINE", end).is_some());
    }
    assert!(h.jetstream.has_bucket("ASYA_RESULTS_TEXT_PIPELINE"));

    // Kubernetes objects, owned by the actor, applied by our field manager.
    let deployment = h.deployment("preprocess").await.expect("deployment");
    let owner = &deployment.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("AsyncActor", "uid-preprocess")
    );
    let pod = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(pod.containers.len(), 1);
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("ghcr.io/asya-sh/asya-host:test")
    );
    let cm = Api::<ConfigMap>::namespaced(h.client.clone(), NS)
        .get("preprocess-asya")
        .await
        .unwrap();
    assert!(cm.data.unwrap()["actor.yaml"].contains("component: oci://localhost:5000/"));
    let so = h.scaled_object("preprocess").await.expect("scaled object");
    assert_eq!(so.data["spec"]["minReplicaCount"], 0);
    assert_eq!(so.data["spec"]["triggers"][0]["type"], "nats-jetstream");
    assert_eq!(
        so.data["spec"]["triggers"][0]["metadata"]["consumer"],
        "preprocess"
    );

    // Status: the workload is not ready yet.
    let status = h.status("preprocess").await;
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(cond(&status, conditions::SPEC_VALID).status, "True");
    assert_eq!(cond(&status, conditions::QUEUE_READY).status, "True");
    assert_eq!(cond(&status, conditions::SCALING_READY).status, "True");
    assert_eq!(cond(&status, conditions::WORKLOAD_READY).status, "False");
    let generation = status.observed_generation.expect("observed generation");
    let queue_since = cond(&status, conditions::QUEUE_READY)
        .last_transition_time
        .clone();

    // The Deployment becomes ready: phase Ready with the replica counts.
    h.deployment_ready("preprocess", 2, 2).await;
    let mut dep = h.deployment("preprocess").await.unwrap();
    dep.spec.as_mut().unwrap().replicas = Some(2);
    Api::<Deployment>::namespaced(h.client.clone(), NS)
        .replace("preprocess", &PostParams::default(), &dep)
        .await
        .unwrap();
    h.reconcile("preprocess").await;
    let status = h.status("preprocess").await;
    assert_eq!(status.phase.as_deref(), Some("Ready"), "{status:?}");
    assert_eq!((status.replicas, status.ready_replicas), (Some(2), Some(2)));
    assert_eq!(cond(&status, conditions::WORKLOAD_READY).status, "True");
    assert!(status.observed_generation.unwrap() >= generation);
    // An unchanged condition keeps its transition time.
    assert_eq!(
        cond(&status, conditions::QUEUE_READY).last_transition_time,
        queue_since
    );
}

#[tokio::test]
async fn update_rolls_the_pods_and_rewrites_the_manifest() {
    let h = harness(vec![actor(WASM)], vec![], true).await;
    h.settle("preprocess").await;
    let hash = |d: Deployment| {
        d.spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()[CONFIG_HASH_ANNOTATION]
            .clone()
    };
    let before = hash(h.deployment("preprocess").await.unwrap());
    let before_generation = h.status("preprocess").await.observed_generation.unwrap();
    h.edit(
        "preprocess",
        json!({"sandbox": {"cpuTimeout": "9s"}, "scaling": {"maxReplicaCount": 7}}),
    )
    .await;
    h.reconcile("preprocess").await;
    assert_ne!(hash(h.deployment("preprocess").await.unwrap()), before);
    let cm = Api::<ConfigMap>::namespaced(h.client.clone(), NS)
        .get("preprocess-asya")
        .await
        .unwrap();
    assert!(cm.data.unwrap()["actor.yaml"].contains("cpuTimeout: 9s"));
    let so = h.scaled_object("preprocess").await.unwrap();
    assert_eq!(so.data["spec"]["maxReplicaCount"], 7);
    let observed = h.status("preprocess").await.observed_generation.unwrap();
    assert!(
        observed > before_generation,
        "{observed} after {before_generation}"
    );
}

#[tokio::test]
async fn delete_removes_the_consumer_then_the_finalizer() {
    let mut deleting = actor(WASM);
    deleting.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    let h = harness(vec![deleting], vec![], true).await;
    h.reconcile("preprocess").await;
    assert_eq!(
        h.jetstream.deleted(),
        [("ASYA_TEXT_PIPELINE".to_owned(), "preprocess".to_owned())]
    );
    let left = h.actors().get_opt("preprocess").await.unwrap();
    assert!(left.is_none_or(|a| a.finalizers().is_empty()));
}

#[tokio::test]
async fn a_failed_consumer_deletion_keeps_the_finalizer() {
    let mut deleting = actor(WASM);
    deleting.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    let h = harness(vec![deleting], vec![], true).await;
    h.jetstream.fail_with(Some("nats: connection refused"));
    let actor = h.get("preprocess").await;
    assert!(controller::reconcile(Arc::new(actor), h.ctx.clone())
        .await
        .is_err());
    assert_eq!(h.get("preprocess").await.finalizers(), [FINALIZER]);
}

#[tokio::test]
async fn flavor_conflict_is_a_condition_naming_both_flavors_and_the_field() {
    let yaml = WASM
        .replace(
            "  runtime: wasm\n",
            "  runtime: wasm\n  flavors: [cpu-fast, llm-resilient]\n",
        )
        .replace(
            "  scaling: {enabled: true, minReplicaCount: 0, maxReplicaCount: 5, queueLength: 10}\n",
            "",
        );
    let h = harness(
        vec![actor(&yaml)],
        vec![
            flavor("apiVersion: asya.sh/v1alpha1\nkind: Flavor\nmetadata: {name: cpu-fast}\nspec: {resiliency: {actorTimeout: 10s}}"),
            flavor("apiVersion: asya.sh/v1alpha1\nkind: Flavor\nmetadata: {name: llm-resilient}\nspec: {resiliency: {actorTimeout: 120s}}"),
        ],
        true,
    )
    .await;
    h.settle("preprocess").await;
    let status = h.status("preprocess").await;
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    let valid = cond(&status, conditions::SPEC_VALID);
    assert_eq!(valid.status, "False");
    assert_eq!(valid.reason.as_deref(), Some("FlavorConflict"));
    let message = valid.message.as_deref().unwrap();
    assert!(message.contains("'cpu-fast'"), "{message}");
    assert!(message.contains("'llm-resilient'"), "{message}");
    assert!(
        message.contains("spec.resiliency.actorTimeout"),
        "{message}"
    );
    assert!(h.deployment("preprocess").await.is_none());
    // ... and a Warning event on the actor.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(h.client.clone(), NS);
    let events = events.list(&Default::default()).await.unwrap().items;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("FlavorConflict")
                && e.type_.as_deref() == Some("Warning")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("preprocess")),
        "{events:?}"
    );

    // Editing a flavor re-reconciles its actors (the controller maps the flavor to them) and
    // the conflict is gone.
    let all = vec![Arc::new(h.get("preprocess").await)];
    let refs = controller::actors_using(&all, "llm-resilient");
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].name, "preprocess");
    assert!(controller::actors_using(&all, "gpu-inference").is_empty());
    let flavors: Api<Flavor> = Api::all(h.client.clone());
    let mut f = flavors.get("llm-resilient").await.unwrap();
    f.spec.resiliency = Some(serde_json::from_value(json!({"actorTimeout": "10s"})).unwrap());
    h.flavors
        .lock()
        .unwrap()
        .insert("llm-resilient".into(), serde_json::to_value(&f).unwrap());
    h.reconcile("preprocess").await;
    let status = h.status("preprocess").await;
    assert_eq!(cond(&status, conditions::SPEC_VALID).status, "True");
    assert_eq!(status.replicas, Some(1));
    assert!(h.deployment("preprocess").await.is_some());

    // Back to a conflict: the replica counts of the earlier status are cleared.
    let mut f = flavors.get("llm-resilient").await.unwrap();
    f.spec.resiliency = Some(serde_json::from_value(json!({"actorTimeout": "99s"})).unwrap());
    h.flavors
        .lock()
        .unwrap()
        .insert("llm-resilient".into(), serde_json::to_value(&f).unwrap());
    h.reconcile("preprocess").await;
    let status = h.status("preprocess").await;
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    assert_eq!((status.replicas, status.ready_replicas), (None, None));
}

#[tokio::test]
async fn missing_flavor_and_invalid_merged_spec_are_reported() {
    let h = harness(vec![actor(PYTHON)], vec![], true).await;
    h.settle("embed").await;
    let status = h.status("embed").await;
    let valid = cond(&status, conditions::SPEC_VALID);
    assert_eq!(valid.reason.as_deref(), Some("FlavorNotFound"));
    assert!(valid.message.as_deref().unwrap().contains("gpu-inference"));

    let no_component = WASM.replace(
        "  component: oci://localhost:5000/text-pipeline/preprocess:v1\n",
        "",
    );
    let h = harness(vec![actor(&no_component)], vec![], true).await;
    h.settle("preprocess").await;
    let status = h.status("preprocess").await;
    let valid = cond(&status, conditions::SPEC_VALID);
    assert_eq!(valid.reason.as_deref(), Some("InvalidSpec"));
    assert!(valid.message.as_deref().unwrap().contains("spec.component"));
    assert!(h.deployment("preprocess").await.is_none());
}

/// Asya's tutorial actor (`tests/fixtures/asya-manifests`), in this test's namespace.
/// The tutorial's actor with its `transport: sqs` line as written, replaced by another
/// transport, or dropped (`None`: NATS, the default).
fn tutorial_actor(transport: Option<&str>) -> AsyncActor {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/asya-manifests/tutorial-text-processor.yaml"
    );
    let text: String = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let indent = &line[..line.len() - line.trim_start().len()];
            match (line.trim_start().starts_with("transport:"), transport) {
                (false, _) => Some(line.to_owned()),
                (true, Some(t)) => Some(format!("{indent}transport: {t}")),
                (true, None) => None,
            }
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let mut actor = actor(&text);
    actor.metadata.namespace = Some(NS.to_owned());
    actor
}

#[tokio::test]
async fn asyas_tutorial_actor_is_reconciled_as_written() {
    // As written (`transport: sqs`): an SQS actor, its queue declared by the host.
    let h = harness(vec![tutorial_actor(Some("sqs"))], vec![], true).await;
    h.settle("text-processor").await;
    let status = h.status("text-processor").await;
    assert_eq!(
        cond(&status, conditions::SPEC_VALID).status,
        "True",
        "{status:?}"
    );
    assert_eq!(status.transport.as_deref(), Some("sqs"));
    let so = h
        .scaled_object("text-processor")
        .await
        .expect("scaled object");
    assert_eq!(so.data["spec"]["triggers"][0]["type"], "aws-sqs-queue");
    assert_eq!(
        so.data["spec"]["triggers"][0]["metadata"]["queueURL"],
        "asya-text-pipeline-text-processor"
    );
    assert!(h.jetstream.stream("ASYA_TEXT_PIPELINE").is_none());
    // A transport this build does not run is refused, naming it; nothing is rendered.
    let h = harness(vec![tutorial_actor(Some("pubsub"))], vec![], true).await;
    h.settle("text-processor").await;
    let status = h.status("text-processor").await;
    let valid = cond(&status, conditions::SPEC_VALID);
    assert_eq!(valid.reason.as_deref(), Some("InvalidSpec"));
    let message = valid.message.as_deref().unwrap();
    assert!(
        message.contains("spec.transport: must be nats, rabbitmq or sqs")
            && message.contains("(got pubsub)"),
        "{message}"
    );
    assert!(h.deployment("text-processor").await.is_none());
    // On NATS: Asya's pod shape, the handler from ASYA_HANDLER, the tutorial's scaling.
    let h = harness(vec![tutorial_actor(None)], vec![], true).await;
    h.settle("text-processor").await;
    let pod = h
        .deployment("text-processor")
        .await
        .expect("deployment")
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let names: Vec<_> = pod.containers.iter().map(|c| c.name.clone()).collect();
    assert_eq!(names, ["asya-runtime", "asya-sidecar"]);
    let runtime = &pod.containers[0];
    assert_eq!(runtime.image.as_deref(), Some("my-processor:v1"));
    let handler = runtime
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "ASYA_HANDLER")
        .and_then(|e| e.value.clone());
    assert_eq!(handler.as_deref(), Some("src.text_processor.process"));
    let so = h
        .scaled_object("text-processor")
        .await
        .expect("scaled object");
    assert_eq!(so.data["spec"]["maxReplicaCount"], 50);
    let status = h.status("text-processor").await;
    assert_eq!(status.runtime.as_deref(), Some("python"));
}

const RABBITMQ: &str = r#"
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: classify, namespace: text-pipeline}
spec:
  transport: rabbitmq
  placement: dedicated
  handler: classifier.classify
  component: oci://localhost:5000/text-pipeline/classify:v1
  scaling: {minReplicaCount: 0, maxReplicaCount: 5, queueLength: 10}
"#;

#[tokio::test]
async fn rabbitmq_actor_needs_no_jetstream() {
    let h = harness(vec![actor(RABBITMQ)], vec![], true).await;
    // No NATS at all: every JetStream call would fail.
    h.jetstream.fail_with(Some("nats: no servers available"));
    h.settle("classify").await;
    let status = h.status("classify").await;
    let queue = cond(&status, conditions::QUEUE_READY);
    assert_eq!(queue.status, "True");
    assert_eq!(queue.reason.as_deref(), Some("DeclaredByHost"));
    assert!(
        queue
            .message
            .as_deref()
            .unwrap()
            .contains("rabbitmq queue asya-text-pipeline-classify"),
        "{queue:?}"
    );
    assert_eq!(status.transport.as_deref(), Some("rabbitmq"));
    assert_eq!(
        cond(&status, conditions::SCALING_READY).status,
        "True",
        "{status:?}"
    );
    h.jetstream.fail_with(None);
    assert!(h.jetstream.stream("ASYA_TEXT_PIPELINE").is_none());

    let so = h.scaled_object("classify").await.expect("scaled object");
    let trigger = &so.data["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "rabbitmq");
    assert_eq!(trigger["authenticationRef"]["name"], "asya-classify-auth");
    let auth = h
        .trigger_authentication("asya-classify-auth")
        .await
        .expect("trigger authentication");
    assert_eq!(
        auth.data["spec"]["secretTargetRef"][0],
        json!({"parameter": "host", "name": "asya-rabbitmq", "key": "host"})
    );
    assert_eq!(
        auth.metadata.owner_references.as_ref().unwrap()[0].name,
        "classify"
    );
    let pod = h
        .deployment("classify")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let url = pod.containers[0]
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "ASYA_RABBITMQ_URL")
        .unwrap();
    assert!(url.value.is_none());
    assert_eq!(
        url.value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap()
            .key,
        "url"
    );

    // Scaling off: the ScaledObject and the TriggerAuthentication go.
    h.edit("classify", json!({"scaling": {"enabled": false}}))
        .await;
    h.reconcile("classify").await;
    assert!(h.scaled_object("classify").await.is_none());
    assert!(h
        .trigger_authentication("asya-classify-auth")
        .await
        .is_none());
}

#[tokio::test]
async fn deleting_a_rabbitmq_actor_asks_nothing_of_jetstream() {
    let mut deleting = actor(RABBITMQ);
    deleting.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    let h = harness(vec![deleting], vec![], true).await;
    h.jetstream.fail_with(Some("nats: no servers available"));
    h.reconcile("classify").await;
    assert!(h.jetstream.deleted().is_empty());
    let left = h.actors().get_opt("classify").await.unwrap();
    assert!(left.is_none_or(|a| a.finalizers().is_empty()));
}

#[tokio::test]
async fn an_operator_managing_the_broker_creates_the_queue_and_deletes_it_only_when_empty() {
    let queues = MemoryQueues::new();
    let h = harness_with(vec![actor(RABBITMQ)], vec![], true, queues.clone()).await;
    h.jetstream.fail_with(Some("nats: no servers available"));
    h.settle("classify").await;
    let status = h.status("classify").await;
    let queue = cond(&status, conditions::QUEUE_READY);
    assert_eq!(
        (queue.status.as_str(), queue.reason.as_deref()),
        ("True", Some("QueueCreated")),
        "{queue:?}"
    );
    assert_eq!(
        queues.queues(),
        [(
            "rabbitmq".to_owned(),
            "asya-text-pipeline-classify".to_owned()
        )]
    );

    // Deleting the actor: a queue still holding messages is kept, an empty one goes.
    let mut deleting = h.get("classify").await;
    deleting.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    let busy = MemoryQueues::new();
    busy.busy
        .lock()
        .unwrap()
        .insert("asya-text-pipeline-classify".to_owned());
    let h = harness_with(vec![deleting.clone()], vec![], true, busy.clone()).await;
    busy.ensure_queue(
        asya_spec::actor::Transport::Rabbitmq,
        "asya-text-pipeline-classify",
    )
    .await
    .unwrap();
    h.reconcile("classify").await;
    assert_eq!(busy.queues().len(), 1, "kept: it holds messages");
    let h = harness_with(vec![deleting], vec![], true, queues.clone()).await;
    h.reconcile("classify").await;
    assert!(
        queues.queues().is_empty(),
        "an empty queue is deleted with its actor"
    );
}

#[tokio::test]
async fn scaling_off_and_on_again() {
    let h = harness(vec![actor(WASM)], vec![], true).await;
    h.settle("preprocess").await;
    assert!(h.scaled_object("preprocess").await.is_some());
    assert_eq!(
        h.deployment("preprocess")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        None,
        "KEDA owns the replicas"
    );

    h.edit(
        "preprocess",
        json!({"scaling": {"enabled": false, "minReplicaCount": 2}}),
    )
    .await;
    h.reconcile("preprocess").await;
    assert!(h.scaled_object("preprocess").await.is_none());
    assert_eq!(
        h.deployment("preprocess")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(2)
    );
    let status = h.status("preprocess").await;
    let scaling = cond(&status, conditions::SCALING_READY);
    assert_eq!(
        (scaling.status.as_str(), scaling.reason.as_deref()),
        ("True", Some("ScalingDisabled"))
    );

    h.edit(
        "preprocess",
        json!({"scaling": {"enabled": true, "minReplicaCount": 0}}),
    )
    .await;
    h.reconcile("preprocess").await;
    let so = h
        .scaled_object("preprocess")
        .await
        .expect("scaled object back");
    assert_eq!(so.data["spec"]["minReplicaCount"], 0);
    // Scaled to zero by KEDA: the workload is "ready" with no replicas.
    let mut dep = h.deployment("preprocess").await.unwrap();
    dep.spec.as_mut().unwrap().replicas = Some(0);
    Api::<Deployment>::namespaced(h.client.clone(), NS)
        .replace("preprocess", &PostParams::default(), &dep)
        .await
        .unwrap();
    h.reconcile("preprocess").await;
    let status = h.status("preprocess").await;
    assert_eq!(status.phase.as_deref(), Some("ScaledToZero"), "{status:?}");
    assert_eq!(status.replicas, Some(0));
}

#[tokio::test]
async fn python_actor_with_a_flavor_gets_the_sidecar_pod() {
    let h = harness(vec![actor(PYTHON)], vec![flavor(GPU_FLAVOR)], true).await;
    h.settle("embed").await;
    let deployment = h.deployment("embed").await.expect("deployment");
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let names: Vec<_> = pod.containers.iter().map(|c| c.name.clone()).collect();
    assert_eq!(names, ["asya-runtime", "asya-sidecar"]);
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("registry.local/gpu-embedder:v1")
    );
    assert_eq!(
        pod.containers[1].image.as_deref(),
        Some("ghcr.io/asya-sh/asya-host:test")
    );
    // From the flavor: GPU limits on the handler, node selector, tolerations, scale to zero.
    let limits = pod.containers[0].resources.clone().unwrap().limits.unwrap();
    assert_eq!(limits["nvidia.com/gpu"].0, "1");
    assert_eq!(pod.node_selector.unwrap()["nvidia.com/gpu.present"], "true");
    assert_eq!(pod.tolerations.unwrap().len(), 1);
    let so = h.scaled_object("embed").await.expect("scaled object");
    assert_eq!(so.data["spec"]["maxReplicaCount"], 2);
    assert_eq!(
        so.data["spec"]["triggers"][0]["metadata"]["lagThreshold"],
        "4"
    );
    let status = h.status("embed").await;
    assert_eq!(status.runtime.as_deref(), Some("python"));
    assert_eq!(status.transport.as_deref(), Some("nats"));
    assert!(cond(&status, conditions::SPEC_VALID)
        .message
        .as_deref()
        .unwrap()
        .contains("gpu-inference"));
}

#[tokio::test]
async fn jetstream_down_and_keda_missing_are_conditions() {
    let h = harness(vec![actor(WASM)], vec![], false).await;
    h.jetstream.fail_with(Some("nats: no servers available"));
    h.reconcile("preprocess").await;
    let action = h.reconcile("preprocess").await;
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(15)));
    let status = h.status("preprocess").await;
    let queue = cond(&status, conditions::QUEUE_READY);
    assert_eq!(queue.status, "False");
    assert!(queue
        .message
        .as_deref()
        .unwrap()
        .contains("no servers available"));
    let scaling = cond(&status, conditions::SCALING_READY);
    assert_eq!(scaling.reason.as_deref(), Some("KedaNotInstalled"));
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    // The workload is applied all the same.
    assert!(h.deployment("preprocess").await.is_some());
}

/// A `runtime: wasm` actor without a placement: pooled.
fn pooled(name: &str, created: &str) -> AsyncActor {
    let mut actor = actor(&format!(
        "apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {{name: {name}, namespace: {NS}}}\n\
         spec:\n  handler: m.process\n  component: oci://localhost:5000/{NS}/{name}:v1\n"
    ));
    actor.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        created.parse().unwrap(),
    ));
    actor
}

async fn pool_keys(h: &Harness) -> Vec<String> {
    Api::<ConfigMap>::namespaced(h.client.clone(), NS)
        .get_opt("asya-pool-default")
        .await
        .unwrap()
        .map(|cm| cm.data.unwrap_or_default().into_keys().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn wasm_actors_share_their_namespaces_host_pool() {
    let h = harness(
        vec![
            pooled("alpha", "2026-01-01T00:00:00Z"),
            pooled("beta", "2026-01-02T00:00:00Z"),
        ],
        vec![],
        true,
    )
    .await;
    h.settle("alpha").await;
    h.settle("beta").await;
    assert_eq!(
        pool_keys(&h).await,
        ["text-pipeline.alpha.yaml", "text-pipeline.beta.yaml"]
    );
    // One Deployment and one ScaledObject (one trigger) for both; none of their own.
    assert!(h.deployment("alpha").await.is_none());
    let hosts = h.deployment("asya-pool-default").await.expect("pool hosts");
    let args = hosts.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert!(args
        .windows(2)
        .any(|w| w[0] == "--pool" && w[1] == "text-pipeline/default"));
    let scaled = h
        .scaled_object("asya-pool-default")
        .await
        .expect("pool scaling");
    let triggers = scaled.data["spec"]["triggers"].as_array().unwrap();
    assert_eq!(triggers.len(), 1);
    assert_eq!(triggers[0]["type"], "metrics-api");
    assert_eq!(scaled.data["spec"]["minReplicaCount"], 1, "one warm host");
    let status = h.status("beta").await;
    assert_eq!(status.pool.as_deref(), Some("text-pipeline/default"));
    let placed = cond(&status, conditions::PLACED);
    assert_eq!(
        (placed.status.as_str(), placed.reason.as_deref()),
        ("True", Some("Pooled"))
    );
    assert!(placed.message.as_deref().unwrap().contains("2 actor(s)"));
    // The queue is the actor's own, pooled or not.
    assert!(h.jetstream.consumer("ASYA_TEXT_PIPELINE", "beta").is_some());
}

#[tokio::test]
async fn a_full_pool_refuses_with_a_condition_and_a_deleted_actor_is_not_a_member() {
    let pool: AsyncActorPool = serde_yaml_ng::from_str(&format!(
        "apiVersion: asya.sh/v1alpha1\nkind: AsyncActorPool\nmetadata: {{name: default, namespace: {NS}, uid: pool-uid}}\nspec: {{maxActors: 1}}\n"
    ))
    .unwrap();
    // alpha, the oldest, is being deleted (its finalizer still on): the pool leaves it out.
    let mut alpha = pooled("alpha", "2026-01-01T00:00:00Z");
    alpha.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
    alpha.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    alpha.status = Some(AsyncActorStatus {
        pool: Some(format!("{NS}/default")),
        ..Default::default()
    });
    let h = harness_with_pools(
        vec![
            alpha,
            pooled("beta", "2026-01-02T00:00:00Z"),
            pooled("gamma", "2026-01-03T00:00:00Z"),
        ],
        vec![pool],
    )
    .await;
    h.settle("beta").await;
    h.settle("gamma").await;
    let status = h.status("gamma").await;
    let placed = cond(&status, conditions::PLACED);
    assert_eq!(
        (placed.status.as_str(), placed.reason.as_deref()),
        ("False", Some("PoolFull"))
    );
    assert!(
        placed
            .message
            .as_deref()
            .unwrap()
            .contains("maxActors 1 reached"),
        "{placed:?}"
    );
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(pool_keys(&h).await, ["text-pipeline.beta.yaml"]);
    let placed = cond(&h.status("beta").await, conditions::PLACED).clone();
    assert_eq!(placed.status, "True");
    // The pool's objects are owned by the AsyncActorPool (deleting it collects them).
    let hosts = h.deployment("asya-pool-default").await.unwrap();
    assert_eq!(
        hosts.metadata.owner_references.unwrap()[0].kind,
        "AsyncActorPool"
    );
    // alpha's cleanup re-renders its pool, which still serves beta only.
    h.reconcile("alpha").await;
    assert_eq!(pool_keys(&h).await, ["text-pipeline.beta.yaml"]);
}

#[tokio::test]
async fn an_invalid_actor_stays_out_of_the_pool_and_the_others_are_served() {
    let mut broken = pooled("broken", "2026-01-01T00:00:00Z");
    broken.spec.resiliency = Some(serde_json::from_value(json!({"actorTimeout": "soon"})).unwrap());
    let h = harness(
        vec![broken, pooled("fine", "2026-01-02T00:00:00Z")],
        vec![],
        true,
    )
    .await;
    h.settle("broken").await;
    h.settle("fine").await;
    assert_eq!(h.status("broken").await.phase.as_deref(), Some("Failed"));
    assert_eq!(pool_keys(&h).await, ["text-pipeline.fine.yaml"]);
    assert_eq!(h.status("fine").await.phase.as_deref(), Some("Pending"));
}
