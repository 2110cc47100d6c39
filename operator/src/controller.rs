//! The reconciler: for each `AsyncActor`, merge its flavors, validate, ensure the JetStream
//! stream and consumer (`nats` actors), server-side apply the ConfigMap, Deployment,
//! TriggerAuthentication (`rabbitmq`/`sqs`) and ScaledObject, and write the status (phase,
//! replica counts, `SpecValid`/`QueueReady`/`WorkloadReady`/`ScalingReady`). A finalizer
//! deletes a `nats` actor's consumer when the actor is deleted (owner references take care of
//! the Kubernetes objects).
//!
//! `rabbitmq` and `sqs` actors need no broker connection here: the host declares the actor's
//! queue (`asya-<namespace>-<actor>`) and its delay queues when it starts, so their
//! `QueueReady` only says so, and the JetStream admin is never called for them (an operator
//! without NATS serves them).

use crate::crd::{AsyncActor, AsyncActorStatus, Condition, Flavor, FlavorSpec, Transport};
use crate::crd::{AsyncActorPool, AsyncActorPoolSpec};
use crate::flavor::{self, MergeError};
use crate::jetstream::{JetStreamAdmin, QueueError};
use crate::metrics::Metrics;
use crate::pool::{self, Member, Placed, PoolRef, Refusal};
use crate::queues::{BrokerAdmin, Deleted, Ensured, QueueAdmin};
use crate::render::{self, Desired, Settings, FIELD_MANAGER};
use crate::validate;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer, Event as FinalizerEvent};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The finalizer that removes an actor's JetStream consumer.
pub const FINALIZER: &str = "asya.sh/jetstream-consumer";

/// Condition types.
pub mod conditions {
    /// The merged spec (flavors and the actor's own) is valid.
    pub const SPEC_VALID: &str = "SpecValid";
    /// The stream and the consumer exist.
    pub const QUEUE_READY: &str = "QueueReady";
    /// The Deployment has the replicas it wants ready.
    pub const WORKLOAD_READY: &str = "WorkloadReady";
    /// The ScaledObject is applied (or scaling is off).
    pub const SCALING_READY: &str = "ScalingReady";
    /// The actor has a place: its own Deployment, or a host pool with room that admits it.
    pub const PLACED: &str = "Placed";
}

/// A reconcile failure (the controller retries it).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A JetStream, RabbitMQ or SQS call failed.
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    /// A JSON patch could not be built (a bug).
    #[error("building a JSON patch: {0}")]
    Patch(#[from] serde_json::Error),
    /// Adding or removing [`FINALIZER`] failed (the controller retries).
    #[error("AsyncActor {namespace}/{name}: {source}")]
    Finalizer {
        /// The actor's namespace.
        namespace: String,
        /// The actor's name.
        name: String,
        /// What the finalizer helper reported.
        #[source]
        source: Box<finalizer::Error<Error>>,
    },
    /// The actor has no namespace.
    #[error("AsyncActor {0} has no namespace")]
    NoNamespace(String),
}

impl Error {
    /// Unwraps the reconciler's own error from the finalizer helper's; the helper's own
    /// failures (adding or removing the finalizer) keep the actor they concern.
    fn from_finalizer(namespace: &str, name: &str, err: finalizer::Error<Error>) -> Self {
        match err {
            finalizer::Error::ApplyFailed(err) | finalizer::Error::CleanupFailed(err) => err,
            other => Error::Finalizer {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                source: Box::new(other),
            },
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// JetStream administration.
    pub jetstream: Arc<dyn JetStreamAdmin>,
    /// RabbitMQ and SQS queue administration (none managed unless given).
    pub queues: Arc<dyn QueueAdmin>,
    /// Cluster-wide settings.
    pub settings: Settings,
    /// Operator metrics.
    pub metrics: Arc<Metrics>,
    /// Publishes Kubernetes Events on the actors (best effort).
    pub recorder: Recorder,
    /// The controller's cache of actors (set by [`run`]; without it, pools list actors from
    /// the API).
    pub actors: std::sync::OnceLock<Store<AsyncActor>>,
    /// One lock per pool: its objects are rendered from all its members, one render at a time.
    pool_locks: std::sync::Mutex<BTreeMap<PoolRef, Arc<tokio::sync::Mutex<()>>>>,
}

impl Context {
    /// A context whose events are reported as `asya-operator` (instance: `instance`).
    pub fn new(
        client: Client,
        jetstream: Arc<dyn JetStreamAdmin>,
        settings: Settings,
        metrics: Arc<Metrics>,
        instance: Option<String>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.to_owned(),
                instance,
            },
        );
        Context {
            client,
            jetstream,
            queues: Arc::new(BrokerAdmin::default()),
            settings,
            metrics,
            recorder,
            actors: std::sync::OnceLock::new(),
            pool_locks: std::sync::Mutex::default(),
        }
    }

    fn pool_lock(&self, pool: &PoolRef) -> Arc<tokio::sync::Mutex<()>> {
        self.pool_locks
            .lock()
            .expect("pool locks")
            .entry(pool.clone())
            .or_default()
            .clone()
    }

    /// The same context, creating RabbitMQ and SQS queues through `queues`.
    pub fn with_queues(mut self, queues: Arc<dyn QueueAdmin>) -> Self {
        self.queues = queues;
        self
    }

    /// Publishes a Warning event on the actor; a failure is only logged (events are advisory).
    async fn warn(&self, actor: &AsyncActor, reason: &str, note: String) {
        let event = KubeEvent {
            type_: EventType::Warning,
            reason: reason.to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, &actor.object_ref(&())).await {
            tracing::debug!(error = %err, "could not publish an event");
        }
    }
}

/// The KEDA ScaledObject resource (applied as a dynamic object: KEDA may not be installed).
pub fn scaled_object_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledObject"),
        "scaledobjects",
    )
}

/// The KEDA TriggerAuthentication resource (a dynamic object, like the ScaledObject).
pub fn trigger_authentication_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("keda.sh", "v1alpha1", "TriggerAuthentication"),
        "triggerauthentications",
    )
}

/// Deletes a namespaced dynamic object; one that does not exist (or whose resource does not,
/// KEDA not installed) is success.
async fn delete_if_present(api: &Api<DynamicObject>, name: &str) -> Result<(), Error> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(err.into()),
    }
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339 time")
}

fn condition(type_: &str, ok: bool, reason: &str, message: impl Into<String>) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.into()),
        last_transition_time: None,
        observed_generation: None,
    }
}

/// Keeps `lastTransitionTime` of conditions whose status did not change; stamps the others.
pub fn carry_transitions(old: &[Condition], new: &mut [Condition], generation: Option<i64>) {
    let stamp = now();
    for condition in new.iter_mut() {
        condition.observed_generation = generation;
        let previous = old.iter().find(|c| c.type_ == condition.type_);
        condition.last_transition_time = match previous {
            Some(p) if p.status == condition.status && p.last_transition_time.is_some() => {
                p.last_transition_time.clone()
            }
            _ => Some(stamp.clone()),
        };
    }
}

/// The actors that list `flavor` in `spec.flavors` (re-reconciled when it changes).
pub fn actors_using(actors: &[Arc<AsyncActor>], flavor: &str) -> Vec<ObjectRef<AsyncActor>> {
    actors
        .iter()
        .filter(|a| a.spec.flavors.iter().any(|f| f == flavor))
        .map(|a| ObjectRef::from_obj(a.as_ref()))
        .collect()
}

/// Reconciles one actor (the entry point the controller calls).
///
/// kube's [`finalizer()`] helper runs it: the reconcile that finds no [`FINALIZER`] only adds it
/// (the patch triggers the next reconcile, which applies), so the finalizer is in place before
/// anything is created; on deletion the consumer is deleted first and the finalizer removed
/// after, so a consumer never outlives its actor. Both patches are guarded by a JSON patch
/// `test` of the finalizers they change.
pub async fn reconcile(actor: Arc<AsyncActor>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(actor, &ctx).await;
    ctx.metrics
        .reconciled(result.is_ok(), started.elapsed().as_secs_f64());
    result
}

async fn reconcile_inner(actor: Arc<AsyncActor>, ctx: &Arc<Context>) -> Result<Action, Error> {
    let namespace = actor
        .namespace()
        .ok_or_else(|| Error::NoNamespace(actor.name_any()))?;
    let name = actor.name_any();
    let api: Api<AsyncActor> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, actor, |event| async {
        match event {
            FinalizerEvent::Apply(actor) => apply(actor, ctx.clone()).await,
            FinalizerEvent::Cleanup(actor) => {
                cleanup(&actor, ctx).await?;
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|err| Error::from_finalizer(&namespace, &name, err))
}

/// What the controller does after a failed reconcile: log and retry in 30 s.
pub fn error_policy(actor: Arc<AsyncActor>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(actor = %actor.name_any(), namespace = ?actor.namespace(), error = %error, "reconcile failed");
    Action::requeue(Duration::from_secs(30))
}

async fn load_flavors(
    client: &Client,
    names: &[String],
) -> Result<BTreeMap<String, FlavorSpec>, Error> {
    let api: Api<Flavor> = Api::all(client.clone());
    let mut found = BTreeMap::new();
    for name in names {
        if let Some(flavor) = api.get_opt(name).await? {
            found.insert(name.clone(), flavor.spec);
        }
    }
    Ok(found)
}

async fn write_status(
    actor: &AsyncActor,
    mut status: AsyncActorStatus,
    client: &Client,
) -> Result<(), Error> {
    let namespace = actor.namespace().unwrap_or_default();
    let old = actor
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    carry_transitions(&old, &mut status.conditions, actor.metadata.generation);
    status.observed_generation = actor.metadata.generation;
    let api: Api<AsyncActor> = Api::namespaced(client.clone(), &namespace);
    // A merge patch keeps fields it does not mention: clear the ones this status leaves unset
    // (a Failed actor has no replica counts).
    let mut body = serde_json::to_value(&status)?;
    for key in [
        "phase",
        "replicas",
        "readyReplicas",
        "runtime",
        "transport",
        "pool",
    ] {
        body.as_object_mut()
            .expect("status is an object")
            .entry(key)
            .or_insert(serde_json::Value::Null);
    }
    api.patch_status(
        &actor.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": body })),
    )
    .await?;
    Ok(())
}

/// Status of an actor whose spec cannot be rendered.
fn failed_status(reason: &str, message: String) -> AsyncActorStatus {
    AsyncActorStatus {
        phase: Some("Failed".into()),
        conditions: vec![condition(conditions::SPEC_VALID, false, reason, message)],
        ..Default::default()
    }
}

async fn ensure_queue(desired: &Desired, jetstream: &dyn JetStreamAdmin) -> Result<(), QueueError> {
    jetstream.ensure_stream(&desired.stream).await?;
    jetstream.ensure_consumer(&desired.consumer).await?;
    for consumer in &desired.end_consumers {
        jetstream.ensure_consumer(consumer).await?;
    }
    jetstream.ensure_results_bucket(&desired.stream).await
}

async fn apply(actor: Arc<AsyncActor>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = actor.name_any();
    let namespace = actor.namespace().unwrap_or_default();
    let client = &ctx.client;

    // 1. Asya's forms (workload, flavor) resolved; flavors merged; the merged spec validated.
    let own = match asya_spec::workload::resolve(&actor.spec) {
        Ok(own) => own,
        Err(err) => {
            ctx.warn(&actor, "InvalidSpec", err.to_string()).await;
            write_status(
                &actor,
                failed_status("InvalidSpec", err.to_string()),
                client,
            )
            .await?;
            return Ok(Action::await_change());
        }
    };
    let available = load_flavors(client, &own.flavors).await?;
    let merged = match flavor::merge(&own, &available) {
        Ok(merged) => merged,
        Err(err) => {
            tracing::info!(actor = %name, %namespace, error = %err, "flavors do not merge");
            ctx.warn(&actor, err.reason(), err.to_string()).await;
            write_status(&actor, failed_status(err.reason(), err.to_string()), client).await?;
            // A missing flavor may appear later; a conflict waits for an edit (watched).
            return Ok(match err {
                MergeError::Missing(_) => Action::requeue(Duration::from_secs(300)),
                _ => Action::await_change(),
            });
        }
    };
    if let Err(invalid) = validate::actor(&name, &merged) {
        ctx.warn(&actor, "InvalidSpec", invalid.to_string()).await;
        write_status(
            &actor,
            failed_status("InvalidSpec", invalid.to_string()),
            client,
        )
        .await?;
        return Ok(Action::await_change());
    }
    let desired = render::desired_objects(&actor, &merged, &ctx.settings);
    let mut conds = vec![condition(
        conditions::SPEC_VALID,
        true,
        "Merged",
        if merged.flavors.is_empty() {
            "spec is valid".to_owned()
        } else {
            format!("spec is valid with flavors {}", merged.flavors.join(", "))
        },
    )];

    // 2. The queue: JetStream on NATS; on RabbitMQ and SQS the operator creates it when it
    //    manages that broker, else the host declares it when it starts.
    let queue_name = render::queue_name(&namespace, &name);
    let queue = if desired.uses_jetstream() {
        ensure_queue(&desired, ctx.jetstream.as_ref())
            .await
            .map(|_| None)
    } else {
        ctx.queues
            .ensure_queue(desired.transport, &queue_name)
            .await
            .map(Some)
    };
    let queue_error = if desired.uses_jetstream() {
        "JetStreamError"
    } else {
        "QueueError"
    };
    conds.push(match &queue {
        Ok(None) => condition(
            conditions::QUEUE_READY,
            true,
            "ConsumerReady",
            format!(
                "consumer {} on stream {} ({})",
                desired.consumer.name, desired.consumer.stream, desired.consumer.filter_subject
            ),
        ),
        Ok(Some(Ensured::Created)) => condition(
            conditions::QUEUE_READY,
            true,
            "QueueCreated",
            format!("{} queue {queue_name}", desired.transport.as_str()),
        ),
        Ok(Some(Ensured::NotManaged)) => condition(
            conditions::QUEUE_READY,
            true,
            "DeclaredByHost",
            format!(
                "the host declares the {} queue {} when it starts",
                desired.transport.as_str(),
                render::queue_name(&namespace, &name)
            ),
        ),
        Err(err) => condition(conditions::QUEUE_READY, false, queue_error, err.to_string()),
    });
    if let Err(err) = &queue {
        ctx.warn(&actor, queue_error, err.to_string()).await;
    }

    // 3. Placement: a shared host pool (the default for wasm actors) or a Deployment of its own.
    let pools = load_pools(client).await?;
    let previous = actor
        .status
        .as_ref()
        .and_then(|s| s.pool.as_deref())
        .map(|p| PoolRef::parse(&namespace, p));
    let placed = pool::choose(&namespace, &merged, &pool_specs(&pools));
    if !matches!(placed, Ok(Placed::Dedicated)) {
        // Objects of an earlier dedicated placement go (the queue stays: it is the actor's).
        remove_dedicated(ctx.as_ref(), &namespace, &name).await?;
    }
    if let Some(previous) = &previous {
        if !matches!(&placed, Ok(Placed::Pool(p)) if p == previous) {
            reconcile_pool(ctx.as_ref(), previous, &pools).await?;
        }
    }
    let runtime = asya_spec::workload::effective_runtime(&merged)
        .as_str()
        .to_owned();
    let transport = merged.transport.unwrap_or_default().as_str().to_owned();
    match placed {
        Ok(Placed::Dedicated) => conds.push(condition(
            conditions::PLACED,
            true,
            "Dedicated",
            "a Deployment of its own",
        )),
        Ok(Placed::Pool(pool)) => {
            let outcome = reconcile_pool(ctx.as_ref(), &pool, &pools).await?;
            let me = (namespace.clone(), name.clone());
            conds.push(if outcome.members.contains(&me) {
                condition(
                    conditions::PLACED,
                    true,
                    "Pooled",
                    format!(
                        "served by host pool {pool} with {} actor(s)",
                        outcome.members.len()
                    ),
                )
            } else if let Some(refusal) = outcome.refused.get(&me) {
                ctx.warn(&actor, refusal.reason(), refusal.to_string())
                    .await;
                condition(
                    conditions::PLACED,
                    false,
                    refusal.reason(),
                    refusal.to_string(),
                )
            } else {
                condition(
                    conditions::PLACED,
                    false,
                    "NotYetPlaced",
                    format!("pool {pool} has not taken the actor yet"),
                )
            });
            conds.push(outcome.scaling.clone());
            let workload = Workload {
                replicas: outcome.replicas(),
                runtime,
                transport,
                pool: Some(pool.to_string()),
            };
            return finish(&actor, conds, workload, queue.is_ok(), client).await;
        }
        Err(refusal) => {
            ctx.warn(&actor, refusal.reason(), refusal.to_string())
                .await;
            conds.push(condition(
                conditions::PLACED,
                false,
                refusal.reason(),
                refusal.to_string(),
            ));
            let status = AsyncActorStatus {
                phase: Some("Pending".into()),
                conditions: conds,
                runtime: Some(runtime),
                transport: Some(transport),
                ..Default::default()
            };
            write_status(&actor, status, client).await?;
            // A pool may be created or widened later (pools are watched too).
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
    }

    // 4. Kubernetes objects, server-side applied.
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    config_maps
        .patch(
            &render::config_map_name(&name),
            &params,
            &Patch::Apply(&desired.config_map),
        )
        .await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let deployment = deployments
        .patch(&name, &params, &Patch::Apply(&desired.deployment))
        .await?;

    // The TriggerAuthentication first: the ScaledObject's trigger refers to it. None (nats,
    // scaling off): one left from an earlier spec is deleted.
    let auth_resource = trigger_authentication_resource();
    let auths: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &namespace, &auth_resource);
    let auth_name = render::trigger_authentication_name(&name);
    let mut keda_missing = false;
    match &desired.trigger_authentication {
        Some(object) => match auths
            .patch(&auth_name, &params, &Patch::Apply(object))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => keda_missing = true,
            Err(err) => return Err(err.into()),
        },
        None => delete_if_present(&auths, &auth_name).await?,
    }

    let resource = scaled_object_resource();
    let scaled_objects: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &namespace, &resource);
    let keda_not_installed = || {
        condition(
            conditions::SCALING_READY,
            false,
            "KedaNotInstalled",
            "the keda.sh/v1alpha1 ScaledObject resource does not exist: install KEDA",
        )
    };
    conds.push(match &desired.scaled_object {
        Some(_) if keda_missing => keda_not_installed(),
        Some(object) => match scaled_objects
            .patch(&name, &params, &Patch::Apply(object))
            .await
        {
            Ok(_) => condition(
                conditions::SCALING_READY,
                true,
                "ScaledObjectApplied",
                format!(
                    "KEDA scales {} to {} replicas on the queue length",
                    object["spec"]["minReplicaCount"], object["spec"]["maxReplicaCount"]
                ),
            ),
            Err(kube::Error::Api(status)) if status.code == 404 => keda_not_installed(),
            Err(err) => return Err(err.into()),
        },
        None => {
            delete_if_present(&scaled_objects, &name).await?;
            condition(
                conditions::SCALING_READY,
                true,
                "ScalingDisabled",
                format!(
                    "autoscaling is off: {} fixed replica(s)",
                    render::fixed_replicas(&merged)
                ),
            )
        }
    });

    // 5. Replica counts and the workload's readiness.
    let workload = Workload {
        replicas: replicas_of(&deployment),
        runtime,
        transport,
        pool: None,
    };
    finish(&actor, conds, workload, queue.is_ok(), client).await
}

/// What serves an actor, as its status reports it.
struct Workload {
    /// Wanted and ready replicas (of its Deployment or its pool's).
    replicas: (i32, i32),
    runtime: String,
    transport: String,
    /// `namespace/name` of its pool.
    pool: Option<String>,
}

/// Adds `WorkloadReady`, writes the status and says when to look again: soon while anything
/// is not ready (or the queue failed), else in five minutes.
async fn finish(
    actor: &AsyncActor,
    mut conds: Vec<Condition>,
    workload: Workload,
    queue_ok: bool,
    client: &Client,
) -> Result<Action, Error> {
    let (wanted, ready) = workload.replicas;
    conds.push(workload_condition(wanted, ready));
    let all_true = conds.iter().all(|c| c.status == "True");
    let status = AsyncActorStatus {
        phase: Some(phase(all_true, wanted == 0).into()),
        conditions: conds,
        replicas: Some(wanted),
        ready_replicas: Some(ready),
        observed_generation: None,
        runtime: Some(workload.runtime),
        transport: Some(workload.transport),
        pool: workload.pool,
    };
    write_status(actor, status, client).await?;
    Ok(if !queue_ok || !all_true {
        Action::requeue(Duration::from_secs(15))
    } else {
        Action::requeue(Duration::from_secs(300))
    })
}

/// Wanted and ready replicas of a Deployment.
fn replicas_of(deployment: &Deployment) -> (i32, i32) {
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let ready = deployment
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    (wanted, ready)
}

fn workload_condition(wanted: i32, ready: i32) -> Condition {
    if wanted == 0 {
        condition(
            conditions::WORKLOAD_READY,
            true,
            "ScaledToZero",
            "no replicas: the queue is empty",
        )
    } else if ready >= wanted {
        condition(
            conditions::WORKLOAD_READY,
            true,
            "ReplicasReady",
            format!("{ready}/{wanted} replicas ready"),
        )
    } else {
        condition(
            conditions::WORKLOAD_READY,
            false,
            "ReplicasNotReady",
            format!("{ready}/{wanted} replicas ready"),
        )
    }
}

fn phase(all_true: bool, scaled_to_zero: bool) -> &'static str {
    if all_true && scaled_to_zero {
        "ScaledToZero"
    } else if all_true {
        "Ready"
    } else {
        "Pending"
    }
}

/// Every `AsyncActorPool` by reference, with its uid; none when the CRD is not installed.
async fn load_pools(
    client: &Client,
) -> Result<BTreeMap<PoolRef, (AsyncActorPoolSpec, Option<String>)>, Error> {
    let api: Api<AsyncActorPool> = Api::all(client.clone());
    let list = match api.list(&Default::default()).await {
        Ok(list) => list,
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(BTreeMap::new()),
        Err(err) => return Err(err.into()),
    };
    Ok(list
        .items
        .into_iter()
        .map(|p| {
            let key = PoolRef {
                namespace: p.namespace().unwrap_or_default(),
                name: p.name_any(),
            };
            (key, (p.spec, p.metadata.uid))
        })
        .collect())
}

fn pool_specs(
    pools: &BTreeMap<PoolRef, (AsyncActorPoolSpec, Option<String>)>,
) -> BTreeMap<PoolRef, AsyncActorPoolSpec> {
    pools
        .iter()
        .map(|(k, (spec, _))| (k.clone(), spec.clone()))
        .collect()
}

/// Deletes a namespaced object; one already gone is success.
async fn delete_typed<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Removes the objects of an actor's own Deployment layout (placed in a pool now).
async fn remove_dedicated(ctx: &Context, namespace: &str, name: &str) -> Result<(), Error> {
    let client = &ctx.client;
    delete_typed(
        &Api::<Deployment>::namespaced(client.clone(), namespace),
        name,
    )
    .await?;
    delete_typed(
        &Api::<ConfigMap>::namespaced(client.clone(), namespace),
        &render::config_map_name(name),
    )
    .await?;
    let scaled = scaled_object_resource();
    delete_if_present(
        &Api::namespaced_with(client.clone(), namespace, &scaled),
        name,
    )
    .await?;
    let auth = trigger_authentication_resource();
    delete_if_present(
        &Api::namespaced_with(client.clone(), namespace, &auth),
        &render::trigger_authentication_name(name),
    )
    .await
}

/// The merged, valid spec of an actor (`None` when it does not resolve, merge or validate:
/// such an actor is reported by its own reconcile and kept out of pools).
fn merged_spec(
    actor: &AsyncActor,
    flavors: &BTreeMap<String, FlavorSpec>,
) -> Option<crate::crd::AsyncActorSpec> {
    let own = asya_spec::workload::resolve(&actor.spec).ok()?;
    let merged = flavor::merge(&own, flavors).ok()?;
    validate::actor(&actor.name_any(), &merged).ok()?;
    Some(merged)
}

/// What a pool's render decided.
pub struct PoolOutcome {
    /// Its members, as (namespace, actor).
    pub members: std::collections::BTreeSet<(String, String)>,
    /// Actors refused for room.
    pub refused: BTreeMap<(String, String), Refusal>,
    /// The hosts' Deployment as applied (none: no members, deleted).
    pub deployment: Option<Deployment>,
    /// `ScalingReady` of the pool's members.
    pub scaling: Condition,
}

impl PoolOutcome {
    /// Wanted and ready hosts.
    pub fn replicas(&self) -> (i32, i32) {
        self.deployment.as_ref().map(replicas_of).unwrap_or((0, 0))
    }
}

/// Renders and applies a pool from all its members: the ConfigMap of their manifests, the
/// hosts' Deployment and one ScaledObject. An empty pool's objects are deleted. Renders of one
/// pool never overlap (each sees the previous one's result).
pub async fn reconcile_pool(
    ctx: &Context,
    pool: &PoolRef,
    pools: &BTreeMap<PoolRef, (AsyncActorPoolSpec, Option<String>)>,
) -> Result<PoolOutcome, Error> {
    let lock = ctx.pool_lock(pool);
    let _one_at_a_time = lock.lock().await;
    let client = &ctx.client;
    let (spec, uid) = pools.get(pool).cloned().unwrap_or_default();
    let specs = pool_specs(pools);
    let actors: Vec<Arc<AsyncActor>> = match ctx.actors.get() {
        Some(store) => store.state(),
        None => Api::<AsyncActor>::all(client.clone())
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .map(Arc::new)
            .collect(),
    };
    let flavors: BTreeMap<String, FlavorSpec> = Api::<Flavor>::all(client.clone())
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .map(|f| (f.name_any(), f.spec))
        .collect();
    let mut candidates = Vec::new();
    for actor in actors {
        if actor.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let namespace = actor.namespace().unwrap_or_default();
        let Some(merged) = merged_spec(&actor, &flavors) else {
            continue;
        };
        if pool::choose(&namespace, &merged, &specs) != Ok(Placed::Pool(pool.clone())) {
            continue;
        }
        candidates.push(Member {
            namespace,
            name: actor.name_any(),
            created: actor
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
            manifest: render::host_manifest(&actor, &merged),
            secret_refs: merged.secret_refs.clone(),
            min_replicas: merged.scaling.as_ref().and_then(|s| s.min()),
        });
    }
    let assignment = pool::assign(pool, &spec, candidates);
    let key = |m: &Member| (m.namespace.clone(), m.name.clone());
    let members = assignment.members.iter().map(key).collect();
    let refused = assignment
        .full
        .iter()
        .map(|(m, why)| (key(m), why.clone()))
        .collect();
    let name = pool.object_name();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &pool.namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &pool.namespace);
    let scaled_resource = scaled_object_resource();
    let scaled_objects: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &pool.namespace, &scaled_resource);
    let (deployment, scaling) = if assignment.members.is_empty() {
        delete_if_present(&scaled_objects, &name).await?;
        let auth_resource = trigger_authentication_resource();
        delete_if_present(
            &Api::namespaced_with(client.clone(), &pool.namespace, &auth_resource),
            &name,
        )
        .await?;
        delete_typed(&deployments, &name).await?;
        delete_typed(&config_maps, &name).await?;
        let done = condition(
            conditions::SCALING_READY,
            true,
            "PoolEmpty",
            "the pool has no members",
        );
        (None, done)
    } else {
        let desired = pool::desired_pool(
            pool,
            &spec,
            &assignment.members,
            &ctx.settings,
            uid.as_deref(),
        );
        let params = PatchParams::apply(FIELD_MANAGER).force();
        config_maps
            .patch(&name, &params, &Patch::Apply(&desired.config_map))
            .await?;
        let deployment = deployments
            .patch(&name, &params, &Patch::Apply(&desired.deployment))
            .await?;
        let auth_resource = trigger_authentication_resource();
        let auths: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &pool.namespace, &auth_resource);
        match &desired.trigger_authentication {
            Some(object) => match auths.patch(&name, &params, &Patch::Apply(object)).await {
                Ok(_) => {}
                // KEDA missing: the ScaledObject below says so.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(err) => return Err(err.into()),
            },
            None => delete_if_present(&auths, &name).await?,
        }
        let scaling = match scaled_objects
            .patch(&name, &params, &Patch::Apply(&desired.scaled_object))
            .await
        {
            Ok(_) => condition(
                conditions::SCALING_READY,
                true,
                "PoolScaledObjectApplied",
                format!(
                    "KEDA scales pool {pool} to {}..{} hosts on its members' total backlog",
                    desired.scaled_object["spec"]["minReplicaCount"],
                    desired.scaled_object["spec"]["maxReplicaCount"]
                ),
            ),
            Err(kube::Error::Api(status)) if status.code == 404 => condition(
                conditions::SCALING_READY,
                false,
                "KedaNotInstalled",
                "the keda.sh/v1alpha1 ScaledObject resource does not exist: install KEDA",
            ),
            Err(err) => return Err(err.into()),
        };
        (Some(deployment), scaling)
    };
    let outcome = PoolOutcome {
        members,
        refused,
        deployment,
        scaling,
    };
    if uid.is_some() {
        let (_, ready) = outcome.replicas();
        let status = json!({"status": {
            "actors": outcome.members.len(),
            "refused": outcome.refused.len(),
            "readyReplicas": ready,
        }});
        let api: Api<AsyncActorPool> = Api::namespaced(client.clone(), &pool.namespace);
        if let Err(err) = api
            .patch_status(&pool.name, &PatchParams::default(), &Patch::Merge(status))
            .await
        {
            tracing::debug!(%pool, error = %err, "could not write the pool's status");
        }
    }
    Ok(outcome)
}

/// The actors that may go to `pool` (they name it, or it is their namespace's default pool).
pub fn actors_in_pool(actors: &[Arc<AsyncActor>], pool: &PoolRef) -> Vec<ObjectRef<AsyncActor>> {
    actors
        .iter()
        .filter(|a| {
            let namespace = a.namespace().unwrap_or_default();
            match &a.spec.pool {
                Some(named) => &PoolRef::parse(&namespace, named) == pool,
                None => namespace == pool.namespace,
            }
        })
        .map(|a| ObjectRef::from_obj(a.as_ref()))
        .collect()
}

/// The transport an actor was last reconciled on (its status), else its own spec's (default
/// `nats`): whether it has a JetStream consumer to delete.
fn last_transport(actor: &AsyncActor) -> Transport {
    let reported = actor
        .status
        .as_ref()
        .and_then(|s| s.transport.as_deref())
        .and_then(|t| serde_json::from_value(json!(t)).ok());
    reported.or(actor.spec.transport).unwrap_or_default()
}

async fn cleanup(actor: &AsyncActor, ctx: &Context) -> Result<(), Error> {
    let namespace = actor.namespace().unwrap_or_default();
    if let Some(pool) = actor.status.as_ref().and_then(|s| s.pool.as_deref()) {
        // The pool's hosts stop serving it (its render skips actors being deleted).
        let pools = load_pools(&ctx.client).await?;
        reconcile_pool(ctx, &PoolRef::parse(&namespace, pool), &pools).await?;
    }
    let transport = last_transport(actor);
    if transport != Transport::Nats {
        // No NATS to ask. The queue goes if the operator manages it and it is empty; a queue
        // still holding messages is kept, so deleting an actor never drops its work.
        let queue = render::queue_name(&namespace, &actor.name_any());
        match ctx.queues.delete_queue(transport, &queue).await? {
            Deleted::Gone => tracing::info!(%queue, "queue deleted"),
            Deleted::KeptWithMessages => {
                tracing::warn!(%queue, "queue kept: it still holds messages")
            }
            Deleted::NotManaged => {}
        }
        return Ok(());
    }
    let stream = render::stream_name(&namespace);
    ctx.jetstream
        .delete_consumer(&stream, &actor.name_any())
        .await?;
    tracing::info!(actor = %actor.name_any(), %namespace, %stream, "consumer deleted");
    Ok(())
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let controller = Controller::new(
        Api::<AsyncActor>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    );
    let store = controller.store();
    let _ = ctx.actors.set(store.clone());
    let pool_store = store.clone();
    let host_store = store.clone();
    controller
        .owns(
            Api::<Deployment>::all(client.clone()),
            watcher::Config::default().labels("app.kubernetes.io/managed-by=asya-operator"),
        )
        .watches(
            Api::<Flavor>::all(client.clone()),
            watcher::Config::default(),
            move |flavor| actors_using(&store.state(), &flavor.name_any()),
        )
        .watches(
            Api::<AsyncActorPool>::all(client.clone()),
            watcher::Config::default(),
            move |pool| {
                let pool = PoolRef {
                    namespace: pool.namespace().unwrap_or_default(),
                    name: pool.name_any(),
                };
                actors_in_pool(&pool_store.state(), &pool)
            },
        )
        // A pool's hosts becoming ready (or not) changes its members' WorkloadReady.
        .watches(
            Api::<Deployment>::all(client.clone()),
            watcher::Config::default().labels("app.kubernetes.io/component=pool"),
            move |hosts| {
                let Some(name) = hosts.labels().get(pool::POOL_LABEL).cloned() else {
                    return Vec::new();
                };
                let pool = PoolRef {
                    namespace: hosts.namespace().unwrap_or_default(),
                    name,
                };
                actors_in_pool(&host_store.state(), &pool)
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(actor = %object.name, "reconciled"),
                Err(err) => tracing::debug!(error = %err, "reconcile error"),
            }
        })
        .await;
}
