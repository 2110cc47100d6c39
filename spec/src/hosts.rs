//! Entries of `spec.sandbox.allowedHosts`: `api.example.com`, `api.example.com:8443`,
//! `*.example.com`, `https://api.example.com`, `[::1]:8080`. The host turns them into its
//! outbound allowlist; this is the one grammar every consumer checks.

use crate::SpecError;
use regex::Regex;
use std::sync::LazyLock;

/// One allowed host: an optional `http://`/`https://`, a host name (optionally starting with
/// `*.`) or a bracketed IPv6 address, an optional port (1-65535) and an optional trailing `/`.
pub const ALLOWED_HOST_PATTERN: &str = r"^(https?://)?((\*\.)?[A-Za-z0-9]([-A-Za-z0-9.]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?/?$";

/// What an allowed host must look like.
pub const ALLOWED_HOST_RULE: &str = "must be a host such as api.example.com, \
     api.example.com:8443, *.example.com or https://api.example.com (no path, no user)";

static PATTERN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(ALLOWED_HOST_PATTERN).expect("compiles"));

/// Checks every entry of `spec.sandbox.allowedHosts`.
pub fn check_allowed_hosts(entries: &[String]) -> Result<(), SpecError> {
    for (i, entry) in entries.iter().enumerate() {
        if entry.len() > 300 || !PATTERN.is_match(entry) {
            return Err(SpecError::new(
                format!("spec.sandbox.allowedHosts[{i}]"),
                format!("{ALLOWED_HOST_RULE} (got {entry:?})"),
            ));
        }
    }
    Ok(())
}

/// The schema of `allowedHosts`.
pub fn schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {
            "type": "string",
            "pattern": ALLOWED_HOST_PATTERN,
            "maxLength": 300,
            "x-asya-message": ALLOWED_HOST_RULE,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let ok = |e: &str| check_allowed_hosts(&[e.to_owned()]).is_ok();
        for good in [
            "api.example.com",
            "api.example.com:8443",
            "*.example.com",
            "https://api.example.com/",
            "[::1]:8080",
            "localhost",
        ] {
            assert!(ok(good), "{good}");
        }
        for bad in [
            "ftp://x", "a/b", "u@h", "*", "a.*.com", "h:0", "h:70000", "", " h",
        ] {
            assert!(!ok(bad), "{bad}");
        }
    }
}
