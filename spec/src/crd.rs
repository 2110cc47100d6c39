//! The two CustomResourceDefinitions (feature `crd`), generated from the types of
//! [`crate::actor`]: kube's derive gives the structural schema, and this module adds what the
//! derive cannot express. Every field rule declared with an `x-asya-message` (durations, byte
//! sizes, hosts, ranges) becomes one CEL rule carrying that message, so `kubectl apply` names
//! the field and the rule in the words the host and the SDK use.

use crate::actor::{
    AsyncActor, AsyncActorPool, AsyncActorPoolSpec, AsyncActorSpec, Flavor, FlavorSpec,
};
use crate::crd_rules::{self, Rule};
use crate::names::ACTOR_NAME_PATTERN;
use kube::CustomResourceExt;
use serde_json::{json, Map, Value};

const VERSION_SCHEMA: &str = "/spec/versions/0/schema/openAPIV3Schema";

fn rule((rule, message): Rule) -> Value {
    json!({"rule": rule, "message": message})
}

fn pointer_mut<'a>(value: &'a mut Value, path: &str) -> &'a mut Value {
    value
        .pointer_mut(path)
        .unwrap_or_else(|| panic!("generated CRD has no {path}"))
}

fn add_rules(schema: &mut Value, rules: Vec<Value>) {
    let obj = schema.as_object_mut().expect("schema object");
    let list = obj
        .entry("x-kubernetes-validations")
        .or_insert_with(|| json!([]));
    list.as_array_mut().expect("validations list").extend(rules);
}

fn add_scaling_rules(spec_schema: &mut Value) {
    let scaling = pointer_mut(spec_schema, "/properties/scaling");
    add_rules(
        scaling,
        [
            crd_rules::SCALING_MIN_ALIAS,
            crd_rules::SCALING_MAX_ALIAS,
            crd_rules::SCALING_MIN_LE_MAX,
        ]
        .into_iter()
        .map(|(r, m)| json!({"rule": r, "message": format!("scaling: {m}")}))
        .collect(),
    );
    let advanced = pointer_mut(spec_schema, "/properties/scaling/properties/advanced");
    add_rules(advanced, vec![rule(crd_rules::FORMULA_TARGET_RULE)]);
}

fn add_resiliency_rules(spec_schema: &mut Value) {
    let resiliency = pointer_mut(spec_schema, "/properties/resiliency");
    let (r, m) = crd_rules::RULE_POLICY_RULE;
    add_rules(
        resiliency,
        vec![json!({"rule": r, "message": format!("resiliency.rules: each {m}")})],
    );
}

fn add_transport_rule(spec_schema: &mut Value) {
    add_rules(
        pointer_mut(spec_schema, "/properties/transport"),
        vec![rule(crd_rules::TRANSPORT_RULE)],
    );
}

/// A CEL string literal of `text` (raw, so regular expressions keep their backslashes).
fn cel_raw(text: &str) -> String {
    assert!(!text.contains('\''), "pattern with a quote: {text}");
    format!("r'{text}'")
}

/// A field rule found in the types' own schema: where it is and what it says.
struct FieldRule {
    /// Path of schema keys from the spec's schema to the field's node (`properties`, name,
    /// `items`, `additionalProperties`, ...).
    path: Vec<String>,
    /// The node in the types' schema (with its pattern, range and `x-asya-message`).
    node: Map<String, Value>,
}

/// Collects every node of `schema` (the types' schema, subschemas inlined) that carries an
/// `x-asya-message`. Nullable wrappers (`anyOf`/`oneOf` with a null branch) do not add to the
/// path: kube's structural rewrite flattens them the same way.
fn collect_rules(schema: &Value, path: &mut Vec<String>, out: &mut Vec<FieldRule>) {
    let Some(node) = schema.as_object() else {
        return;
    };
    // A message on a rule the CRD states in CEL (a pattern or a range); an enum keeps the API
    // server's own "supported values" message.
    let worded = [
        "pattern",
        "minimum",
        "maximum",
        "x-kubernetes-int-or-string",
    ]
    .iter()
    .any(|k| node.contains_key(*k));
    if node.contains_key("x-asya-message") && worded {
        out.push(FieldRule {
            path: path.clone(),
            node: node.clone(),
        });
        return;
    }
    if let Some(Value::Object(properties)) = node.get("properties") {
        for (name, child) in properties {
            path.extend(["properties".to_owned(), name.clone()]);
            collect_rules(child, path, out);
            path.truncate(path.len() - 2);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = node.get(key) {
            path.push(key.to_owned());
            collect_rules(child, path, out);
            path.pop();
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(branches)) = node.get(key) {
            for branch in branches {
                collect_rules(branch, path, out);
            }
        }
    }
}

/// The types' own schema of `T` (kube's CRD generation drops keys the Kubernetes schema type
/// has no field for, `x-asya-message` among them, so the rules are read from here).
fn field_rules<T: schemars::JsonSchema>() -> Vec<FieldRule> {
    let schema = schemars::generate::SchemaSettings::openapi3()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<T>();
    let schema = serde_json::to_value(schema).expect("schema serialises");
    let mut out = Vec::new();
    collect_rules(&schema, &mut Vec::new(), &mut out);
    out
}

fn number_rule(node: &Map<String, Value>) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(min) = node.get("minimum") {
        parts.push(format!("self >= {min}"));
    }
    if let Some(max) = node.get("maximum") {
        parts.push(format!("self <= {max}"));
    }
    (!parts.is_empty()).then(|| parts.join(" && "))
}

/// The CEL rule stating what `rule.node`'s pattern and range state, with its message.
fn cel_of(rule: &FieldRule) -> Value {
    let node = &rule.node;
    let message = node["x-asya-message"].as_str().unwrap_or_default();
    let text = if node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        // An int or a string: its decimal text must match the string's pattern (each pattern
        // admits whole numbers in the integer branch's range), which needs no `type()`.
        let pattern = node
            .get("anyOf")
            .and_then(Value::as_array)
            .and_then(|branches| branches.iter().find_map(|b| b["pattern"].as_str()))
            .expect("an int-or-string rule has a string pattern");
        format!("string(self).matches({})", cel_raw(pattern))
    } else if let Some(pattern) = node.get("pattern").and_then(Value::as_str) {
        format!("self.matches({})", cel_raw(pattern))
    } else {
        number_rule(node).expect("a message words a pattern or a range")
    };
    json!({"rule": text, "message": message})
}

/// States each field rule of `T` at the same place of `spec_schema` (the CRD's spec) as one
/// CEL rule with the rule's message, in place of the pattern or range the API server would
/// word in its own terms.
fn field_rules_to_cel<T: schemars::JsonSchema>(spec_schema: &mut Value) {
    for rule in field_rules::<T>() {
        let pointer: String = rule.path.iter().map(|k| format!("/{k}")).collect();
        let node = pointer_mut(spec_schema, &pointer)
            .as_object_mut()
            .expect("schema node");
        for key in [
            "pattern",
            "minimum",
            "maximum",
            "exclusiveMinimum",
            "exclusiveMaximum",
        ] {
            node.remove(key);
        }
        if node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            node.insert(
                "anyOf".into(),
                json!([{"type": "integer"}, {"type": "string"}]),
            );
        }
        let list = node
            .entry("x-kubernetes-validations")
            .or_insert_with(|| json!([]));
        list.as_array_mut()
            .expect("validations list")
            .push(cel_of(&rule));
    }
}

/// Gives int-or-string fields the conventional `anyOf: [{type: integer}, {type: string}]`
/// (kube's structural rewrite leaves the alternatives without their types).
fn int_or_string_types(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
                map.insert(
                    "anyOf".into(),
                    json!([{"type": "integer"}, {"type": "string"}]),
                );
            }
            map.values_mut().for_each(int_or_string_types);
        }
        Value::Array(items) => items.iter_mut().for_each(int_or_string_types),
        _ => {}
    }
}

/// The bound the API server's CEL cost estimator is given for a string, list or map that a
/// rule reaches (it refuses a CRD whose rules could cost more than its budget on unbounded
/// input: "estimated rule cost exceeds budget").
pub const CEL_BOUND: u64 = 64;

fn has_rules(node: &Value) -> bool {
    node.get("x-kubernetes-validations").is_some()
}

fn subtree_has_rules(node: &Value) -> bool {
    if !node.is_object() {
        return false;
    }
    has_rules(node)
        || node
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(|p| p.values().any(subtree_has_rules))
        || node.get("items").is_some_and(subtree_has_rules)
        || node
            .get("additionalProperties")
            .is_some_and(subtree_has_rules)
}

/// Bounds what the CRD's rules range over: `maxLength` on strings a `matches()` rule reads,
/// `maxItems` on lists and `maxProperties` on maps whose elements carry rules (a real
/// kube-apiserver refused the CRDs without them; `tests/cluster` installs them there).
fn bound_for_cel_cost(node: &mut Value) {
    let Some(map) = node.as_object_mut() else {
        return;
    };
    let is_string = map.get("type").and_then(Value::as_str) == Some("string")
        || map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let matches = map
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .is_some_and(|rules| {
            rules.iter().any(|r| {
                r["rule"]
                    .as_str()
                    .is_some_and(|rule| rule.contains("matches("))
            })
        });
    if is_string && matches && !map.contains_key("maxLength") {
        map.insert("maxLength".into(), json!(CEL_BOUND));
    }
    if let Some(props) = map.get_mut("properties").and_then(Value::as_object_mut) {
        props.values_mut().for_each(bound_for_cel_cost);
    }
    if let Some(items) = map.get_mut("items") {
        bound_for_cel_cost(items);
    }
    let items_ruled = map.get("items").is_some_and(subtree_has_rules);
    if items_ruled && !map.contains_key("maxItems") {
        map.insert("maxItems".into(), json!(CEL_BOUND));
    }
    if let Some(values) = map.get_mut("additionalProperties") {
        bound_for_cel_cost(values);
    }
    let values_ruled = map
        .get("additionalProperties")
        .is_some_and(subtree_has_rules);
    if values_ruled && !map.contains_key("maxProperties") {
        map.insert("maxProperties".into(), json!(CEL_BOUND));
    }
}

/// The `AsyncActor` CRD, as applied to a cluster.
pub fn async_actor_crd() -> Value {
    let mut crd = serde_json::to_value(AsyncActor::crd()).expect("CRD serialises");
    int_or_string_types(&mut crd);
    let root = pointer_mut(&mut crd, VERSION_SCHEMA);
    field_rules_to_cel::<AsyncActorSpec>(pointer_mut(root, "/properties/spec"));
    // Actor names become Deployment names, consumer names and subjects: DNS labels, and not
    // the built-in actors' names.
    root["properties"]["metadata"] = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 63, "pattern": ACTOR_NAME_PATTERN}
        }
    });
    add_rules(
        root,
        vec![
            rule(crd_rules::NAME_RULE),
            json!({"rule": crd_rules::RESERVED_NAME_RULE.0,
                   "message": format!("actor names {}", crd_rules::RESERVED_NAME_RULE.1.trim_start_matches("is "))}),
        ],
    );
    let spec = pointer_mut(root, "/properties/spec");
    add_scaling_rules(spec);
    add_resiliency_rules(spec);
    add_transport_rule(spec);
    add_rules(
        pointer_mut(
            spec,
            "/properties/workload/properties/template/properties/spec/properties/containers",
        ),
        vec![rule(crd_rules::WORKLOAD_CONTAINERS_RULE)],
    );
    add_rules(
        spec,
        vec![
            rule(crd_rules::PYTHON_IMAGE_RULE),
            rule(crd_rules::OCI_COMPONENT_RULE),
            rule(crd_rules::FLAVOR_ALIAS_RULE),
            json!({"rule": crd_rules::TIMEOUTS_RULE.0, "message": crd_rules::TIMEOUTS_RULE.1}),
        ],
    );
    bound_for_cel_cost(pointer_mut(&mut crd, VERSION_SCHEMA));
    crd
}

/// The `Flavor` CRD.
pub fn flavor_crd() -> Value {
    let mut crd = serde_json::to_value(Flavor::crd()).expect("CRD serialises");
    int_or_string_types(&mut crd);
    let spec = pointer_mut(&mut crd, &format!("{VERSION_SCHEMA}/properties/spec"));
    field_rules_to_cel::<FlavorSpec>(spec);
    add_scaling_rules(spec);
    add_resiliency_rules(spec);
    add_transport_rule(spec);
    bound_for_cel_cost(pointer_mut(&mut crd, VERSION_SCHEMA));
    crd
}

/// The `AsyncActorPool` CRD.
pub fn async_actor_pool_crd() -> Value {
    let mut crd = serde_json::to_value(AsyncActorPool::crd()).expect("CRD serialises");
    int_or_string_types(&mut crd);
    let spec = pointer_mut(&mut crd, &format!("{VERSION_SCHEMA}/properties/spec"));
    field_rules_to_cel::<AsyncActorPoolSpec>(spec);
    add_transport_rule(spec);
    add_rules(
        spec,
        vec![json!({
            "rule": "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
            "message": "minReplicas must not exceed maxReplicas",
        })],
    );
    bound_for_cel_cost(pointer_mut(&mut crd, VERSION_SCHEMA));
    crd
}

/// The CRDs, in the order they should be applied.
pub fn crds() -> Vec<Value> {
    vec![async_actor_crd(), flavor_crd(), async_actor_pool_crd()]
}

/// The CRDs as one multi-document YAML text (what `asya-operator crd` prints and what
/// `charts/asya/crds/asya.sh_crds.yaml` holds).
pub fn crds_yaml() -> String {
    let mut out = String::from(
        "# Generated by `asya-operator crd` from spec/src (asya-spec): do not edit by hand.\n",
    );
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd).expect("CRD as YAML"));
    }
    out
}
