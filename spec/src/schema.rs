//! The JSON Schema (draft 2020-12) of an `AsyncActor` manifest file, generated from the types of
//! [`crate::actor`] for the Python SDK (`sdk-python/src/asya/schema/asyncactor.schema.json`,
//! kept in sync by a test). Nodes keep their `x-asya-message`, the rule in the words the host
//! and the CRD use, which the SDK reports instead of the validator's generic message; CEL rules
//! are left to the host, which checks them on start.

use crate::actor::{ActorDocument, API_VERSION};
use crate::names::{
    ACTOR_NAME_MAX_LENGTH, ACTOR_NAME_PATTERN, ACTOR_NAME_RULE, RESERVED_NAMES, RESERVED_RULE,
};
use serde_json::{json, Value};

/// Where the SDK keeps the generated schema, relative to the repository root.
pub const SDK_SCHEMA_PATH: &str = "sdk-python/src/asya/schema/asyncactor.schema.json";

/// The schema as a JSON value.
pub fn actor_document_schema() -> Value {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<ActorDocument>();
    let mut schema = serde_json::to_value(schema).expect("schema serialises");
    schema["title"] = json!("AsyncActor");
    schema["description"] = json!(
        "An asya AsyncActor manifest (generated from the asya-spec crate: do not edit by hand)."
    );
    let props = &mut schema["properties"];
    props["apiVersion"] =
        json!({"const": API_VERSION, "x-asya-message": format!("must be {API_VERSION:?}")});
    props["kind"] = json!({"const": "AsyncActor", "x-asya-message": "must be \"AsyncActor\""});
    let metadata = json!({
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {
                "type": "string",
                "allOf": [
                    {"pattern": ACTOR_NAME_PATTERN, "maxLength": ACTOR_NAME_MAX_LENGTH,
                     "x-asya-message": ACTOR_NAME_RULE},
                    {"not": {"enum": RESERVED_NAMES}, "x-asya-message": RESERVED_RULE},
                ],
            },
            "namespace": {"type": "string"},
        },
    });
    props["metadata"] = metadata;
    if let Some(defs) = schema.get_mut("$defs").and_then(Value::as_object_mut) {
        defs.remove("DocumentMetadata");
    }
    schema
}

/// The schema as the pretty-printed text the SDK ships (with a final newline).
pub fn actor_document_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&actor_document_schema()).expect("schema text");
    text.push('\n');
    text
}
