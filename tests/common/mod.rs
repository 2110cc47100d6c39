//! Shared helpers of the host's integration tests: real components, built by `asya build`.
#![allow(dead_code)]

use asya_host::runtime::component_cache::{default_cache_dir, ComponentCache};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `asya` CLI: `$ASYA_CLI`, else the project's virtual environment.
pub fn asya_cli() -> PathBuf {
    if let Some(cli) = std::env::var_os("ASYA_CLI") {
        return PathBuf::from(cli);
    }
    let cli = repo_root().join(".venv/bin/asya");
    assert!(
        cli.is_file(),
        "{} is missing: run scripts/setup.sh (it creates .venv with the asya SDK)",
        cli.display()
    );
    cli
}

/// Builds `handler` from `tests/fixtures/handlers` with the real `asya build` (componentize-py),
/// once per test process; unchanged inputs come from asya's content-hash cache.
pub fn component(handler: &str, mode: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let key = format!("{handler}:{mode}");
    if let Some(path) = built.get(&key) {
        return path.clone();
    }
    let out = repo_root()
        .join("target/asya-fixtures")
        .join(format!("{}-{mode}.wasm", handler.replace('.', "_")));
    let status = Command::new(asya_cli())
        .args(["build", handler, "--mode", mode, "--source"])
        .arg(repo_root().join("tests/fixtures/handlers"))
        .arg("-o")
        .arg(&out)
        .status()
        .expect("running asya build");
    assert!(status.success(), "asya build {handler} failed");
    built.insert(key, out.clone());
    out
}

/// Builds `handler` from `source` (any directory) into `out` with the real `asya build`.
pub fn component_from(source: &Path, handler: &str, mode: &str, out: &Path) -> PathBuf {
    let status = Command::new(asya_cli())
        .args(["build", handler, "--mode", mode, "--source"])
        .arg(source)
        .arg("-o")
        .arg(out)
        .status()
        .expect("running asya build");
    assert!(
        status.success(),
        "asya build {handler} from {} failed",
        source.display()
    );
    out.to_path_buf()
}

/// The compiled-component cache shared with `asya dev`.
pub fn cache() -> ComponentCache {
    ComponentCache::new(default_cache_dir())
}
pub mod nats;
pub mod net;
pub mod rabbitmq;
pub mod sqs;

/// Compiles `tests/fixtures/flows/flows.py` and builds the `fan` flow's routers and handlers;
/// returns the manifests directory (under `target/asya-fixtures/<work>`) and the (actor, component) pairs.
pub fn fan_flow(work: &str) -> (PathBuf, Vec<(String, PathBuf)>) {
    let fixture = repo_root().join("tests/fixtures/flows");
    let work = repo_root().join("target/asya-fixtures").join(work);
    let compiled = work.join("compiled");
    let manifests = work.join("manifests");
    let _ = std::fs::remove_dir_all(&manifests);
    std::fs::create_dir_all(&manifests).unwrap();
    let status = Command::new(asya_cli())
        .args(["flow", "compile"])
        .arg(fixture.join("flows.py"))
        .arg("--output-dir")
        .arg(&compiled)
        .arg("--actors")
        .arg(fixture.join("actors"))
        .arg("--overwrite")
        .status()
        .unwrap();
    assert!(status.success(), "asya flow compile failed");
    std::fs::copy(compiled.join("actors/fan.yaml"), manifests.join("fan.yaml")).unwrap();
    let mut components = Vec::new();
    let routers = component_from(
        &compiled,
        "routers.dispatch",
        "envelope",
        &work.join("routers.wasm"),
    );
    let text = std::fs::read_to_string(manifests.join("fan.yaml")).unwrap();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let value = <serde_json::Value as serde::Deserialize>::deserialize(doc).unwrap();
        if let Some(name) = value["metadata"]["name"].as_str() {
            components.push((name.to_owned(), routers.clone()));
        }
    }
    for handler in ["square", "english", "spanish"] {
        std::fs::copy(
            fixture.join(format!("actors/{handler}.yaml")),
            manifests.join(format!("{handler}.yaml")),
        )
        .unwrap();
        let wasm = component_from(
            &fixture,
            &format!("handlers.{handler}"),
            "payload",
            &work.join(format!("{handler}.wasm")),
        );
        components.push((handler.to_owned(), wasm));
    }
    (manifests, components)
}
