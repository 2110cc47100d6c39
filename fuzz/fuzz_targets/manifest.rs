//! Any bytes as an AsyncActor manifest (YAML, which includes JSON): reading and checking it
//! never panics, and a document that passes the check gives values every consumer can use.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(document) = serde_yaml_ng::from_str::<asya_spec::ActorDocument>(text) else {
        return;
    };
    if document.check().is_ok() {
        // Everything the check accepted converts without error.
        if let Some(sandbox) = &document.spec.sandbox {
            for q in [&sandbox.memory, &sandbox.max_output_bytes].into_iter().flatten() {
                asya_spec::bytes_of(q).expect("checked byte size converts");
            }
            for d in [&sandbox.cpu_timeout, &sandbox.idle_timeout].into_iter().flatten() {
                asya_spec::parse_duration(d).expect("checked duration parses");
            }
        }
        // And the document survives a round trip through its own serialisation.
        let json = serde_json::to_string(&document).expect("serialises");
        let again: asya_spec::ActorDocument = serde_json::from_str(&json).expect("reads back");
        assert!(again.check().is_ok());
    }
});
