//! The custom resources: `AsyncActor` (namespaced; short names `asya`/`asyas`) and `Flavor`
//! (cluster-scoped preset), group `asya.sh`, version `v1alpha1`.
//!
//! The types and the CRDs live in the shared contract crate (`asya-spec`, feature `crd`), which
//! the host and the SDK's JSON Schema are generated from too; this module re-exports them under
//! the operator's names. `charts/asya/crds/` is a copy of [`crds_yaml`]'s output that a test
//! keeps in sync.

pub use asya_spec::actor::*;
pub use asya_spec::crd::{async_actor_crd, crds, crds_yaml, flavor_crd};
pub use asya_spec::duration::DURATION_PATTERN;
pub use asya_spec::names::{ACTOR_NAME_PATTERN, RESERVED_NAMES};
pub use asya_spec::quantity::Quantity;

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[test]
    fn accepts_both_replica_spellings() {
        let a: AsyncActorSpec =
            serde_yaml_ng::from_str("scaling: {minReplicaCount: 0, maxReplicaCount: 5}").unwrap();
        let b: AsyncActorSpec =
            serde_yaml_ng::from_str("scaling: {minReplicas: 0, maxReplicas: 5}").unwrap();
        let (a, b) = (a.scaling.unwrap(), b.scaling.unwrap());
        assert_eq!((a.min(), a.max()), (Some(0), Some(5)));
        assert_eq!((b.min(), b.max()), (Some(0), Some(5)));
    }

    #[test]
    fn crd_has_names_columns_and_rules() {
        let crd = async_actor_crd();
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["asya", "asyas"]));
        let columns: Vec<&str> = crd["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            columns,
            ["Phase", "Runtime", "Ready", "Desired", "Transport", "Age"]
        );
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        assert_eq!(
            schema["properties"]["spec"]["properties"]["runtime"]["enum"],
            json!(["wasm", "python"])
        );
        assert_eq!(
            schema["properties"]["metadata"]["properties"]["name"]["pattern"],
            ACTOR_NAME_PATTERN
        );
        let advanced =
            &schema["properties"]["spec"]["properties"]["scaling"]["properties"]["advanced"];
        assert_eq!(advanced["required"], json!(["formula", "target"]));
        assert!(advanced["x-kubernetes-validations"][0]["message"]
            .as_str()
            .unwrap()
            .contains("needs scaling.advanced.target"));
        assert!(crd["spec"]["versions"][0]["subresources"]["status"].is_object());
        let flavor = flavor_crd();
        assert_eq!(flavor["spec"]["scope"], "Cluster");
        let memory = &schema["properties"]["spec"]["properties"]["sandbox"]["properties"]["memory"];
        assert_eq!(memory["x-kubernetes-int-or-string"], true);
        assert_eq!(
            memory["anyOf"],
            json!([{"type": "integer"}, {"type": "string"}])
        );
    }

    #[test]
    fn accepts_the_seed_manifests() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = vec![root.join("tests/fixtures/actors/echo.yaml")];
        for dir in [
            "examples/text-pipeline/actors",
            "examples/gpu-embedder/actors",
        ] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                files.push(entry.unwrap().path());
            }
        }
        let mut count = 0;
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for doc in serde_yaml_ng::Deserializer::from_str(&text) {
                let value = serde_yaml_ng::Value::deserialize(doc).unwrap();
                let actor: AsyncActor = serde_yaml_ng::from_value(value)
                    .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                assert!(!actor.spec.handler.as_deref().unwrap_or("").is_empty());
                count += 1;
            }
        }
        assert!(count >= 9, "read {count} actors");
    }
}
