//! Flavor merge (DESIGN.md): the actor's flavors in order, then the actor's own spec last.
//! Lists append, maps merge, and the same scalar set by two flavors is an error naming both
//! flavors and the field; the actor's own values override any flavor's.
//!
//! The merge works on JSON values so it follows the CRD's fields without a line per field. The
//! tutorial's aliases (`minReplicas`/`maxReplicas`) are normalised first, so a flavor saying
//! `minReplicas` and another saying `minReplicaCount` conflict as they should.

use crate::crd::{AsyncActorSpec, FlavorSpec};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Why flavors cannot be merged into an actor.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MergeError {
    /// Two flavors set the same scalar field to different values.
    #[error("flavors '{first}' and '{second}' both set {field} ({first_value} vs {second_value}); remove it from one of them or set it in the actor")]
    Conflict {
        /// Path of the field, e.g. `spec.scaling.maxReplicaCount`.
        field: String,
        /// The flavor that set it first.
        first: String,
        /// The flavor that set it again.
        second: String,
        /// The first flavor's value.
        first_value: String,
        /// The second flavor's value.
        second_value: String,
    },
    /// A field has a list in one layer and a scalar or map in another.
    #[error("{field} is {first_kind} in '{first}' but {second_kind} in '{second}'")]
    Shape {
        /// Path of the field.
        field: String,
        /// Who set it first (a flavor, or `the actor`).
        first: String,
        /// Kind of value first seen.
        first_kind: &'static str,
        /// Who set it again.
        second: String,
        /// Kind of value seen again.
        second_kind: &'static str,
    },
    /// A flavor named in `spec.flavors` does not exist.
    #[error("flavor '{0}' does not exist")]
    Missing(String),
    /// The merged spec is not a valid actor spec.
    #[error("the merged spec is invalid: {0}")]
    Invalid(String),
}

impl MergeError {
    /// A CamelCase reason for a status condition.
    pub fn reason(&self) -> &'static str {
        match self {
            MergeError::Conflict { .. } | MergeError::Shape { .. } => "FlavorConflict",
            MergeError::Missing(_) => "FlavorNotFound",
            MergeError::Invalid(_) => "InvalidSpec",
        }
    }
}

/// Where a merged value came from: which flavor, or the actor.
const ACTOR: &str = "the actor";

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
        _ => "a scalar",
    }
}

/// Renames the replica-count aliases in a spec value (`scaling.minReplicas` →
/// `scaling.minReplicaCount`, same for max). When both spellings are present the canonical one
/// wins here; the CRD's CEL rule (and [`crate::validate`]) reject disagreeing pairs.
pub fn normalise_aliases(spec: &mut Value) {
    if let Some(scaling) = spec.get_mut("scaling").and_then(Value::as_object_mut) {
        for (alias, canonical) in [
            ("minReplicas", "minReplicaCount"),
            ("maxReplicas", "maxReplicaCount"),
        ] {
            if let Some(value) = scaling.remove(alias) {
                scaling.entry(canonical.to_owned()).or_insert(value);
            }
        }
    }
}

/// Merges `layer` (set by `who`) into `base`. `owners` remembers which flavor set each scalar
/// path. `is_actor` marks the actor's own spec: it overrides scalars instead of conflicting.
fn merge_into(
    base: &mut Map<String, Value>,
    layer: &Map<String, Value>,
    path: &str,
    who: &str,
    is_actor: bool,
    owners: &mut BTreeMap<String, String>,
) -> Result<(), MergeError> {
    for (key, value) in layer {
        if value.is_null() {
            continue;
        }
        let field = format!("{path}.{key}");
        match base.get_mut(key) {
            None => {
                record_owners(value, &field, who, owners);
                base.insert(key.clone(), value.clone());
            }
            Some(existing) => match (existing, value) {
                (Value::Object(existing), Value::Object(value)) => {
                    merge_into(existing, value, &field, who, is_actor, owners)?;
                }
                (Value::Array(existing), Value::Array(value)) => {
                    existing.extend(value.iter().cloned());
                }
                (existing, value) if kind_of(existing) == kind_of(value) => {
                    if is_actor {
                        *existing = value.clone();
                        owners.insert(field, who.to_owned());
                    } else if existing != value {
                        let first = owners.get(&field).cloned().unwrap_or_default();
                        return Err(MergeError::Conflict {
                            field,
                            first,
                            second: who.to_owned(),
                            first_value: existing.to_string(),
                            second_value: value.to_string(),
                        });
                    }
                }
                (existing, value) => {
                    return Err(MergeError::Shape {
                        first: owners.get(&field).cloned().unwrap_or_default(),
                        first_kind: kind_of(existing),
                        second: who.to_owned(),
                        second_kind: kind_of(value),
                        field,
                    });
                }
            },
        }
    }
    Ok(())
}

fn record_owners(value: &Value, field: &str, who: &str, owners: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(map) => {
            owners.insert(field.to_owned(), who.to_owned());
            for (key, value) in map {
                record_owners(value, &format!("{field}.{key}"), who, owners);
            }
        }
        _ => {
            owners.insert(field.to_owned(), who.to_owned());
        }
    }
}

/// Merges named flavor specs (in order) and then the actor's own spec, as JSON values.
pub fn merge_values(flavors: &[(String, Value)], actor: &Value) -> Result<Value, MergeError> {
    let mut merged = Map::new();
    let mut owners = BTreeMap::new();
    for (name, spec) in flavors {
        let mut spec = spec.clone();
        normalise_aliases(&mut spec);
        if let Value::Object(layer) = &spec {
            merge_into(&mut merged, layer, "spec", name, false, &mut owners)?;
        }
    }
    let mut own = actor.clone();
    normalise_aliases(&mut own);
    if let Value::Object(layer) = &own {
        merge_into(&mut merged, layer, "spec", ACTOR, true, &mut owners)?;
    }
    Ok(Value::Object(merged))
}

/// The actor's effective spec: its flavors (looked up in `available` by name, in the order of
/// `spec.flavors`) merged, then its own spec. `spec.flavors` is kept as written. Asya's forms
/// of the actor (`workload`, `flavor`) are resolved first ([`asya_spec::workload::resolve`]).
pub fn merge(
    actor: &AsyncActorSpec,
    available: &BTreeMap<String, FlavorSpec>,
) -> Result<AsyncActorSpec, MergeError> {
    let actor =
        &asya_spec::workload::resolve(actor).map_err(|e| MergeError::Invalid(e.to_string()))?;
    let mut layers = Vec::new();
    for name in &actor.flavors {
        let flavor = available
            .get(name)
            .ok_or_else(|| MergeError::Missing(name.clone()))?;
        let value = serde_json::to_value(flavor).map_err(|e| MergeError::Invalid(e.to_string()))?;
        layers.push((name.clone(), value));
    }
    let own = serde_json::to_value(actor).map_err(|e| MergeError::Invalid(e.to_string()))?;
    let mut merged = merge_values(&layers, &own)?;
    // The actor's list of flavors is not merged with itself.
    merged["flavors"] = serde_json::to_value(&actor.flavors).expect("names serialise");
    serde_json::from_value(merged).map_err(|e| MergeError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn flavor(yaml: &str) -> FlavorSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn flavors(list: &[(&str, &str)]) -> BTreeMap<String, FlavorSpec> {
        list.iter()
            .map(|(name, yaml)| (name.to_string(), flavor(yaml)))
            .collect()
    }

    fn actor(yaml: &str) -> AsyncActorSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn lists_append_maps_merge_in_order() {
        let available = flavors(&[
            (
                "gpu",
                "nodeSelector: {gpu: 'true'}\ntolerations: [{key: nvidia.com/gpu, operator: Exists}]\nenv: {A: '1'}",
            ),
            (
                "secrets",
                "secretRefs: [hf-token]\nenv: {B: '2'}\nresiliency: {nonRetryableErrors: [ValueError]}",
            ),
        ]);
        let spec = actor(
            "flavors: [gpu, secrets]\nsecretRefs: [own]\nenv: {C: '3'}\nresiliency: {nonRetryableErrors: [KeyError]}",
        );
        let merged = merge(&spec, &available).unwrap();
        assert_eq!(merged.secret_refs, ["hf-token", "own"]);
        assert_eq!(
            merged.env.keys().cloned().collect::<Vec<_>>(),
            ["A", "B", "C"]
        );
        assert_eq!(merged.node_selector["gpu"], "true");
        assert_eq!(merged.tolerations.len(), 1);
        assert_eq!(
            merged.resiliency.unwrap().non_retryable_errors,
            ["ValueError", "KeyError"]
        );
        assert_eq!(merged.flavors, ["gpu", "secrets"]);
    }

    #[test]
    fn same_scalar_from_two_flavors_names_both_and_the_field() {
        let available = flavors(&[
            ("cpu-fast", "scaling: {maxReplicaCount: 10}"),
            ("llm-resilient", "scaling: {maxReplicas: 3}"),
        ]);
        let err = merge(&actor("flavors: [cpu-fast, llm-resilient]"), &available).unwrap_err();
        assert_eq!(
            err,
            MergeError::Conflict {
                field: "spec.scaling.maxReplicaCount".into(),
                first: "cpu-fast".into(),
                second: "llm-resilient".into(),
                first_value: "10".into(),
                second_value: "3".into(),
            }
        );
        let message = err.to_string();
        assert!(message.contains("'cpu-fast'") && message.contains("'llm-resilient'"));
        assert!(message.contains("spec.scaling.maxReplicaCount"));
        assert_eq!(err.reason(), "FlavorConflict");
    }

    #[test]
    fn equal_scalars_do_not_conflict_and_the_actor_overrides() {
        let available = flavors(&[
            ("a", "scaling: {queueLength: 5}\nsandbox: {memory: 256Mi}"),
            ("b", "scaling: {queueLength: 5}\nsandbox: {cpuTimeout: 2s}"),
        ]);
        let merged = merge(
            &actor("flavors: [a, b]\nscaling: {queueLength: 50}\nsandbox: {memory: 1Gi}"),
            &available,
        )
        .unwrap();
        assert_eq!(merged.scaling.unwrap().queue_length, Some(50));
        let sandbox = merged.sandbox.unwrap();
        assert_eq!(
            sandbox.memory,
            Some(crate::crd::Quantity::Text("1Gi".into()))
        );
        assert_eq!(sandbox.cpu_timeout.as_deref(), Some("2s"));
    }

    #[test]
    fn actor_alias_overrides_flavor_canonical_name() {
        let available = flavors(&[("cpu-fast", "scaling: {minReplicaCount: 1}")]);
        let merged = merge(
            &actor("flavors: [cpu-fast]\nscaling: {minReplicas: 0}"),
            &available,
        )
        .unwrap();
        let scaling = merged.scaling.unwrap();
        assert_eq!(scaling.min(), Some(0));
        assert_eq!(scaling.min_replicas, None);
    }

    #[test]
    fn missing_flavor_and_shape_mismatch() {
        let err = merge(&actor("flavors: [nope]"), &BTreeMap::new()).unwrap_err();
        assert_eq!(err, MergeError::Missing("nope".into()));
        let err = merge_values(
            &[
                ("a".into(), json!({"env": {"A": "1"}})),
                ("b".into(), json!({"env": ["A"]})),
            ],
            &json!({}),
        )
        .unwrap_err();
        assert!(matches!(err, MergeError::Shape { ref field, .. } if field == "spec.env"));
    }

    #[test]
    fn no_flavors_is_the_spec_itself() {
        let spec = actor("handler: m.f\nruntime: wasm\nscaling: {minReplicaCount: 0}");
        assert_eq!(merge(&spec, &BTreeMap::new()).unwrap(), spec);
    }
}
