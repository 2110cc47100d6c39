//! Checks of an actor's merged spec that the reconciler performs before it renders anything:
//! the shared contract's rules ([`asya_spec::check_spec`], which the CRD states too and the
//! API server applies to each object alone) on the merged spec, where a flavor may bring a bad
//! value the actor's own object did not show, and what only a cluster needs (a component from
//! a registry, an image for `runtime: python`).

use crate::crd::{AsyncActorSpec, Runtime};

/// Everything wrong with an actor, one message per problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct Invalid(pub Vec<String>);

/// Whether `name` is a valid actor name (a DNS label of at most 63 characters, not a built-in
/// actor's name), as the shared contract words it.
pub fn actor_name(name: &str) -> Result<(), String> {
    asya_spec::names::check_actor_name(name).map_err(|e| e.to_string())
}

/// Validates an actor's merged spec.
pub fn actor(name: &str, spec: &AsyncActorSpec) -> Result<(), Invalid> {
    let mut problems = Vec::new();
    if let Err(problem) = actor_name(name) {
        problems.push(problem);
    }
    match asya_spec::workload::effective_runtime(spec) {
        Runtime::Wasm => match spec.component.as_deref() {
            None => problems.push(
                "runtime: wasm needs spec.component (oci://registry/repo:tag of the built component)".into(),
            ),
            Some(component) if !component.starts_with("oci://") => problems.push(format!(
                "spec.component '{component}' must be an oci:// reference in a cluster"
            )),
            Some(_) => {}
        },
        Runtime::Python => {
            if spec.image.is_none() {
                problems.push(
                    "runtime: python needs spec.image (the user's image: Python and the handler's code; the operator adds the runtime)".into(),
                );
            }
            if spec.handler.is_none() {
                problems.push("runtime: python needs spec.handler (module.func)".into());
            }
        }
    }
    // Every field rule of the shared contract (the host checks the same on start).
    if let Err(problem) = asya_spec::check_spec(spec) {
        problems.push(problem.to_string());
    }
    // KEDA refuses an empty formula; only a cluster evaluates one.
    if let Some(advanced) = spec.scaling.as_ref().and_then(|s| s.advanced.as_ref()) {
        if advanced.formula.trim().is_empty() {
            problems.push("spec.scaling.advanced.formula: must not be empty".into());
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Invalid(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> AsyncActorSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn names() {
        assert!(actor_name("ok-name-1").is_ok());
        for bad in ["Bad_Name", "-a", "a-", "", &"a".repeat(64)] {
            assert!(actor_name(bad).is_err(), "{bad}");
        }
        assert!(actor_name("x-sink").unwrap_err().contains("reserved"));
    }

    #[test]
    fn a_formula_needs_a_target() {
        let err = actor(
            "a",
            &spec(
                "component: oci://r/a:1\nscaling: {advanced: {formula: 'queue / 2', target: ''}}",
            ),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("needs scaling.advanced.target"),
            "{err}"
        );
        assert!(actor(
            "a",
            &spec(
                "component: oci://r/a:1\nscaling: {advanced: {formula: 'queue / 2', target: '5'}}"
            ),
        )
        .is_ok());
        // Without a target at all the spec does not even deserialise (the CRD requires it).
        assert!(serde_yaml_ng::from_str::<AsyncActorSpec>(
            "scaling: {advanced: {formula: 'queue / 2'}}"
        )
        .is_err());
    }

    #[test]
    fn runtime_requirements() {
        let err = actor("a", &spec("runtime: python\nhandler: m.f")).unwrap_err();
        assert!(err.to_string().contains("needs spec.image"));
        let err = actor("a", &spec("runtime: wasm")).unwrap_err();
        assert!(err.to_string().contains("needs spec.component"));
        let err = actor("a", &spec("component: ./local.wasm")).unwrap_err();
        assert!(err.to_string().contains("oci://"));
        assert!(actor("a", &spec("runtime: python\nimage: img\nhandler: m.f")).is_ok());
        // An unknown runtime is rejected when the spec is read.
        assert!(serde_yaml_ng::from_str::<AsyncActorSpec>("runtime: java").is_err());
    }

    #[test]
    fn scaling_and_durations() {
        let err = actor(
            "a",
            &spec("component: oci://r/a:1\nscaling: {minReplicaCount: 3, minReplicas: 2, maxReplicaCount: 1}"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("minReplicas disagree"), "{err}");
        let err = actor(
            "a",
            &spec("component: oci://r/a:1\nsandbox: {cpuTimeout: soon}"),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("spec.sandbox.cpuTimeout: must be a duration"),
            "{err}"
        );
        let err = actor(
            "a",
            &spec("component: oci://r/a:1\nresiliency: {rules: [{errors: [E], policy: p}]}"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("policy 'p'"), "{err}");
    }
}
