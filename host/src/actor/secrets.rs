//! The Secret keys of an actor's `spec.secretRefs`, read once when the actor starts, for the
//! handler's environment. In a cluster the operator mounts each Secret read-only at
//! `<dir>/<secret>/` (one file per key); locally `--secrets-dir` points at a directory of the
//! same shape. Values go only into the sandbox's environment: never into a ConfigMap, a log
//! line or an error message (errors name the secret and the key).

use anyhow::{bail, Context, Result};
use std::path::Path;

/// Where the operator mounts an actor's Secrets (`<dir>/<secret>/<key>`).
pub const DEFAULT_SECRETS_DIR: &str = "/var/run/asya/secrets";

/// Whether `name` can be an environment variable (Kubernetes' rule for `envFrom`: letters,
/// digits, `_`, `-` and `.`, not starting with a digit).
fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// `(key, value)` of every key of every Secret in `names`, in order (a key of a later Secret
/// replaces an earlier one's, as `envFrom` does). A Secret that is not mounted is an error
/// naming it; a key that cannot be an env name is skipped with a warning, as Kubernetes does.
pub fn read(dir: &Path, names: &[String]) -> Result<Vec<(String, String)>> {
    let mut env: Vec<(String, String)> = Vec::new();
    for name in names {
        let secret_dir = dir.join(name);
        if !secret_dir.is_dir() {
            bail!(
                "secret '{name}' (spec.secretRefs) is not mounted at {} (the operator mounts each Secret there; locally pass --secrets-dir)",
                secret_dir.display()
            );
        }
        let mut keys = Vec::new();
        for entry in std::fs::read_dir(&secret_dir)
            .with_context(|| format!("reading secret '{name}' at {}", secret_dir.display()))?
        {
            let entry = entry?;
            let key = entry.file_name().to_string_lossy().into_owned();
            // Kubernetes' projection keeps its bookkeeping in `..data` and timestamped dirs.
            if key.starts_with('.') {
                continue;
            }
            keys.push(key);
        }
        keys.sort();
        for key in keys {
            if !is_env_name(&key) {
                tracing::warn!(secret = %name, %key, "secret key is not a valid environment variable name; skipped");
                continue;
            }
            let path = secret_dir.join(&key);
            if path.is_dir() {
                continue;
            }
            let bytes = std::fs::read(&path)
                .with_context(|| format!("reading key '{key}' of secret '{name}'"))?;
            let value = String::from_utf8(bytes)
                .map_err(|_| anyhow::anyhow!("key '{key}' of secret '{name}' is not UTF-8 text"))?;
            env.retain(|(k, _)| *k != key);
            env.push((key, value));
        }
    }
    Ok(env)
}

/// `base` with `secrets` added; a secret key replaces a plain variable of the same name (as a
/// later `envFrom` source does).
pub fn with_secrets(
    mut base: Vec<(String, String)>,
    secrets: Vec<(String, String)>,
) -> Vec<(String, String)> {
    for (key, value) in secrets {
        base.retain(|(k, _)| *k != key);
        base.push((key, value));
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mounted_keys_and_skips_projection_bookkeeping() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("hf-token");
        std::fs::create_dir_all(secret.join("..2026_12_02")).unwrap();
        std::fs::write(secret.join("HF_TOKEN"), "s3cr3t").unwrap();
        std::fs::write(secret.join("1bad"), "x").unwrap();
        std::fs::write(secret.join("..data"), "x").unwrap();
        let env = read(dir.path(), &["hf-token".to_owned()]).unwrap();
        assert_eq!(env, [("HF_TOKEN".to_owned(), "s3cr3t".to_owned())]);
        let err = read(dir.path(), &["missing".to_owned()]).unwrap_err();
        assert!(err.to_string().contains("secret 'missing'"), "{err}");
        let merged = with_secrets(
            vec![
                ("HF_TOKEN".into(), "plain".into()),
                ("A".into(), "1".into()),
            ],
            env,
        );
        assert_eq!(
            merged,
            [
                ("A".to_owned(), "1".to_owned()),
                ("HF_TOKEN".to_owned(), "s3cr3t".to_owned())
            ]
        );
    }

    #[test]
    fn a_secret_value_never_reaches_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("s");
        std::fs::create_dir_all(&secret).unwrap();
        std::fs::write(secret.join("KEY"), [0xff, 0xfe, b's']).unwrap();
        let err = format!("{:#}", read(dir.path(), &["s".to_owned()]).unwrap_err());
        assert!(
            err.contains("key 'KEY' of secret 's' is not UTF-8"),
            "{err}"
        );
    }
}
