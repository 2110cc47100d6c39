//! Host pools, as pure data: which pool an actor goes to ([`choose`]), which of a pool's
//! candidates fit ([`assign`]), and the objects a pool needs ([`desired_pool`]): one ConfigMap
//! holding every member's manifest (the hosts hot-reload it), one Deployment of `asya-host run
//! --pool`, and one KEDA ScaledObject. Nothing here talks to a cluster.
//!
//! - Every `runtime: wasm` actor is pooled unless it says `placement: dedicated`; `runtime:
//!   python` actors always get their own Deployment ([`crate::render::desired_objects`]).
//! - The default pool of a namespace is `default` (`default-rabbitmq`, `default-sqs` for the
//!   other transports, since a host serves one broker). An `AsyncActorPool` of that name in the
//!   namespace, if any, gives its settings; a named pool (`spec.pool`) must exist and admit the
//!   actor's namespace.
//! - Membership is first come, first served (creation time, then namespace and name): when a
//!   pool is full (`maxActors`, or its ConfigMap near Kubernetes' 1 MiB object limit) the
//!   later actors are refused with a reason and the earlier ones never move.
//! - Scaling stays one trigger per pool however many actors it serves: on NATS a KEDA
//!   `metrics-api` trigger reads the pool's total backlog from the operator
//!   (`GET /v1/pools/{namespace}/{pool}/backlog`, the sum of its members' consumer lag); on
//!   RabbitMQ and SQS, whose scalers read one queue each, one trigger per member.

use crate::crd::{AsyncActorPoolSpec, AsyncActorSpec, Placement, Runtime, Transport, API_VERSION};
use crate::render::{self, Settings, CACHE_DIR, FIELD_MANAGER, SECRETS_DIR};
use asya_spec::names::stream_name;
use asya_spec::workload::effective_runtime;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The name of a namespace's default NATS pool.
pub const DEFAULT_POOL: &str = "default";
/// Actors a pool takes unless its `maxActors` says otherwise.
pub const DEFAULT_MAX_ACTORS: usize = 500;
/// Bytes of manifests a pool's ConfigMap may hold (Kubernetes refuses objects over 1 MiB; the
/// rest is headroom for metadata).
pub const CONFIG_MAP_BUDGET: usize = 900 * 1024;
/// Label on a pool's objects: the pool's name.
pub const POOL_LABEL: &str = "asya.sh/pool";
/// Where a pool's hosts read the members' manifests.
pub const POOL_MANIFEST_DIR: &str = "/etc/asya/pool";
/// The name of the KEDA trigger of a NATS pool.
pub const POOL_TRIGGER: &str = "pool-backlog";

/// A pool: the namespace its hosts run in and its name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolRef {
    /// The pool's namespace (where its Deployment lives).
    pub namespace: String,
    /// The pool's name (`default` for a namespace's default pool).
    pub name: String,
}

impl fmt::Display for PoolRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl PoolRef {
    /// The name of the pool's Deployment, ConfigMap and ScaledObject.
    pub fn object_name(&self) -> String {
        format!("asya-pool-{}", self.name)
    }

    /// Parses `spec.pool` (`name` or `namespace/name`) of an actor in `namespace`.
    pub fn parse(namespace: &str, pool: &str) -> PoolRef {
        match pool.split_once('/') {
            Some((ns, name)) => PoolRef {
                namespace: ns.to_owned(),
                name: name.to_owned(),
            },
            None => PoolRef {
                namespace: namespace.to_owned(),
                name: pool.to_owned(),
            },
        }
    }
}

/// Where an actor runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placed {
    /// Its own Deployment.
    Dedicated,
    /// A shared pool.
    Pool(PoolRef),
}

/// Why an actor cannot be placed (its `Placed` condition's reason and message).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `spec.pool` names a pool that does not exist.
    #[error("pool {0} does not exist (create an AsyncActorPool, or leave spec.pool unset for the namespace's default pool)")]
    PoolNotFound(PoolRef),
    /// The pool does not admit the actor's namespace.
    #[error("pool {pool} does not admit namespace {namespace} (its spec.namespaces)")]
    NotAdmitted {
        /// The pool.
        pool: PoolRef,
        /// The actor's namespace.
        namespace: String,
    },
    /// The pool's hosts serve another transport.
    #[error("pool {pool} serves {pool_transport}, the actor uses {actor_transport}")]
    TransportMismatch {
        /// The pool.
        pool: PoolRef,
        /// The pool's transport.
        pool_transport: &'static str,
        /// The actor's transport.
        actor_transport: &'static str,
    },
    /// Secrets can be mounted only in their own namespace.
    #[error("pool {pool} runs in namespace {pool_namespace}: an actor with secretRefs needs a pool of its own namespace or placement: dedicated")]
    SecretsAcrossNamespaces {
        /// The pool.
        pool: PoolRef,
        /// Where its hosts run.
        pool_namespace: String,
    },
    /// The pool has no room.
    #[error("pool {pool} is full ({why}); raise its maxActors, use another pool or placement: dedicated")]
    PoolFull {
        /// The pool.
        pool: PoolRef,
        /// `maxActors` reached, or the manifests' size.
        why: String,
    },
}

impl Refusal {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::PoolNotFound(_) => "PoolNotFound",
            Refusal::NotAdmitted { .. } => "NotAdmitted",
            Refusal::TransportMismatch { .. } => "TransportMismatch",
            Refusal::SecretsAcrossNamespaces { .. } => "SecretsAcrossNamespaces",
            Refusal::PoolFull { .. } => "PoolFull",
        }
    }
}

/// The default pool of a namespace for a transport.
pub fn default_pool(namespace: &str, transport: Transport) -> PoolRef {
    let name = match transport {
        Transport::Nats | Transport::Pubsub => DEFAULT_POOL.to_owned(),
        other => format!("{DEFAULT_POOL}-{}", other.as_str()),
    };
    PoolRef {
        namespace: namespace.to_owned(),
        name,
    }
}

/// The transport a pool's hosts serve: its spec's, else the one its default name says
/// (`default-rabbitmq`, `default-sqs`), else NATS.
pub fn pool_transport(pool: &PoolRef, spec: &AsyncActorPoolSpec) -> Transport {
    spec.transport
        .unwrap_or(match pool.name.strip_prefix(&format!("{DEFAULT_POOL}-")) {
            Some("rabbitmq") => Transport::Rabbitmq,
            Some("sqs") => Transport::Sqs,
            _ => Transport::Nats,
        })
}

/// Where an actor of `namespace` with the merged `spec` goes, given the pools that exist.
pub fn choose(
    namespace: &str,
    spec: &AsyncActorSpec,
    pools: &BTreeMap<PoolRef, AsyncActorPoolSpec>,
) -> Result<Placed, Refusal> {
    if effective_runtime(spec) == Runtime::Python || spec.placement == Some(Placement::Dedicated) {
        return Ok(Placed::Dedicated);
    }
    let transport = spec.transport.unwrap_or_default();
    let pool = match &spec.pool {
        Some(named) => {
            let pool = PoolRef::parse(namespace, named);
            if !pools.contains_key(&pool) {
                return Err(Refusal::PoolNotFound(pool));
            }
            pool
        }
        None => default_pool(namespace, transport),
    };
    let settings = pools.get(&pool).cloned().unwrap_or_default();
    let admitted = pool.namespace == namespace
        || settings
            .namespaces
            .iter()
            .any(|n| n == namespace || n == "*");
    if !admitted {
        return Err(Refusal::NotAdmitted {
            pool,
            namespace: namespace.to_owned(),
        });
    }
    let pool_transport = settings.transport.unwrap_or(if spec.pool.is_some() {
        Transport::Nats
    } else {
        transport
    });
    if pool_transport != transport {
        return Err(Refusal::TransportMismatch {
            pool,
            pool_transport: pool_transport.as_str(),
            actor_transport: transport.as_str(),
        });
    }
    if pool.namespace != namespace && !spec.secret_refs.is_empty() {
        let pool_namespace = pool.namespace.clone();
        return Err(Refusal::SecretsAcrossNamespaces {
            pool,
            pool_namespace,
        });
    }
    Ok(Placed::Pool(pool))
}

/// An actor that goes to a pool, with what the pool needs of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// The actor's namespace.
    pub namespace: String,
    /// The actor's name.
    pub name: String,
    /// When it was created (RFC 3339; first come, first served).
    pub created: String,
    /// The manifest the hosts read ([`render::host_manifest`]).
    pub manifest: String,
    /// Its merged spec's Secrets (mounted for the hosts, same namespace only).
    pub secret_refs: Vec<String>,
    /// Its own `scaling` minimum (0: it lets the pool scale to zero).
    pub min_replicas: Option<i32>,
}

impl Member {
    /// The member's key in the pool's ConfigMap (`<namespace>.<name>.yaml`: both are DNS
    /// labels, so the key is unique and valid).
    pub fn key(&self) -> String {
        format!("{}.{}.yaml", self.namespace, self.name)
    }
}

/// The candidates of a pool split into those it serves and those refused for room.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Assignment {
    /// Members, in ConfigMap order.
    pub members: Vec<Member>,
    /// Refused for room, each with why.
    pub full: Vec<(Member, Refusal)>,
}

/// Admits candidates first come, first served until `maxActors` or the ConfigMap budget.
pub fn assign(
    pool: &PoolRef,
    spec: &AsyncActorPoolSpec,
    mut candidates: Vec<Member>,
) -> Assignment {
    candidates.sort_by(|a, b| {
        (&a.created, &a.namespace, &a.name).cmp(&(&b.created, &b.namespace, &b.name))
    });
    let max = spec
        .max_actors
        .map(|m| m.max(0) as usize)
        .unwrap_or(DEFAULT_MAX_ACTORS);
    let mut out = Assignment::default();
    let mut bytes = 0usize;
    for member in candidates {
        let size = member.key().len() + member.manifest.len();
        let why = if out.members.len() >= max {
            Some(format!("maxActors {max} reached"))
        } else if bytes + size > CONFIG_MAP_BUDGET {
            Some(format!(
                "its manifests would exceed {} KiB, the most one ConfigMap holds",
                CONFIG_MAP_BUDGET / 1024
            ))
        } else {
            None
        };
        match why {
            Some(why) => {
                let refusal = Refusal::PoolFull {
                    pool: pool.clone(),
                    why,
                };
                out.full.push((member, refusal));
            }
            None => {
                bytes += size;
                out.members.push(member);
            }
        }
    }
    out
}

/// The objects of a pool.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolDesired {
    /// The members' manifests, one key each.
    pub config_map: Value,
    /// The hosts.
    pub deployment: Value,
    /// KEDA's scaling of the hosts.
    pub scaled_object: Value,
    /// Where KEDA's RabbitMQ or SQS scalers find the broker's credentials (none on NATS).
    pub trigger_authentication: Option<Value>,
}

impl PoolDesired {
    /// The objects in the order they are applied.
    pub fn objects(&self) -> Vec<Value> {
        let mut out = vec![self.config_map.clone(), self.deployment.clone()];
        out.extend(self.trigger_authentication.clone());
        out.push(self.scaled_object.clone());
        out
    }
}

/// The TriggerAuthentication of a RabbitMQ or SQS pool (as an actor's, see
/// [`crate::render`]): by reference to the Secret in the pool's namespace, or AWS pod identity.
fn trigger_authentication(
    pool: &PoolRef,
    transport: Transport,
    settings: &Settings,
    owner_uid: Option<&str>,
) -> Option<Value> {
    let auth = render::keda_authentication(transport, settings)?;
    Some(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": pool_metadata(pool, owner_uid),
        "spec": auth,
    }))
}

fn pool_labels(pool: &PoolRef) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), pool.object_name()),
        ("app.kubernetes.io/component".to_owned(), "pool".to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            FIELD_MANAGER.to_owned(),
        ),
        (POOL_LABEL.to_owned(), pool.name.clone()),
    ])
}

fn pool_metadata(pool: &PoolRef, owner_uid: Option<&str>) -> Value {
    let mut meta = json!({
        "name": pool.object_name(),
        "namespace": pool.namespace,
        "labels": pool_labels(pool),
    });
    if let Some(uid) = owner_uid {
        meta["ownerReferences"] = json!([{
            "apiVersion": API_VERSION,
            "kind": "AsyncActorPool",
            "name": pool.name,
            "uid": uid,
            "controller": true,
            "blockOwnerDeletion": true,
        }]);
    }
    meta
}

/// The fewest hosts: the pool's `minReplicas` (default 1, a warm host), raised to the largest
/// member minimum; zero only when every member allows zero too.
pub fn min_replicas(spec: &AsyncActorPoolSpec, members: &[Member]) -> i32 {
    let max = max_replicas(spec);
    let wanted = spec.min_replicas.unwrap_or(1).max(0);
    let members_min = members
        .iter()
        .map(|m| m.min_replicas.unwrap_or(1))
        .max()
        .unwrap_or(0);
    let all_allow_zero = members.iter().all(|m| m.min_replicas == Some(0));
    let min = if wanted == 0 && all_allow_zero {
        0
    } else {
        wanted.max(1).max(members_min)
    };
    min.min(max)
}

/// The most hosts (default 10).
pub fn max_replicas(spec: &AsyncActorPoolSpec) -> i32 {
    spec.max_replicas.unwrap_or(10).max(1)
}

/// The URL KEDA's `metrics-api` scaler reads a NATS pool's backlog from.
pub fn backlog_url(settings: &Settings, pool: &PoolRef) -> String {
    format!(
        "{}/v1/pools/{}/{}/backlog",
        settings.operator_url.trim_end_matches('/'),
        pool.namespace,
        pool.name
    )
}

fn triggers(
    pool: &PoolRef,
    spec: &AsyncActorPoolSpec,
    members: &[Member],
    settings: &Settings,
) -> Vec<Value> {
    let transport = pool_transport(pool, spec);
    let target = spec.queue_length.unwrap_or(100);
    match transport {
        Transport::Nats | Transport::Pubsub => vec![json!({
            "type": "metrics-api",
            "name": POOL_TRIGGER,
            "metadata": {
                "url": backlog_url(settings, pool),
                "format": "json",
                "valueLocation": "backlog",
                "targetValue": target.to_string(),
                "activationTargetValue": "0",
            },
        })],
        Transport::Rabbitmq => members
            .iter()
            .map(|m| {
                json!({
                    "type": "rabbitmq",
                    "metadata": {
                        "protocol": "amqp",
                        "queueName": render::queue_name(&m.namespace, &m.name),
                        "mode": "QueueLength",
                        "value": target.to_string(),
                    },
                    "authenticationRef": {"name": pool.object_name()},
                })
            })
            .collect(),
        Transport::Sqs => members
            .iter()
            .map(|m| {
                let mut metadata = json!({
                    "queueURL": render::queue_name(&m.namespace, &m.name),
                    "queueLength": target.to_string(),
                    "awsRegion": settings.aws_region,
                });
                if let Some(endpoint) = &settings.aws_endpoint {
                    metadata["awsEndpoint"] = json!(endpoint);
                }
                json!({"type": "aws-sqs-queue", "metadata": metadata,
                       "authenticationRef": {"name": pool.object_name()}})
            })
            .collect(),
    }
}

/// The objects of `pool` serving `members` (`owner_uid`: the `AsyncActorPool` object's, when
/// the pool has one; a namespace's default pool need not).
pub fn desired_pool(
    pool: &PoolRef,
    spec: &AsyncActorPoolSpec,
    members: &[Member],
    settings: &Settings,
    owner_uid: Option<&str>,
) -> PoolDesired {
    let transport = pool_transport(pool, spec);
    let data: BTreeMap<String, &str> = members
        .iter()
        .map(|m| (m.key(), m.manifest.as_str()))
        .collect();
    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": pool_metadata(pool, owner_uid),
        "data": data,
    });
    let mut args = vec![
        "run".to_owned(),
        "--manifests".to_owned(),
        POOL_MANIFEST_DIR.to_owned(),
        "--pool".to_owned(),
        pool.to_string(),
        "--http".to_owned(),
        format!("0.0.0.0:{}", settings.host_http_port),
    ];
    if transport == Transport::Nats {
        args.push("--no-create".to_owned());
    }
    let mut env = render::transport_env(transport, settings);
    env.push(json!({"name": "ASYA_CACHE_DIR", "value": CACHE_DIR}));
    env.push(json!({"name": "ASYA_SECRETS_DIR", "value": SECRETS_DIR}));
    let mut mounts = vec![
        json!({"name": "manifests", "mountPath": POOL_MANIFEST_DIR, "readOnly": true}),
        json!({"name": "cache", "mountPath": CACHE_DIR}),
    ];
    let mut volumes = vec![
        json!({"name": "manifests", "configMap": {"name": pool.object_name()}}),
        json!({"name": "cache", "emptyDir": {}}),
    ];
    // Secrets of members of the pool's own namespace (others are refused in `choose`).
    let secrets: BTreeSet<&str> = members
        .iter()
        .filter(|m| m.namespace == pool.namespace)
        .flat_map(|m| m.secret_refs.iter().map(String::as_str))
        .collect();
    for (i, secret) in secrets.iter().enumerate() {
        let volume = format!("secret-{i}");
        mounts.push(json!({"name": volume, "mountPath": format!("{SECRETS_DIR}/{secret}"), "readOnly": true}));
        volumes.push(json!({"name": volume, "secret": {"secretName": secret}}));
    }
    let mut container = render::host_container_of(settings, args, env, mounts);
    if let Some(resources) = &spec.resources {
        container["resources"] = render::resource_requirements(resources);
    }
    let mut pod_spec = json!({
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": 45,
    });
    if !spec.node_selector.is_empty() {
        pod_spec["nodeSelector"] = json!(spec.node_selector);
    }
    let labels = pool_labels(pool);
    // No config-hash annotation: a member added, changed or removed reaches the running hosts
    // through the ConfigMap volume and their hot reload, without restarting the others.
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": pool_metadata(pool, owner_uid),
        "spec": {
            "selector": {"matchLabels": {POOL_LABEL: pool.name}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": settings.host_http_port.to_string(),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod_spec,
            },
        },
    });
    let scaled_object = json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": pool_metadata(pool, owner_uid),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": pool.object_name()},
            "minReplicaCount": min_replicas(spec, members),
            "maxReplicaCount": max_replicas(spec),
            "triggers": triggers(pool, spec, members, settings),
        },
    });
    PoolDesired {
        config_map,
        deployment,
        scaled_object,
        trigger_authentication: trigger_authentication(pool, transport, settings, owner_uid),
    }
}

/// The JetStream stream of a member (for the backlog sum).
pub fn member_stream(member: &Member) -> String {
    stream_name(&member.namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> AsyncActorSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn member(ns: &str, name: &str, created: &str) -> Member {
        Member {
            namespace: ns.into(),
            name: name.into(),
            created: created.into(),
            manifest: format!("metadata: {{name: {name}}}\n"),
            secret_refs: vec![],
            min_replicas: None,
        }
    }

    fn pools(list: &[(&str, &str, &str)]) -> BTreeMap<PoolRef, AsyncActorPoolSpec> {
        list.iter()
            .map(|(ns, name, yaml)| {
                (
                    PoolRef {
                        namespace: (*ns).into(),
                        name: (*name).into(),
                    },
                    serde_yaml_ng::from_str(yaml).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn wasm_actors_pool_by_default_python_and_dedicated_do_not() {
        let none = BTreeMap::new();
        assert_eq!(
            choose("a", &spec("{handler: m.f}"), &none),
            Ok(Placed::Pool(PoolRef {
                namespace: "a".into(),
                name: "default".into()
            }))
        );
        assert_eq!(
            choose("a", &spec("{handler: m.f, transport: rabbitmq}"), &none),
            Ok(Placed::Pool(PoolRef {
                namespace: "a".into(),
                name: "default-rabbitmq".into()
            }))
        );
        assert_eq!(
            choose("a", &spec("{handler: m.f, placement: dedicated}"), &none),
            Ok(Placed::Dedicated)
        );
        assert_eq!(
            choose(
                "a",
                &spec("{handler: m.f, runtime: python, image: x}"),
                &none
            ),
            Ok(Placed::Dedicated)
        );
    }

    #[test]
    fn named_pools_admit_only_their_namespaces() {
        let pools = pools(&[
            ("shared", "free", "{namespaces: [a, b]}"),
            ("c", "own", "{}"),
        ]);
        let placed = choose("b", &spec("{handler: m.f, pool: shared/free}"), &pools);
        assert!(matches!(placed, Ok(Placed::Pool(p)) if p.name == "free"));
        let refused = choose("z", &spec("{handler: m.f, pool: shared/free}"), &pools).unwrap_err();
        assert_eq!(refused.reason(), "NotAdmitted");
        assert!(refused.to_string().contains("does not admit namespace z"));
        let missing = choose("a", &spec("{handler: m.f, pool: gone}"), &pools).unwrap_err();
        assert_eq!(missing.reason(), "PoolNotFound");
        assert!(missing.to_string().contains("a/gone"));
        let secrets = choose(
            "a",
            &spec("{handler: m.f, pool: shared/free, secretRefs: [s]}"),
            &pools,
        )
        .unwrap_err();
        assert_eq!(secrets.reason(), "SecretsAcrossNamespaces");
        let all = self::pools(&[("shared", "all", "{namespaces: ['*'], transport: sqs}")]);
        let mismatch = choose("q", &spec("{handler: m.f, pool: shared/all}"), &all).unwrap_err();
        assert_eq!(mismatch.reason(), "TransportMismatch");
        assert!(mismatch
            .to_string()
            .contains("serves sqs, the actor uses nats"));
    }

    #[test]
    fn a_full_pool_refuses_later_actors_and_keeps_earlier_ones() {
        let pool = default_pool("a", Transport::Nats);
        let spec: AsyncActorPoolSpec = serde_yaml_ng::from_str("{maxActors: 2}").unwrap();
        let out = assign(
            &pool,
            &spec,
            vec![
                member("a", "late", "2026-01-03T00:00:00Z"),
                member("a", "first", "2026-01-01T00:00:00Z"),
                member("a", "second", "2026-01-02T00:00:00Z"),
            ],
        );
        let names: Vec<_> = out.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["first", "second"]);
        assert_eq!(out.full.len(), 1);
        assert_eq!(out.full[0].0.name, "late");
        assert!(out.full[0].1.to_string().contains("maxActors 2 reached"));
    }

    #[test]
    fn the_config_map_budget_bounds_a_pool() {
        let pool = default_pool("a", Transport::Nats);
        let big = "x".repeat(290 * 1024);
        let candidates = (0..4)
            .map(|i| Member {
                manifest: big.clone(),
                ..member("a", &format!("m{i}"), "2026-01-01T00:00:00Z")
            })
            .collect();
        let out = assign(&pool, &AsyncActorPoolSpec::default(), candidates);
        assert_eq!(out.members.len(), 3);
        assert!(out.full[0].1.to_string().contains("900 KiB"));
    }

    #[test]
    fn one_warm_host_unless_every_member_allows_zero() {
        let zero: AsyncActorPoolSpec = serde_yaml_ng::from_str("{minReplicas: 0}").unwrap();
        let mut a = member("a", "a", "t");
        let mut b = member("a", "b", "t");
        assert_eq!(min_replicas(&AsyncActorPoolSpec::default(), &[]), 1);
        assert_eq!(min_replicas(&zero, &[a.clone(), b.clone()]), 1);
        a.min_replicas = Some(0);
        b.min_replicas = Some(0);
        assert_eq!(min_replicas(&zero, &[a.clone(), b.clone()]), 0);
        assert_eq!(
            min_replicas(&AsyncActorPoolSpec::default(), &[a.clone()]),
            1
        );
        b.min_replicas = Some(3);
        assert_eq!(min_replicas(&zero, &[a, b]), 3);
    }

    #[test]
    fn a_nats_pool_has_one_trigger_however_many_members() {
        let pool = default_pool("team-a", Transport::Nats);
        let members: Vec<_> = (0..300)
            .map(|i| member("team-a", &format!("actor-{i}"), "t"))
            .collect();
        let out = desired_pool(
            &pool,
            &AsyncActorPoolSpec::default(),
            &members,
            &Settings::default(),
            Some("uid-1"),
        );
        let triggers = out.scaled_object["spec"]["triggers"].as_array().unwrap();
        assert_eq!(triggers.len(), 1);
        assert_eq!(triggers[0]["type"], "metrics-api");
        assert!(triggers[0]["metadata"]["url"]
            .as_str()
            .unwrap()
            .ends_with("/v1/pools/team-a/default/backlog"));
        assert_eq!(out.config_map["data"].as_object().unwrap().len(), 300);
        assert!(out.config_map["data"]["team-a.actor-7.yaml"].is_string());
        let args = &out.deployment["spec"]["template"]["spec"]["containers"][0]["args"];
        assert!(args.as_array().unwrap().iter().any(|a| a == "--pool"));
        assert!(args.as_array().unwrap().iter().any(|a| a == "--no-create"));
        assert_eq!(out.deployment["metadata"]["name"], "asya-pool-default");
        assert_eq!(
            out.deployment["metadata"]["ownerReferences"][0]["kind"],
            "AsyncActorPool"
        );
        assert!(
            out.deployment["spec"]["template"]["metadata"]["annotations"]
                .get(render::CONFIG_HASH_ANNOTATION)
                .is_none()
        );
        // The rendered objects are what Kubernetes accepts.
        let _: k8s_openapi::api::apps::v1::Deployment =
            serde_json::from_value(out.deployment.clone()).unwrap();
        let _: k8s_openapi::api::core::v1::ConfigMap =
            serde_json::from_value(out.config_map.clone()).unwrap();
    }

    #[test]
    fn secrets_of_the_pools_namespace_are_mounted_once() {
        let pool = default_pool("a", Transport::Nats);
        let mut x = member("a", "x", "t");
        x.secret_refs = vec!["s1".into(), "s2".into()];
        let mut y = member("a", "y", "t");
        y.secret_refs = vec!["s1".into()];
        let out = desired_pool(
            &pool,
            &AsyncActorPoolSpec::default(),
            &[x, y],
            &Settings::default(),
            None,
        );
        let volumes = out.deployment["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap();
        let secrets: Vec<_> = volumes
            .iter()
            .filter_map(|v| v["secret"]["secretName"].as_str())
            .collect();
        assert_eq!(secrets, ["s1", "s2"]);
        assert!(out.deployment["metadata"].get("ownerReferences").is_none());
    }
}
