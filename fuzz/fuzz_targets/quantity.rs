//! Any text as a byte size or a resource quantity: never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = asya_spec::quantity::parse_bytes(text);
    let _ = asya_spec::Quantity::Text(text.to_owned()).check_resource("fuzz");
});
