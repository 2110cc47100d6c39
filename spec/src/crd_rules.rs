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
    "!(self.metadata.name in ['x-sink', 'x-sump', 'x-fanin'])",
    crate::names::RESERVED_RULE,
);
/// In a cluster, `runtime: python` runs the user's image.
pub const PYTHON_IMAGE_RULE: Rule = (
    "!has(self.runtime) || self.runtime != 'python' || has(self.image)",
    "runtime: python needs spec.image (the user's image running python -m asya.runtime)",
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
