//! # asya-spec
//!
//! The `AsyncActor` contract, written once and used by the host, the operator and (through a
//! generated JSON Schema) the Python SDK:
//!
//! - [`actor`]: the resource types (`AsyncActorSpec`, `FlavorSpec`, their parts) and the
//!   manifest-file view [`actor::ActorDocument`];
//! - [`workload`]: Asya's forms of an actor (`spec.workload`, `spec.flavor`) resolved into
//!   this project's fields, and the runtime an actor runs on;
//! - [`check`]: every rule the types do not enforce, checked once;
//! - [`names`]: actor names, the reserved built-in actors, the JetStream layout and dedup ids;
//! - [`duration`], [`quantity`], [`hosts`]: the grammars of durations, byte sizes and resource
//!   quantities, and allowed hosts, each a pattern shared with the CRD and the JSON Schema;
//! - [`crd_rules`]: the CRDs' CEL rules and their messages;
//! - [`crd`] (feature `crd`): the CustomResourceDefinitions; [`schema`]: the SDK's JSON Schema.
//!
//! An invalid spec gives one [`SpecError`]: the field's path and the rule it breaks, worded the
//! same by `kubectl apply` (the CRD's CEL messages), `asya dev` (the SDK's schema) and
//! `asya-host run` (this crate).

#![warn(missing_docs)]

pub mod actor;
pub mod check;
#[cfg(feature = "crd")]
pub mod crd;
pub mod crd_rules;
pub mod duration;
pub mod hosts;
pub mod names;
pub mod quantity;
pub mod schema;
pub mod workload;

pub use actor::*;
pub use check::check_spec;
pub use duration::parse_duration;
pub use quantity::{bytes_of, Quantity};

/// A rule a manifest breaks: the field's path (`spec.sandbox.memory`) and the rule, worded as
/// every consumer words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct SpecError {
    /// The field's path, dotted (`spec.resiliency.policies.default.maxAttempts`).
    pub field: String,
    /// The rule, with the value it got.
    pub rule: String,
}

impl SpecError {
    /// A rule broken at `field`.
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        SpecError {
            field: field.into(),
            rule: rule.into(),
        }
    }
}
