//! The sidecar's decisions, as pure functions: what to do with received bytes, what to hand the
//! handler, and where the envelope goes after the handler returned, failed or was stopped.
//!
//! Nothing here does I/O, so every rule of the design reference is unit-tested without servers.

use crate::message::envelope::{
    is_end_actor, parse_rfc3339, Envelope, ErrorInfo, Phase, Reason, Route, Status, SINK, SUMP,
};
use crate::message::flow;
pub use crate::message::outcome::{CallOutcome, Failure};
use crate::message::status::{
    fail_status, finish, pending_again, retry_status, succeed_status, to_current_step, Dispatch,
    FailureAction,
};
use base64::Engine as _;
use serde_json::{json, Map, Value};

/// How a handler sees a message (chosen when the component is built): the shared contract's
/// `spec.mode`.
pub use asya_spec::Mode;

/// Checks received bytes before any handler runs. `Err` carries the envelope for `x-sump`
/// (ParseError with the original bytes kept, RouteMismatch, DeadlineExpired).
// The refusal is as large as the envelope it carries; it is built once per refused message, so
// boxing it would only add an allocation to the rare path.
#[allow(clippy::result_large_err)]
pub fn accept(actor: &str, bytes: &[u8], now: time::OffsetDateTime) -> Result<Envelope, Dispatch> {
    let now_text = crate::message::envelope::now_rfc3339();
    let mut env: Envelope = match serde_json::from_slice(bytes) {
        Ok(env) => env,
        Err(err) => {
            return Err(parse_error_dispatch(
                actor,
                bytes,
                &err.to_string(),
                &now_text,
            ))
        }
    };
    if env.route.curr != actor {
        let message = format!(
            "envelope is addressed to '{}' but was received by '{actor}'",
            env.route.curr
        );
        let status = env.status_mut(&now_text);
        fail_status(
            status,
            actor,
            Reason::RouteMismatch,
            ErrorInfo::host("RouteMismatch", message),
            &now_text,
        );
        return Err(Dispatch {
            destination: SUMP.to_owned(),
            envelope: env,
        });
    }
    if let Some(deadline) = deadline_of(&env) {
        if deadline <= now && !is_end_actor(actor) {
            let message = format!(
                "deadline {} passed before '{actor}' could run",
                format_time(deadline)
            );
            env.route = env.route.ended_at(SUMP);
            let status = env.status_mut(&now_text);
            fail_status(
                status,
                actor,
                Reason::DeadlineExpired,
                ErrorInfo::host("DeadlineExpired", message),
                &now_text,
            );
            return Err(Dispatch {
                destination: SUMP.to_owned(),
                envelope: env,
            });
        }
    }
    let status = env.status_mut(&now_text);
    status.phase = Phase::Processing;
    status.actor = Some(actor.to_owned());
    status.updated_at = Some(now_text);
    Ok(env)
}

/// `status.deadline_at` as an instant, if set and valid.
pub fn deadline_of(env: &Envelope) -> Option<time::OffsetDateTime> {
    env.status
        .as_ref()
        .and_then(|s| s.deadline_at.as_deref())
        .and_then(parse_rfc3339)
}

/// The JSON text handed to the handler: the payload, or (envelope mode) the whole envelope with
/// the route shown in both forms, so handlers written for either form work.
pub fn handler_input(mode: Mode, env: &Envelope) -> String {
    match mode {
        Mode::Payload => serde_json::to_string(&env.payload).expect("JSON values serialise"),
        Mode::Envelope => {
            let mut value = serde_json::to_value(env).expect("envelopes serialise");
            let (actors, current) = env.route.legacy();
            if let Some(route) = value.get_mut("route").and_then(Value::as_object_mut) {
                route.insert("actors".into(), json!(actors));
                route.insert("current".into(), json!(current));
            }
            value.to_string()
        }
    }
}

/// Decides where the envelope goes after the handler ran.
///
/// `on_failure` is consulted only for failures; it is the retry policy (the resiliency module) or,
/// without one, [`give_up`].
pub fn route_outcome(
    actor: &str,
    mode: Mode,
    env: Envelope,
    outcome: CallOutcome,
    on_failure: impl FnOnce(&Failure, &Envelope) -> FailureAction,
    now: &str,
) -> Vec<Dispatch> {
    let mut out = route_outcome_inner(actor, mode, env, outcome, on_failure, now);
    for dispatch in &mut out {
        flow::redirect_child_end(dispatch);
    }
    out
}

fn route_outcome_inner(
    actor: &str,
    mode: Mode,
    mut env: Envelope,
    outcome: CallOutcome,
    on_failure: impl FnOnce(&Failure, &Envelope) -> FailureAction,
    now: &str,
) -> Vec<Dispatch> {
    let result = match outcome {
        CallOutcome::ReturnedNone => Ok(None),
        CallOutcome::Returned(text) => match mode {
            Mode::Payload => parse_payload(&text).map(Some),
            Mode::Envelope => apply_envelope_result(&env, &text).map(Some),
        },
        CallOutcome::Failed(failure) => Err(failure),
    };
    match result {
        Ok(None) => {
            if flow::is_child(&env) {
                // A fan-out child that returned None contributes None to the merged list.
                env.payload = Value::Null;
            }
            vec![finish(env, actor, now)]
        }
        Ok(Some(Updated {
            payload,
            route,
            headers,
        })) => {
            env.payload = payload;
            if let Some(route) = route {
                env.route = route;
            }
            if let Some(headers) = headers {
                env.headers = headers;
            }
            match env.route.advanced() {
                Some(route) => {
                    let given_route = std::mem::replace(&mut env.route, route);
                    if let Some(expanded) = flow::expand_fanout(&mut env, now) {
                        return match expanded {
                            Ok(dispatches) => dispatches,
                            Err(message) => {
                                env.route = given_route;
                                let failure = Failure::host(Reason::HandlerError, message)
                                    .with_type("FanOutError");
                                let action = FailureAction::GiveUp {
                                    reason: Reason::HandlerError,
                                    route_to: vec![SUMP.to_owned()],
                                };
                                route_failure(actor, env, failure, action, now)
                            }
                        };
                    }
                    let next_actor = env.route.curr.clone();
                    if is_end_actor(&next_actor) {
                        // A handler may end the route explicitly by naming an end actor.
                        env.route.next.clear();
                        if next_actor == SINK {
                            succeed_status(env.status_mut(now), actor, now);
                        }
                        return vec![Dispatch {
                            destination: next_actor,
                            envelope: env,
                        }];
                    }
                    vec![to_current_step(env, now)]
                }
                None => vec![finish(env, actor, now)],
            }
        }
        Err(failure) => {
            let action = on_failure(&failure, &env);
            route_failure(actor, env, failure, action, now)
        }
    }
}

/// The policy-free failure decision: end at `x-sump` with the failure's own reason.
pub fn give_up(failure: &Failure, _env: &Envelope) -> FailureAction {
    FailureAction::GiveUp {
        reason: failure.reason,
        route_to: vec![SUMP.to_owned()],
    }
}

fn route_failure(
    actor: &str,
    mut env: Envelope,
    failure: Failure,
    action: FailureAction,
    now: &str,
) -> Vec<Dispatch> {
    match action {
        FailureAction::Retry {
            attempt,
            max_attempts,
        } => {
            retry_status(
                env.status_mut(now),
                actor,
                failure.reason,
                failure.error,
                attempt,
                max_attempts,
                now,
            );
            vec![Dispatch {
                destination: actor.to_owned(),
                envelope: env,
            }]
        }
        FailureAction::GiveUp { reason, route_to } => {
            if route_to.len() == 1 && route_to[0] == SUMP {
                // A flow's try frame may catch the failure before it reaches the error end.
                fail_status(
                    env.status_mut(now),
                    actor,
                    reason,
                    failure.error.clone(),
                    now,
                );
                if let Some(caught) = flow::catch(&mut env, now) {
                    return vec![caught];
                }
            }
            let mut route_to = route_to.into_iter();
            let first = route_to.next().unwrap_or_else(|| SUMP.to_owned());
            let mut prev = env.route.prev.clone();
            prev.push(env.route.curr.clone());
            env.route = Route {
                prev,
                curr: first.clone(),
                next: route_to.collect(),
            };
            let status = env.status_mut(now);
            fail_status(status, actor, reason, failure.error, now);
            if first != SUMP {
                // onExhausted handlers see a normal, pending message that still carries the error.
                pending_again(status, now);
            }
            vec![Dispatch {
                destination: first,
                envelope: env,
            }]
        }
    }
}

/// The parts of the envelope a handler's result may change.
struct Updated {
    payload: Value,
    route: Option<Route>,
    headers: Option<Map<String, Value>>,
}

fn parse_payload(text: &str) -> Result<Updated, Failure> {
    match serde_json::from_str::<Value>(text) {
        Ok(payload @ Value::Object(_)) => Ok(Updated {
            payload,
            route: None,
            headers: None,
        }),
        Ok(other) => Err(Failure::host(
            Reason::HandlerError,
            format!(
                "handler returned {}, expected a dict or None",
                json_kind(&other)
            ),
        )
        .with_type("TypeError")),
        Err(err) => Err(Failure::host(
            Reason::HandlerError,
            format!("handler returned text that is not JSON: {err}"),
        )
        .with_type("TypeError")),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a str",
        Value::Array(_) => "a list",
        Value::Object(_) => "a dict",
    }
}

fn violation(message: String) -> Failure {
    Failure::host(Reason::RouteViolation, message)
}

/// Validates an envelope-mode result against the envelope the handler was given and extracts the
/// allowed changes: payload, headers and the future steps of the route.
fn apply_envelope_result(given: &Envelope, text: &str) -> Result<Updated, Failure> {
    let value: Value = serde_json::from_str(text).map_err(|err| {
        Failure::host(
            Reason::HandlerError,
            format!("handler returned text that is not JSON: {err}"),
        )
        .with_type("TypeError")
    })?;
    let Value::Object(mut out) = value else {
        return Err(Failure::host(
            Reason::HandlerError,
            format!(
                "envelope handler returned {}, expected a dict or None",
                json_kind(&value)
            ),
        )
        .with_type("TypeError"));
    };
    if let Some(id) = out.get("id") {
        if id.as_str() != Some(given.id.as_str()) {
            return Err(violation(format!(
                "envelope handler changed id from '{}' to {id}",
                given.id
            )));
        }
    }
    let route = match out.remove("route") {
        None => None,
        Some(Value::Object(route)) => Some(future_route(given, &route)?),
        Some(other) => {
            return Err(violation(format!(
                "route must be an object, got {}",
                json_kind(&other)
            )))
        }
    };
    let headers = match out.remove("headers") {
        None | Some(Value::Null) => None,
        Some(Value::Object(h)) => Some(h),
        Some(other) => {
            return Err(Failure::host(
                Reason::HandlerError,
                format!("headers must be a dict, got {}", json_kind(&other)),
            )
            .with_type("TypeError"))
        }
    };
    let payload = out
        .remove("payload")
        .unwrap_or_else(|| given.payload.clone());
    Ok(Updated {
        payload,
        route,
        headers,
    })
}

fn string_list(value: &Value, field: &str) -> Result<Vec<String>, Failure> {
    let items = value
        .as_array()
        .ok_or_else(|| violation(format!("route.{field} must be a list of actor names")))?;
    items
        .iter()
        .map(|item| {
            item.as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| {
                    violation(format!(
                        "route.{field} must hold non-empty strings, got {item}"
                    ))
                })
        })
        .collect()
}

/// The route the handler asked for. Only the future (`next`) may differ from `given.route`.
fn future_route(given: &Envelope, route: &Map<String, Value>) -> Result<Route, Failure> {
    let (given_actors, given_current) = given.route.legacy();
    let legacy_actors = route
        .get("actors")
        .map(|v| string_list(v, "actors"))
        .transpose()?;
    let legacy_current = route.get("current").map(|v| {
        v.as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| violation("route.current must be a non-negative integer".into()))
    });
    let legacy_current = legacy_current.transpose()?;
    let legacy_changed = legacy_actors.as_ref().is_some_and(|a| *a != given_actors)
        || legacy_current.is_some_and(|c| c != given_current);

    if legacy_changed {
        let actors = legacy_actors.unwrap_or(given_actors);
        let current = legacy_current.unwrap_or(given_current);
        // The tutorial's convention: the handler advances `current` past its own step.
        let own = if current == given_current + 1 {
            given_current
        } else if current == given_current {
            current
        } else {
            return Err(violation(format!(
                "route.current moved from {given_current} to {current}; a handler may only \
                 advance it past its own step"
            )));
        };
        if actors.len() <= own
            || actors[..own] != given.route.prev[..]
            || actors[own] != given.route.curr
        {
            return Err(violation(
                "route.actors changed steps that already ran or the current step; only future \
                 steps may change"
                    .into(),
            ));
        }
        return Ok(Route {
            prev: given.route.prev.clone(),
            curr: given.route.curr.clone(),
            next: actors[own + 1..].to_vec(),
        });
    }

    if let Some(prev) = route.get("prev") {
        if string_list(prev, "prev")? != given.route.prev {
            return Err(violation(format!(
                "route.prev may not change (was {:?})",
                given.route.prev
            )));
        }
    }
    if let Some(curr) = route.get("curr") {
        if curr.as_str() != Some(given.route.curr.as_str()) {
            return Err(violation(format!(
                "route.curr may not change (was '{}', got {curr})",
                given.route.curr
            )));
        }
    }
    let next = match route.get("next") {
        Some(next) => string_list(next, "next")?,
        None => given.route.next.clone(),
    };
    Ok(Route {
        prev: given.route.prev.clone(),
        curr: given.route.curr.clone(),
        next,
    })
}

/// What an output too large for the transport becomes: the input message (`input`, which fit),
/// failed at `actor` with `OutputTooLarge` and sent to the innermost try frame that catches it,
/// else the error end (a fan-out child reports to its aggregator). Retrying would produce the
/// same size, so there is one attempt. When the input itself is within a few KiB of `limit`
/// its payload is left out (and the error says so), so the failure always fits.
pub fn output_too_large(
    actor: &str,
    input: &[u8],
    size: usize,
    limit: usize,
    now: time::OffsetDateTime,
) -> Dispatch {
    let now_text = crate::message::envelope::now_rfc3339();
    let mut message = format!(
        "the output of {size} bytes is over the transport's limit of {limit} bytes (NATS max_payload); nothing was published"
    );
    let mut env = match accept(actor, input, now) {
        Ok(env) => env,
        Err(mut refused) => {
            flow::redirect_child_end(&mut refused);
            return refused;
        }
    };
    if input.len() + FAILURE_ROOM > limit {
        env.payload = Value::Null;
        message.push_str("; the input payload is left out, as it is as large as the limit");
    }
    flow::fail(
        env,
        actor,
        Reason::OutputTooLarge,
        ErrorInfo::host("OutputTooLarge", message),
        &now_text,
    )
}

/// Room a failed envelope needs beyond its input (status, error message).
const FAILURE_ROOM: usize = 4096;

/// The `x-sump` envelope for bytes that are not an envelope. The original bytes are kept in the
/// payload: as text under `raw` when they are UTF-8, otherwise base64 under `raw_base64`.
pub fn parse_error_dispatch(actor: &str, bytes: &[u8], message: &str, now: &str) -> Dispatch {
    let payload = match std::str::from_utf8(bytes) {
        Ok(text) => json!({ "raw": text }),
        Err(_) => json!({ "raw_base64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
    };
    let mut status = Status::new_pending(now);
    fail_status(
        &mut status,
        actor,
        Reason::ParseError,
        ErrorInfo::host("ParseError", format!("not a valid envelope: {message}")),
        now,
    );
    Dispatch {
        destination: SUMP.to_owned(),
        envelope: Envelope {
            id: uuid::Uuid::new_v4().to_string(),
            parent_id: None,
            route: Route {
                prev: vec![actor.to_owned()],
                curr: SUMP.to_owned(),
                next: Vec::new(),
            },
            headers: Map::new(),
            payload,
            status: Some(status),
        },
    }
}

/// The deduplication id of `env` sent to `destination`: one per hop of a message, so a
/// redelivered input republishes (or stores) under the same id, which the transport drops as a
/// repeat. A retry (same hop, next attempt) gets its own id, or the stream would drop it as a
/// repeat of the input. The sender and an end actor reading the same envelope compute the same id.
pub fn output_dedup_id(env: &Envelope, destination: &str) -> String {
    let hop = env.route.prev.len();
    match env.status.as_ref().map_or(1, |s| s.attempt) {
        attempt if attempt > 1 => {
            asya_spec::names::dedup_id(&env.id, format!("{hop}.{attempt}"), destination)
        }
        _ => asya_spec::names::dedup_id(&env.id, hop, destination),
    }
}

/// An instant as RFC 3339 text, as envelopes carry times.
pub fn format_time(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("timestamps format")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::envelope::now_rfc3339;

    const NOW: &str = "2026-11-25T10:00:00Z";

    fn env_at(prev: &[&str], curr: &str, next: &[&str]) -> Envelope {
        let mut env = Envelope::new(
            Route {
                prev: prev.iter().map(|s| s.to_string()).collect(),
                curr: curr.into(),
                next: next.iter().map(|s| s.to_string()).collect(),
            },
            json!({"text": "hi"}),
            NOW,
        );
        env.id = "id-1".into();
        env
    }

    fn now() -> time::OffsetDateTime {
        parse_rfc3339(NOW).unwrap()
    }

    fn one(d: Vec<Dispatch>) -> Dispatch {
        assert_eq!(d.len(), 1);
        d.into_iter().next().unwrap()
    }

    #[test]
    fn a_hop_has_one_dedup_id_and_a_retry_its_own() {
        let mut env = env_at(&["a", "b"], "c", &[]);
        let first = output_dedup_id(&env, SINK);
        // A redelivery (same envelope) gets the same id; another destination another.
        assert_eq!(first, output_dedup_id(&env.clone(), SINK));
        assert_eq!(first, "id-1:2:x-sink");
        assert_ne!(first, output_dedup_id(&env, "d"));
        env.status_mut(NOW).attempt = 2;
        assert_eq!(output_dedup_id(&env, SINK), "id-1:2.2:x-sink");
    }

    #[test]
    fn value_goes_to_next_actor_with_route_shifted() {
        let env = env_at(&[], "a", &["b", "c"]);
        let d = one(route_outcome(
            "a",
            Mode::Payload,
            env,
            CallOutcome::Returned(r#"{"text":"HI"}"#.into()),
            give_up,
            NOW,
        ));
        assert_eq!(d.destination, "b");
        assert_eq!(d.envelope.route.prev, vec!["a"]);
        assert_eq!(d.envelope.route.curr, "b");
        assert_eq!(d.envelope.route.next, vec!["c"]);
        assert_eq!(d.envelope.payload, json!({"text": "HI"}));
        assert_eq!(d.envelope.status.unwrap().phase, Phase::Pending);
    }

    #[test]
    fn exhausted_route_goes_to_sink_succeeded() {
        let env = env_at(&["a"], "b", &[]);
        let d = one(route_outcome(
            "b",
            Mode::Payload,
            env,
            CallOutcome::Returned("{}".into()),
            give_up,
            NOW,
        ));
        assert_eq!(d.destination, SINK);
        let status = d.envelope.status.unwrap();
        assert_eq!(status.phase, Phase::Succeeded);
        assert_eq!(status.reason, Some(Reason::Completed));
        assert_eq!(d.envelope.route.prev, vec!["a", "b"]);
    }

    #[test]
    fn none_goes_to_sink_even_with_steps_left() {
        let env = env_at(&[], "a", &["b"]);
        let d = one(route_outcome(
            "a",
            Mode::Payload,
            env,
            CallOutcome::ReturnedNone,
            give_up,
            NOW,
        ));
        assert_eq!(d.destination, SINK);
        assert_eq!(d.envelope.payload, json!({"text": "hi"}));
        assert_eq!(d.envelope.status.unwrap().phase, Phase::Succeeded);
    }

    #[test]
    fn error_goes_to_sump_with_details() {
        let env = env_at(&[], "a", &["b"]);
        let failure = Failure {
            reason: Reason::HandlerError,
            error: ErrorInfo {
                kind: "ValueError".into(),
                message: "bad".into(),
                mro: vec!["ValueError".into(), "Exception".into()],
                traceback: Some("Traceback ...".into()),
            },
        };
        let d = one(route_outcome(
            "a",
            Mode::Payload,
            env,
            CallOutcome::Failed(failure.clone()),
            give_up,
            NOW,
        ));
        assert_eq!(d.destination, SUMP);
        let status = d.envelope.status.unwrap();
        assert_eq!(status.phase, Phase::Failed);
        assert_eq!(status.reason, Some(Reason::HandlerError));
        assert_eq!(status.error, Some(failure.error));
        assert_eq!(status.actor.as_deref(), Some("a"));
        assert_eq!(d.envelope.route.curr, SUMP);
    }

    #[test]
    fn retry_goes_back_to_same_actor() {
        let env = env_at(&[], "a", &["b"]);
        let d = one(route_outcome(
            "a",
            Mode::Payload,
            env,
            CallOutcome::Failed(Failure::host(Reason::Timeout, "slow")),
            |_, _| FailureAction::Retry {
                attempt: 2,
                max_attempts: 3,
            },
            NOW,
        ));
        assert_eq!(d.destination, "a");
        assert_eq!(d.envelope.route.curr, "a");
        let s = d.envelope.status.unwrap();
        assert_eq!(
            (s.phase, s.attempt, s.max_attempts),
            (Phase::Retrying, 2, 3)
        );
    }

    #[test]
    fn non_dict_payload_result_is_a_type_error() {
        let env = env_at(&[], "a", &[]);
        let d = one(route_outcome(
            "a",
            Mode::Payload,
            env,
            CallOutcome::Returned("[1,2]".into()),
            give_up,
            NOW,
        ));
        assert_eq!(d.destination, SUMP);
        let err = d.envelope.status.unwrap().error.unwrap();
        assert_eq!(err.kind, "TypeError");
        assert!(err.message.contains("a list"), "{}", err.message);
    }

    fn envelope_result(given: &Envelope, edit: impl FnOnce(&mut Value)) -> Vec<Dispatch> {
        let mut value: Value = serde_json::from_str(&handler_input(Mode::Envelope, given)).unwrap();
        edit(&mut value);
        route_outcome(
            &given.route.curr.clone(),
            Mode::Envelope,
            given.clone(),
            CallOutcome::Returned(value.to_string()),
            give_up,
            NOW,
        )
    }

    #[test]
    fn envelope_mode_may_insert_future_steps() {
        let env = env_at(&["a"], "judge", &["post"]);
        let d = one(envelope_result(&env, |v| {
            v["route"]["next"] = json!(["refine", "judge", "post"]);
            v["payload"]["score"] = json!(0.2);
            v["headers"]["x-note"] = json!("low");
        }));
        assert_eq!(d.destination, "refine");
        assert_eq!(d.envelope.route.prev, vec!["a", "judge"]);
        assert_eq!(d.envelope.route.next, vec!["judge", "post"]);
        assert_eq!(d.envelope.payload["score"], json!(0.2));
        assert_eq!(d.envelope.headers["x-note"], json!("low"));
    }

    #[test]
    fn envelope_mode_legacy_form_with_handler_advancing_current() {
        let env = env_at(&["a"], "judge", &["post"]);
        let d = one(envelope_result(&env, |v| {
            // The tutorial's judge: insert a step after itself, then advance `current`.
            let route = &mut v["route"];
            let current = route["current"].as_u64().unwrap() as usize;
            route["actors"]
                .as_array_mut()
                .unwrap()
                .insert(current + 1, json!("refine"));
            route["current"] = json!(current + 1);
        }));
        assert_eq!(d.destination, "refine");
        assert_eq!(d.envelope.route.prev, vec!["a", "judge"]);
        assert_eq!(d.envelope.route.next, vec!["post"]);
    }

    #[test]
    fn envelope_mode_may_clear_future_steps_to_finish() {
        let env = env_at(&[], "judge", &["post"]);
        let d = one(envelope_result(&env, |v| v["route"]["next"] = json!([])));
        assert_eq!(d.destination, SINK);
    }

    #[test]
    fn envelope_mode_rewriting_the_past_is_a_route_violation() {
        let env = env_at(&["a"], "judge", &["post"]);
        for edit in [
            (|v: &mut Value| v["route"]["prev"] = json!(["z"])) as fn(&mut Value),
            |v| v["route"]["curr"] = json!("other"),
            |v| v["id"] = json!("forged"),
            |v| v["route"]["actors"] = json!(["z", "judge", "post"]),
            |v| v["route"]["current"] = json!(5),
        ] {
            let d = one(envelope_result(&env, edit));
            assert_eq!(d.destination, SUMP);
            let status = d.envelope.status.unwrap();
            assert_eq!(
                status.reason,
                Some(Reason::RouteViolation),
                "{:?}",
                status.error
            );
        }
    }

    #[test]
    fn envelope_input_shows_both_route_forms() {
        let env = env_at(&["a"], "b", &["c"]);
        let v: Value = serde_json::from_str(&handler_input(Mode::Envelope, &env)).unwrap();
        assert_eq!(v["route"]["actors"], json!(["a", "b", "c"]));
        assert_eq!(v["route"]["current"], json!(1));
        assert_eq!(v["route"]["curr"], json!("b"));
        let p: Value = serde_json::from_str(&handler_input(Mode::Payload, &env)).unwrap();
        assert_eq!(p, json!({"text": "hi"}));
    }

    #[test]
    fn malformed_bytes_go_to_sump_with_original_kept() {
        let d = accept("a", b"{not json", now()).unwrap_err();
        assert_eq!(d.destination, SUMP);
        assert_eq!(d.envelope.payload, json!({"raw": "{not json"}));
        let status = d.envelope.status.unwrap();
        assert_eq!(status.reason, Some(Reason::ParseError));
        assert!(status
            .error
            .unwrap()
            .message
            .contains("not a valid envelope"));

        let d = accept("a", &[0xff, 0xfe, 0x00], now()).unwrap_err();
        assert_eq!(d.envelope.payload, json!({"raw_base64": "//4A"}));
    }

    #[test]
    fn envelope_for_another_actor_is_a_route_mismatch() {
        let env = env_at(&[], "b", &[]);
        let d = accept("a", &env.to_bytes(), now()).unwrap_err();
        assert_eq!(d.destination, SUMP);
        assert_eq!(
            d.envelope.status.unwrap().reason,
            Some(Reason::RouteMismatch)
        );
        assert_eq!(d.envelope.payload, json!({"text": "hi"}));
    }

    #[test]
    fn expired_deadline_goes_to_sump_before_the_call() {
        let mut env = env_at(&[], "a", &["b"]);
        env.status.as_mut().unwrap().deadline_at = Some("2026-11-25T09:59:59Z".into());
        let d = accept("a", &env.to_bytes(), now()).unwrap_err();
        assert_eq!(
            d.envelope.status.unwrap().reason,
            Some(Reason::DeadlineExpired)
        );

        // End actors never re-route an expired message.
        let mut env = env_at(&["a"], SINK, &[]);
        env.status.as_mut().unwrap().deadline_at = Some("2026-11-25T09:59:59Z".into());
        assert!(accept(SINK, &env.to_bytes(), now()).is_ok());
    }

    #[test]
    fn accepted_envelope_is_processing_here() {
        let env = env_at(&[], "a", &[]);
        let got = accept("a", &env.to_bytes(), parse_rfc3339(&now_rfc3339()).unwrap()).unwrap();
        let status = got.status.unwrap();
        assert_eq!(status.phase, Phase::Processing);
        assert_eq!(status.actor.as_deref(), Some("a"));
    }

    #[test]
    fn give_up_to_on_exhausted_actors() {
        let env = env_at(&[], "a", &["b"]);
        let d = one(route_outcome(
            "a",
            Mode::Payload,
            env,
            CallOutcome::Failed(Failure::host(Reason::Timeout, "slow")),
            |_, _| FailureAction::GiveUp {
                reason: Reason::MaxRetriesExhausted,
                route_to: vec!["fallback".into(), "notify".into()],
            },
            NOW,
        ));
        assert_eq!(d.destination, "fallback");
        assert_eq!(d.envelope.route.next, vec!["notify"]);
        let status = d.envelope.status.unwrap();
        assert_eq!(status.reason, Some(Reason::MaxRetriesExhausted));
        assert_eq!(status.error.unwrap().kind, "Timeout");
    }
}
