//! The native-Python runtime's own files (standard library only), carried inside the host
//! binary so the operator can put them into any user image, as Asya injects its runtime: an
//! init container running `asya-host install-runtime DIR` writes them to a shared emptyDir and
//! the user's container runs `python3 -m asya.runtime` with that directory first on
//! `PYTHONPATH`. The user's image needs Python and the handler's own dependencies, nothing
//! from asya.

use anyhow::{Context, Result};
use std::path::Path;

/// `(path under the install directory, contents)` of every file of the runtime.
pub const RUNTIME_FILES: [(&str, &str); 4] = [
    (
        "asya/__init__.py",
        include_str!("../../../sdk-python/src/asya/__init__.py"),
    ),
    (
        "asya/runtime.py",
        include_str!("../../../sdk-python/src/asya/runtime.py"),
    ),
    (
        "asya/handling.py",
        include_str!("../../../sdk-python/src/asya/handling.py"),
    ),
    // Not the runtime's own: what an `async def` handler imports to await HTTP.
    (
        "asya/http.py",
        include_str!("../../../sdk-python/src/asya/http.py"),
    ),
];

/// Writes the runtime's files under `dir` (which then goes first on `PYTHONPATH`).
pub fn install(dir: &Path) -> Result<()> {
    for (path, contents) in RUNTIME_FILES {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&target, contents)
            .with_context(|| format!("writing {}", target.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_needs_nothing_outside_its_files() {
        // Every `from .x import` of the runtime names a file that is installed.
        for (path, contents) in RUNTIME_FILES {
            for line in contents.lines() {
                if let Some(rest) = line.trim().strip_prefix("from .") {
                    // `from . import x` imports the package itself.
                    let module = if rest.starts_with(' ') {
                        ""
                    } else {
                        rest.split_whitespace().next().unwrap_or_default()
                    };
                    let wanted = if module.is_empty() {
                        "asya/__init__.py".to_owned()
                    } else {
                        format!("asya/{module}.py")
                    };
                    assert!(
                        RUNTIME_FILES.iter().any(|(p, _)| *p == wanted),
                        "{path} imports {wanted}, which is not installed"
                    );
                }
            }
        }
        let dir = tempfile::tempdir().unwrap();
        install(dir.path()).unwrap();
        assert!(dir.path().join("asya/runtime.py").is_file());
    }
}
