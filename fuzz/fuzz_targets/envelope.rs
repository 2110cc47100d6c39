//! Any bytes from the wire as an envelope arriving at an actor: the check before a handler runs
//! (`routing::accept`) never panics; an accepted envelope gives the handler its input in both
//! modes and survives its own serialisation; a refused one goes somewhere with a reason.
#![no_main]

// The host's message logic is pure code with no I/O: compiled in as is.
#[path = "../../host/src/message/mod.rs"]
#[allow(dead_code)]
mod message;

use libfuzzer_sys::fuzz_target;
use message::routing::{self, Mode};

fuzz_target!(|data: &[u8]| {
    let now = time::OffsetDateTime::now_utc();
    match routing::accept("actor", data, now) {
        Ok(env) => {
            assert_eq!(env.route.curr, "actor");
            for mode in [Mode::Payload, Mode::Envelope] {
                let input = routing::handler_input(mode, &env);
                serde_json::from_str::<serde_json::Value>(&input).expect("handler input is JSON");
            }
            let again: message::envelope::Envelope =
                serde_json::from_slice(&env.to_bytes()).expect("an accepted envelope reads back");
            assert_eq!(again.id, env.id);
        }
        Err(dispatch) => {
            assert!(!dispatch.destination.is_empty());
            let status = dispatch.envelope.status.expect("a refusal carries a status");
            assert!(status.reason.is_some() && status.error.is_some());
        }
    }
});
