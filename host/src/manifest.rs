//! The parts of the `AsyncActor` manifest (`apiVersion: asya.sh/v1alpha1`) the host acts on:
//! handler, mode, runtime, component, sandbox limits and the actor timeout. Fields for the
//! cluster (scaling, resources, ...) are accepted and ignored here; the operator owns them.

use crate::outbound::HostAllowlist;
use crate::resiliency::{Resiliency, ResiliencySpec};
use crate::routing::Mode;
use crate::sandbox::SandboxLimits;
use crate::sidecar::SidecarSettings;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The API version this host understands.
pub const API_VERSION: &str = "asya.sh/v1alpha1";

/// An `AsyncActor` document.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AsyncActor {
    /// Must be `asya.sh/v1alpha1`.
    pub api_version: String,
    /// Must be `AsyncActor`.
    pub kind: String,
    /// Name and namespace.
    pub metadata: Metadata,
    /// The actor's specification.
    #[serde(default)]
    pub spec: ActorSpec,
}

/// Kubernetes-style metadata.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    /// The actor's name: its queue and its step name in routes.
    pub name: String,
    /// The tenant; defaults to `default`.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// Where the handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// A WebAssembly component in the host (default).
    #[default]
    Wasm,
    /// The native-Python runtime beside the host.
    Python,
}

/// `spec` of an AsyncActor (the host's subset).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActorSpec {
    /// `module.func` or `module.Class.method`.
    #[serde(default)]
    pub handler: Option<String>,
    /// `payload` (default) or `envelope`.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// `wasm` (default) or `python`.
    #[serde(default)]
    pub runtime: Runtime,
    /// The component: `oci://...`, a file path or `file://` URL.
    #[serde(default)]
    pub component: Option<String>,
    /// Sandbox limits.
    #[serde(default)]
    pub sandbox: SandboxSpec,
    /// Timeouts and retry policies.
    #[serde(default)]
    pub resiliency: ResiliencySpec,
}

/// `spec.sandbox`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxSpec {
    /// Memory cap, as a Kubernetes quantity (`256Mi`).
    #[serde(default)]
    pub memory: Option<Quantity>,
    /// CPU deadline per message (`5s`, `500ms`).
    #[serde(default)]
    pub cpu_timeout: Option<String>,
    /// Instances (handler calls running at once) at most.
    #[serde(default)]
    pub max_instances: Option<usize>,
    /// Messages in flight at most (received, not yet acknowledged); default `maxInstances`.
    /// Higher lets a short handler's instances stay busy while outputs wait for JetStream's
    /// acknowledgement; messages beyond `maxInstances` wait for a free instance.
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// Largest handler result in bytes (a quantity).
    #[serde(default)]
    pub max_output_bytes: Option<Quantity>,
    /// Environment variables the handler sees (nothing else is visible).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Keep one instance ready while idle.
    #[serde(default)]
    pub keep_warm: Option<bool>,
    /// Keep the compiled component mapped while idle (default: parked after `idleTimeout`).
    #[serde(default)]
    pub keep_loaded: Option<bool>,
    /// Drop idle instances after this long (`60s`).
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// Discard an instance after this many calls.
    #[serde(default)]
    pub recycle_after_calls: Option<u64>,
    /// Hosts the handler may reach over HTTP(S) (wasi:http): `api.example.com`,
    /// `host:8443`, `*.example.com`, `https://api.example.com`. Empty: no outbound HTTP.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

/// A Kubernetes quantity: a number or a string such as `256Mi`, `1G`, `512k`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Quantity {
    /// A plain number of bytes.
    Number(u64),
    /// A suffixed string.
    Text(String),
}

impl Quantity {
    /// The quantity in bytes.
    pub fn bytes(&self) -> Result<u64> {
        match self {
            Quantity::Number(n) => Ok(*n),
            Quantity::Text(text) => parse_quantity(text),
        }
    }
}

/// Parses `256Mi`, `1Gi`, `500M`, `64k`, `1024`.
pub fn parse_quantity(text: &str) -> Result<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let value: f64 = number
        .parse()
        .with_context(|| format!("'{text}' is not a quantity like 256Mi"))?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "k" | "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        other => bail!("'{text}': unknown quantity suffix '{other}' (use Ki, Mi, Gi, k, M, G)"),
    };
    Ok((value * factor) as u64)
}

/// Parses `500ms`, `5s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .with_context(|| format!("'{text}' is not a duration like 5s or 500ms"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => bail!("'{text}': unknown duration unit '{other}' (use ms, s, m, h)"),
    };
    Ok(Duration::from_secs_f64(seconds))
}

impl AsyncActor {
    /// The actor's name.
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// The actor's namespace (`default` when unset).
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }

    /// Checks the document is an AsyncActor this host can run.
    pub fn validate(&self) -> Result<()> {
        if self.api_version != API_VERSION {
            bail!(
                "actor '{}': apiVersion is '{}', expected '{API_VERSION}'",
                self.name(),
                self.api_version
            );
        }
        if self.kind != "AsyncActor" {
            bail!(
                "'{}': kind is '{}', expected 'AsyncActor'",
                self.name(),
                self.kind
            );
        }
        validate_actor_name(self.name())?;
        self.sandbox_limits()?;
        self.sidecar_settings()?;
        self.resiliency()?;
        Ok(())
    }

    /// Sandbox limits from `spec.sandbox`, defaults for what is unset.
    pub fn sandbox_limits(&self) -> Result<SandboxLimits> {
        let mut limits = SandboxLimits::default();
        let spec = &self.spec.sandbox;
        let ctx = || format!("actor '{}': spec.sandbox", self.name());
        if let Some(memory) = &spec.memory {
            limits.memory_bytes = memory.bytes().with_context(ctx)?;
            limits.recycle_memory_bytes = limits.memory_bytes / 4 * 3;
        }
        if let Some(timeout) = &spec.cpu_timeout {
            limits.cpu_timeout = parse_duration(timeout).with_context(ctx)?;
        }
        if let Some(n) = spec.max_instances {
            if n == 0 {
                bail!("{}: maxInstances must be at least 1", ctx());
            }
            limits.max_instances = n;
        }
        if let Some(max) = &spec.max_output_bytes {
            limits.max_output_bytes = max.bytes().with_context(ctx)? as usize;
        }
        limits.env = spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(warm) = spec.keep_warm {
            limits.keep_warm = warm;
        }
        if let Some(loaded) = spec.keep_loaded {
            limits.keep_loaded = loaded;
        }
        if let Some(idle) = &spec.idle_timeout {
            limits.idle_timeout = parse_duration(idle).with_context(ctx)?;
        }
        if let Some(n) = spec.recycle_after_calls {
            limits.recycle_after_calls = n;
        }
        limits.allowed_hosts =
            std::sync::Arc::new(HostAllowlist::parse(&spec.allowed_hosts).with_context(ctx)?);
        Ok(limits)
    }

    /// Retry policies from `spec.resiliency`.
    pub fn resiliency(&self) -> Result<Resiliency> {
        Resiliency::from_spec(&self.spec.resiliency)
            .with_context(|| format!("actor '{}': spec.resiliency", self.name()))
    }

    /// Sidecar settings: the actor timeout and concurrency (= maxInstances).
    pub fn sidecar_settings(&self) -> Result<SidecarSettings> {
        let mut settings = SidecarSettings::default();
        if let Some(timeout) = &self.spec.resiliency.actor_timeout {
            settings.timeout = parse_duration(timeout).with_context(|| {
                format!("actor '{}': spec.resiliency.actorTimeout", self.name())
            })?;
        }
        if let Some(n) = self.spec.sandbox.max_instances {
            settings.concurrency = n;
        }
        if let Some(n) = self.spec.sandbox.max_in_flight {
            if n == 0 {
                bail!(
                    "actor '{}': spec.sandbox.maxInFlight must be at least 1",
                    self.name()
                );
            }
            settings.concurrency = n;
        }
        Ok(settings)
    }
}

/// Actor names are DNS labels (they become Kubernetes objects and queue names).
pub fn validate_actor_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        bail!(
            "actor name '{name}' is not valid: use 1-63 lowercase letters, digits and '-', \
             starting and ending with a letter or digit"
        );
    }
    if crate::envelope::is_end_actor(name) {
        bail!("actor name '{name}' is reserved for the built-in end actor");
    }
    Ok(())
}

/// Reads every AsyncActor document from a YAML file (several documents may share one file);
/// documents of other kinds are skipped.
pub fn load_file(path: &Path) -> Result<Vec<AsyncActor>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut actors = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let value = serde_yaml_ng::Value::deserialize(document)
            .with_context(|| format!("parsing YAML in {}", path.display()))?;
        if value.get("kind").and_then(|k| k.as_str()) != Some("AsyncActor") {
            continue;
        }
        let actor: AsyncActor = serde_yaml_ng::from_value(value)
            .with_context(|| format!("reading the AsyncActor in {}", path.display()))?;
        actor
            .validate()
            .with_context(|| format!("in {}", path.display()))?;
        actors.push(actor);
    }
    Ok(actors)
}

/// Reads every `*.yaml`/`*.yml` file under `dir` (recursively), sorted by path.
pub fn load_dir(dir: &Path) -> Result<Vec<(PathBuf, AsyncActor)>> {
    let mut files = Vec::new();
    collect_yaml(dir, &mut files)?;
    files.sort();
    let mut actors = Vec::new();
    for file in files {
        for actor in load_file(&file)? {
            actors.push((file.clone(), actor));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (file, actor) in &actors {
        if !seen.insert((actor.namespace().to_owned(), actor.name().to_owned())) {
            bail!(
                "actor '{}' (namespace '{}') is declared twice (again in {})",
                actor.name(),
                actor.namespace(),
                file.display()
            );
        }
    }
    Ok(actors)
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_yaml(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_durations() {
        assert_eq!(parse_quantity("256Mi").unwrap(), 256 << 20);
        assert_eq!(parse_quantity("1Gi").unwrap(), 1 << 30);
        assert_eq!(parse_quantity("500M").unwrap(), 500_000_000);
        assert_eq!(parse_quantity("1024").unwrap(), 1024);
        assert!(parse_quantity("12Xi").is_err());
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn reads_an_actor_with_limits() {
        let actor: AsyncActor = serde_yaml_ng::from_str(
            r#"
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: classify, namespace: nlp}
spec:
  handler: classifier.TextClassifier.process
  mode: payload
  scaling: {minReplicaCount: 0, maxReplicaCount: 5}
  sandbox: {memory: 128Mi, cpuTimeout: 2s, maxInstances: 2, maxInFlight: 16, env: {MODEL: tiny}, allowedHosts: [api.example.com]}
  resiliency: {actorTimeout: 10s}
"#,
        )
        .unwrap();
        actor.validate().unwrap();
        assert_eq!(actor.namespace(), "nlp");
        let limits = actor.sandbox_limits().unwrap();
        assert_eq!(limits.memory_bytes, 128 << 20);
        assert_eq!(limits.cpu_timeout, Duration::from_secs(2));
        assert_eq!(limits.env, vec![("MODEL".to_owned(), "tiny".to_owned())]);
        assert!(limits
            .allowed_hosts
            .permits("https", "api.example.com", None));
        assert!(!limits.allowed_hosts.permits("https", "example.com", None));
        let settings = actor.sidecar_settings().unwrap();
        assert_eq!(settings.timeout, Duration::from_secs(10));
        assert_eq!(settings.concurrency, 16, "maxInFlight, not maxInstances");
        assert_eq!(limits.max_instances, 2);
    }

    #[test]
    fn rejects_bad_names_and_versions() {
        assert!(validate_actor_name("Bad_Name").is_err());
        assert!(validate_actor_name("x-sink").is_err());
        assert!(validate_actor_name("ok-name-1").is_ok());
        let actor: AsyncActor = serde_yaml_ng::from_str(
            "apiVersion: asya.sh/v2\nkind: AsyncActor\nmetadata: {name: a}\n",
        )
        .unwrap();
        assert!(actor
            .validate()
            .unwrap_err()
            .to_string()
            .contains("apiVersion"));
    }
}
