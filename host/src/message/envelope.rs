//! The envelope: the message that travels between actors, carrying its own route.
//!
//! Wire format (JSON), as in the design reference:
//! `{"id", "parent_id", "route": {"prev", "curr", "next"}, "headers", "payload", "status"}`.
//! The legacy route form `{"actors": [...], "current": n}` is accepted on input and normalised.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// Name of the built-in end actor that receives successfully finished messages.
pub use asya_spec::names::SINK;
/// Name of the built-in end actor that receives failed messages.
pub use asya_spec::names::SUMP;

/// Returns true for the built-in end actors (`x-sink`, `x-sump`).
pub use asya_spec::names::is_end_actor;

/// One message and everything the mesh needs to move it: identity, route, headers, payload, status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique id of this message (a UUID for messages created by asya).
    pub id: String,
    /// Id of the message this one was derived from (fan-out children, error envelopes).
    #[serde(default)]
    pub parent_id: Option<String>,
    /// Where the message has been, is, and goes next.
    pub route: Route,
    /// Free-form headers (`traceparent`, user metadata). Propagated unchanged unless an
    /// envelope-mode handler edits them.
    #[serde(default)]
    pub headers: Map<String, Value>,
    /// The user's data: any JSON; handlers in payload mode see only this.
    #[serde(default)]
    pub payload: Value,
    /// Processing state, maintained by the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

/// The route in canonical form: steps already done, the current step, the steps still to come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    /// Actors that already processed the message, oldest first.
    pub prev: Vec<String>,
    /// The actor the message is addressed to now.
    pub curr: String,
    /// Actors still to come, in order.
    pub next: Vec<String>,
}

impl Route {
    /// A fresh route through `actors`; the first one is current.
    pub fn through<S: AsRef<str>>(actors: &[S]) -> Option<Route> {
        let (first, rest) = actors.split_first()?;
        Some(Route {
            prev: Vec::new(),
            curr: first.as_ref().to_owned(),
            next: rest.iter().map(|s| s.as_ref().to_owned()).collect(),
        })
    }

    /// The route after the current actor is done: `prev += curr`, `curr = next[0]`.
    /// Returns `None` when no step is left.
    pub fn advanced(&self) -> Option<Route> {
        let (first, rest) = self.next.split_first()?;
        let mut prev = self.prev.clone();
        prev.push(self.curr.clone());
        Some(Route {
            prev,
            curr: first.clone(),
            next: rest.to_vec(),
        })
    }

    /// The route with the current step moved to an end actor (the route is finished there).
    pub fn ended_at(&self, end_actor: &str) -> Route {
        let mut prev = self.prev.clone();
        prev.push(self.curr.clone());
        Route {
            prev,
            curr: end_actor.to_owned(),
            next: Vec::new(),
        }
    }

    /// The legacy view of this route: every step in order and the index of the current one.
    pub fn legacy(&self) -> (Vec<String>, usize) {
        let mut actors = self.prev.clone();
        actors.push(self.curr.clone());
        actors.extend(self.next.iter().cloned());
        (actors, self.prev.len())
    }
}

/// Both route forms as they may appear on the wire.
#[derive(Deserialize)]
struct RouteWire {
    #[serde(default)]
    prev: Option<Vec<String>>,
    #[serde(default)]
    curr: Option<String>,
    #[serde(default)]
    next: Option<Vec<String>>,
    #[serde(default)]
    actors: Option<Vec<String>>,
    #[serde(default)]
    current: Option<usize>,
}

impl<'de> Deserialize<'de> for Route {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = RouteWire::deserialize(deserializer)?;
        match (wire.curr, wire.actors) {
            (Some(curr), _) => {
                if curr.is_empty() {
                    return Err(serde::de::Error::custom("route.curr is empty"));
                }
                Ok(Route {
                    prev: wire.prev.unwrap_or_default(),
                    curr,
                    next: wire.next.unwrap_or_default(),
                })
            }
            (None, Some(actors)) => {
                let current = wire.current.unwrap_or(0);
                if current >= actors.len() {
                    return Err(serde::de::Error::custom(format!(
                        "legacy route: current={current} is outside actors (len {})",
                        actors.len()
                    )));
                }
                Ok(Route {
                    prev: actors[..current].to_vec(),
                    curr: actors[current].clone(),
                    next: actors[current + 1..].to_vec(),
                })
            }
            (None, None) => Err(serde::de::Error::custom(
                "route needs either {prev, curr, next} or {actors, current}",
            )),
        }
    }
}

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Published, not yet picked up.
    Pending,
    /// Being processed by `status.actor`.
    Processing,
    /// Failed and scheduled to be tried again.
    Retrying,
    /// Waiting at `x-pause` for a human to resume it (through the gateway).
    Paused,
    /// Finished at `x-sink`.
    Succeeded,
    /// Finished at `x-sump`.
    Failed,
    /// Canceled through the gateway before it finished.
    Canceled,
}

/// Why a message is in its phase. Names are part of the wire contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// The route finished normally.
    Completed,
    /// The handler raised an exception.
    HandlerError,
    /// The handler ran past its CPU deadline.
    Timeout,
    /// The handler tried to grow memory past its cap.
    MemoryLimit,
    /// The component trapped (stack overflow, unreachable, ...).
    Trap,
    /// The handler tried something its sandbox does not grant.
    SandboxDenied,
    /// The handler's result (or its log output) exceeded the allowed size.
    OutputTooLarge,
    /// The bytes received were not a valid envelope.
    ParseError,
    /// The envelope is addressed to another actor.
    RouteMismatch,
    /// An envelope-mode handler changed `id`, `route.prev` or `route.curr`.
    RouteViolation,
    /// The retry policy gave up.
    MaxRetriesExhausted,
    /// The error is configured as not worth retrying.
    NonRetryable,
    /// `status.deadline_at` passed before the handler was called.
    DeadlineExpired,
    /// A fan-out's children did not all arrive at the aggregator within `--fanin-timeout`.
    FanInTimeout,
    /// The message waits at `x-pause` for a human.
    Paused,
    /// A client canceled the task.
    Canceled,
}

impl Reason {
    /// The wire name of this reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Completed => "Completed",
            Reason::HandlerError => "HandlerError",
            Reason::Timeout => "Timeout",
            Reason::MemoryLimit => "MemoryLimit",
            Reason::Trap => "Trap",
            Reason::SandboxDenied => "SandboxDenied",
            Reason::OutputTooLarge => "OutputTooLarge",
            Reason::ParseError => "ParseError",
            Reason::RouteMismatch => "RouteMismatch",
            Reason::RouteViolation => "RouteViolation",
            Reason::MaxRetriesExhausted => "MaxRetriesExhausted",
            Reason::NonRetryable => "NonRetryable",
            Reason::DeadlineExpired => "DeadlineExpired",
            Reason::FanInTimeout => "FanInTimeout",
            Reason::Paused => "Paused",
            Reason::Canceled => "Canceled",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as carried in `status.error`: a Python exception or a host-side failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Exception class name (`ValueError`) or host error kind (`Timeout`, `ParseError`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Human-readable message.
    pub message: String,
    /// Exception class names, most specific first; retry rules match any of them.
    #[serde(default)]
    pub mro: Vec<String>,
    /// Python traceback, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
}

impl ErrorInfo {
    /// A host-side error (no Python exception behind it): its MRO is just its own kind.
    pub fn host(kind: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorInfo {
            // As Asya writes an MRO: the bases, without the class itself (nor `BaseException`).
            mro: vec!["Exception".to_owned()],
            kind: kind.into(),
            message: message.into(),
            traceback: None,
        }
    }

    /// Whether this error is `name` or derives from it: its type or a base in its MRO names
    /// the same class as `name`, in either of the forms Asya writes (`module.Qualname` or the
    /// bare class name: `HTTPError` matches `requests.exceptions.HTTPError` and back).
    pub fn is_a(&self, name: &str) -> bool {
        std::iter::once(self.kind.as_str())
            .chain(self.mro.iter().map(String::as_str))
            .any(|own| same_class(own, name))
    }
}

/// Whether two class names name the same class: equal, or one is the other's dotted suffix.
pub fn same_class(a: &str, b: &str) -> bool {
    fn suffix(long: &str, short: &str) -> bool {
        long.len() > short.len()
            && long.ends_with(short)
            && long.as_bytes()[long.len() - short.len() - 1] == b'.'
    }
    !a.is_empty() && !b.is_empty() && (a == b || suffix(a, b) || suffix(b, a))
}

/// Processing state of an envelope, maintained by the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Life-cycle phase.
    pub phase: Phase,
    /// Why the message is in this phase.
    #[serde(default)]
    pub reason: Option<Reason>,
    /// The actor that last touched the message.
    #[serde(default)]
    pub actor: Option<String>,
    /// Attempt number at the current actor, from 1.
    #[serde(default = "one")]
    pub attempt: u32,
    /// Attempts allowed at the current actor.
    #[serde(default = "one")]
    pub max_attempts: u32,
    /// When the message entered the mesh (RFC 3339).
    #[serde(default)]
    pub created_at: Option<String>,
    /// When the status last changed (RFC 3339).
    #[serde(default)]
    pub updated_at: Option<String>,
    /// After this instant (RFC 3339) the message is not processed any more.
    #[serde(default)]
    pub deadline_at: Option<String>,
    /// The error that sent the message to `x-sump` (or to a retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// When the first attempt at the current actor started (RFC 3339): `maxDuration` counts
    /// from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_attempt_at: Option<String>,
    /// A retry is not attempted before this instant (RFC 3339), the policy's backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
}

fn one() -> u32 {
    1
}

impl Status {
    /// A status for a message just entering the mesh.
    pub fn new_pending(now: &str) -> Self {
        Status {
            phase: Phase::Pending,
            reason: None,
            actor: None,
            attempt: 1,
            max_attempts: 1,
            created_at: Some(now.to_owned()),
            updated_at: Some(now.to_owned()),
            deadline_at: None,
            error: None,
            first_attempt_at: None,
            not_before: None,
        }
    }
}

impl Envelope {
    /// A new message with a fresh UUID, entering the mesh at the first actor of `route`.
    pub fn new(route: Route, payload: Value, now: &str) -> Self {
        Envelope {
            id: uuid::Uuid::new_v4().to_string(),
            parent_id: None,
            route,
            headers: Map::new(),
            payload,
            status: Some(Status::new_pending(now)),
        }
    }

    /// The status, created on first use (envelopes from outside may come without one).
    pub fn status_mut(&mut self, now: &str) -> &mut Status {
        self.status.get_or_insert_with(|| Status::new_pending(now))
    }

    /// Serialises the envelope for the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising a `Value`-based struct cannot fail: all map keys are strings.
        serde_json::to_vec(self).expect("envelope serialisation is infallible")
    }
}

/// Current time in RFC 3339 (UTC, millisecond precision), the format of every timestamp in
/// `status`. Formatting is cached per thread for the current millisecond: it is on the hot path
/// of every hop.
pub fn now_rfc3339() -> String {
    use std::cell::RefCell;
    thread_local! {
        static CACHE: RefCell<(i128, String)> = const { RefCell::new((i128::MIN, String::new())) };
    }
    let now = time::OffsetDateTime::now_utc();
    let millis = now.unix_timestamp_nanos() / 1_000_000;
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != millis {
            let truncated = now
                .replace_nanosecond((now.nanosecond() / 1_000_000) * 1_000_000)
                .expect("nanoseconds stay in range");
            cache.1 = truncated
                .format(&time::format_description::well_known::Rfc3339)
                .expect("UTC timestamps always format");
            cache.0 = millis;
        }
        cache.1.clone()
    })
}

/// Parses an RFC 3339 timestamp.
pub fn parse_rfc3339(text: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_canonical_route() {
        let env: Envelope = serde_json::from_value(json!({
            "id": "1", "route": {"prev": ["a"], "curr": "b", "next": ["c"]}, "payload": {}
        }))
        .unwrap();
        assert_eq!(env.route.prev, vec!["a"]);
        assert_eq!(env.route.curr, "b");
        assert_eq!(env.route.next, vec!["c"]);
        assert!(env.status.is_none());
    }

    #[test]
    fn normalises_legacy_route() {
        let env: Envelope = serde_json::from_value(json!({
            "id": "1", "route": {"actors": ["a", "b", "c"], "current": 1}, "payload": {}
        }))
        .unwrap();
        assert_eq!(
            env.route,
            Route {
                prev: vec!["a".into()],
                curr: "b".into(),
                next: vec!["c".into()]
            }
        );
        let out = serde_json::to_value(&env.route).unwrap();
        assert_eq!(out, json!({"prev": ["a"], "curr": "b", "next": ["c"]}));
    }

    #[test]
    fn rejects_legacy_route_out_of_range() {
        let err = serde_json::from_value::<Envelope>(json!({
            "id": "1", "route": {"actors": ["a"], "current": 3}
        }))
        .unwrap_err();
        assert!(err.to_string().contains("outside actors"), "{err}");
    }

    #[test]
    fn rejects_route_without_current_step() {
        let err = serde_json::from_value::<Envelope>(json!({"id": "1", "route": {"next": ["a"]}}))
            .unwrap_err();
        assert!(err.to_string().contains("route needs"), "{err}");
    }

    #[test]
    fn advancing_and_ending_routes() {
        let r = Route::through(&["a", "b"]).unwrap();
        let r2 = r.advanced().unwrap();
        assert_eq!(
            (r2.prev.clone(), r2.curr.clone(), r2.next.clone()),
            (vec!["a".into()], "b".into(), vec![])
        );
        assert!(r2.advanced().is_none());
        let end = r2.ended_at(SINK);
        assert_eq!(end.prev, vec!["a", "b"]);
        assert_eq!(end.curr, SINK);
        assert_eq!(r2.legacy(), (vec!["a".into(), "b".into()], 1));
    }

    #[test]
    fn status_round_trips_with_reason_names() {
        let mut status = Status::new_pending("2026-01-01T00:00:00Z");
        status.phase = Phase::Failed;
        status.reason = Some(Reason::MaxRetriesExhausted);
        let v = serde_json::to_value(&status).unwrap();
        assert_eq!(v["phase"], "failed");
        assert_eq!(v["reason"], "MaxRetriesExhausted");
        let back: Status = serde_json::from_value(v).unwrap();
        assert_eq!(back, status);
    }

    #[test]
    fn timestamps_round_trip() {
        let now = now_rfc3339();
        assert!(parse_rfc3339(&now).is_some());
    }
}
