//! The parts of the `AsyncActor` manifest (`apiVersion: asya.sh/v1alpha1`) the host acts on:
//! handler, mode, runtime, component, sandbox limits and the actor timeout. Fields for the
//! cluster (scaling, resources, ...) are accepted and ignored here; the operator owns them.

use crate::actor::sidecar::SidecarSettings;
use crate::message::resiliency::Resiliency;
use crate::runtime::outbound::HostAllowlist;
use crate::runtime::sandbox::SandboxLimits;
use anyhow::{bail, Context, Result};
use asya_spec::quantity::bytes_of;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use asya_spec::{Runtime, API_VERSION};

/// An `AsyncActor` document (the shared contract's manifest-file view).
pub type AsyncActor = asya_spec::ActorDocument;

/// `spec.sandbox`.
pub type SandboxSpec = asya_spec::Sandbox;

/// A Kubernetes quantity: a number or a string such as `256Mi`.
pub type Quantity = asya_spec::Quantity;

/// Parses a byte size (`256Mi`, `1Gi`, `500M`, `64k`, `1024`) of the shared grammar.
pub fn parse_quantity(text: &str) -> Result<u64> {
    asya_spec::quantity::parse_bytes(text).map_err(anyhow::Error::msg)
}

/// Parses `500ms`, `5s`, `2m`, `1h30m`, `2d`, or a bare number of seconds (the shared grammar).
pub fn parse_duration(text: &str) -> Result<Duration> {
    asya_spec::parse_duration(text).map_err(anyhow::Error::msg)
}

/// What the host reads from an actor's manifest, beyond the shared contract's checks.
pub trait ActorSettings {
    /// Checks the document is an AsyncActor this host can run: every rule of the shared
    /// contract, each broken one named by field and rule.
    fn validate(&self) -> Result<()>;
    /// Sandbox limits from `spec.sandbox`, defaults for what is unset.
    fn sandbox_limits(&self) -> Result<SandboxLimits>;
    /// Retry policies from `spec.resiliency`.
    fn resiliency(&self) -> Result<Resiliency>;
    /// Sidecar settings: the actor timeout and concurrency (= maxInFlight, else maxInstances).
    fn sidecar_settings(&self) -> Result<SidecarSettings>;
}

impl ActorSettings for AsyncActor {
    fn validate(&self) -> Result<()> {
        // One line naming the actor, the field and the rule (as the CRD and the SDK word it).
        self.check()
            .map_err(|e| anyhow::anyhow!("actor '{}': {e}", self.name()))
    }

    fn sandbox_limits(&self) -> Result<SandboxLimits> {
        let mut limits = SandboxLimits {
            env: handler_env(self)?,
            ..SandboxLimits::default()
        };
        let Some(spec) = &self.spec.sandbox else {
            return Ok(limits);
        };
        asya_spec::check::check_sandbox("spec.sandbox", spec)
            .map_err(|e| anyhow::anyhow!("actor '{}': {e}", self.name()))?;
        // Checked above: nothing below can fail.
        let bytes = |q: &Quantity| bytes_of(q).map_err(anyhow::Error::msg);
        if let Some(memory) = &spec.memory {
            limits.memory_bytes = bytes(memory)?;
            limits.recycle_memory_bytes = limits.memory_bytes / 4 * 3;
        }
        if let Some(timeout) = &spec.cpu_timeout {
            limits.cpu_timeout = parse_duration(timeout)?;
        }
        if let Some(n) = spec.max_instances {
            limits.max_instances = n.max(1) as usize;
        }
        if let Some(n) = spec.max_concurrency {
            limits.max_concurrency = n.max(1) as usize;
        }
        if let Some(max) = &spec.max_output_bytes {
            limits.max_output_bytes = usize::try_from(bytes(max)?).unwrap_or(usize::MAX);
        }
        if let Some(warm) = spec.keep_warm {
            limits.keep_warm = warm;
        }
        if let Some(loaded) = spec.keep_loaded {
            limits.keep_loaded = loaded;
        }
        if let Some(idle) = &spec.idle_timeout {
            limits.idle_timeout = parse_duration(idle)?;
        }
        if let Some(n) = spec.recycle_after_calls {
            limits.recycle_after_calls = n.max(1) as u64;
        }
        limits.allowed_hosts = std::sync::Arc::new(
            HostAllowlist::parse(&spec.allowed_hosts)
                .with_context(|| format!("actor '{}': spec.sandbox", self.name()))?,
        );
        Ok(limits)
    }

    fn resiliency(&self) -> Result<Resiliency> {
        Resiliency::from_spec(&self.spec.resiliency.clone().unwrap_or_default())
            .with_context(|| format!("actor '{}': spec.resiliency", self.name()))
    }

    fn sidecar_settings(&self) -> Result<SidecarSettings> {
        let mut settings = SidecarSettings::default();
        if let Some(timeout) = self
            .spec
            .resiliency
            .as_ref()
            .and_then(|r| r.actor_timeout.as_ref())
        {
            settings.timeout =
                asya_spec::duration::duration_at("spec.resiliency.actorTimeout", timeout)
                    .map_err(|e| anyhow::anyhow!("actor '{}': {e}", self.name()))?;
        }
        if let Some(sandbox) = &self.spec.sandbox {
            asya_spec::check::check_sandbox("spec.sandbox", sandbox)
                .map_err(|e| anyhow::anyhow!("actor '{}': {e}", self.name()))?;
            if let Some(n) = sandbox.max_instances {
                settings.concurrency = n.max(1) as usize;
            }
            if let Some(n) = sandbox.max_in_flight {
                settings.concurrency = n.max(1) as usize;
            }
        }
        Ok(settings)
    }
}

/// What the handler's `os.environ` holds (Secret keys aside, see [`crate::actor::secrets`]):
/// `spec.env` (the handler's variables, as in Asya, where they are the runtime container's env)
/// and `spec.sandbox.env`. A name in both must have one value.
fn handler_env(actor: &AsyncActor) -> Result<Vec<(String, String)>> {
    let mut env = actor.spec.env.clone();
    for (name, value) in actor.spec.sandbox.iter().flat_map(|s| &s.env) {
        if let Some(other) = env.insert(name.clone(), value.clone()) {
            if other != *value {
                bail!(
                    "actor '{}': spec.sandbox.env.{name}: {value:?} disagrees with spec.env ({other:?}); set one of them",
                    actor.name()
                );
            }
        }
    }
    Ok(env.into_iter().collect())
}

/// Actor names are DNS labels (they become Kubernetes objects and queue names), and not a
/// built-in actor's.
pub fn validate_actor_name(name: &str) -> Result<()> {
    asya_spec::names::check_actor_name(name).map_err(anyhow::Error::new)
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
        // Asya's forms (workload, flavor) become this project's fields here, once.
        let resolved = actor
            .resolved()
            .map_err(|e| anyhow::anyhow!("actor '{}': {e}", actor.name()))
            .with_context(|| format!("in {}", path.display()))?;
        actors.push(resolved);
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

/// Actors with the manifest file each came from.
pub type ActorFiles = Vec<(PathBuf, AsyncActor)>;
/// Manifest files that do not load, with why.
pub type BrokenFiles = Vec<(PathBuf, anyhow::Error)>;

/// Loads every manifest of a directory file by file: the actors of files that load, and each
/// file that does not with why (a pool's host serves the rest). Of two declarations of one
/// actor the second file is the broken one. Only an unreadable directory is an error.
pub fn load_dir_each(dir: &Path) -> Result<(ActorFiles, BrokenFiles)> {
    let mut files = Vec::new();
    collect_yaml(dir, &mut files)?;
    files.sort();
    let mut actors = Vec::new();
    let mut broken = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for file in files {
        match load_file(&file) {
            Ok(loaded) => {
                let twice = loaded
                    .iter()
                    .find(|a| seen.contains(&(a.namespace().to_owned(), a.name().to_owned())));
                if let Some(actor) = twice {
                    let err = anyhow::anyhow!(
                        "actor '{}' (namespace '{}') is declared twice",
                        actor.name(),
                        actor.namespace()
                    );
                    broken.push((file, err));
                    continue;
                }
                for actor in loaded {
                    seen.insert((actor.namespace().to_owned(), actor.name().to_owned()));
                    actors.push((file.clone(), actor));
                }
            }
            Err(err) => broken.push((file, err)),
        }
    }
    Ok((actors, broken))
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
