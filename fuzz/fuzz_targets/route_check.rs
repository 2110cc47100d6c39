//! Any handler result (text, as a handler returns it) routed after a call on a valid envelope:
//! the route checks of envelope-mode results (no changing `prev`, `curr` or `id`), fan-out
//! expansion and the end-of-route rules never panic, and every dispatch names a destination.
#![no_main]

#[path = "../../host/src/message/mod.rs"]
#[allow(dead_code)]
mod message;

use libfuzzer_sys::fuzz_target;
use message::envelope::{Envelope, Route};
use message::outcome::CallOutcome;
use message::routing::{self, Mode};
use message::status::FailureAction;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut env = Envelope::new(
        Route::through(&["before", "actor", "after"]).expect("a route"),
        serde_json::json!({"x": 1}),
        "2026-12-02T00:00:00Z",
    );
    env.route = env.route.advanced().expect("advances");
    for mode in [Mode::Payload, Mode::Envelope] {
        let dispatches = routing::route_outcome(
            "actor",
            mode,
            env.clone(),
            CallOutcome::Returned(text.to_owned()),
            |_, _| FailureAction::GiveUp {
                reason: message::envelope::Reason::HandlerError,
                route_to: vec![message::envelope::SUMP.to_owned()],
            },
            "2026-12-02T00:00:01Z",
        );
        assert!(!dispatches.is_empty());
        for dispatch in dispatches {
            assert!(!dispatch.destination.is_empty());
            // What goes on the wire reads back.
            let bytes = dispatch.envelope.to_bytes();
            serde_json::from_slice::<Envelope>(&bytes).expect("a dispatch reads back");
        }
    }
});
