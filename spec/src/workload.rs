//! Asya's own way of writing an actor, accepted as written and turned into this project's
//! fields by [`resolve`], so everything downstream (host, operator, flavor merge) reads one
//! shape:
//!
//! - `spec.workload`: a Deployment template whose `asya-runtime` container gives the image, the
//!   resources and, through its env, the handler (`ASYA_HANDLER`), the mode
//!   (`ASYA_HANDLER_MODE`) and everything else the handler sees (`ASYA_HANDLER_<ACTOR>` of flow
//!   routers, the user's own variables). Asya deploys that shape as the user's image running
//!   the native Python runtime beside a sidecar, so such an actor is `runtime: python`.
//! - `spec.flavor: x`: the one-item form of `spec.flavors: [x]`.
//!
//! A field of the template that cannot be honoured (another container, `command`, volumes,
//! `valueFrom`) is refused by the type (unknown fields are errors), never dropped.

use crate::actor::{AsyncActorSpec, Mode, Resources, Runtime, Toleration};
use crate::SpecError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The name of the container that runs the handler, in Asya's manifests and in the pods the
/// operator renders.
pub const RUNTIME_CONTAINER: &str = "asya-runtime";
/// The name of the host's container in the pods the operator renders (Asya's sidecar name, so
/// `kubectl logs -c asya-sidecar` works as it does there).
pub const SIDECAR_CONTAINER: &str = "asya-sidecar";
/// The env variable naming the handler (`module.func` or `module.Class.method`).
pub const HANDLER_ENV: &str = "ASYA_HANDLER";
/// The env variable naming the mode (`payload` or `envelope`).
pub const HANDLER_MODE_ENV: &str = "ASYA_HANDLER_MODE";

/// `spec.workload.kind`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[schemars(extend("x-asya-message" = "must be Deployment"))]
pub enum WorkloadKind {
    /// A Deployment (the only kind an actor runs as).
    #[default]
    Deployment,
}

/// `spec.workload`: Asya's pod template of the actor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    /// `Deployment` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<WorkloadKind>,
    /// The pod template.
    pub template: PodTemplate,
}

/// `spec.workload.template`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodTemplate {
    /// The pod's spec.
    pub spec: PodSpec,
}

/// `spec.workload.template.spec`: the parts of a pod spec an actor's pods take.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSpec {
    /// Exactly one container, named `asya-runtime` (the sidecar is added by the operator).
    pub containers: Vec<Container>,
    /// Node selector of the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

/// The `asya-runtime` container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Container {
    /// `asya-runtime`.
    pub name: String,
    /// The user's image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `ASYA_HANDLER`, `ASYA_HANDLER_MODE`, and the handler's own variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Compute resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

/// One env variable with a literal value (secrets go in `spec.secretRefs`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    /// The variable's name.
    pub name: String,
    /// Its value (empty when unset, as in Kubernetes).
    #[serde(default)]
    pub value: String,
}

/// Sets `slot` from the workload, refusing a different value already there.
fn take<T: PartialEq + std::fmt::Debug>(
    slot: &mut Option<T>,
    value: T,
    field: &str,
    from: &str,
) -> Result<(), SpecError> {
    match slot {
        Some(existing) if *existing != value => Err(SpecError::new(
            field,
            format!("{existing:?} disagrees with {from} ({value:?}); set one of them"),
        )),
        _ => {
            *slot = Some(value);
            Ok(())
        }
    }
}

/// The spec with Asya's forms turned into this project's fields: `flavor` into `flavors`, and
/// `workload` into `image`, `handler`, `mode`, `env`, `resources`, `nodeSelector`,
/// `tolerations` and `runtime: python`. A spec without them comes back unchanged. Values given
/// both ways must agree.
pub fn resolve(spec: &AsyncActorSpec) -> Result<AsyncActorSpec, SpecError> {
    let mut out = spec.clone();
    if let Some(flavor) = out.flavor.take() {
        if !out.flavors.is_empty() {
            return Err(SpecError::new(
                "spec.flavor",
                "is the one-item form of spec.flavors; set one of them",
            ));
        }
        out.flavors = vec![flavor];
    }
    let Some(workload) = out.workload.take() else {
        return Ok(out);
    };
    let at = "spec.workload.template.spec.containers";
    for (i, container) in workload.template.spec.containers.iter().enumerate() {
        if container.name != RUNTIME_CONTAINER {
            return Err(SpecError::new(
                format!("{at}[{i}].name"),
                format!(
                    "must be {RUNTIME_CONTAINER} (got {:?}): the actor's pods run that container and the {SIDECAR_CONTAINER} the operator adds, nothing else",
                    container.name
                ),
            ));
        }
    }
    let container = match workload.template.spec.containers.as_slice() {
        [one] => one,
        [] => {
            return Err(SpecError::new(
                at,
                format!(
                    "needs the {RUNTIME_CONTAINER} container (its image and {HANDLER_ENV} env)"
                ),
            ))
        }
        _ => {
            return Err(SpecError::new(
                at,
                format!("names {RUNTIME_CONTAINER} more than once"),
            ))
        }
    };
    let from = format!("the workload's {RUNTIME_CONTAINER} container");
    if out.runtime == Some(Runtime::Wasm) {
        return Err(SpecError::new(
            "spec.runtime",
            "must be python (or unset) with spec.workload: Asya's workload runs the user's image with the native Python runtime",
        ));
    }
    out.runtime = Some(Runtime::Python);
    if let Some(image) = &container.image {
        take(&mut out.image, image.clone(), "spec.image", &from)?;
    }
    if let Some(resources) = &container.resources {
        take(
            &mut out.resources,
            resources.clone(),
            "spec.resources",
            &from,
        )?;
    }
    for (i, var) in container.env.iter().enumerate() {
        let field = format!("{at}[0].env[{i}]");
        match var.name.as_str() {
            HANDLER_ENV => take(&mut out.handler, var.value.clone(), "spec.handler", &from)?,
            HANDLER_MODE_ENV => {
                let mode = match var.value.as_str() {
                    "payload" => Mode::Payload,
                    "envelope" => Mode::Envelope,
                    other => {
                        return Err(SpecError::new(
                            field,
                            format!(
                                "{HANDLER_MODE_ENV} must be payload or envelope (got {other:?})"
                            ),
                        ))
                    }
                };
                take(&mut out.mode, mode, "spec.mode", &from)?;
            }
            name => {
                if let Some(existing) = out.env.get(name) {
                    if *existing != var.value {
                        return Err(SpecError::new(
                            format!("spec.env.{name}"),
                            format!(
                                "{existing:?} disagrees with {from} ({:?}); set one of them",
                                var.value
                            ),
                        ));
                    }
                }
                out.env.insert(name.to_owned(), var.value.clone());
            }
        }
    }
    for (key, value) in &workload.template.spec.node_selector {
        if let Some(existing) = out.node_selector.insert(key.clone(), value.clone()) {
            if existing != *value {
                return Err(SpecError::new(
                    format!("spec.nodeSelector.{key}"),
                    format!(
                        "{existing:?} disagrees with the workload's ({value:?}); set one of them"
                    ),
                ));
            }
        }
    }
    out.tolerations
        .extend(workload.template.spec.tolerations.iter().cloned());
    Ok(out)
}

/// The runtime an actor runs on once its flavors are merged: `spec.runtime` when set, else
/// `python` for an actor that names an image and no component (Asya's `image` + `handler`),
/// else `wasm`.
pub fn effective_runtime(spec: &AsyncActorSpec) -> Runtime {
    spec.runtime
        .unwrap_or(if spec.component.is_none() && spec.image.is_some() {
            Runtime::Python
        } else {
            Runtime::Wasm
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> AsyncActorSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn the_tutorials_workload_becomes_a_python_actor() {
        let resolved = resolve(&spec(
            r#"
transport: nats
scaling: {minReplicas: 0, maxReplicas: 50, queueLength: 5}
workload:
  kind: Deployment
  template:
    spec:
      containers:
      - name: asya-runtime
        image: my-flow-routers:v1
        env:
        - {name: ASYA_HANDLER, value: routers.start_text_analysis_flow}
        - {name: ASYA_HANDLER_MODE, value: envelope}
        - {name: ASYA_HANDLER_CLEAN_TEXT, value: text_handlers.clean_text}
        resources: {limits: {nvidia.com/gpu: 1}}
"#,
        ))
        .unwrap();
        assert_eq!(resolved.runtime, Some(Runtime::Python));
        assert_eq!(resolved.image.as_deref(), Some("my-flow-routers:v1"));
        assert_eq!(
            resolved.handler.as_deref(),
            Some("routers.start_text_analysis_flow")
        );
        assert_eq!(resolved.mode, Some(Mode::Envelope));
        assert_eq!(
            resolved.env,
            BTreeMap::from([(
                "ASYA_HANDLER_CLEAN_TEXT".to_owned(),
                "text_handlers.clean_text".to_owned()
            )])
        );
        assert!(resolved
            .resources
            .unwrap()
            .limits
            .contains_key("nvidia.com/gpu"));
        assert!(resolved.workload.is_none());
    }

    #[test]
    fn flavor_is_a_one_item_flavors() {
        let resolved = resolve(&spec(
            "flavor: gpu-inference\nimage: m:1\nhandler: model.predict",
        ))
        .unwrap();
        assert_eq!(resolved.flavors, ["gpu-inference"]);
        assert_eq!(effective_runtime(&resolved), Runtime::Python);
        let err = resolve(&spec("flavor: a\nflavors: [b]")).unwrap_err();
        assert_eq!(err.field, "spec.flavor");
    }

    #[test]
    fn image_and_handler_alone_mean_python() {
        assert_eq!(
            effective_runtime(&spec("image: m:1\nhandler: h.f")),
            Runtime::Python
        );
        assert_eq!(
            effective_runtime(&spec("image: m:1\ncomponent: oci://r/c:1\nhandler: h.f")),
            Runtime::Wasm
        );
        assert_eq!(effective_runtime(&spec("handler: h.f")), Runtime::Wasm);
        assert_eq!(
            effective_runtime(&spec("runtime: wasm\nimage: m:1\nhandler: h.f")),
            Runtime::Wasm
        );
    }

    #[test]
    fn what_cannot_be_honoured_is_refused() {
        let workload = |container: &str| {
            format!("workload:\n  template:\n    spec:\n      containers:\n      - {container}\n")
        };
        // Another container.
        let err = resolve(&spec(&workload("{name: helper, image: x}"))).unwrap_err();
        assert!(err.field.ends_with("[0].name"), "{err}");
        // A mode that is not one.
        let err = resolve(&spec(&workload(
            "{name: asya-runtime, env: [{name: ASYA_HANDLER_MODE, value: stream}]}",
        )))
        .unwrap_err();
        assert!(err.rule.contains("payload or envelope"), "{err}");
        // The handler given twice, differently.
        let err = resolve(&spec(&format!(
            "handler: a.b\n{}",
            workload("{name: asya-runtime, env: [{name: ASYA_HANDLER, value: c.d}]}")
        )))
        .unwrap_err();
        assert_eq!(err.field, "spec.handler");
        // A wasm runtime with Asya's workload.
        let err = resolve(&spec(&format!(
            "runtime: wasm\n{}",
            workload("{name: asya-runtime, image: x}")
        )))
        .unwrap_err();
        assert_eq!(err.field, "spec.runtime");
        // Fields of a container this project does not run are unknown, not dropped.
        for unknown in [
            "{name: asya-runtime, command: [python]}",
            "{name: asya-runtime, env: [{name: T, valueFrom: {secretKeyRef: {name: s, key: k}}}]}",
        ] {
            assert!(
                serde_yaml_ng::from_str::<AsyncActorSpec>(&workload(unknown)).is_err(),
                "{unknown}"
            );
        }
    }
}
