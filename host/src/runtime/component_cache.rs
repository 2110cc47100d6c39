//! On-disk cache of compiled components, keyed by the component's SHA-256 digest and the engine's
//! compatibility hash (wasmtime version and compilation settings). A cached load is a memory map
//! and takes milliseconds; a Cranelift compile of a CPython component takes seconds.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use wasmtime::component::Component;
use wasmtime::Engine;

use crate::runtime::sandbox::{SandboxEngine, WasmtimeResultExt};

/// A compiled component and where it came from.
#[derive(Clone)]
pub struct LoadedComponent {
    /// The compiled component, ready to instantiate. Shared by every actor of the host that runs
    /// the same digest; its code is unmapped when the last of them lets go.
    pub component: Arc<Component>,
    /// `sha256:<hex>` of the component's bytes.
    pub digest: String,
    /// True when the compiled artifact came from the cache (nothing was compiled).
    pub from_cache: bool,
    /// How to map the component again without compiling, when its artifact is on disk.
    pub reload: Option<Reloadable>,
}

impl LoadedComponent {
    /// Remembers the component file, so a lost artifact can be compiled again.
    fn with_source(mut self, path: &Path) -> Self {
        if let Some(reload) = self.reload.as_mut() {
            reload.source = Some(path.to_owned());
        }
        self
    }
}

/// A compiled artifact in the cache: an actor that let go of its component while idle maps it
/// again from here on its next message (milliseconds, no compile).
#[derive(Clone)]
pub struct Reloadable {
    cache: ComponentCache,
    /// The engine it was compiled for.
    engine: Engine,
    artifact: PathBuf,
    digest: String,
    /// The component file it was compiled from: compiled again if the artifact disappears.
    source: Option<PathBuf>,
}

impl std::fmt::Debug for Reloadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloadable")
            .field("artifact", &self.artifact)
            .field("digest", &self.digest)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Reloadable {
    /// Maps the component again (or shares the copy another actor holds). If the artifact was
    /// removed from the cache meanwhile, compiles the component file again (seconds), provided
    /// it still has the same digest.
    pub fn load(&self) -> Result<LoadedComponent> {
        let engine = &self.engine;
        if let Some(mut shared) = self.cache.shared(engine, &self.digest) {
            shared.reload = Some(self.clone()); // keeps the component file to recompile from
            return Ok(shared);
        }
        // SAFETY: as in `load_unshared`: our own serialisation, engine-compatible by file name.
        let mapped = unsafe { Component::deserialize_file(engine, &self.artifact) };
        let component = match (mapped, &self.source) {
            (Ok(component), _) => component,
            (Err(err), Some(source)) => {
                tracing::warn!(artifact = %self.artifact.display(), error = %err,
                    "compiled component gone from the cache; compiling it again");
                let loaded = self.cache.load_file(engine, source)?;
                anyhow::ensure!(
                    loaded.digest == self.digest,
                    "component {} changed since the actor was loaded ({} now, {} then)",
                    source.display(),
                    loaded.digest,
                    self.digest
                );
                return Ok(loaded);
            }
            (Err(err), None) => {
                return Err(anyhow::Error::from(err))
                    .with_context(|| format!("mapping {}", self.artifact.display()))
            }
        };
        let loaded = LoadedComponent {
            component: Arc::new(component),
            digest: self.digest.clone(),
            from_cache: true,
            reload: Some(self.clone()),
        };
        Ok(self.cache.remember(engine, loaded))
    }
}

/// Compiles components, or loads their compiled form from a directory.
///
/// Components already loaded in this process are shared by digest: actors with the same component
/// (a flow's routers, replicas of one handler in several namespaces) map its code once.
#[derive(Clone)]
pub struct ComponentCache {
    root: Option<PathBuf>,
    dir: Option<PathBuf>,
    loaded: Arc<Mutex<LoadedByDigest>>,
    /// Digests of component files by path, valid while the file's size and mtime match: a
    /// pool registering hundreds of actors of one component reads and hashes it once.
    file_digests: Arc<Mutex<HashMap<PathBuf, FileDigest>>>,
    /// The last few components loaded, held mapped so that actors registered one after another
    /// share one mapping even though each parks its own reference at once.
    recent: Arc<Mutex<std::collections::VecDeque<Arc<Component>>>>,
}

/// A component file's digest and the file's state when it was computed.
#[derive(Clone, Debug, PartialEq)]
struct FileDigest {
    len: u64,
    modified: Option<std::time::SystemTime>,
    digest: String,
}

/// How many recently loaded components stay mapped (see `ComponentCache::recent`).
const RECENT_COMPONENTS: usize = 4;

/// Components mapped in memory by digest, with the engine they were compiled for.
type LoadedByDigest = HashMap<String, (Engine, Weak<Component>)>;

impl std::fmt::Debug for ComponentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The default cache directory: `$ASYA_CACHE_DIR`, else `$XDG_CACHE_HOME/asya`, else
/// `~/.cache/asya`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("ASYA_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("asya"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("asya"))
}

/// `sha256:<hex>` of some bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl ComponentCache {
    /// A cache storing compiled artifacts under `dir/compiled`; `None` disables caching.
    pub fn new(dir: Option<PathBuf>) -> Self {
        ComponentCache {
            dir: dir.as_ref().map(|d| d.join("compiled")),
            root: dir,
            loaded: Arc::default(),
            file_digests: Arc::default(),
            recent: Arc::default(),
        }
    }

    fn shared(&self, engine: &Engine, digest: &str) -> Option<LoadedComponent> {
        let loaded = self.loaded.lock().expect("component cache lock");
        let (owner, component) = loaded.get(digest)?;
        let component = component.upgrade()?;
        Engine::same(owner, engine).then(|| LoadedComponent {
            component,
            digest: digest.to_owned(),
            from_cache: true,
            reload: self.reloadable(engine, digest),
        })
    }

    fn remember(&self, engine: &Engine, loaded: LoadedComponent) -> LoadedComponent {
        let mut map = self.loaded.lock().expect("component cache lock");
        // Entries of components nobody holds any more are dropped as new ones arrive.
        map.retain(|_, (_, component)| component.strong_count() > 0);
        map.insert(
            loaded.digest.clone(),
            (engine.clone(), Arc::downgrade(&loaded.component)),
        );
        drop(map);
        let mut recent = self.recent.lock().expect("component cache lock");
        recent.retain(|c| !Arc::ptr_eq(c, &loaded.component));
        recent.push_front(loaded.component.clone());
        recent.truncate(RECENT_COMPONENTS);
        loaded
    }

    /// Lets go of the recently loaded components kept mapped (the next load of one maps its
    /// artifact again, or compiles it when the artifact is gone).
    pub fn forget_recent(&self) {
        self.recent.lock().expect("component cache lock").clear();
    }

    fn file_state(path: &Path) -> Option<(u64, Option<std::time::SystemTime>)> {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.len(), meta.modified().ok()))
    }

    /// The component of `path` already mapped, found by the digest remembered for the file
    /// as it is now (without reading it).
    fn shared_file(&self, engines: &SandboxEngine, path: &Path) -> Option<LoadedComponent> {
        let (len, modified) = Self::file_state(path)?;
        let known = self
            .file_digests
            .lock()
            .expect("component cache lock")
            .get(path)
            .filter(|f| f.len == len && f.modified == modified)
            .map(|f| f.digest.clone())?;
        engines
            .engines()
            .iter()
            .find_map(|engine| self.shared(engine, &known))
    }

    /// The on-disk artifact of `digest`, when there is one.
    fn reloadable(&self, engine: &Engine, digest: &str) -> Option<Reloadable> {
        let artifact = self.artifact_path(engine, digest)?;
        let engine = engine.clone();
        artifact.exists().then(|| Reloadable {
            cache: self.clone(),
            engine,
            artifact,
            digest: digest.to_owned(),
            source: None,
        })
    }

    /// The cache's root directory (OCI blobs live beside the compiled artifacts).
    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// Loads a component file on the engine it needs (see [`SandboxEngine::engine_for`]), from
    /// the compiled cache when possible.
    pub fn load_file_in(&self, engines: &SandboxEngine, path: &Path) -> Result<LoadedComponent> {
        if let Some(shared) = self.shared_file(engines, path) {
            return Ok(shared.with_source(path));
        }
        let state = Self::file_state(path);
        let bytes =
            std::fs::read(path).with_context(|| format!("reading component {}", path.display()))?;
        let loaded = self
            .load_bytes(engines.engine_for(&bytes), &bytes)
            .map(|loaded| loaded.with_source(path))
            .with_context(|| format!("loading component {}", path.display()))?;
        // Remembered only if the file did not change while it was read.
        if let Some((len, modified)) = state.filter(|s| Some(*s) == Self::file_state(path)) {
            self.file_digests
                .lock()
                .expect("component cache lock")
                .insert(
                    path.to_owned(),
                    FileDigest {
                        len,
                        modified,
                        digest: loaded.digest.clone(),
                    },
                );
        }
        Ok(loaded)
    }

    /// [`ComponentCache::load_verified`] on the engine the component needs: a compiled artifact
    /// for either engine is used as is; otherwise the file is read to tell which.
    pub fn load_verified_in(
        &self,
        engines: &SandboxEngine,
        path: &Path,
        digest: &str,
    ) -> Result<LoadedComponent> {
        for engine in engines.engines() {
            let cached = self.shared(engine, digest).is_some()
                || self
                    .artifact_path(engine, digest)
                    .is_some_and(|p| p.exists());
            if cached {
                return self.load_verified(engine, path, digest);
            }
        }
        self.load_file_in(engines, path)
    }

    /// Loads a component whose digest is already known and verified (an OCI blob): with a warm
    /// cache the file is not even read.
    pub fn load_verified(
        &self,
        engine: &Engine,
        path: &Path,
        digest: &str,
    ) -> Result<LoadedComponent> {
        if let Some(shared) = self.shared(engine, digest) {
            return Ok(shared.with_source(path));
        }
        if let Some(artifact) = self.artifact_path(engine, digest).filter(|p| p.exists()) {
            // SAFETY: as in `load_bytes`: our own serialisation, engine-compatible by file name.
            if let Ok(component) = unsafe { Component::deserialize_file(engine, &artifact) } {
                let loaded = LoadedComponent {
                    component: Arc::new(component),
                    digest: digest.to_owned(),
                    from_cache: true,
                    reload: self.reloadable(engine, digest),
                };
                return Ok(self.remember(engine, loaded).with_source(path));
            }
        }
        self.load_file(engine, path)
    }

    fn artifact_path(&self, engine: &Engine, digest: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let hex = digest.trim_start_matches("sha256:");
        Some(dir.join(format!(
            "{hex}-wasmtime{}-{:016x}.cwasm",
            wasmtime_version(),
            hasher.finish()
        )))
    }

    /// Loads a component file, from the compiled cache when possible.
    pub fn load_file(&self, engine: &Engine, path: &Path) -> Result<LoadedComponent> {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading component {}", path.display()))?;
        self.load_bytes(engine, &bytes)
            .map(|loaded| loaded.with_source(path))
            .with_context(|| format!("loading component {}", path.display()))
    }

    /// Loads component bytes, from the compiled cache when possible.
    pub fn load_bytes(&self, engine: &Engine, bytes: &[u8]) -> Result<LoadedComponent> {
        let digest = digest_of(bytes);
        if let Some(shared) = self.shared(engine, &digest) {
            return Ok(shared);
        }
        let loaded = self.load_unshared(engine, bytes, digest)?;
        Ok(self.remember(engine, loaded))
    }

    fn load_unshared(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: String,
    ) -> Result<LoadedComponent> {
        let artifact = self.artifact_path(engine, &digest);
        if let Some(path) = artifact.as_ref().filter(|p| p.exists()) {
            // SAFETY: the file was written by `Component::serialize` of an engine with the same
            // compatibility hash (it is in the file name), into a cache directory owned by the
            // host; a corrupt or foreign file fails the header check and is recompiled below.
            match unsafe { Component::deserialize_file(engine, path) } {
                Ok(component) => {
                    return Ok(LoadedComponent {
                        component: Arc::new(component),
                        reload: self.reloadable(engine, &digest),
                        digest,
                        from_cache: true,
                    })
                }
                Err(err) => tracing::warn!(path = %path.display(), error = %err,
                    "compiled component cache entry unusable; recompiling"),
            }
        }
        let component = Component::new(engine, bytes)
            .anyhow()
            .context("compiling the component")?;
        if let Some(path) = artifact {
            if let Err(err) = store_artifact(&component, &path) {
                tracing::warn!(path = %path.display(), error = %format!("{err:#}"),
                    "could not write the compiled component cache");
            }
        }
        Ok(LoadedComponent {
            component: Arc::new(component),
            reload: self.reloadable(engine, &digest),
            digest,
            from_cache: false,
        })
    }
}

fn store_artifact(component: &Component, path: &Path) -> Result<()> {
    let dir = path.parent().context("cache path has a parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let bytes = component
        .serialize()
        .anyhow()
        .context("serialising the compiled component")?;
    // Write then rename, so a concurrent reader never sees a half-written artifact.
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("artifact"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

/// The wasmtime version the host links (part of every cache key).
pub fn wasmtime_version() -> &'static str {
    "48.0.8"
}
