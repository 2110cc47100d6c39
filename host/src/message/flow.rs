//! What compiled flows need from the host, as pure functions: fan-out into child messages, the
//! fan-in merge, and `try/except` frames that catch a failure before it reaches `x-sump`.
//!
//! Flow routers are ordinary envelope-mode actors; they talk to the host through headers:
//! - `x-asya-fanout` (set by a router): `{"target": [keys...], "items": [{"actor", "payload"}]}`.
//!   The host sends one child per item to its actor and parks the parent at the built-in
//!   aggregator [`FANIN`]; when every child has ended, the results are written, in item order,
//!   into the parent's payload at `target` and the parent goes on to its next step.
//! - `x-asya-catch` (set by a router): the active try frames, innermost last,
//!   `[{"flow", "router", "keep", "errors": [type names, or "*"]}]`. A message whose actor failed
//!   for good goes to the innermost frame that names its error type (or one of its MRO names),
//!   with the last `keep` route steps (the flow's caller) kept after it.

use crate::message::envelope::{Envelope, ErrorInfo, Phase, Reason, Route, Status, SINK, SUMP};
use crate::message::status::{fail_status, pending_again, to_current_step, Dispatch};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The built-in aggregator actor that merges fan-out results.
pub use asya_spec::names::FANIN;
/// Header a router sets to fan out.
pub const FANOUT_HEADER: &str = "x-asya-fanout";
/// Header holding the active try frames.
pub const CATCH_HEADER: &str = "x-asya-catch";
/// Header holding the flows' own state (loop counters, variables); children do not inherit it.
pub const FLOW_HEADER: &str = "x-asya-flow";
/// Header on a fan-out child: `{"parent", "index", "count"}`.
pub const CHILD_HEADER: &str = "x-asya-fanin";
/// Header on a parent parked at the aggregator: `{"count", "target"}`.
pub const PARENT_HEADER: &str = "x-asya-fanin-parent";

/// Fan-outs larger than this are refused (each child is a message; the parent holds them all).
pub const MAX_FANOUT: usize = 10_000;

#[derive(Deserialize)]
struct FanOutSpec {
    #[serde(default)]
    target: Vec<Value>,
    #[serde(default)]
    items: Vec<FanOutItem>,
}

#[derive(Deserialize)]
struct FanOutItem {
    actor: String,
    #[serde(default)]
    payload: Value,
}

/// Which message of a fan-out an envelope is, from its headers.
#[derive(Debug, Clone, PartialEq)]
pub enum FanInRole {
    /// The parked parent: how many children it waits for.
    Parent {
        /// Number of children.
        count: usize,
    },
    /// Child `index` of fan-out `parent`.
    Child {
        /// The fan-out's key: the parent's id and hop (one envelope may fan out many times).
        parent: String,
        /// Position of this child's result in the merged list.
        index: usize,
        /// Number of children.
        count: usize,
    },
}

/// The role of an envelope arriving at [`FANIN`], or why it cannot be merged.
pub fn fanin_role(env: &Envelope) -> Result<FanInRole, String> {
    if let Some(spec) = env.headers.get(PARENT_HEADER) {
        let count = spec["count"]
            .as_u64()
            .ok_or("x-asya-fanin-parent.count is not a number")? as usize;
        return Ok(FanInRole::Parent { count });
    }
    if let Some(spec) = env.headers.get(CHILD_HEADER) {
        let parent = spec["key"]
            .as_str()
            .ok_or("x-asya-fanin.key is not a string")?
            .to_owned();
        let index = spec["index"]
            .as_u64()
            .ok_or("x-asya-fanin.index is not a number")? as usize;
        let count = spec["count"]
            .as_u64()
            .ok_or("x-asya-fanin.count is not a number")? as usize;
        if index >= count {
            return Err(format!("fan-in index {index} out of range (count {count})"));
        }
        return Ok(FanInRole::Child {
            parent,
            index,
            count,
        });
    }
    Err("the envelope is neither a fan-out parent nor a child".into())
}

/// The key of the fan-out a parked parent waits for: its id and hop, since one envelope may fan
/// out several times along its route.
pub fn fanout_key(parent: &Envelope) -> String {
    format!("{}_{}", parent.id, parent.route.prev.len())
}

/// Whether `env` is a fan-out child (its end goes to the aggregator, not to an end actor).
pub fn is_child(env: &Envelope) -> bool {
    env.headers.contains_key(CHILD_HEADER)
}

/// Expands a router's fan-out request. `env` is the router's output with its route already
/// advanced (`route.curr` is the step after the fan-in). Returns `None` when no fan-out was asked.
pub fn expand_fanout(env: &mut Envelope, now: &str) -> Option<Result<Vec<Dispatch>, String>> {
    let spec = env.headers.remove(FANOUT_HEADER)?;
    Some(expand(env, spec, now))
}

fn expand(env: &mut Envelope, spec: Value, now: &str) -> Result<Vec<Dispatch>, String> {
    let spec: FanOutSpec =
        serde_json::from_value(spec).map_err(|e| format!("malformed {FANOUT_HEADER}: {e}"))?;
    if spec.target.is_empty() {
        return Err(format!("{FANOUT_HEADER}.target is empty"));
    }
    if spec.items.len() > MAX_FANOUT {
        return Err(format!(
            "fan-out of {} items exceeds the limit of {MAX_FANOUT}",
            spec.items.len()
        ));
    }
    if let Some(item) = spec.items.iter().find(|i| i.actor.is_empty()) {
        return Err(format!("fan-out item without an actor: {}", item.payload));
    }
    let count = spec.items.len();
    if count == 0 {
        // Nothing to wait for: the merged result is the empty list, right away.
        set_path(&mut env.payload, &spec.target, Value::Array(Vec::new()))?;
        return Ok(vec![to_current_step(env.clone(), now)]);
    }
    let mut child_headers = env.headers.clone();
    for private in [FLOW_HEADER, CATCH_HEADER, PARENT_HEADER, CHILD_HEADER] {
        child_headers.remove(private);
    }
    let deadline = env.status.as_ref().and_then(|s| s.deadline_at.clone());
    let key = fanout_key(env);
    let mut out = Vec::with_capacity(count + 1);
    for (index, item) in spec.items.into_iter().enumerate() {
        let mut headers = child_headers.clone();
        headers.insert(
            CHILD_HEADER.into(),
            json!({"parent": env.id, "key": key, "index": index, "count": count}),
        );
        let child = Envelope {
            // Deterministic ids: a redelivered router output republishes the same children.
            id: format!("{key}.{index}"),
            parent_id: Some(env.id.clone()),
            route: Route {
                // The router that fanned out, so hops and traces show where a child came from.
                prev: env.route.prev.last().cloned().into_iter().collect(),
                curr: item.actor.clone(),
                next: Vec::new(),
            },
            headers,
            payload: item.payload,
            status: Some(Status {
                actor: Some(item.actor.clone()),
                deadline_at: deadline.clone(),
                ..Status::new_pending(now)
            }),
        };
        out.push(Dispatch {
            destination: item.actor,
            envelope: child,
        });
    }
    env.headers.insert(
        PARENT_HEADER.into(),
        json!({"count": count, "target": spec.target}),
    );
    let status = env.status_mut(now);
    status.phase = Phase::Pending;
    status.updated_at = Some(now.to_owned());
    out.push(Dispatch {
        destination: FANIN.to_owned(),
        envelope: env.clone(),
    });
    Ok(out)
}

fn set_path(payload: &mut Value, path: &[Value], value: Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty fan-in target")?;
    let mut node = payload;
    for key in parents {
        node = step(node, key, true)?;
    }
    match (node, last) {
        (Value::Object(map), Value::String(k)) => {
            map.insert(k.clone(), value);
            Ok(())
        }
        (Value::Array(items), Value::Number(n)) => {
            let i = index_of(items.len(), n)?;
            items[i] = value;
            Ok(())
        }
        (node, key) => Err(format!(
            "cannot set {key} on {}",
            if node.is_object() {
                "a dict"
            } else {
                "a non-dict"
            }
        )),
    }
}

fn index_of(len: usize, n: &serde_json::Number) -> Result<usize, String> {
    let i = n.as_i64().ok_or("list index is not an integer")?;
    let i = if i < 0 { len as i64 + i } else { i };
    if i < 0 || i as usize >= len {
        return Err(format!("list index {n} out of range"));
    }
    Ok(i as usize)
}

fn step<'a>(node: &'a mut Value, key: &Value, create: bool) -> Result<&'a mut Value, String> {
    match (node, key) {
        (Value::Object(map), Value::String(k)) => {
            if create && !map.contains_key(k) {
                map.insert(k.clone(), Value::Object(Map::new()));
            }
            map.get_mut(k).ok_or_else(|| format!("no key {k:?}"))
        }
        (Value::Array(items), Value::Number(n)) => {
            let i = index_of(items.len(), n)?;
            Ok(&mut items[i])
        }
        (_, key) => Err(format!("cannot index with {key}")),
    }
}

/// Merges a complete fan-out: the parked `parent` and its `children` (any order, one per index).
/// Returns where the parent goes: its next step with the results in place, or (when a child
/// failed) the first failure's try frame or `x-sump`.
pub fn complete(mut parent: Envelope, children: Vec<Envelope>, now: &str) -> Dispatch {
    let spec = parent.headers.remove(PARENT_HEADER).unwrap_or(Value::Null);
    let target: Vec<Value> = spec["target"].as_array().cloned().unwrap_or_default();
    let mut ordered: Vec<(usize, Envelope)> = children
        .into_iter()
        .filter_map(|c| match fanin_role(&c) {
            Ok(FanInRole::Child { index, .. }) => Some((index, c)),
            _ => None,
        })
        .collect();
    ordered.sort_by_key(|(i, _)| *i);
    let failed = ordered.iter().find(|(_, c)| {
        c.status
            .as_ref()
            .is_some_and(|s| s.phase == Phase::Failed || s.error.is_some())
    });
    if let Some((index, child)) = failed {
        let status = child
            .status
            .clone()
            .unwrap_or_else(|| Status::new_pending(now));
        let mut error = status
            .error
            .unwrap_or_else(|| ErrorInfo::host("HandlerError", "a fan-out child failed"));
        error.message = format!(
            "fan-out item {index} ({}): {}",
            status.actor.unwrap_or_default(),
            error.message
        );
        let reason = status.reason.unwrap_or(Reason::HandlerError);
        // The parent fails at the aggregator (its parked next step never ran).
        parent.route.curr = FANIN.to_owned();
        return fail(parent, FANIN, reason, error, now);
    }
    let results: Vec<Value> = ordered.into_iter().map(|(_, c)| c.payload).collect();
    if let Err(message) = set_path(&mut parent.payload, &target, Value::Array(results)) {
        let error = ErrorInfo::host("FanInError", message);
        return fail(parent, FANIN, Reason::HandlerError, error, now);
    }
    to_current_step(parent, now)
}

/// Ends a parked `parent` whose fan-out did not complete within `timeout`: `arrived` of
/// `count` children had reached the aggregator. It fails at the aggregator with `FanInTimeout`
/// (to a try frame that catches it, else `x-sump`).
pub fn timed_out(
    mut parent: Envelope,
    arrived: usize,
    count: usize,
    timeout: std::time::Duration,
    now: &str,
) -> Dispatch {
    parent.headers.remove(PARENT_HEADER);
    parent.route.curr = FANIN.to_owned();
    let error = ErrorInfo::host(
        "FanInTimeout",
        format!(
            "{arrived} of {count} fan-out results arrived within {}",
            humantime::format_duration(timeout)
        ),
    );
    fail(parent, FANIN, Reason::FanInTimeout, error, now)
}

/// Sends `env` to the error end after `actor` failed for good: to the innermost try frame that
/// catches the error, else `x-sump`.
pub fn fail(
    mut env: Envelope,
    actor: &str,
    reason: Reason,
    error: ErrorInfo,
    now: &str,
) -> Dispatch {
    fail_status(env.status_mut(now), actor, reason, error, now);
    if let Some(caught) = catch(&mut env, now) {
        return caught;
    }
    env.route = env.route.ended_at(SUMP);
    Dispatch {
        destination: if is_child(&env) { FANIN } else { SUMP }.to_owned(),
        envelope: env,
    }
}

/// If a try frame catches `env`'s error (`status.error`), reroutes the envelope to that frame's
/// except router and returns the dispatch; frames inside the matching one are dropped.
pub fn catch(env: &mut Envelope, now: &str) -> Option<Dispatch> {
    let error = env.status.as_ref()?.error.clone()?;
    let frames = env.headers.get(CATCH_HEADER)?.as_array()?.clone();
    let failed = env.route.curr.clone();
    let hit = frames.iter().rposition(|frame| {
        // A flow's router handles errors inside its own try blocks itself; the frames it set
        // for the previous call must not catch a failure of its own code.
        if frame["resume"].as_str() == Some(failed.as_str()) {
            return false;
        }
        frame["errors"].as_array().is_some_and(|names| {
            names.iter().filter_map(Value::as_str).any(|name| {
                // Host failures (Timeout, MemoryLimit, ...) have no Python MRO: `except
                // Exception` catches them like any handler error.
                name == "*" || name == "Exception" || error.is_a(name)
            })
        })
    })?;
    let router = frames[hit]["router"].as_str()?.to_owned();
    let keep = frames[hit]["keep"].as_u64().unwrap_or(0) as usize;
    let remaining: Vec<Value> = frames[..hit].to_vec();
    if remaining.is_empty() {
        env.headers.remove(CATCH_HEADER);
    } else {
        env.headers
            .insert(CATCH_HEADER.into(), Value::Array(remaining));
    }
    let next = &env.route.next;
    let caller = next[next.len().saturating_sub(keep)..].to_vec();
    let mut prev = env.route.prev.clone();
    prev.push(env.route.curr.clone());
    env.route = Route {
        prev,
        curr: router.clone(),
        next: caller,
    };
    // The except router sees a pending message that still carries the error it handles.
    pending_again(env.status_mut(now), now);
    Some(Dispatch {
        destination: router,
        envelope: env.clone(),
    })
}

/// Redirects the ends of fan-out children: a child that finished (sink) or failed (sump) goes to
/// the aggregator instead, carrying its result or error.
pub fn redirect_child_end(dispatch: &mut Dispatch) {
    if (dispatch.destination == SINK || dispatch.destination == SUMP)
        && is_child(&dispatch.envelope)
    {
        dispatch.destination = FANIN.to_owned();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router_output(spec: Value) -> Envelope {
        let mut env = Envelope::new(
            Route::through(&["fanout-router", "after", "caller"]).unwrap(),
            json!({"items": [1, 2, 3]}),
            "now",
        );
        env.headers.insert(FANOUT_HEADER.into(), spec);
        env.headers.insert(FLOW_HEADER.into(), json!({"f": {}}));
        env.headers.insert("traceparent".into(), json!("00-abc"));
        env.route = env.route.advanced().unwrap();
        env
    }

    #[test]
    fn fan_out_makes_one_child_per_item_and_parks_the_parent() {
        let mut env = router_output(json!({"target": ["results"], "items": [
            {"actor": "double", "payload": 1}, {"actor": "double", "payload": 2}]}));
        let out = expand_fanout(&mut env, "now").unwrap().unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].destination, "double");
        assert_eq!(out[0].envelope.payload, json!(1));
        assert_eq!(out[1].envelope.id, format!("{}_1.1", env.id));
        assert!(out[0].envelope.headers.contains_key("traceparent"));
        assert!(!out[0].envelope.headers.contains_key(FLOW_HEADER));
        assert_eq!(out[2].destination, FANIN);
        assert_eq!(out[2].envelope.route.curr, "after");
        assert_eq!(
            fanin_role(&out[2].envelope),
            Ok(FanInRole::Parent { count: 2 })
        );
    }

    #[test]
    fn fan_in_merges_results_in_item_order() {
        let mut env = router_output(json!({"target": ["out", "r"], "items": [
            {"actor": "a", "payload": 1}, {"actor": "b", "payload": 2}]}));
        let mut out = expand_fanout(&mut env, "now").unwrap().unwrap();
        let parent = out.pop().unwrap().envelope;
        let mut children: Vec<Envelope> = out.into_iter().map(|d| d.envelope).collect();
        children[0].payload = json!("one");
        children[1].payload = json!("two");
        children.reverse();
        let done = complete(parent, children, "now");
        assert_eq!(done.destination, "after");
        assert_eq!(done.envelope.payload["out"]["r"], json!(["one", "two"]));
        assert!(!done.envelope.headers.contains_key(PARENT_HEADER));
        assert_eq!(done.envelope.route.next, vec!["caller".to_owned()]);
    }

    #[test]
    fn an_empty_fan_out_continues_at_once() {
        let mut env = router_output(json!({"target": ["results"], "items": []}));
        let out = expand_fanout(&mut env, "now").unwrap().unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].destination, "after");
        assert_eq!(out[0].envelope.payload["results"], json!([]));
    }

    #[test]
    fn a_failed_child_fails_the_parent_into_its_try_frame() {
        let mut env = router_output(json!({"target": ["results"], "items": [
            {"actor": "a", "payload": 1}]}));
        env.headers.insert(
            CATCH_HEADER.into(),
            json!([{"flow": "f", "router": "except-router", "keep": 1, "errors": ["ValueError"]}]),
        );
        let mut out = expand_fanout(&mut env, "now").unwrap().unwrap();
        let parent = out.pop().unwrap().envelope;
        let mut child = out.pop().unwrap();
        let d = fail(
            child.envelope.clone(),
            "a",
            Reason::HandlerError,
            ErrorInfo {
                kind: "ValueError".into(),
                message: "bad".into(),
                mro: vec!["ValueError".into(), "Exception".into()],
                traceback: None,
            },
            "now",
        );
        assert_eq!(
            d.destination, FANIN,
            "a failed child reports to the aggregator"
        );
        child.envelope = d.envelope;
        let done = complete(parent, vec![child.envelope], "now");
        assert_eq!(done.destination, "except-router");
        assert_eq!(done.envelope.route.next, vec!["caller".to_owned()]);
        let error = done.envelope.status.unwrap().error.unwrap();
        assert!(error.message.contains("item 0"), "{}", error.message);
        assert!(!done.envelope.headers.contains_key(CATCH_HEADER));
    }

    #[test]
    fn catch_matches_type_or_mro_innermost_first_and_keeps_the_caller() {
        let mut env = Envelope::new(
            Route::through(&["risky", "router-after", "caller-a", "caller-b"]).unwrap(),
            json!({}),
            "now",
        );
        env.headers.insert(
            CATCH_HEADER.into(),
            json!([
                {"flow": "outer", "router": "outer-except", "keep": 1, "errors": ["*"]},
                {"flow": "f", "router": "f-except", "keep": 2, "errors": ["LookupError"]},
            ]),
        );
        let key_error = ErrorInfo {
            kind: "KeyError".into(),
            message: "k".into(),
            mro: vec!["KeyError".into(), "LookupError".into(), "Exception".into()],
            traceback: None,
        };
        let d = fail(
            env.clone(),
            "risky",
            Reason::MaxRetriesExhausted,
            key_error,
            "now",
        );
        assert_eq!(d.destination, "f-except");
        assert_eq!(d.envelope.route.next, vec!["caller-a", "caller-b"]);
        assert_eq!(d.envelope.route.prev, vec!["risky"]);
        assert_eq!(
            d.envelope.headers[CATCH_HEADER].as_array().unwrap().len(),
            1
        );
        let other = ErrorInfo::host("Timeout", "slow");
        let d = fail(env.clone(), "risky", Reason::Timeout, other, "now");
        assert_eq!(d.destination, "outer-except");
        assert_eq!(d.envelope.route.next, vec!["caller-b"]);
        env.headers.remove(CATCH_HEADER);
        let d = fail(
            env,
            "risky",
            Reason::Timeout,
            ErrorInfo::host("Timeout", "x"),
            "now",
        );
        assert_eq!(d.destination, SUMP);
    }

    #[test]
    fn a_router_failing_is_not_caught_by_the_frames_it_resumes_from() {
        let mut env = Envelope::new(
            Route::through(&["router-f-line-6-seq", "caller"]).unwrap(),
            json!({}),
            "now",
        );
        env.headers.insert(
            CATCH_HEADER.into(),
            json!([
                {"flow": "outer", "router": "outer-except", "keep": 0, "errors": ["*"],
                 "resume": "router-outer-line-9-seq"},
                {"flow": "f", "router": "f-except", "keep": 1, "errors": ["*"],
                 "resume": "router-f-line-6-seq"},
            ]),
        );
        let err = ErrorInfo::host("ZeroDivisionError", "division by zero");
        let d = fail(env, "router-f-line-6-seq", Reason::HandlerError, err, "now");
        assert_eq!(
            d.destination, "outer-except",
            "the caller's frame still applies"
        );
    }

    #[test]
    fn malformed_fan_out_requests_are_errors() {
        let mut env = router_output(json!({"target": [], "items": []}));
        assert!(expand_fanout(&mut env, "now").unwrap().is_err());
        let mut env = router_output(json!({"target": ["r"], "items": [{"actor": ""}]}));
        assert!(expand_fanout(&mut env, "now").unwrap().is_err());
        let mut env = router_output(json!("nope"));
        assert!(expand_fanout(&mut env, "now").unwrap().is_err());
    }
}
