//! Every rule of an `AsyncActorSpec` that its types do not enforce, checked once. The host runs
//! these on every manifest it loads, the operator on every actor it reconciles, and the CRD and
//! the SDK's JSON Schema state the same rules (generated from the same field schemas), so a spec
//! one of them accepts, the others accept.
//!
//! Rules that hold only in a cluster (an `oci://` component, an image for `runtime: python`)
//! are the CRD's alone: a local host may run a component file and spawn the runtime itself.

use crate::actor::{AsyncActorSpec, Placement, Resiliency, Sandbox, Scaling, Transport};
use crate::duration::duration_at;
use crate::names;
use crate::quantity::bytes_at;
use crate::SpecError;

/// Checks `value` (at `field`) against the range rule its schema declares.
pub fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &str,
    value: T,
    min: T,
    max: Option<T>,
) -> Result<(), SpecError> {
    let ok = value >= min && max.is_none_or(|max| value <= max);
    if ok {
        return Ok(());
    }
    let rule = match max {
        Some(max) => format!("must be between {min} and {max}"),
        None => format!("must be at least {min}"),
    };
    Err(SpecError::new(field, format!("{rule} (got {value})")))
}

fn optional<T: PartialOrd + std::fmt::Display + Copy>(
    field: &str,
    value: Option<T>,
    min: T,
    max: Option<T>,
) -> Result<(), SpecError> {
    value.map_or(Ok(()), |v| in_range(field, v, min, max))
}

fn optional_duration(field: &str, value: &Option<String>) -> Result<(), SpecError> {
    value
        .as_deref()
        .map_or(Ok(()), |v| duration_at(field, v).map(|_| ()))
}

/// Checks a whole spec (one with Asya's forms resolved, see [`crate::workload::resolve`]).
pub fn check_spec(spec: &AsyncActorSpec) -> Result<(), SpecError> {
    if let Some(transport) = spec.transport {
        check_transport("spec.transport", transport)?;
    }
    if let Some(scaling) = &spec.scaling {
        check_scaling("spec.scaling", scaling)?;
    }
    if let Some(resiliency) = &spec.resiliency {
        check_resiliency("spec.resiliency", resiliency)?;
    }
    if let Some(sandbox) = &spec.sandbox {
        check_sandbox("spec.sandbox", sandbox)?;
    }
    check_timeouts(spec)?;
    check_placement(spec)?;
    if let Some(resources) = &spec.resources {
        for (side, map) in [
            ("limits", &resources.limits),
            ("requests", &resources.requests),
        ] {
            for (name, quantity) in map {
                quantity.check_resource(&format!("spec.resources.{side}.{name}"))?;
            }
        }
    }
    Ok(())
}

/// Timeouts that can be honoured together: `sandbox.cpuTimeout` not longer than
/// `resiliency.actorTimeout` (when both are set), see [`crate::crd_rules::TIMEOUTS_RULE`].
pub fn check_timeouts(spec: &AsyncActorSpec) -> Result<(), SpecError> {
    let cpu = spec.sandbox.as_ref().and_then(|s| s.cpu_timeout.as_deref());
    let call = spec
        .resiliency
        .as_ref()
        .and_then(|r| r.actor_timeout.as_deref());
    let (Some(cpu), Some(call)) = (cpu, call) else {
        return Ok(());
    };
    let cpu_value = duration_at("spec.sandbox.cpuTimeout", cpu)?;
    let call_value = duration_at("spec.resiliency.actorTimeout", call)?;
    if cpu_value > call_value {
        return Err(SpecError::new(
            "spec.sandbox.cpuTimeout",
            format!(
                "{} (got cpuTimeout {cpu}, actorTimeout {call})",
                crate::crd_rules::TIMEOUTS_RULE.1
            ),
        ));
    }
    Ok(())
}

/// `spec.placement` and `spec.pool`: a pool serves only `runtime: wasm` actors, and naming a
/// pool contradicts `placement: dedicated`.
pub fn check_placement(spec: &AsyncActorSpec) -> Result<(), SpecError> {
    let python = crate::workload::effective_runtime(spec) == crate::actor::Runtime::Python;
    if python && spec.placement == Some(Placement::Pool) {
        return Err(SpecError::new(
            "spec.placement",
            "must be dedicated for runtime: python (a pool's hosts run WASM components only)",
        ));
    }
    if let Some(pool) = &spec.pool {
        if spec.placement == Some(Placement::Dedicated) {
            return Err(SpecError::new(
                "spec.pool",
                "must be unset with placement: dedicated",
            ));
        }
        if python {
            return Err(SpecError::new(
                "spec.pool",
                "must be unset for runtime: python (a pool's hosts run WASM components only)",
            ));
        }
        let parts: Vec<&str> = pool.split('/').collect();
        if parts.len() > 2 || parts.iter().any(|p| !is_dns_label(p)) {
            return Err(SpecError::new(
                "spec.pool",
                format!("must be NAME or NAMESPACE/NAME, each a DNS label (got {pool:?})"),
            ));
        }
    }
    Ok(())
}

/// A DNS label (RFC 1123): what namespace and object names of pools are.
fn is_dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

/// `spec.transport`: one this build runs.
pub fn check_transport(at: &str, transport: Transport) -> Result<(), SpecError> {
    if transport.runs_here() {
        return Ok(());
    }
    Err(SpecError::new(
        at,
        format!(
            "{} (got {})",
            crate::crd_rules::TRANSPORT_RULE.1,
            transport.as_str()
        ),
    ))
}

/// `spec.scaling`.
pub fn check_scaling(at: &str, scaling: &Scaling) -> Result<(), SpecError> {
    let f = |name: &str| format!("{at}.{name}");
    optional(&f("minReplicaCount"), scaling.min_replica_count, 0, None)?;
    optional(&f("maxReplicaCount"), scaling.max_replica_count, 1, None)?;
    optional(&f("minReplicas"), scaling.min_replicas, 0, None)?;
    optional(&f("maxReplicas"), scaling.max_replicas, 1, None)?;
    optional(&f("queueLength"), scaling.queue_length, 1, None)?;
    optional(&f("pollingInterval"), scaling.polling_interval, 1, None)?;
    optional(&f("cooldownPeriod"), scaling.cooldown_period, 0, None)?;
    use crate::crd_rules::{SCALING_MAX_ALIAS, SCALING_MIN_ALIAS, SCALING_MIN_LE_MAX};
    let disagree = |a: Option<i32>, b: Option<i32>| matches!((a, b), (Some(a), Some(b)) if a != b);
    if disagree(scaling.min_replica_count, scaling.min_replicas) {
        return Err(SpecError::new(at, SCALING_MIN_ALIAS.1));
    }
    if disagree(scaling.max_replica_count, scaling.max_replicas) {
        return Err(SpecError::new(at, SCALING_MAX_ALIAS.1));
    }
    if scaling.min().unwrap_or(0) > scaling.max().unwrap_or(i32::MAX) {
        return Err(SpecError::new(at, SCALING_MIN_LE_MAX.1));
    }
    if let Some(advanced) = &scaling.advanced {
        if advanced.target.is_empty() {
            return Err(SpecError::new(
                format!("{at}.advanced"),
                crate::crd_rules::FORMULA_TARGET_RULE.1,
            ));
        }
    }
    Ok(())
}

/// `spec.resiliency`.
pub fn check_resiliency(at: &str, resiliency: &Resiliency) -> Result<(), SpecError> {
    optional_duration(&format!("{at}.actorTimeout"), &resiliency.actor_timeout)?;
    for (name, policy) in &resiliency.policies {
        let f = |field: &str| format!("{at}.policies.{name}.{field}");
        optional(&f("maxAttempts"), policy.max_attempts, 1, Some(1000))?;
        if let Some(jitter) = policy.jitter {
            if !jitter.is_finite() {
                return Err(SpecError::new(
                    f("jitter"),
                    format!("must be between 0 and 1 (got {jitter})"),
                ));
            }
            in_range(&f("jitter"), jitter, 0.0, Some(1.0))?;
        }
        optional_duration(&f("initialInterval"), &policy.initial_interval)?;
        optional_duration(&f("maxInterval"), &policy.max_interval)?;
        optional_duration(&f("maxDuration"), &policy.max_duration)?;
        for (i, actor) in policy.on_exhausted.iter().enumerate() {
            if !names::is_dns_label(actor) {
                return Err(SpecError::new(
                    format!("{}[{i}]", f("onExhausted")),
                    format!("{} (got {actor:?})", names::ACTOR_NAME_RULE),
                ));
            }
        }
    }
    for (i, rule) in resiliency.rules.iter().enumerate() {
        if !resiliency.policies.contains_key(&rule.policy) {
            let known: Vec<&str> = resiliency.policies.keys().map(String::as_str).collect();
            return Err(SpecError::new(
                format!("{at}.rules[{i}].policy"),
                format!(
                    "names policy '{}', which is not declared: it {} (declared: {})",
                    rule.policy,
                    crate::crd_rules::RULE_POLICY_RULE.1,
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
    }
    Ok(())
}

/// `spec.sandbox`.
pub fn check_sandbox(at: &str, sandbox: &Sandbox) -> Result<(), SpecError> {
    let f = |name: &str| format!("{at}.{name}");
    if let Some(memory) = &sandbox.memory {
        bytes_at(&f("memory"), memory)?;
    }
    if let Some(max) = &sandbox.max_output_bytes {
        bytes_at(&f("maxOutputBytes"), max)?;
    }
    optional_duration(&f("cpuTimeout"), &sandbox.cpu_timeout)?;
    optional_duration(&f("idleTimeout"), &sandbox.idle_timeout)?;
    optional(&f("maxInstances"), sandbox.max_instances, 1, Some(1024))?;
    optional(&f("maxInFlight"), sandbox.max_in_flight, 1, Some(65536))?;
    optional(
        &f("maxConcurrency"),
        sandbox.max_concurrency,
        1,
        Some(10000),
    )?;
    optional(
        &f("recycleAfterCalls"),
        sandbox.recycle_after_calls,
        1,
        None,
    )?;
    crate::hosts::check_allowed_hosts(&sandbox.allowed_hosts)?;
    Ok(())
}
