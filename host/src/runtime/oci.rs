//! Components as OCI artifacts: `component: oci://registry/repo:tag` (or `@sha256:...`) is
//! resolved, pulled, verified against its digest and cached by digest. With the compiled
//! component cache on top, a second start compiles nothing, and a start by digest with a warm
//! cache touches no network at all.
//!
//! Auth: `ASYA_REGISTRY_USERNAME`/`ASYA_REGISTRY_PASSWORD`, else the docker config file. Plain
//! HTTP only for loopback registries or those in `ASYA_INSECURE_REGISTRIES`.

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Media type of the component layer (CNCF wasm OCI artifact).
pub const WASM_LAYER: &str = "application/wasm";
/// Media type of the config blob (CNCF wasm OCI artifact).
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";

/// A pulled (or cached) component.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The component file in the blob cache.
    pub path: PathBuf,
    /// `sha256:<hex>` of the component (the layer digest), verified.
    pub digest: String,
    /// The manifest digest the reference resolved to.
    pub manifest_digest: String,
    /// True when nothing was downloaded.
    pub from_cache: bool,
}

/// Pulls components from registries into a content-addressed cache.
#[derive(Debug, Clone)]
pub struct OciFetcher {
    cache_dir: PathBuf,
    attempts: u32,
    first_backoff: Duration,
}

fn is_loopback(registry: &str) -> bool {
    let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

fn insecure_allowed(registry: &str) -> bool {
    is_loopback(registry)
        || std::env::var("ASYA_INSECURE_REGISTRIES")
            .unwrap_or_default()
            .split(',')
            .any(|r| r.trim() == registry)
}

/// Credentials for `registry` from the environment or the docker config file.
pub fn auth_for(registry: &str) -> RegistryAuth {
    if let (Ok(user), Ok(password)) = (
        std::env::var("ASYA_REGISTRY_USERNAME"),
        std::env::var("ASYA_REGISTRY_PASSWORD"),
    ) {
        return RegistryAuth::Basic(user, password);
    }
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")));
    let Some(config) = dir
        .and_then(|d| std::fs::read_to_string(d.join("config.json")).ok())
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
    else {
        return RegistryAuth::Anonymous;
    };
    let auths = config.get("auths").and_then(|a| a.as_object());
    for (key, entry) in auths.into_iter().flatten() {
        let key = key
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        if key != registry {
            continue;
        }
        let decoded = entry
            .get("auth")
            .and_then(|a| a.as_str())
            .and_then(|a| base64::engine::general_purpose::STANDARD.decode(a).ok())
            .and_then(|b| String::from_utf8(b).ok());
        if let Some((user, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
            return RegistryAuth::Basic(user.to_owned(), password.to_owned());
        }
    }
    RegistryAuth::Anonymous
}

/// Parses `oci://registry/repository[:tag][@digest]`.
pub fn parse(reference: &str) -> Result<Reference> {
    let rest = reference
        .strip_prefix("oci://")
        .with_context(|| format!("'{reference}' does not start with oci://"))?;
    rest.parse::<Reference>()
        .with_context(|| format!("'{reference}' is not a valid OCI reference"))
}

fn not_found(text: &str) -> bool {
    let lower = text.to_lowercase();
    lower.contains("manifest unknown")
        || lower.contains("manifest_unknown")
        || lower.contains("name unknown")
        || lower.contains("not found")
        || lower.contains("404")
}

impl OciFetcher {
    /// A fetcher caching blobs under `cache_dir/blobs`.
    pub fn new(cache_dir: &Path) -> Self {
        OciFetcher {
            cache_dir: cache_dir.to_path_buf(),
            attempts: 5,
            first_backoff: Duration::from_millis(200),
        }
    }

    /// Changes how often an unreachable registry is retried.
    pub fn with_retries(mut self, attempts: u32, first_backoff: Duration) -> Self {
        self.attempts = attempts.max(1);
        self.first_backoff = first_backoff;
        self
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.cache_dir
            .join("blobs")
            .join("sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    fn ref_path(&self, manifest_digest: &str) -> PathBuf {
        self.cache_dir
            .join("oci-manifests")
            .join(manifest_digest.trim_start_matches("sha256:"))
    }

    fn client(registry: &str) -> Client {
        Client::new(ClientConfig {
            protocol: if insecure_allowed(registry) {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            ..ClientConfig::default()
        })
    }

    /// Resolves, pulls, verifies and caches `reference`.
    pub async fn fetch(&self, reference: &str) -> Result<Fetched> {
        let image = parse(reference)?;
        // By digest with a warm cache: no network at all.
        if let Some(manifest_digest) = image.digest() {
            if let Ok(layer) = std::fs::read_to_string(self.ref_path(manifest_digest)) {
                let path = self.blob_path(layer.trim());
                if path.exists() {
                    return Ok(Fetched {
                        path,
                        digest: layer.trim().to_owned(),
                        manifest_digest: manifest_digest.to_owned(),
                        from_cache: true,
                    });
                }
            }
        }
        let registry = image.resolve_registry().to_owned();
        let client = Self::client(&registry);
        let auth = auth_for(&registry);
        let mut delay = self.first_backoff;
        let mut attempt = 1;
        let (manifest, manifest_digest) = loop {
            match client.pull_image_manifest(&image, &auth).await {
                Ok(found) => break found,
                Err(err) => {
                    let text = err.to_string();
                    if not_found(&text) {
                        bail!("{reference}: not found in registry {registry} ({text})");
                    }
                    if attempt >= self.attempts {
                        bail!("{reference}: registry {registry} unavailable after {attempt} attempts: {text}");
                    }
                    tracing::warn!(%reference, attempt, max = self.attempts, retry_in = ?delay, error = %text,
                        "registry unavailable; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                    attempt += 1;
                }
            }
        };
        if let Some(expected) = image.digest() {
            if expected != manifest_digest {
                bail!("{reference}: manifest digest mismatch: asked for {expected}, registry served {manifest_digest}");
            }
        }
        let layers: Vec<_> = manifest
            .layers
            .iter()
            .filter(|l| l.media_type == WASM_LAYER)
            .collect();
        let [layer] = layers.as_slice() else {
            bail!(
                "{reference}: expected exactly one {WASM_LAYER} layer, found {} (layers: {})",
                layers.len(),
                manifest
                    .layers
                    .iter()
                    .map(|l| l.media_type.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        if manifest.config.media_type != WASM_CONFIG {
            tracing::warn!(%reference, config = %manifest.config.media_type, "config is not {WASM_CONFIG}; using the wasm layer anyway");
        }
        let digest = layer.digest.clone();
        let path = self.blob_path(&digest);
        let from_cache = path.exists();
        if !from_cache {
            let mut bytes = Vec::with_capacity(layer.size.max(0) as usize);
            client
                .pull_blob(&image, *layer, &mut bytes)
                .await
                .map_err(|e| {
                    let text = e.to_string();
                    if text.contains("Invalid digest") || text.contains("Digest error") {
                        anyhow::anyhow!("{reference}: digest mismatch: the blob the registry served does not hash to {digest} ({text})")
                    } else {
                        anyhow::anyhow!("{reference}: pulling {digest}: {text}")
                    }
                })?;
            let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
            if actual != digest {
                bail!("{reference}: digest mismatch: the manifest says {digest}, the blob is {actual}");
            }
            write_atomic(&path, &bytes)?;
        }
        write_atomic(&self.ref_path(&manifest_digest), digest.as_bytes())?;
        Ok(Fetched {
            path,
            digest,
            manifest_digest,
            from_cache,
        })
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("cache path has a parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("storing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_transport_security() {
        let r = parse("oci://127.0.0.1:5000/team/actor:v1").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "team/actor");
        assert_eq!(r.tag(), Some("v1"));
        assert!(parse("https://example.com/x").is_err());
        assert!(insecure_allowed("127.0.0.1:5000"));
        assert!(insecure_allowed("localhost:5000"));
        assert!(!insecure_allowed("registry.example.com"));
    }
}
