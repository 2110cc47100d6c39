//! Kubernetes quantities. Byte sizes of the sandbox (`memory`, `maxOutputBytes`) are a
//! non-negative subset ([`BYTES_PATTERN`]) whose largest value fits a `u64`; container resources
//! take any non-negative Kubernetes quantity ([`RESOURCE_PATTERN`]). Values are computed by the
//! `kube_quantity` crate; the patterns (shared with the CRD and the SDK's schema) decide what is
//! accepted, so every consumer accepts the same texts.

use crate::SpecError;
use kube_quantity::ParsedQuantity;
use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::LazyLock;

/// A byte size: whole bytes, or a number (up to 6 decimals) with a binary or decimal suffix.
/// Digit counts keep the largest value (`9999.999999Pi`) inside a `u64`.
pub const BYTES_PATTERN: &str = r"^([0-9]{1,18}|[0-9]{1,6}(\.[0-9]{1,6})?(Ki|Mi|Gi|k|M|G)|[0-9]{1,4}(\.[0-9]{1,6})?(Ti|Pi|T|P))$";

/// What a byte size must look like.
pub const BYTES_RULE: &str = "must be a byte size such as 256Mi, 1Gi, 1.5Gi, 500M or 1048576 \
     (suffixes Ki Mi Gi Ti Pi k M G T P; no milli, no sign, no exponent)";

/// Largest integer byte size written as a plain number (the pattern allows 18 digits).
pub const BYTES_MAX_NUMBER: i64 = 999_999_999_999_999_999;

/// A container resource quantity (`500m`, `2`, `1.5Gi`, `1e3`): Kubernetes' own grammar
/// without a sign (a negative request is refused by the API server's pod validation anyway).
pub const RESOURCE_PATTERN: &str =
    r"^(([0-9]{1,18}(\.[0-9]{0,9})?)|(\.[0-9]{1,9}))(([KMGTP]i)|[numkMGTP]|([eE][0-9]))?$";

/// What a resource quantity must look like.
pub const RESOURCE_RULE: &str = "must be a Kubernetes quantity such as 500m, 2, 1.5Gi or 4G \
     (no sign)";

static BYTES: LazyLock<Regex> = LazyLock::new(|| Regex::new(BYTES_PATTERN).expect("compiles"));
static RESOURCE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(RESOURCE_PATTERN).expect("compiles"));

/// A quantity as a manifest writes it: a number or a string.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum Quantity {
    /// A plain number.
    Number(i64),
    /// A suffixed quantity (`256Mi`, `500m`, `1G`).
    Text(String),
}

impl Quantity {
    /// The quantity as Kubernetes writes it (a string).
    pub fn to_k8s_string(&self) -> String {
        match self {
            Quantity::Number(n) => n.to_string(),
            Quantity::Text(t) => t.clone(),
        }
    }

    /// Checks a container resource quantity.
    pub fn check_resource(&self, field: &str) -> Result<(), SpecError> {
        let ok = match self {
            Quantity::Number(n) => *n >= 0,
            Quantity::Text(t) => {
                RESOURCE.is_match(t) && ParsedQuantity::try_from(t.as_str()).is_ok()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(SpecError::new(
                field,
                format!("{RESOURCE_RULE} (got {})", self.to_k8s_string()),
            ))
        }
    }
}

/// Parses a byte size (`256Mi`, `1Gi`, `1048576`); fractions of a byte are dropped.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let refuse = || format!("{BYTES_RULE} (got {text:?})");
    if !BYTES.is_match(text) {
        return Err(refuse());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<u64>().map_err(|_| refuse());
    }
    let parsed = ParsedQuantity::try_from(text).map_err(|_| refuse())?;
    let bytes = parsed
        .to_bytes_f64()
        .filter(|b| b.is_finite() && *b >= 0.0)
        .ok_or_else(refuse)?;
    // The pattern bounds the value below 2^64; `as` saturates in any case.
    Ok(bytes.floor() as u64)
}

/// The size in bytes of a byte-size field (`spec.sandbox.memory`, `spec.sandbox.maxOutputBytes`):
/// a number up to [`BYTES_MAX_NUMBER`] or a string of [`BYTES_PATTERN`].
pub fn bytes_of(quantity: &Quantity) -> Result<u64, String> {
    match quantity {
        Quantity::Number(n) if (0..=BYTES_MAX_NUMBER).contains(n) => Ok(*n as u64),
        Quantity::Number(n) => Err(format!("{BYTES_RULE} (got {n})")),
        Quantity::Text(text) => parse_bytes(text),
    }
}

/// [`bytes_of`] for the field at `field`.
pub fn bytes_at(field: &str, quantity: &Quantity) -> Result<u64, SpecError> {
    bytes_of(quantity).map_err(|rule| SpecError::new(field, rule))
}

/// The schema of a byte-size field.
pub fn bytes_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "x-kubernetes-int-or-string": true,
        "anyOf": [
            {"type": "integer", "minimum": 0, "maximum": BYTES_MAX_NUMBER},
            {"type": "string", "pattern": BYTES_PATTERN, "maxLength": 24},
        ],
        "x-asya-message": BYTES_RULE,
    })
}

impl JsonSchema for Quantity {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "x-kubernetes-int-or-string": true,
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": RESOURCE_PATTERN, "maxLength": 40},
            ],
            "x-asya-message": RESOURCE_RULE,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("256Mi").unwrap(), 256 << 20);
        assert_eq!(parse_bytes("1Gi").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("1.5Gi").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("1Ti").unwrap(), 1 << 40);
        assert_eq!(parse_bytes("500M").unwrap(), 500_000_000);
        assert_eq!(parse_bytes("64k").unwrap(), 64_000);
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert!(parse_bytes("9999.999999Pi").unwrap() < u64::MAX);
        for bad in ["500m", "-1Gi", "1e3", "12Xi", "", "1.5", " 1Gi", "99999Pi"] {
            assert!(
                parse_bytes(bad)
                    .unwrap_err()
                    .starts_with("must be a byte size"),
                "{bad}"
            );
        }
        assert!(bytes_of(&Quantity::Number(-1)).is_err());
        assert_eq!(bytes_of(&Quantity::Number(7)).unwrap(), 7);
    }

    #[test]
    fn resource_quantities() {
        for ok in ["500m", "2", "1.5Gi", "4G", "1e3", ".5", "100Mi"] {
            Quantity::Text(ok.into()).check_resource("r").unwrap();
        }
        for bad in ["-1", "1Xi", "", "abc", "+1"] {
            assert!(
                Quantity::Text(bad.into()).check_resource("r").is_err(),
                "{bad}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn bytes_accepted_iff_the_pattern_matches(text in "\\PC{0,30}") {
            proptest::prop_assert_eq!(parse_bytes(&text).is_ok(), BYTES.is_match(&text));
        }

        #[test]
        fn every_grammatical_byte_size_parses(text in BYTES_PATTERN.trim_start_matches('^').trim_end_matches('$')) {
            proptest::prop_assert!(parse_bytes(&text).is_ok(), "{}", text);
        }

        #[test]
        fn every_grammatical_resource_parses(text in RESOURCE_PATTERN.trim_start_matches('^').trim_end_matches('$')) {
            proptest::prop_assert!(Quantity::Text(text.clone()).check_resource("r").is_ok(), "{}", text);
        }
    }
}
