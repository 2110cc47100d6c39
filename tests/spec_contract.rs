//! Every value the CRD accepts, the host runs (issue: one AsyncActor spec). A property test
//! generates AsyncActor objects (valid values, near misses and noise for every field with a
//! rule), asks the CRD as the API server would (the structural schema by a JSON Schema
//! validator, the CEL rules by kube-cel) and asks the host as `asya-host run` does when it
//! loads a manifest. The two must agree; where the CRD refuses, it says why in the rule's words.

use asya_host::actor::manifest::{ActorSettings, AsyncActor};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::sync::LazyLock;

static CRD: LazyLock<Value> = LazyLock::new(asya_spec::crd::async_actor_crd);

fn crd_schema() -> &'static Value {
    &CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
}

static STRUCTURAL: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    jsonschema::draft4::new(crd_schema()).expect("the CRD schema compiles as JSON Schema")
});

/// What the API server says: `Ok` or its messages.
fn crd_verdict(object: &Value) -> Result<(), Vec<String>> {
    let mut problems: Vec<String> = STRUCTURAL
        .iter_errors(object)
        .map(|e| format!("{}: {}", e.instance_path(), e))
        .collect();
    if let Err(errors) = kube_cel::validate(crd_schema(), object, None) {
        problems.extend(errors.into_vec().into_iter().map(|e| e.to_string()));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// What the host says when it loads the manifest (Asya's forms resolved, as `load_file` does).
fn host_verdict(object: &Value) -> Result<(), String> {
    let actor: AsyncActor = serde_json::from_value(object.clone()).map_err(|e| e.to_string())?;
    actor.validate().map_err(|e| format!("{e:#}"))?;
    let actor = actor.resolved().map_err(|e| e.to_string())?;
    actor.sandbox_limits().map_err(|e| format!("{e:#}"))?;
    actor.sidecar_settings().map_err(|e| format!("{e:#}"))?;
    actor.resiliency().map_err(|e| format!("{e:#}"))?;
    Ok(())
}

fn duration() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => asya_spec::duration::DURATION_GRAMMAR.prop_map(Value::from),
        2 => prop::sample::select(vec![
            "1.5", "99999999999999999999h", "-1s", "1h30m", "0.5s", "1 h", "5", "100000ms", "1s2s3s4s", "soon", "",
        ]).prop_map(Value::from),
        1 => "\\PC{0,10}".prop_map(Value::from),
    ]
}

fn byte_size() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => asya_spec::quantity::BYTES_PATTERN.trim_matches(|c| c == '^' || c == '$').prop_map(Value::from),
        2 => prop::sample::select(vec!["500m", "1Ti", "-1Gi", "1e3", "256Mi", "1.5Gi", "99999Pi", "0", "+1"]).prop_map(Value::from),
        1 => (-10i64..10_000_000_000).prop_map(Value::from),
        1 => "\\PC{0,8}".prop_map(Value::from),
    ]
}

fn resource() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => asya_spec::quantity::RESOURCE_PATTERN.trim_matches(|c| c == '^' || c == '$').prop_map(Value::from),
        2 => prop::sample::select(vec!["500m", "-1", "1Xi", "2", "+1", ".5", "1e3"]).prop_map(Value::from),
        1 => (-3i64..100).prop_map(Value::from),
    ]
}

fn host_entry() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "api.example.com", "*.example.com", "https://api.example.com/", "h:8443", "[::1]:8080",
        ]).prop_map(Value::from),
        2 => prop::sample::select(vec!["ftp://x", "a/b", "u@h", "*", "a.*.com", "h:0", "h:70000", ""]).prop_map(Value::from),
        1 => "[a-z*.:/0-9]{0,12}".prop_map(Value::from),
    ]
}

fn int(range: std::ops::Range<i64>) -> impl Strategy<Value = Value> {
    range.prop_map(Value::from)
}

/// Puts `value` at `key` when present.
fn maybe(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        map.insert(key.into(), value);
    }
}

fn sandbox() -> impl Strategy<Value = Value> {
    (
        prop::option::of(byte_size()),
        prop::option::of(byte_size()),
        prop::option::of(duration()),
        prop::option::of(duration()),
        prop::option::of(int(-2..1100)),
        prop::option::of(int(-2..70_000)),
        prop::option::of(int(-2..5)),
        prop::option::of(prop::collection::vec(host_entry(), 0..3)),
    )
        .prop_map(
            |(memory, out, cpu, idle, instances, in_flight, recycle, hosts)| {
                let mut m = Map::new();
                maybe(&mut m, "memory", memory);
                maybe(&mut m, "maxOutputBytes", out);
                maybe(&mut m, "cpuTimeout", cpu);
                maybe(&mut m, "idleTimeout", idle);
                maybe(&mut m, "maxInstances", instances);
                maybe(&mut m, "maxInFlight", in_flight);
                maybe(&mut m, "recycleAfterCalls", recycle);
                maybe(&mut m, "allowedHosts", hosts.map(Value::from));
                Value::Object(m)
            },
        )
}

fn resiliency() -> impl Strategy<Value = Value> {
    (
        prop::option::of(duration()),
        prop::option::of(int(-1..1005)),
        prop::option::of(prop_oneof![
            (-0.5f64..1.5).prop_map(Value::from),
            Just(json!(0.2))
        ]),
        prop::option::of(duration()),
        prop::option::of(duration()),
        prop::option::of(prop::sample::select(vec!["default", "slow", "missing"])),
        prop::option::of(prop::sample::select(vec!["x-sump", "audit", "Bad_Name"])),
    )
        .prop_map(
            |(timeout, attempts, jitter, initial, max_duration, rule_policy, exhausted)| {
                let mut policy = Map::new();
                maybe(&mut policy, "maxAttempts", attempts);
                maybe(&mut policy, "jitter", jitter);
                maybe(&mut policy, "initialInterval", initial);
                maybe(&mut policy, "maxDuration", max_duration);
                maybe(&mut policy, "onExhausted", exhausted.map(|e| json!([e])));
                let mut m = Map::new();
                maybe(&mut m, "actorTimeout", timeout);
                m.insert(
                    "policies".into(),
                    json!({"default": policy, "slow": {"maxAttempts": 2}}),
                );
                maybe(
                    &mut m,
                    "rules",
                    rule_policy.map(|p| json!([{"errors": ["TimeoutError"], "policy": p}])),
                );
                Value::Object(m)
            },
        )
}

fn scaling() -> impl Strategy<Value = Value> {
    (
        prop::option::of(int(-1..4)),
        prop::option::of(int(-1..4)),
        prop::option::of(int(-1..4)),
        prop::option::of(int(0..3)),
    )
        .prop_map(|(min, max, min_alias, queue)| {
            let mut m = Map::new();
            maybe(&mut m, "minReplicaCount", min);
            maybe(&mut m, "maxReplicaCount", max);
            maybe(&mut m, "minReplicas", min_alias);
            maybe(&mut m, "queueLength", queue);
            Value::Object(m)
        })
}

fn actor() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            6 => Just("classify".to_owned()),
            1 => prop::sample::select(vec!["x-fanin", "x-sink", "Bad_Name", "-a"]).prop_map(str::to_owned),
        ],
        prop::option::of(sandbox()),
        prop::option::of(resiliency()),
        prop::option::of(scaling()),
        prop::option::of(prop::collection::btree_map(
            prop::sample::select(vec!["cpu", "memory", "nvidia.com/gpu"]).prop_map(str::to_owned),
            resource(),
            0..3,
        )),
    )
        .prop_map(|(name, sandbox, resiliency, scaling, limits)| {
            let mut spec = Map::new();
            spec.insert("handler".into(), json!("classifier.process"));
            spec.insert("component".into(), json!("oci://registry.local/classify:1"));
            maybe(&mut spec, "sandbox", sandbox);
            maybe(&mut spec, "resiliency", resiliency);
            maybe(&mut spec, "scaling", scaling);
            maybe(&mut spec, "resources", limits.map(|l| json!({"limits": l})));
            json!({
                "apiVersion": "asya.sh/v1alpha1",
                "kind": "AsyncActor",
                "metadata": {"name": name, "namespace": "nlp"},
                "spec": spec,
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The CRD and the host agree on every generated object: what one accepts the other
    /// accepts, and a refusal names the field in both.
    #[test]
    fn the_crd_accepts_exactly_what_the_host_runs(object in actor()) {
        let crd = crd_verdict(&object);
        let host = host_verdict(&object);
        prop_assert_eq!(
            crd.is_ok(),
            host.is_ok(),
            "CRD: {:?}\nhost: {:?}\nobject: {}",
            crd,
            host,
            object
        );
    }
}

#[test]
fn refusals_word_the_same_rule() {
    let object = json!({
        "apiVersion": "asya.sh/v1alpha1", "kind": "AsyncActor",
        "metadata": {"name": "classify"},
        "spec": {"resiliency": {"actorTimeout": "99999999999999999999h"}, "sandbox": {"memory": "500m"}},
    });
    let crd = crd_verdict(&object).unwrap_err().join("\n");
    let host = host_verdict(&object).unwrap_err();
    assert!(crd.contains(asya_spec::duration::DURATION_RULE), "{crd}");
    assert!(
        host.contains("spec.resiliency.actorTimeout: must be a duration"),
        "{host}"
    );
    let object = json!({
        "apiVersion": "asya.sh/v1alpha1", "kind": "AsyncActor",
        "metadata": {"name": "classify"},
        "spec": {"sandbox": {"memory": "500m"}},
    });
    let crd = crd_verdict(&object).unwrap_err().join("\n");
    let host = host_verdict(&object).unwrap_err();
    assert!(crd.contains(asya_spec::quantity::BYTES_RULE), "{crd}");
    assert!(
        host.contains("spec.sandbox.memory: must be a byte size"),
        "{host}"
    );
}

#[test]
fn the_sdk_schema_is_generated_from_the_spec() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(asya_spec::schema::SDK_SCHEMA_PATH);
    let generated = asya_spec::schema::actor_document_schema_text();
    if std::env::var_os("ASYA_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let kept = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        kept == generated,
        "{} is out of date: run `ASYA_BLESS=1 cargo test --release -p asya-host --test spec_contract`",
        path.display()
    );
}

/// The AsyncActor documents of a file of `tests/fixtures/asya-manifests` (Asya's manifests as
/// its tutorial and blog write them).
fn asya_manifests(file: &str) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/asya-manifests")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            let value: serde_yaml_ng::Value = serde::Deserialize::deserialize(doc).unwrap();
            serde_json::to_value(value).unwrap()
        })
        .filter(|doc| doc["kind"] == "AsyncActor")
        .collect()
}

fn resolved(object: &Value) -> AsyncActor {
    let actor: AsyncActor = serde_json::from_value(object.clone()).unwrap();
    actor.resolved().unwrap()
}

#[test]
fn the_blogs_manifests_are_accepted_as_written() {
    for file in ["blog-my-model.yaml", "blog-model-caller.yaml"] {
        for object in asya_manifests(file) {
            assert_eq!(crd_verdict(&object), Ok(()), "{file}");
            assert_eq!(host_verdict(&object), Ok(()), "{file}");
            let actor = resolved(&object);
            // `image` + `handler` without a component: the native runtime on that image.
            assert_eq!(
                asya_spec::workload::effective_runtime(&actor.spec),
                asya_spec::Runtime::Python,
                "{file}"
            );
            assert_eq!(
                actor.spec.flavors.len(),
                1,
                "{file}: flavor is flavors: [x]"
            );
        }
    }
}

#[test]
fn the_tutorials_manifests_resolve_and_name_their_transport() {
    let mut seen = 0;
    for file in [
        "tutorial-text-processor.yaml",
        "tutorial-flow-routers.yaml",
        "tutorial-english-sentiment.yaml",
    ] {
        for mut object in asya_manifests(file) {
            seen += 1;
            // As written: `transport: sqs`, accepted by both.
            assert_eq!(object["spec"]["transport"], "sqs", "{file}");
            assert_eq!(crd_verdict(&object), Ok(()), "{file}");
            assert_eq!(host_verdict(&object), Ok(()), "{file}");
            // A transport this build does not run: refused by both with the same rule, naming it.
            object["spec"]["transport"] = json!("pubsub");
            let crd = crd_verdict(&object).unwrap_err().join("\n");
            assert!(
                crd.contains(asya_spec::crd_rules::TRANSPORT_RULE.1),
                "{file}: {crd}"
            );
            let host = host_verdict(&object).unwrap_err();
            assert!(
                host.contains("spec.transport: must be nats, rabbitmq or sqs")
                    && host.contains("(got pubsub)"),
                "{file}: {host}"
            );
            // On the default transport (NATS), everything else of the manifest is accepted.
            object["spec"].as_object_mut().unwrap().remove("transport");
            assert_eq!(crd_verdict(&object), Ok(()), "{file}");
            assert_eq!(host_verdict(&object), Ok(()), "{file}");
            let actor = resolved(&object);
            assert_eq!(actor.spec.runtime, Some(asya_spec::Runtime::Python));
            assert!(actor.spec.workload.is_none());
            let workload = &object["spec"]["workload"]["template"]["spec"]["containers"][0];
            assert_eq!(
                actor.spec.image.as_deref(),
                workload["image"].as_str(),
                "{file}"
            );
            let handler = workload["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == "ASYA_HANDLER")
                .unwrap();
            assert_eq!(actor.spec.handler.as_deref(), handler["value"].as_str());
            // The other env (the routers' ASYA_HANDLER_<ACTOR> mappings) is the handler's env.
            assert!(!actor.spec.env.contains_key("ASYA_HANDLER"));
            if file == "tutorial-flow-routers.yaml" {
                assert_eq!(actor.spec.mode, Some(asya_spec::Mode::Envelope));
                assert_eq!(
                    actor.spec.env["ASYA_HANDLER_CLEAN_TEXT"],
                    "text_handlers.clean_text"
                );
                assert_eq!(
                    actor
                        .sandbox_limits()
                        .unwrap()
                        .env
                        .iter()
                        .find(|(k, _)| k == "ASYA_HANDLER_TOKENIZE")
                        .map(|(_, v)| v.as_str()),
                    Some("text_handlers.tokenize")
                );
            }
        }
    }
    assert_eq!(seen, 4);
}

#[test]
fn a_transport_asya_has_and_this_build_does_not_run_is_named() {
    let object = |transport: &str| {
        json!({
            "apiVersion": "asya.sh/v1alpha1", "kind": "AsyncActor",
            "metadata": {"name": "a"},
            "spec": {"transport": transport, "component": "oci://r/c:1"},
        })
    };
    for transport in ["nats", "rabbitmq", "sqs"] {
        assert_eq!(host_verdict(&object(transport)), Ok(()), "{transport}");
        assert_eq!(crd_verdict(&object(transport)), Ok(()), "{transport}");
    }
    let host = host_verdict(&object("pubsub")).unwrap_err();
    assert!(host.contains("(got pubsub)"), "{host}");
    assert!(crd_verdict(&object("pubsub")).is_err());
    // A transport nobody has is refused by the type, listing the known ones.
    let object = json!({
        "apiVersion": "asya.sh/v1alpha1", "kind": "AsyncActor",
        "metadata": {"name": "a"}, "spec": {"transport": "kafka"},
    });
    let host = host_verdict(&object).unwrap_err();
    assert!(host.contains("nats") && host.contains("sqs"), "{host}");
}

#[test]
fn a_cpu_deadline_past_the_call_timeout_is_refused_by_both() {
    // (cpuTimeout, actorTimeout, accepted): the CRD's CEL converts the shared grammar to whole
    // microseconds, the host compares durations; they must agree at the edges.
    let cases = [
        ("90s", "1.5m", true),
        ("1.5m", "90s", true),
        ("100", "1m40s", true),
        ("1m0.001s", "60s", false),
        ("60000ms", "1m", true),
        ("60000.001ms", "1m", false),
        ("2d", "47h", false),
        ("47h", "2d", true),
        ("0.999s", "999ms", true),
        ("1s1s1s", "3", true),
        ("1s1s1s", "2", false),
    ];
    for (cpu, call, accepted) in cases {
        let object = json!({
            "apiVersion": "asya.sh/v1alpha1", "kind": "AsyncActor",
            "metadata": {"name": "a"},
            "spec": {"sandbox": {"cpuTimeout": cpu}, "resiliency": {"actorTimeout": call}},
        });
        let crd = crd_verdict(&object);
        let host = host_verdict(&object);
        assert_eq!(crd.is_ok(), accepted, "CRD on {cpu} vs {call}: {crd:?}");
        assert_eq!(host.is_ok(), accepted, "host on {cpu} vs {call}: {host:?}");
        if !accepted {
            assert!(
                crd.unwrap_err()
                    .join(" ")
                    .contains(asya_spec::crd_rules::TIMEOUTS_RULE.1),
                "{cpu} vs {call}"
            );
            assert!(
                host.unwrap_err().contains("spec.sandbox.cpuTimeout"),
                "{cpu} vs {call}"
            );
        }
    }
}
