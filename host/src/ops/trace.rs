//! W3C trace context (`traceparent`) carried in envelope headers: each hop keeps the trace id
//! and records its own span id, so a message's hops form one trace in any W3C-aware backend.

use serde_json::{Map, Value};

/// The header name, as W3C Trace Context defines it.
pub const TRACEPARENT: &str = "traceparent";

fn random_hex(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes * 2);
    while out.len() < bytes * 2 {
        out.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    out.truncate(bytes * 2);
    out
}

/// Parses `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`; returns (trace id, flags).
pub fn parse(value: &str) -> Option<(&str, &str)> {
    let mut parts = value.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if version != "00"
        || !hex(trace, 32)
        || !hex(parent, 16)
        || !hex(flags, 2)
        || parts.next().is_some()
    {
        return None;
    }
    if trace.bytes().all(|b| b == b'0') {
        return None;
    }
    Some((trace, flags))
}

/// Starts this hop's span: keeps the incoming trace id (or starts a trace) and sets a new span
/// id in `traceparent`. Returns the trace id.
pub fn enter_hop(headers: &mut Map<String, Value>) -> String {
    let (trace_id, flags) = headers
        .get(TRACEPARENT)
        .and_then(Value::as_str)
        .and_then(parse)
        .map(|(t, f)| (t.to_owned(), f.to_owned()))
        .unwrap_or_else(|| (random_hex(16), "01".to_owned()));
    let span_id = uuid::Uuid::new_v4().as_u64_pair().0 | 1; // never all zeros
    let value = format!("00-{trace_id}-{span_id:016x}-{flags}");
    headers.insert(TRACEPARENT.to_owned(), Value::String(value));
    trace_id
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_the_trace_and_replaces_the_span() {
        let mut headers = Map::new();
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.insert(TRACEPARENT.into(), json!(incoming));
        let trace = enter_hop(&mut headers);
        assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
        let out = headers[TRACEPARENT].as_str().unwrap();
        assert!(out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && out.ends_with("-01"));
        assert_ne!(out, incoming);
        assert!(parse(out).is_some());
    }

    #[test]
    fn starts_a_trace_when_missing_or_invalid() {
        for bad in [
            None,
            Some("garbage"),
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        ] {
            let mut headers = Map::new();
            if let Some(b) = bad {
                headers.insert(TRACEPARENT.into(), json!(b));
            }
            let trace = enter_hop(&mut headers);
            assert_eq!(trace.len(), 32);
            assert!(parse(headers[TRACEPARENT].as_str().unwrap()).is_some());
        }
    }
}
