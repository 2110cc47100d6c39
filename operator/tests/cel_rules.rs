//! The CRDs' CEL rules (`x-kubernetes-validations`), compiled and evaluated by kube-cel as the
//! API server would: every rule compiles, the example actors pass, and each bad actor fails with
//! the rule's message.

use asya_operator::crd;
use serde_json::{json, Value};

fn schema(crd: &Value) -> &Value {
    &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
}

fn actor(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "asya.sh/v1alpha1",
        "kind": "AsyncActor",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": spec,
    })
}

fn errors(schema: &Value, object: &Value) -> Vec<String> {
    match kube_cel::validate(schema, object, None) {
        Ok(()) => vec![],
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|e| e.to_string())
            .collect(),
    }
}

#[test]
fn every_rule_compiles() {
    for crd in crd::crds() {
        let compiled = kube_cel::compile_schema(schema(&crd));
        assert!(
            !compiled.has_errors(),
            "{}: {:?}",
            crd["metadata"]["name"],
            compiled.compilation_errors()
        );
    }
}

#[test]
fn example_actors_pass() {
    let crd = crd::async_actor_crd();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut count = 0;
    for dir in ["text-pipeline/actors", "gpu-embedder/actors"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for doc in serde_yaml_ng::Deserializer::from_str(&text) {
                let value: Value = serde::Deserialize::deserialize(doc).unwrap();
                assert_eq!(
                    errors(schema(&crd), &value),
                    Vec::<String>::new(),
                    "{value}"
                );
                count += 1;
            }
        }
    }
    assert!(count >= 8);
    let ok = actor(
        "fine",
        json!({"component": "oci://r/a:1", "scaling": {"minReplicas": 0, "maxReplicaCount": 4,
            "advanced": {"formula": "queue / 2", "target": "5"}}}),
    );
    assert_eq!(errors(schema(&crd), &ok), Vec::<String>::new());
}

#[test]
fn bad_actors_fail_with_the_rules_message() {
    let crd = crd::async_actor_crd();
    let cases = [
        (
            actor("x-sink", json!({"component": "oci://r/a:1"})),
            "reserved for the host's built-in actors",
        ),
        (
            actor("embed", json!({"runtime": "python", "handler": "m.f"})),
            "runtime: python needs spec.image",
        ),
        (
            actor("a", json!({"component": "./a.wasm"})),
            "must be an oci:// reference",
        ),
        (
            actor(
                "a",
                json!({"component": "oci://r/a:1", "scaling": {"minReplicaCount": 1, "minReplicas": 2}}),
            ),
            "minReplicaCount and its alias minReplicas disagree",
        ),
        (
            actor(
                "a",
                json!({"component": "oci://r/a:1", "scaling": {"minReplicas": 5, "maxReplicas": 2}}),
            ),
            "minimum replica count is larger than the maximum",
        ),
        (
            actor(
                "a",
                json!({"component": "oci://r/a:1", "scaling": {"advanced": {"formula": "queue", "target": ""}}}),
            ),
            "needs scaling.advanced.target",
        ),
    ];
    for (object, expected) in cases {
        let found = errors(schema(&crd), &object);
        assert!(
            found.iter().any(|e| e.contains(expected)),
            "{object}: expected '{expected}', got {found:?}"
        );
    }
}

#[test]
fn flavor_rules() {
    let crd = crd::flavor_crd();
    let flavor = |spec: Value| {
        json!({"apiVersion": "asya.sh/v1alpha1", "kind": "Flavor",
               "metadata": {"name": "cpu-fast"}, "spec": spec})
    };
    assert!(errors(
        schema(&crd),
        &flavor(json!({"scaling": {"minReplicaCount": 0}}))
    )
    .is_empty());
    let found = errors(
        schema(&crd),
        &flavor(json!({"scaling": {"maxReplicaCount": 3, "maxReplicas": 4}})),
    );
    assert!(
        found
            .iter()
            .any(|e| e.contains("maxReplicaCount and its alias maxReplicas disagree")),
        "{found:?}"
    );
}
