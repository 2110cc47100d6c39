//! The CEL rules (`x-kubernetes-validations`) of the CRDs, each with the message every consumer
//! uses for it: [`crate::check`] enforces the same rules in Rust with the same words.

/// `(CEL rule, message)`.
pub type Rule = (&'static str, &'static str);

/// `minReplicaCount` and its alias agree.
pub const SCALING_MIN_ALIAS: Rule = (
    "!has(self.minReplicaCount) || !has(self.minReplicas) || self.minReplicaCount == self.minReplicas",
    "minReplicaCount and its alias minReplicas disagree; set one of them",
);
/// `maxReplicaCount` and its alias agree.
pub const SCALING_MAX_ALIAS: Rule = (
    "!has(self.maxReplicaCount) || !has(self.maxReplicas) || self.maxReplicaCount == self.maxReplicas",
    "maxReplicaCount and its alias maxReplicas disagree; set one of them",
);
/// The minimum is not above the maximum.
pub const SCALING_MIN_LE_MAX: Rule = (
    "(has(self.minReplicaCount) ? self.minReplicaCount : (has(self.minReplicas) ? self.minReplicas : 0)) <= (has(self.maxReplicaCount) ? self.maxReplicaCount : (has(self.maxReplicas) ? self.maxReplicas : 2147483647))",
    "the minimum replica count is larger than the maximum",
);
/// A scaling formula has a target.
pub const FORMULA_TARGET_RULE: Rule = (
    "!has(self.formula) || (has(self.target) && self.target != '')",
    "scaling.advanced.formula needs scaling.advanced.target (the value the formula is scaled to)",
);
/// Every retry rule names a declared policy.
pub const RULE_POLICY_RULE: Rule = (
    "!has(self.rules) || self.rules.all(r, has(self.policies) && r.policy in self.policies)",
    "must name a policy declared in resiliency.policies",
);
/// The actor's name is a DNS label.
pub const NAME_RULE: Rule = (
    "self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 63",
    crate::names::ACTOR_NAME_RULE,
);
/// The actor's name is not a built-in actor's.
pub const RESERVED_NAME_RULE: Rule = (
    "!(self.metadata.name in ['x-sink', 'x-sump', 'x-fanin', 'x-pause'])",
    crate::names::RESERVED_RULE,
);
/// CEL: the duration at `field` (a string of the shared grammar, see [`crate::duration`]) in
/// whole microseconds (exact: the grammar has at most 3 decimals, in ms, s and m).
pub fn duration_micros_cel(field: &str) -> String {
    let number = |n: &str, scale: u64| {
        format!(
            "({n}.contains('.') ? int({n}.split('.')[0]) * {scale} + int(({n}.split('.')[1] + '00').substring(0, 3)) * {} : int({n}) * {scale})",
            scale / 1000
        )
    };
    let part = [
        ("ms", 2, 1_000u64),
        ("s", 1, 1_000_000),
        ("m", 1, 60_000_000),
        ("h", 1, 3_600_000_000),
    ]
    .iter()
    .rev()
    .fold(
        number("p.substring(0, size(p) - 1)", 86_400_000_000),
        |otherwise, (unit, len, scale)| {
            format!(
                "p.endsWith('{unit}') ? {} : ({otherwise})",
                number(&format!("p.substring(0, size(p) - {len})"), *scale)
            )
        },
    );
    format!(
        "({field}.matches('^[0-9]+$') ? int({field}) * 1000000 : {field}.findAll('[0-9.]+(ms|s|m|h|d)').map(p, {part}).sum())"
    )
}

/// The CPU deadline is not longer than the call's timeout: `sandbox.cpuTimeout` could never be
/// reached, the call being stopped at `resiliency.actorTimeout` first (checked when both are
/// set; a flavor may bring one of them, so the merged spec is checked again).
pub static TIMEOUTS_RULE: std::sync::LazyLock<(String, &'static str)> = std::sync::LazyLock::new(
    || {
        (
            format!(
                "!has(self.sandbox) || !has(self.sandbox.cpuTimeout) || !has(self.resiliency) || !has(self.resiliency.actorTimeout) || {} <= {}",
                duration_micros_cel("self.sandbox.cpuTimeout"),
                duration_micros_cel("self.resiliency.actorTimeout")
            ),
            "sandbox.cpuTimeout must not be longer than resiliency.actorTimeout: the call is stopped at actorTimeout first, so the longer CPU deadline could never apply",
        )
    },
);

/// The transport is one this build runs (on `spec.transport`).
pub const TRANSPORT_RULE: Rule = (
    "self in ['nats', 'rabbitmq', 'sqs']",
    "must be nats, rabbitmq or sqs: pubsub is a transport of Asya this build does not run (README: Coming from Asya)",
);
/// `flavor` is the one-item form of `flavors`: not both.
pub const FLAVOR_ALIAS_RULE: Rule = (
    "!has(self.flavor) || !has(self.flavors) || size(self.flavors) == 0",
    "spec.flavor is the one-item form of spec.flavors; set one of them",
);
/// Asya's workload runs one container, `asya-runtime` (on its `containers`).
pub const WORKLOAD_CONTAINERS_RULE: Rule = (
    "size(self) == 1 && self.all(c, c.name == 'asya-runtime')",
    "must be exactly one container, named asya-runtime: the actor's pods run it and the asya-sidecar the operator adds, nothing else",
);
/// In a cluster, `runtime: python` runs the user's image (Asya's workload names it).
pub const PYTHON_IMAGE_RULE: Rule = (
    "!has(self.runtime) || self.runtime != 'python' || has(self.image) || has(self.workload)",
    "runtime: python needs spec.image (the user's image: Python and the handler's code; the operator adds the runtime)",
);
/// In a cluster, components come from a registry.
pub const OCI_COMPONENT_RULE: Rule = (
    "!has(self.component) || self.component.startsWith('oci://')",
    "spec.component must be an oci:// reference in a cluster",
);

#[cfg(test)]
mod tests {
    #[test]
    fn rules_name_what_the_rust_checks_name() {
        assert!(super::NAME_RULE
            .0
            .contains(crate::names::ACTOR_NAME_PATTERN));
        for name in crate::names::RESERVED_NAMES {
            assert!(super::RESERVED_NAME_RULE.0.contains(&format!("'{name}'")));
        }
    }
}
