//! Any JSON as the fan-out and fan-in headers of an envelope: reading a fan-in role, expanding
//! a router's fan-out request and merging children never panic, and a fan-out either expands
//! into children plus the parked parent or is refused with a message.
#![no_main]

#[path = "../../host/src/message/mod.rs"]
#[allow(dead_code)]
mod message;

use libfuzzer_sys::fuzz_target;
use message::envelope::{Envelope, Route};
use message::flow;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let now = "2026-12-02T00:00:00Z";
    let base = || {
        let mut env = Envelope::new(
            Route::through(&[flow::FANIN, "after"]).expect("a route"),
            serde_json::json!({"items": [1, 2]}),
            now,
        );
        env.route.prev = vec!["router".into()];
        env
    };
    // As a child's and as a parent's header at the aggregator.
    for name in [flow::CHILD_HEADER, flow::PARENT_HEADER] {
        let mut env = base();
        env.headers.insert(name.into(), header.clone());
        if let Ok(role) = flow::fanin_role(&env) {
            if let flow::FanInRole::Child { index, count, .. } = role {
                assert!(index < count);
            }
            // Merging whatever arrived never panics either.
            let mut parent = base();
            parent.headers.insert(flow::PARENT_HEADER.into(), header.clone());
            let _ = flow::complete(parent, vec![env.clone()], now);
            let _ = flow::timed_out(env, 0, 1, std::time::Duration::from_secs(1), now);
        }
    }
    // As a router's fan-out request.
    let mut env = base();
    env.headers.insert(flow::FANOUT_HEADER.into(), header);
    if let Some(expanded) = flow::expand_fanout(&mut env, now) {
        match expanded {
            Ok(dispatches) => assert!(!dispatches.is_empty()),
            Err(message) => assert!(!message.is_empty()),
        }
    }
});
