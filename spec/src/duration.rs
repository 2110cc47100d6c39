//! Durations as manifests write them (`500ms`, `30s`, `5m`, `1h30m`, `2d`, or bare seconds),
//! parsed by `humantime` within a grammar every consumer shares: the CRD checks
//! [`DURATION_PATTERN`] with [`DURATION_RULE`] as its message, the SDK's JSON Schema carries the
//! same pattern and message, and [`parse_duration`] refuses exactly what the pattern refuses.
//!
//! The grammar bounds the value (at most three parts of at most five digits, so at most
//! 3 × 99999 days), so no consumer ever meets an overflow, and nothing here panics.

use crate::SpecError;
use regex::Regex;
use std::sync::LazyLock;
use std::time::Duration;

// The grammar, once: the anchored pattern and the bare grammar are both built from it.
macro_rules! duration_grammar {
    () => {
        r"(([0-9]{1,5}(\.[0-9]{1,3})?(ms|s|m)|[0-9]{1,5}(h|d))){1,3}|[0-9]{1,5}"
    };
}

/// The one regular expression a duration must match (RE2 syntax: the same in Rust, CEL and
/// JSON Schema).
pub const DURATION_PATTERN: &str = concat!("^(", duration_grammar!(), ")$");

/// [`DURATION_PATTERN`] without its anchors (for generators).
pub const DURATION_GRAMMAR: &str = duration_grammar!();

/// What a duration must look like, as every consumer words it.
pub const DURATION_RULE: &str = "must be a duration such as 500ms, 1.5s, 5m, 1h30m or 2d \
     (up to 3 parts of at most 5 digits; up to 3 decimals in ms, s and m; a bare number is seconds)";

/// The longest text that can match [`DURATION_PATTERN`] (bounds CEL's cost estimate).
pub const DURATION_MAX_LENGTH: usize = 36;

static PATTERN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(DURATION_PATTERN).expect("DURATION_PATTERN compiles"));

/// Parses a duration of the shared grammar. The error names no field: callers add it (see
/// [`SpecError::at`]).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.len() > DURATION_MAX_LENGTH || !PATTERN.is_match(text) {
        return Err(format!("{DURATION_RULE} (got {text:?})"));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        // Bare seconds (at most five digits: no overflow).
        return Ok(Duration::from_secs(text.parse::<u64>().unwrap_or(0)));
    }
    humantime::parse_duration(text).map_err(|e| format!("{DURATION_RULE} (got {text:?}: {e})"))
}

/// Parses `text` as the duration at `field`.
pub fn duration_at(field: &str, text: &str) -> Result<Duration, SpecError> {
    parse_duration(text).map_err(|rule| SpecError::new(field, rule))
}

/// The schema of a duration field: [`DURATION_PATTERN`] with [`DURATION_RULE`] as its message.
pub fn schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "pattern": DURATION_PATTERN,
        "maxLength": DURATION_MAX_LENGTH,
        "x-asya-message": DURATION_RULE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_users_write() {
        let ok = |t: &str| parse_duration(t).unwrap();
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("5s"), Duration::from_secs(5));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("2d"), Duration::from_secs(172_800));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("0.001m"), Duration::from_millis(60));
        assert_eq!(ok("3"), Duration::from_secs(3));
        assert_eq!(
            ok("99999d99999d99999d"),
            Duration::from_secs(3 * 99_999 * 86_400)
        );
    }

    #[test]
    fn refusals_say_the_rule() {
        for bad in [
            "soon",
            "",
            "-1s",
            "1 h",
            "99999999999999999999h",
            "1.5",
            "1.2345s",
            "1s2s3s4s",
            "0.5h",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.starts_with("must be a duration"), "{bad}: {err}");
        }
    }

    proptest::proptest! {
        /// Any text: never panics, and accepted exactly when the pattern matches.
        #[test]
        fn accepted_iff_the_pattern_matches(text in "\\PC{0,40}") {
            let parsed = parse_duration(&text);
            proptest::prop_assert_eq!(parsed.is_ok(), PATTERN.is_match(&text));
        }

        /// Every text the grammar generates parses.
        #[test]
        fn every_grammatical_text_parses(text in DURATION_GRAMMAR) {
            proptest::prop_assert!(parse_duration(&text).is_ok(), "{}", text);
        }
    }
}
