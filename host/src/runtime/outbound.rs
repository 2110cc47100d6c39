//! Outbound HTTP from inside the sandbox (`wasi:http/outgoing-handler`), granted per actor.
//!
//! Every component may import `wasi:http`, but a request leaves the host only when its host is in
//! the actor's `sandbox.allowedHosts`. Anything else fails inside the handler with
//! `error-code.HTTP-request-denied`, which the guest adapter raises as `SandboxDenied`. The
//! allowlist is pure data ([`HostAllowlist`]) so its matching rules are unit-tested on their own.

use anyhow::{bail, Result};
use std::sync::Arc;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// One `allowedHosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPattern {
    /// `Some("https")` when the entry named a scheme; then only that scheme matches.
    scheme: Option<String>,
    /// Lower-case host name or IP literal; for `*.example.com` this is `example.com`.
    host: String,
    /// `*.example.com`: any subdomain (not the bare domain).
    subdomains: bool,
    /// `Some(port)` when the entry named one; otherwise the scheme's default port only.
    port: Option<u16>,
}

/// The hosts an actor may reach over HTTP(S). Empty (the default) denies every request.
///
/// Entries: `api.example.com` (ports 80 and 443), `api.example.com:8443`, `*.example.com` (any
/// subdomain), `https://api.example.com` (that scheme only), `127.0.0.1:8080`, `[::1]:8080`.
/// Matching ignores case. An entry never matches a different port than it names: a bare host
/// means the scheme's default port, so a grant for `example.com` does not open `example.com:22`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostAllowlist {
    patterns: Vec<HostPattern>,
}

impl HostAllowlist {
    /// Parses the manifest's `allowedHosts`; a malformed entry is an error naming it.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self> {
        let patterns = entries
            .iter()
            .map(|e| parse_pattern(e.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        Ok(HostAllowlist { patterns })
    }

    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether a request to `scheme://host:port` may leave the sandbox. `port` is the explicit
    /// port of the URL, if any.
    pub fn permits(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let scheme = scheme.to_ascii_lowercase();
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let Some(effective_port) = port.or_else(|| default_port(&scheme)) else {
            return false;
        };
        self.patterns.iter().any(|p| {
            let scheme_ok = p.scheme.as_deref().is_none_or(|s| s == scheme);
            let host_ok = if p.subdomains {
                host.len() > p.host.len()
                    && host.ends_with(&p.host)
                    && host.as_bytes()[host.len() - p.host.len() - 1] == b'.'
            } else {
                host == p.host
            };
            let port_ok = match p.port {
                Some(allowed) => allowed == effective_port,
                None => match &p.scheme {
                    Some(s) => default_port(s) == Some(effective_port),
                    None => effective_port == 80 || effective_port == 443,
                },
            };
            scheme_ok && host_ok && port_ok
        })
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

fn parse_pattern(entry: &str) -> Result<HostPattern> {
    let text = entry.trim();
    let (scheme, rest) = match text.split_once("://") {
        Some((s, rest)) => {
            let s = s.to_ascii_lowercase();
            if default_port(&s).is_none() {
                bail!("allowedHosts entry '{entry}': only http:// and https:// are supported");
            }
            (Some(s), rest)
        }
        None => (None, text),
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains('@') {
        bail!(
            "allowedHosts entry '{entry}' is not a host: use `api.example.com`, \
             `api.example.com:8443`, `*.example.com` or `https://api.example.com`"
        );
    }
    let (host, port) = split_host_port(rest)
        .ok_or_else(|| anyhow::anyhow!("allowedHosts entry '{entry}' has a bad port"))?;
    let (host, subdomains) = match host.strip_prefix("*.") {
        Some(domain) => (domain, true),
        None => (host, false),
    };
    if host.is_empty() || host.contains('*') {
        bail!(
            "allowedHosts entry '{entry}': a wildcard may only start the name, as `*.example.com`"
        );
    }
    Ok(HostPattern {
        scheme,
        host: host.trim_end_matches('.').to_ascii_lowercase(),
        subdomains,
        port,
    })
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`; `None` for a port that is not a number.
fn split_host_port(text: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((host, Some(port.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match text.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address.
        Some((host, _)) if host.contains(':') => Some((text, None)),
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((text, None)),
    }
}

/// The `wasi:http` hooks of one store: checks each request against the actor's allowlist before
/// it is sent, and remembers the last refusal so the host can log it.
pub struct OutboundHttp {
    allowlist: Arc<HostAllowlist>,
    /// `scheme://authority` of the last refused request.
    pub last_denied: Option<String>,
}

impl OutboundHttp {
    /// Hooks that enforce `allowlist`.
    pub fn new(allowlist: Arc<HostAllowlist>) -> Self {
        OutboundHttp {
            allowlist,
            last_denied: None,
        }
    }
}

type ResponseFuture = Box<
    dyn std::future::Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> ResponseFuture {
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("https").to_owned();
        let permitted = uri
            .authority()
            .is_some_and(|a| self.allowlist.permits(&scheme, a.host(), a.port_u16()));
        if !permitted {
            let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
            self.last_denied = Some(format!("{scheme}://{authority}"));
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        _ = fut;
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> HostAllowlist {
        HostAllowlist::parse(entries).unwrap()
    }

    #[test]
    fn empty_denies_everything() {
        let l = HostAllowlist::default();
        assert!(!l.permits("https", "api.openai.com", None));
        assert!(!l.permits("http", "127.0.0.1", Some(8080)));
    }

    #[test]
    fn a_bare_host_opens_the_default_ports_only() {
        let l = list(&["api.example.com"]);
        assert!(l.permits("https", "api.example.com", None));
        assert!(l.permits("http", "API.Example.COM", None));
        assert!(l.permits("https", "api.example.com", Some(443)));
        assert!(!l.permits("https", "api.example.com", Some(8443)));
        assert!(!l.permits("https", "evil.com", None));
        assert!(!l.permits("https", "api.example.com.evil.com", None));
        assert!(!l.permits("https", "example.com", None));
    }

    #[test]
    fn ports_schemes_and_wildcards() {
        let l = list(&[
            "127.0.0.1:8080",
            "https://secure.example.com",
            "*.models.dev",
        ]);
        assert!(l.permits("http", "127.0.0.1", Some(8080)));
        assert!(!l.permits("http", "127.0.0.1", Some(8081)));
        assert!(!l.permits("http", "127.0.0.1", None));
        assert!(l.permits("https", "secure.example.com", None));
        assert!(!l.permits("http", "secure.example.com", None));
        assert!(l.permits("https", "eu.models.dev", None));
        assert!(l.permits("https", "a.b.models.dev", None));
        assert!(!l.permits("https", "models.dev", None));
        assert!(!l.permits("https", "xmodels.dev", None));
        assert!(!l.permits("ftp", "eu.models.dev", None));
    }

    #[test]
    fn ipv6_literals() {
        let l = list(&["[::1]:9000", "::2"]);
        assert!(l.permits("http", "[::1]", Some(9000)));
        assert!(l.permits("http", "::1", Some(9000)));
        assert!(!l.permits("http", "::1", Some(9001)));
        assert!(l.permits("https", "::2", None));
    }

    #[test]
    fn malformed_entries_are_rejected_with_the_entry() {
        for bad in [
            "",
            "ftp://x.com",
            "https://x.com/path",
            "user@x.com",
            "x.com:http",
            "a.*.com",
            "*.",
        ] {
            let err = HostAllowlist::parse(&[bad]).unwrap_err().to_string();
            assert!(err.contains("allowedHosts"), "{bad}: {err}");
        }
    }
}
