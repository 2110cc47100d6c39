//! Who is calling: a bearer API key mapped to its tenant (namespace), and each tenant's rate
//! limit (a token bucket).

use crate::config::Config;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The tenant a request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// Its namespace.
    pub namespace: String,
    /// The key's name (for logs).
    pub key_name: String,
}

/// Maps API keys to tenants.
#[derive(Debug, Default)]
pub struct Authenticator {
    by_digest: HashMap<[u8; 32], Tenant>,
}

impl Authenticator {
    /// The keys of `config`.
    pub fn new(config: &Config) -> Self {
        let mut by_digest = HashMap::new();
        for tenant in &config.tenants {
            for key in &tenant.api_keys {
                let mut digest = [0u8; 32];
                if hex::decode_to_slice(&key.sha256, &mut digest).is_ok() {
                    by_digest.insert(
                        digest,
                        Tenant {
                            namespace: tenant.namespace.clone(),
                            key_name: key.name.clone(),
                        },
                    );
                }
            }
        }
        Authenticator { by_digest }
    }

    /// The tenant of an `Authorization` header value (`Bearer <key>`), if the key is known.
    pub fn tenant(&self, authorization: Option<&str>) -> Option<Tenant> {
        let key = authorization?
            .strip_prefix("Bearer ")
            .or_else(|| authorization?.strip_prefix("bearer "))?
            .trim();
        if key.is_empty() {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.by_digest.get(&digest).cloned()
    }
}

/// The SHA-256 hex digest of an API key (what the config holds).
pub fn key_digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A token bucket per tenant.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `rate` requests per second sustained, `burst` at once.
    pub fn new(rate: f64, burst: f64) -> Self {
        RateLimiter {
            rate,
            burst,
            buckets: Mutex::default(),
        }
    }

    /// Takes one request from `tenant`'s bucket; `Err(wait)` when it is empty.
    pub fn check(&self, tenant: &str) -> Result<(), Duration> {
        self.check_at(tenant, Instant::now())
    }

    fn check_at(&self, tenant: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().expect("rate buckets");
        let (tokens, last) = buckets
            .entry(tenant.to_owned())
            .or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * self.rate)
            .min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_their_tenant_and_nothing_else_does() {
        let config: Config = serde_yaml_ng::from_str(&format!(
            "tenants:\n- namespace: a\n  apiKeys: [{{name: k1, sha256: {}}}]\n- namespace: b\n  apiKeys: [{{name: k2, sha256: {}}}]\n",
            key_digest("alpha"),
            key_digest("beta")
        ))
        .unwrap();
        let auth = Authenticator::new(&config);
        assert_eq!(auth.tenant(Some("Bearer alpha")).unwrap().namespace, "a");
        assert_eq!(auth.tenant(Some("Bearer beta")).unwrap().namespace, "b");
        assert_eq!(auth.tenant(Some("Bearer gamma")), None);
        assert_eq!(auth.tenant(Some("alpha")), None);
        assert_eq!(auth.tenant(Some("Bearer ")), None);
        assert_eq!(auth.tenant(None), None);
    }

    #[test]
    fn a_bucket_refuses_past_its_burst_and_refills_at_its_rate() {
        let limiter = RateLimiter::new(10.0, 3.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.check_at("a", t0).unwrap();
        }
        let wait = limiter.check_at("a", t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        limiter.check_at("b", t0).unwrap();
        limiter
            .check_at("a", t0 + Duration::from_millis(150))
            .unwrap();
    }
}
