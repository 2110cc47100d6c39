//! The gateway's configuration file: tenants and their API keys, limits, and the tools (flows
//! and actors) each tenant may call. It holds no secret: API keys appear only as SHA-256
//! digests, so the file can be a ConfigMap.

use anyhow::{bail, Context, Result};
use asya_spec::names::{is_dns_label, is_reserved, PAUSE};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Who may call the gateway, one entry per namespace.
    #[serde(default)]
    pub tenants: Vec<Tenant>,
    /// Request limits.
    #[serde(default)]
    pub limits: Limits,
    /// What can be called.
    #[serde(default)]
    pub tools: Vec<Tool>,
}

/// A tenant: one namespace and the keys that act for it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tenant {
    /// The namespace (the tenant boundary for actors, tasks and tools).
    pub namespace: String,
    /// API keys, by digest.
    #[serde(default)]
    pub api_keys: Vec<ApiKey>,
}

/// One API key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiKey {
    /// A name for logs (the key itself is never logged).
    pub name: String,
    /// SHA-256 of the key, hex.
    pub sha256: String,
}

/// Request limits, per tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    /// Larger request bodies get 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Sustained requests per second per tenant; more get 429.
    #[serde(default = "default_rate")]
    pub rate_per_second: f64,
    /// Requests a tenant may make at once above the rate.
    #[serde(default = "default_burst")]
    pub burst: f64,
    /// The longest a waiting call (MCP `tools/call`) waits without a deadline of its own.
    #[serde(default = "default_wait", with = "humantime_serde_compat")]
    pub max_wait: Duration,
}

fn default_max_body() -> usize {
    1 << 20
}
fn default_rate() -> f64 {
    200.0
}
fn default_burst() -> f64 {
    400.0
}
fn default_wait() -> Duration {
    Duration::from_secs(600)
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: default_max_body(),
            rate_per_second: default_rate(),
            burst: default_burst(),
            max_wait: default_wait(),
        }
    }
}

/// A callable flow or actor.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tool {
    /// Tool name (MCP tool, `tool` of `POST /v1/tasks`).
    pub name: String,
    /// The namespace whose actors run it (and whose tenant may call it).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// What it does (shown to MCP clients).
    #[serde(default)]
    pub description: String,
    /// The route a call's payload takes (a compiled flow: its entry router).
    pub route: Vec<String>,
    /// A call's deadline: `status.deadline_at` is stamped `now + timeout`.
    #[serde(default, with = "humantime_serde_compat::option")]
    pub timeout: Option<Duration>,
    /// JSON Schema of the arguments (default: any object).
    #[serde(default = "any_object")]
    pub input_schema: Value,
}

fn default_namespace() -> String {
    "default".to_owned()
}

fn any_object() -> Value {
    serde_json::json!({"type": "object"})
}

/// Checks a route: actor names (DNS labels), or the built-in `x-pause`.
pub fn check_route(route: &[String]) -> Result<(), String> {
    if route.is_empty() {
        return Err("the route is empty".into());
    }
    for step in route {
        if !(is_dns_label(step) && !is_reserved(step) || step == PAUSE) {
            return Err(format!(
                "route step {step:?} is not an actor name (lowercase letters, digits and '-') or x-pause"
            ));
        }
    }
    Ok(())
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: Config = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("parsing {}", path.display()))?;
        config
            .check()
            .with_context(|| format!("checking {}", path.display()))?;
        Ok(config)
    }

    /// Checks names, routes and keys.
    pub fn check(&self) -> Result<()> {
        let mut namespaces = BTreeSet::new();
        for tenant in &self.tenants {
            if !is_dns_label(&tenant.namespace) {
                bail!("tenant namespace {:?} is not a DNS label", tenant.namespace);
            }
            if !namespaces.insert(tenant.namespace.as_str()) {
                bail!("tenant {:?} is listed twice", tenant.namespace);
            }
            for key in &tenant.api_keys {
                if key.sha256.len() != 64 || hex::decode(&key.sha256).is_err() {
                    bail!(
                        "tenant {:?}: API key {:?} is not a SHA-256 hex digest (64 hex digits)",
                        tenant.namespace,
                        key.name
                    );
                }
            }
        }
        let mut names = BTreeSet::new();
        for tool in &self.tools {
            if tool.name.is_empty() || tool.name.len() > 128 {
                bail!("tool name {:?} must be 1-128 characters", tool.name);
            }
            if !names.insert((tool.namespace.as_str(), tool.name.as_str())) {
                bail!(
                    "tool {:?} is listed twice in namespace {:?}",
                    tool.name,
                    tool.namespace
                );
            }
            check_route(&tool.route).map_err(|e| anyhow::anyhow!("tool {:?}: {e}", tool.name))?;
            if !tool.input_schema.is_object() {
                bail!("tool {:?}: inputSchema must be an object", tool.name);
            }
            jsonschema::validator_for(&tool.input_schema).map_err(|e| {
                anyhow::anyhow!(
                    "tool {:?}: inputSchema is not a JSON Schema: {e}",
                    tool.name
                )
            })?;
        }
        if self.limits.rate_per_second <= 0.0 || self.limits.burst < 1.0 {
            bail!("limits: ratePerSecond must be > 0 and burst >= 1");
        }
        Ok(())
    }

    /// The tool `name` of `namespace`.
    pub fn tool(&self, namespace: &str, name: &str) -> Option<&Tool> {
        self.tools
            .iter()
            .find(|t| t.namespace == namespace && t.name == name)
    }

    /// Every tool of `namespace`.
    pub fn tools_of<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a Tool> + 'a {
        self.tools.iter().filter(move |t| t.namespace == namespace)
    }

    /// Every namespace that has a tenant or a tool.
    pub fn namespaces(&self) -> BTreeSet<String> {
        self.tenants
            .iter()
            .map(|t| t.namespace.clone())
            .chain(self.tools.iter().map(|t| t.namespace.clone()))
            .collect()
    }
}

/// Durations written as humantime text (`30s`, `2m`).
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    fn parse(text: &str) -> Result<Duration, String> {
        humantime::parse_duration(text)
            .map_err(|e| format!("{text:?} is not a duration such as 30s or 2m ({e})"))
    }

    pub mod option {
        use super::*;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            let text = Option::<String>::deserialize(d)?;
            text.map(|t| parse(&t).map_err(serde::de::Error::custom))
                .transpose()
        }

        pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match value {
                Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
                None => s.serialize_none(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

    fn parse(text: &str) -> Result<Config> {
        let config: Config = serde_yaml_ng::from_str(text)?;
        config.check()?;
        Ok(config)
    }

    #[test]
    fn a_full_file_parses() {
        let config = parse(&format!(
            "tenants:\n- namespace: team-a\n  apiKeys: [{{name: ci, sha256: {KEY}}}]\n\
             tools:\n- name: summarize\n  namespace: team-a\n  route: [clean, x-pause, publish]\n  timeout: 2m\n"
        ))
        .unwrap();
        let tool = config.tool("team-a", "summarize").unwrap();
        assert_eq!(tool.timeout, Some(Duration::from_secs(120)));
        assert!(config.tool("default", "summarize").is_none());
        assert_eq!(config.limits.max_body_bytes, 1 << 20);
    }

    #[test]
    fn bad_files_name_what_is_wrong() {
        let err = parse("tenants:\n- namespace: a\n  apiKeys: [{name: k, sha256: nothex}]\n")
            .unwrap_err();
        assert!(err.to_string().contains("SHA-256"), "{err}");
        let err = parse("tools:\n- name: t\n  route: []\n").unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        let err = parse("tools:\n- name: t\n  route: [a]\n  inputSchema: {type: nonsense}\n")
            .unwrap_err();
        assert!(err.to_string().contains("inputSchema"), "{err}");
        let err = parse("tools:\n- name: t\n  route: [x-sink]\n").unwrap_err();
        assert!(err.to_string().contains("x-sink"), "{err}");
        let err = parse("tools:\n- name: t\n  route: [a]\n  timeout: soon\n").unwrap_err();
        assert!(
            err.to_string().contains("timeout") || err.to_string().contains("soon"),
            "{err:#}"
        );
        assert!(parse("tenant: []").is_err(), "unknown fields are refused");
    }
}
