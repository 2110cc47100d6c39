//! Checks of an actor's merged spec that the reconciler performs before it renders anything.
//! They mirror the CRD's schema and CEL rules (which the API server applies to each object
//! alone) and add what only the merged spec shows: a flavor may bring `runtime: python` without
//! an image, or a formula whose target the actor forgot.

use crate::crd::{AsyncActorSpec, Runtime, RESERVED_NAMES};

/// Everything wrong with an actor, one message per problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct Invalid(pub Vec<String>);

/// Whether `name` is a valid actor name ([`crate::crd::ACTOR_NAME_PATTERN`], at most 63
/// characters, not an end actor's name).
pub fn actor_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        return Err(format!(
            "actor name '{name}' is not valid: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit"
        ));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(format!(
            "actor name '{name}' is reserved for a built-in actor of the host"
        ));
    }
    Ok(())
}

fn duration_ok(text: &str) -> bool {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    number.parse::<f64>().is_ok() && matches!(unit, "" | "ms" | "s" | "m" | "h")
}

/// Validates an actor's merged spec.
pub fn actor(name: &str, spec: &AsyncActorSpec) -> Result<(), Invalid> {
    let mut problems = Vec::new();
    if let Err(problem) = actor_name(name) {
        problems.push(problem);
    }
    match spec.runtime.unwrap_or_default() {
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
                    "runtime: python needs spec.image (the user's image running python -m asya.runtime)".into(),
                );
            }
            if spec.handler.is_none() {
                problems.push("runtime: python needs spec.handler (module.func)".into());
            }
        }
    }
    if let Some(scaling) = &spec.scaling {
        for (canonical, alias, a, b) in [
            (
                "minReplicaCount",
                "minReplicas",
                scaling.min_replica_count,
                scaling.min_replicas,
            ),
            (
                "maxReplicaCount",
                "maxReplicas",
                scaling.max_replica_count,
                scaling.max_replicas,
            ),
        ] {
            if let (Some(a), Some(b)) = (a, b) {
                if a != b {
                    problems.push(format!(
                        "scaling: {canonical} ({a}) and its alias {alias} ({b}) disagree; set one of them"
                    ));
                }
            }
        }
        if let (Some(min), Some(max)) = (scaling.min(), scaling.max()) {
            if min > max {
                problems.push(format!(
                    "scaling: minReplicaCount ({min}) is larger than maxReplicaCount ({max})"
                ));
            }
        }
        if let Some(advanced) = &scaling.advanced {
            if advanced.formula.trim().is_empty() {
                problems.push("scaling.advanced.formula is empty".into());
            } else if advanced.target.trim().is_empty() {
                problems.push(
                    "scaling.advanced.formula needs scaling.advanced.target (the value the formula is scaled to)".into(),
                );
            }
        }
    }
    let mut durations = Vec::new();
    if let Some(resiliency) = &spec.resiliency {
        durations.push(("resiliency.actorTimeout", resiliency.actor_timeout.clone()));
        for policy in resiliency.policies.values() {
            durations.push((
                "resiliency.policies.*.initialInterval",
                policy.initial_interval.clone(),
            ));
            durations.push((
                "resiliency.policies.*.maxInterval",
                policy.max_interval.clone(),
            ));
            durations.push((
                "resiliency.policies.*.maxDuration",
                policy.max_duration.clone(),
            ));
        }
        for rule in &resiliency.rules {
            if !resiliency.policies.contains_key(&rule.policy) {
                problems.push(format!(
                    "resiliency.rules names policy '{}', which is not in resiliency.policies",
                    rule.policy
                ));
            }
        }
    }
    if let Some(sandbox) = &spec.sandbox {
        durations.push(("sandbox.cpuTimeout", sandbox.cpu_timeout.clone()));
        durations.push(("sandbox.idleTimeout", sandbox.idle_timeout.clone()));
    }
    for (field, value) in durations {
        if let Some(value) = value {
            if !duration_ok(&value) {
                problems.push(format!(
                    "{field} '{value}' is not a duration like 500ms, 5s, 2m or 1h"
                ));
            }
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
        assert_eq!(err.0.len(), 2, "{err}");
        let err = actor(
            "a",
            &spec("component: oci://r/a:1\nsandbox: {cpuTimeout: soon}\nresiliency: {rules: [{errors: [E], policy: p}]}"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("cpuTimeout 'soon'"));
        assert!(err.to_string().contains("policy 'p'"));
    }
}
