//! Retry policies from an actor's `spec.resiliency`, as pure code: which policy a failure falls
//! under (by error type or any MRO ancestor), whether another attempt is allowed, and after what
//! delay. The sidecar turns a retry into a delayed redelivery on the transport.

use crate::message::envelope::{Reason, SUMP};
use crate::message::outcome::Failure;
use crate::message::status::FailureAction;
use anyhow::Result;
use asya_spec::parse_duration;
use std::collections::BTreeMap;
use std::time::Duration;

/// How the delay grows between attempts (`exponential` when a policy does not say).
pub use asya_spec::Backoff;
/// A policy as written in the manifest.
pub type PolicySpec = asya_spec::RetryPolicy;
/// A rule: errors whose type or MRO contains one of `errors` use `policy`.
pub type RuleSpec = asya_spec::RetryRule;
/// `spec.resiliency` as written in the manifest.
pub type ResiliencySpec = asya_spec::Resiliency;

/// A validated policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Policy name.
    pub name: String,
    /// Total attempts (>= 1).
    pub max_attempts: u32,
    /// Delay growth.
    pub backoff: Backoff,
    /// First delay.
    pub initial_interval: Duration,
    /// Largest delay.
    pub max_interval: Duration,
    /// Fractional jitter in [0, 1].
    pub jitter: f64,
    /// Overall time budget since the first attempt.
    pub max_duration: Option<Duration>,
    /// Destination when exhausted.
    pub on_exhausted: Vec<String>,
}

impl Policy {
    /// One attempt, no retries, failures to `x-sump`.
    pub fn no_retries() -> Self {
        Policy {
            name: "none".into(),
            max_attempts: 1,
            backoff: Backoff::Constant,
            initial_interval: Duration::ZERO,
            max_interval: Duration::ZERO,
            jitter: 0.0,
            max_duration: None,
            on_exhausted: Vec::new(),
        }
    }

    /// The delay before attempt `next_attempt` (2 for the first retry), before jitter.
    pub fn base_delay(&self, next_attempt: u32) -> Duration {
        let retry = next_attempt.saturating_sub(1).max(1);
        let delay = match self.backoff {
            Backoff::Constant => self.initial_interval,
            Backoff::Linear => self.initial_interval.saturating_mul(retry),
            Backoff::Exponential => self
                .initial_interval
                .saturating_mul(2u32.saturating_pow(retry - 1)),
        };
        delay.min(self.max_interval.max(self.initial_interval))
    }

    /// The delay with jitter applied, given a uniform random number in [0, 1).
    pub fn delay(&self, next_attempt: u32, unit_random: f64) -> Duration {
        let base = self.base_delay(next_attempt).as_secs_f64();
        let spread = base * self.jitter * (2.0 * unit_random - 1.0);
        Duration::from_secs_f64((base + spread).max(0.0))
    }
}

/// All of an actor's policies and rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Resiliency {
    rules: Vec<(Vec<String>, Policy)>,
    default: Policy,
    non_retryable: Vec<String>,
}

impl Default for Resiliency {
    fn default() -> Self {
        Resiliency {
            rules: Vec::new(),
            default: Policy::no_retries(),
            non_retryable: Vec::new(),
        }
    }
}

/// Facts about the current attempt that the decision needs.
#[derive(Debug, Clone, Copy)]
pub struct AttemptInfo {
    /// The attempt that just failed (1 for the first).
    pub attempt: u32,
    /// Time since the first attempt started.
    pub elapsed: Duration,
    /// A uniform random number in [0, 1) for jitter.
    pub unit_random: f64,
}

/// The outcome of a decision, with the delay for a retry.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What routing should do.
    pub action: FailureAction,
    /// Delay before the retry is delivered.
    pub delay: Option<Duration>,
}

impl Resiliency {
    /// Validates a manifest's resiliency section.
    pub fn from_spec(spec: &ResiliencySpec) -> Result<Self> {
        asya_spec::check::check_resiliency("resiliency", spec)?;
        let duration = |text: &Option<String>| -> Result<Option<Duration>> {
            text.as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(anyhow::Error::msg)
        };
        let mut policies = BTreeMap::new();
        for (name, p) in &spec.policies {
            let initial_interval = duration(&p.initial_interval)?.unwrap_or(Duration::from_secs(1));
            policies.insert(
                name.clone(),
                Policy {
                    name: name.clone(),
                    // Checked above: 1..=1000.
                    max_attempts: p.max_attempts.unwrap_or(3).max(1) as u32,
                    backoff: p.backoff.unwrap_or(Backoff::Exponential),
                    initial_interval,
                    max_interval: duration(&p.max_interval)?
                        .unwrap_or(Duration::from_secs(300))
                        .max(initial_interval),
                    jitter: p.jitter.unwrap_or(0.0),
                    max_duration: duration(&p.max_duration)?,
                    on_exhausted: p.on_exhausted.clone(),
                },
            );
        }
        let rules = spec
            .rules
            .iter()
            .filter_map(|rule| Some((rule.errors.clone(), policies.get(&rule.policy)?.clone())))
            .collect();
        Ok(Resiliency {
            rules,
            default: policies
                .get("default")
                .cloned()
                .unwrap_or_else(Policy::no_retries),
            non_retryable: spec.non_retryable_errors.clone(),
        })
    }

    /// The policy for a failure: the first rule naming its type or an MRO ancestor, else the
    /// `default` policy.
    pub fn policy_for(&self, failure: &Failure) -> &Policy {
        self.rules
            .iter()
            .find(|(errors, _)| errors.iter().any(|e| names_failure(e, failure)))
            .map(|(_, p)| p)
            .unwrap_or(&self.default)
    }

    /// Decides what to do after `failure` on attempt `info.attempt`.
    pub fn decide(&self, failure: &Failure, info: AttemptInfo) -> Decision {
        let sump = || vec![SUMP.to_owned()];
        // Route problems are the sender's fault, and a sandbox refusal is the same every time;
        // retrying cannot fix them.
        let never = matches!(
            failure.reason,
            Reason::RouteViolation | Reason::OutputTooLarge | Reason::SandboxDenied
        );
        if never || self.non_retryable.iter().any(|e| names_failure(e, failure)) {
            let reason = if never {
                failure.reason
            } else {
                Reason::NonRetryable
            };
            return Decision {
                action: FailureAction::GiveUp {
                    reason,
                    route_to: sump(),
                },
                delay: None,
            };
        }
        let policy = self.policy_for(failure);
        let route_to = if policy.on_exhausted.is_empty() {
            sump()
        } else {
            policy.on_exhausted.clone()
        };
        if policy.max_attempts <= 1 {
            return Decision {
                action: FailureAction::GiveUp {
                    reason: failure.reason,
                    route_to,
                },
                delay: None,
            };
        }
        let next = info.attempt + 1;
        let delay = policy.delay(next, info.unit_random);
        let out_of_time = policy
            .max_duration
            .is_some_and(|max| info.elapsed + delay > max);
        if next > policy.max_attempts || out_of_time {
            return Decision {
                action: FailureAction::GiveUp {
                    reason: Reason::MaxRetriesExhausted,
                    route_to,
                },
                delay: None,
            };
        }
        Decision {
            action: FailureAction::Retry {
                attempt: next,
                max_attempts: policy.max_attempts,
            },
            delay: Some(delay),
        }
    }
}

/// Whether `entry` (an error name of a rule) names the failure: its type or a base class (either
/// naming form, see [`crate::message::envelope::ErrorInfo::is_a`]), or the host reason.
fn names_failure(entry: &str, failure: &Failure) -> bool {
    entry == failure.reason.as_str() || failure.error.is_a(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::envelope::ErrorInfo;

    fn spec(yaml: &str) -> Resiliency {
        Resiliency::from_spec(&serde_yaml_ng::from_str(yaml).unwrap()).unwrap()
    }

    fn py_error(kind: &str, mro: &[&str]) -> Failure {
        Failure {
            reason: Reason::HandlerError,
            error: ErrorInfo {
                kind: kind.into(),
                message: "boom".into(),
                mro: mro.iter().map(|s| s.to_string()).collect(),
                traceback: None,
            },
        }
    }

    fn at(attempt: u32) -> AttemptInfo {
        AttemptInfo {
            attempt,
            elapsed: Duration::ZERO,
            unit_random: 0.5,
        }
    }

    const YAML: &str = r#"
policies:
  default: {maxAttempts: 3, backoff: exponential, initialInterval: 100ms, maxInterval: 1s}
  network: {maxAttempts: 5, backoff: linear, initialInterval: 1s, onExhausted: [fallback]}
  slow: {maxAttempts: 2, backoff: constant, initialInterval: 2s, maxDuration: 3s}
rules:
  - {errors: [ConnectionError], policy: network}
  - {errors: [Timeout], policy: slow}
nonRetryableErrors: [ValueError]
"#;

    #[test]
    fn backoff_shapes() {
        let r = spec(YAML);
        let exp = r.policy_for(&py_error("RuntimeError", &["RuntimeError", "Exception"]));
        assert_eq!(exp.name, "default");
        assert_eq!(exp.base_delay(2), Duration::from_millis(100));
        assert_eq!(exp.base_delay(3), Duration::from_millis(200));
        assert_eq!(
            exp.base_delay(10),
            Duration::from_secs(1),
            "capped at maxInterval"
        );
        let lin = r.policy_for(&py_error(
            "ConnectionError",
            &["ConnectionError", "OSError", "Exception"],
        ));
        assert_eq!(lin.base_delay(2), Duration::from_secs(1));
        assert_eq!(lin.base_delay(4), Duration::from_secs(3));
    }

    #[test]
    fn rules_match_either_naming_form() {
        let r = spec(
            "policies: {http: {maxAttempts: 5}}\nrules: [{errors: [HTTPError], policy: http}]",
        );
        let failure = py_error(
            "requests.exceptions.HTTPError",
            &[
                "requests.exceptions.RequestException",
                "OSError",
                "Exception",
            ],
        );
        assert_eq!(r.policy_for(&failure).name, "http");
        let r = spec(
            "policies: {io: {maxAttempts: 5}}\nrules: [{errors: [requests.exceptions.RequestException], policy: io}]",
        );
        let failure = py_error("HTTPError", &["RequestException", "Exception"]);
        assert_eq!(r.policy_for(&failure).name, "io");
        // A suffix must end at a dot: `Error` does not name `HTTPError`.
        let r = spec("policies: {x: {maxAttempts: 5}}\nrules: [{errors: [Error], policy: x}]");
        assert_ne!(
            r.policy_for(&py_error("HTTPError", &["Exception"])).name,
            "x"
        );
    }

    #[test]
    fn rules_match_any_mro_ancestor() {
        let r = spec(YAML);
        // ConnectionRefusedError is a ConnectionError subclass.
        let f = py_error(
            "ConnectionRefusedError",
            &[
                "ConnectionRefusedError",
                "ConnectionError",
                "OSError",
                "Exception",
            ],
        );
        assert_eq!(r.policy_for(&f).name, "network");
        // Host failures match by reason.
        assert_eq!(
            r.policy_for(&Failure::host(Reason::Timeout, "slow")).name,
            "slow"
        );
    }

    #[test]
    fn retries_until_max_attempts_then_exhausted() {
        let r = spec(YAML);
        let f = py_error("RuntimeError", &["RuntimeError", "Exception"]);
        let d = r.decide(&f, at(1));
        assert_eq!(
            d.action,
            FailureAction::Retry {
                attempt: 2,
                max_attempts: 3
            }
        );
        assert_eq!(d.delay, Some(Duration::from_millis(100)));
        assert!(matches!(
            r.decide(&f, at(2)).action,
            FailureAction::Retry { attempt: 3, .. }
        ));
        assert_eq!(
            r.decide(&f, at(3)).action,
            FailureAction::GiveUp {
                reason: Reason::MaxRetriesExhausted,
                route_to: vec![SUMP.into()]
            }
        );
    }

    #[test]
    fn non_retryable_and_on_exhausted() {
        let r = spec(YAML);
        let d = r.decide(&py_error("ValueError", &["ValueError", "Exception"]), at(1));
        assert_eq!(
            d.action,
            FailureAction::GiveUp {
                reason: Reason::NonRetryable,
                route_to: vec![SUMP.into()]
            }
        );
        let f = py_error(
            "ConnectionError",
            &["ConnectionError", "OSError", "Exception"],
        );
        assert_eq!(
            r.decide(&f, at(5)).action,
            FailureAction::GiveUp {
                reason: Reason::MaxRetriesExhausted,
                route_to: vec!["fallback".into()]
            }
        );
    }

    #[test]
    fn max_duration_caps_retries() {
        let r = spec(YAML);
        let f = Failure::host(Reason::Timeout, "slow");
        let mut info = at(1);
        info.elapsed = Duration::from_millis(1500);
        assert!(matches!(
            r.decide(&f, info).action,
            FailureAction::GiveUp {
                reason: Reason::MaxRetriesExhausted,
                ..
            }
        ));
    }

    #[test]
    fn jitter_spreads_around_the_base() {
        let mut p = Policy::no_retries();
        p.initial_interval = Duration::from_secs(1);
        p.max_interval = Duration::from_secs(1);
        p.jitter = 0.2;
        assert_eq!(p.delay(2, 0.0), Duration::from_millis(800));
        assert_eq!(p.delay(2, 1.0), Duration::from_millis(1200));
    }

    #[test]
    fn without_policies_failures_go_straight_to_the_sump_with_their_reason() {
        let r = Resiliency::default();
        let d = r.decide(&Failure::host(Reason::MemoryLimit, "big"), at(1));
        assert_eq!(
            d.action,
            FailureAction::GiveUp {
                reason: Reason::MemoryLimit,
                route_to: vec![SUMP.into()]
            }
        );
    }

    #[test]
    fn unknown_policy_in_a_rule_is_an_error() {
        let err = Resiliency::from_spec(
            &serde_yaml_ng::from_str("rules: [{errors: [X], policy: nope}]").unwrap(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("names policy 'nope'"), "{err}");
    }
}
