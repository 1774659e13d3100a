//! Addresses as the configuration states them: upstream base URLs, allowlist
//! entries, and where a plugin may send a request. Plain data and the pure
//! checks on it; the connections themselves are the `upstream` module's.

use http::uri::{Authority, Scheme, Uri};

/// A base URL: `http[s]://host:port` with an optional base path that every
/// forwarded path is appended to; or `h2c://host:port`, plain HTTP/2 with
/// prior knowledge (what a gRPC server without TLS speaks).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BaseUrl {
    scheme: Scheme,
    /// `h2c://`: HTTP/2 without TLS, no HTTP/1.1 upgrade dance.
    h2c: bool,
    authority: Authority,
    /// Without trailing slash; empty for none.
    base_path: String,
}

impl BaseUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| Err(format!("invalid upstream URL {s:?}: {why}"));
        let (h2c, s) = match s.strip_prefix("h2c://") {
            Some(rest) => (true, format!("http://{rest}")),
            None => (false, s.to_owned()),
        };
        let uri: Uri = match s.parse() {
            Ok(uri) => uri,
            Err(e) => return bad(&e.to_string()),
        };
        let scheme = match uri.scheme() {
            Some(scheme) if *scheme == Scheme::HTTP || *scheme == Scheme::HTTPS => scheme.clone(),
            _ => return bad("expected http://host[:port][/base/path], https://... or h2c://host:port"),
        };
        let Some(authority) = uri.authority().cloned() else {
            return bad("missing host");
        };
        if authority.host().is_empty() {
            return bad("missing host");
        }
        if authority.as_str().contains('@') {
            return bad("credentials in the URL are not supported");
        }
        if uri.query().is_some() {
            return bad("a query string is not allowed in an upstream URL");
        }
        Ok(BaseUrl {
            scheme,
            h2c,
            authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The URI for `path` (starting with `/`) and an optional query.
    pub fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let mut path_and_query =
            String::with_capacity(self.base_path.len() + path.len() + query.map_or(0, |q| q.len() + 1));
        path_and_query.push_str(&self.base_path);
        path_and_query.push_str(path);
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            path_and_query.push('?');
            path_and_query.push_str(q);
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
    }

    /// Whether it speaks HTTP/2 with prior knowledge over plain TCP.
    pub fn is_h2c(&self) -> bool {
        self.h2c
    }

    /// The host without IPv6 brackets, as written.
    pub fn host(&self) -> &str {
        self.authority.host().trim_start_matches('[').trim_end_matches(']')
    }

    /// The port, explicit or the scheme's default.
    pub fn port(&self) -> u16 {
        let default = if self.scheme == Scheme::HTTPS { 443 } else { 80 };
        self.authority.port_u16().unwrap_or(default)
    }

    /// Whether the host is a DNS name (not an IP address literal).
    pub fn is_dns_name(&self) -> bool {
        self.host().parse::<std::net::IpAddr>().is_err()
    }

    /// Whether `self` is on the same host and port as `other` (base paths
    /// may differ).
    pub fn same_origin(&self, other: &BaseUrl) -> bool {
        self.authority.host().eq_ignore_ascii_case(other.authority.host()) && self.port() == other.port()
    }
}

impl std::fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.h2c { "h2c" } else { self.scheme.as_str() };
        write!(f, "{scheme}://{}{}", self.authority, self.base_path)
    }
}

/// One allowlist entry: `host`, `host:port`, `*.suffix` or `*.suffix:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`: any subdomain of `example.com` (not the bare domain).
    Suffix(String),
}

impl AllowRule {
    pub fn parse(entry: &str) -> Result<Self, String> {
        let bad = |why: &str| Err(format!("invalid outbound.allow entry {entry:?}: {why}"));
        if entry.contains("://") || entry.contains('/') {
            return bad("write host or host:port, without scheme or path");
        }
        let (host, port) = match entry.rsplit_once(':') {
            // An IPv6 literal is written in brackets: [::1]:8080.
            Some((h, p)) if !h.ends_with(':') && (!h.contains(':') || h.starts_with('[')) => match p.parse::<u16>() {
                Ok(port) => (h, Some(port)),
                Err(_) => return bad("the port is not a number"),
            },
            _ => (entry, None),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        if host.is_empty() {
            return bad("empty host");
        }
        let host = match host.strip_prefix("*.") {
            Some(suffix) if !suffix.is_empty() && !suffix.contains('*') => HostPattern::Suffix(format!(".{suffix}")),
            _ if host.contains('*') => return bad("'*' is only allowed as a leading '*.'"),
            _ => HostPattern::Exact(host),
        };
        Ok(AllowRule { host, port })
    }

    /// Whether any of `rules` matches `uri`'s host and port (the scheme's
    /// default port when it names none).
    pub fn any_allows(rules: &[AllowRule], uri: &Uri) -> bool {
        let Some(host) = uri.host() else {
            return false;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme() == Some(&Scheme::HTTPS) { 443 } else { 80 });
        rules.iter().any(|rule| rule.allows(&host, port))
    }

    /// Whether the rule matches `host` (lower-case, no brackets) and `port`.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host_ok = match &self.host {
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(s) => host.ends_with(s.as_str()),
        };
        host_ok && self.port.is_none_or(|p| p == port)
    }
}

/// Where a request goes: one of the API's upstreams (by index: 0 is
/// `upstream`, then the `upstreams` in name order), or a URL a plugin named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Upstream(usize),
    Url(BaseUrl),
}

/// Where dynamic routing (a plugin's `continue` with an `upstream`) may send
/// an API's requests: deny by default. Allowed are the API's named
/// upstreams (by name), the host and port of any of their targets (with any
/// base path), and the hosts on the API's `routing.allow` list (the syntax
/// of `outbound.allow`).
#[derive(Debug, Clone, Default)]
pub struct RoutingPolicy {
    /// The names plugins may pick, with the upstream each stands for.
    pub names: Vec<(String, usize)>,
    /// Every target of every upstream of the API.
    pub origins: Vec<BaseUrl>,
    pub allow: Vec<AllowRule>,
}

impl RoutingPolicy {
    /// Parses and checks a plugin's upstream override: a name from
    /// `upstreams`, or an `http[s]://` URL.
    pub fn target(&self, upstream: &str) -> Result<Destination, String> {
        if !upstream.contains("://") {
            return match self.names.iter().find(|(name, _)| name == upstream) {
                Some((_, index)) => Ok(Destination::Upstream(*index)),
                None => {
                    let names: Vec<&str> = self.names.iter().map(|(n, _)| n.as_str()).collect();
                    Err(format!(
                        "upstream override {upstream:?} refused: not one of the API's upstreams ({}) and not a URL",
                        if names.is_empty() {
                            "it names none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    ))
                }
            };
        }
        let target = BaseUrl::parse(upstream)?;
        let host = target.host().to_ascii_lowercase();
        if self.origins.iter().any(|o| target.same_origin(o))
            || self.allow.iter().any(|rule| rule.allows(&host, target.port()))
        {
            Ok(Destination::Url(target))
        } else {
            Err(format!(
                "upstream override to {}:{} refused: not one of the API's upstreams and not on its routing.allow list",
                target.authority.host(),
                target.port()
            ))
        }
    }
}

/// Whether `host` (with or without a port) is this machine.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_with_and_without_ports() {
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "registry.example:5000",
            "10.0.0.1:5000",
            "localhost.example",
            "[2001:db8::1]:443",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn upstream_urls() {
        let u = BaseUrl::parse("http://127.0.0.1:9001/base/").expect("valid");
        assert_eq!(
            u.uri("/x", Some("a=1")).expect("uri").to_string(),
            "http://127.0.0.1:9001/base/x?a=1"
        );
        assert_eq!(u.to_string(), "http://127.0.0.1:9001/base");
        assert!(!u.is_dns_name());
        let secure = BaseUrl::parse("https://orders.internal/v1").expect("valid");
        assert_eq!(
            secure.uri("/x", None).expect("uri").to_string(),
            "https://orders.internal/v1/x"
        );
        assert_eq!(secure.port(), 443);
        assert!(secure.is_dns_name());
        assert!(!BaseUrl::parse("http://[::1]:80").expect("valid").is_dns_name());
        for bad in [
            "127.0.0.1:9001",
            "ftp://x",
            "http://",
            "http://a/?q",
            "not a url",
            "https://user@x",
        ] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn routing_allows_the_apis_upstreams_and_the_allowlist_only() {
        let policy = RoutingPolicy {
            names: vec![("eu".into(), 1), ("us".into(), 2)],
            origins: vec![
                BaseUrl::parse("http://10.0.0.1:8080/v1").expect("valid"),
                BaseUrl::parse("http://10.0.0.2:8080").expect("valid"),
            ],
            allow: vec![
                AllowRule::parse("127.0.0.1:9012").expect("valid"),
                AllowRule::parse("*.internal").expect("valid"),
            ],
        };
        assert_eq!(policy.target("eu"), Ok(Destination::Upstream(1)));
        assert_eq!(policy.target("us"), Ok(Destination::Upstream(2)));
        let err = policy.target("asia").expect_err("unknown name");
        assert!(err.contains("(eu, us)"), "{err}");
        for ok in [
            "http://10.0.0.1:8080",
            "http://10.0.0.1:8080/v2",
            "http://10.0.0.2:8080/x",
            "http://127.0.0.1:9012/x",
            "http://eu.internal",
            "http://EU.Internal:81",
        ] {
            assert!(policy.target(ok).is_ok(), "{ok} should be allowed");
        }
        for refused in [
            "http://10.0.0.1:8081",
            "http://10.0.0.1",
            "http://127.0.0.1:9013",
            "http://169.254.169.254/latest/meta-data",
            "http://internal",
            "http://[::1]:8080",
        ] {
            let err = policy.target(refused).expect_err(refused);
            assert!(err.contains("routing.allow"), "{err}");
        }
    }
}
