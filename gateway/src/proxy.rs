//! Forwarding to upstreams: the upstream URL type, header hygiene
//! (hop-by-hop removal, `X-Forwarded-*`) and the pooled keep-alive client.
//! Bodies stream through in both directions; nothing here buffers.

use std::time::Duration;

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme, Uri};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::error::root_cause;
use crate::outbound::AllowRule;
use crate::tls::ClientTls;

/// An upstream base URL: `http[s]://host:port` with an optional base path
/// that every forwarded path is appended to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    /// Without trailing slash; empty for none.
    base_path: String,
}

impl Upstream {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| Err(format!("invalid upstream URL {s:?}: {why}"));
        let uri: Uri = match s.parse() {
            Ok(uri) => uri,
            Err(e) => return bad(&e.to_string()),
        };
        let scheme = match uri.scheme() {
            Some(scheme) if *scheme == Scheme::HTTP || *scheme == Scheme::HTTPS => scheme.clone(),
            _ => return bad("expected http://host[:port][/base/path] or https://..."),
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
        Ok(Upstream {
            scheme,
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
}

impl Upstream {
    /// Whether `self` is on the same host and port as `other` (base paths
    /// may differ).
    fn same_origin(&self, other: &Upstream) -> bool {
        self.authority.host().eq_ignore_ascii_case(other.authority.host()) && self.port() == other.port()
    }

    fn port(&self) -> u16 {
        let default = if self.scheme == Scheme::HTTPS { 443 } else { 80 };
        self.authority.port_u16().unwrap_or(default)
    }
}

/// Where dynamic routing (a plugin's `continue` with an `upstream`) may send
/// an API's requests: deny by default. Allowed are the API's own upstream
/// host and port (with any base path), and the hosts on the API's
/// `routing.allow` list (the syntax of `outbound.allow`).
#[derive(Debug, Clone)]
pub struct RoutingPolicy {
    pub upstream: Upstream,
    pub allow: Vec<AllowRule>,
}

impl RoutingPolicy {
    /// Parses and checks a plugin's upstream override.
    pub fn target(&self, url: &str) -> Result<Upstream, String> {
        let target = Upstream::parse(url)?;
        let host = target.authority.host().trim_start_matches('[').trim_end_matches(']');
        let host = host.to_ascii_lowercase();
        if target.same_origin(&self.upstream) || self.allow.iter().any(|rule| rule.allows(&host, target.port())) {
            Ok(target)
        } else {
            Err(format!(
                "upstream override to {}:{} refused: not the API's upstream and not on its routing.allow list",
                target.authority.host(),
                target.port()
            ))
        }
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

/// Headers that describe one connection, not the message (RFC 9110 7.6.1),
/// and the non-standard `Proxy-Connection` some clients still send.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("proxy-connection"),
];

/// Whether `name` is hop-by-hop by itself (not counting what `Connection`
/// names).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// Removes hop-by-hop headers, including any that `Connection` names.
///
/// One pass over the fields finds them, so a message without any costs no
/// hash lookups (one with `Connection: keep-alive`, two): this runs twice
/// per proxied request.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, is_hop_by_hop);
}

/// Removes every field `doomed` picks, and every field a `Connection` field
/// names; returns the names removed.
pub fn strip(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = Vec::new();
    for (name, value) in headers.iter() {
        if name == header::CONNECTION {
            let named = value.to_str().unwrap_or_default().split(',');
            names.extend(named.filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()));
        }
        if doomed(name) {
            names.push(name.clone());
        }
    }
    for name in &names {
        headers.remove(name);
    }
    names
}

/// Prepares request headers for the upstream: hop-by-hop removed, `Host`
/// left to the client (it becomes the upstream's authority), and
/// `X-Forwarded-For/-Proto/-Host` added. `client_ip` is the peer's address,
/// `proto` the scheme the client spoke (`http` or `https`).
pub fn forwarded_request_headers(headers: &mut HeaderMap, client_ip: &HeaderValue, proto: &HeaderValue) {
    strip_hop_by_hop(headers);
    let host = headers.remove(header::HOST);
    let xff = HeaderName::from_static("x-forwarded-for");
    let forwarded_for = match headers
        .get(&xff)
        .map(|prior| [prior.as_bytes(), b", ", client_ip.as_bytes()].concat())
    {
        Some(list) => HeaderValue::from_bytes(&list).ok(),
        None => Some(client_ip.clone()),
    };
    if let Some(value) = forwarded_for {
        headers.insert(xff, value);
    }
    headers.insert(HeaderName::from_static("x-forwarded-proto"), proto.clone());
    if let Some(host) = host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot connect to upstream: {0}")]
    Connect(String),
    #[error("TLS handshake with upstream {upstream} failed: {reason}")]
    Tls { upstream: String, reason: String },
    /// The client's streamed body went over the API's limit on its way.
    #[error("request body over the API's max_request_body_bytes; sending it was stopped")]
    RequestBodyTooLarge,
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream request failed: {0}")]
    Other(String),
}

/// A pooled keep-alive client over plain TCP or TLS, HTTP/1.1 or HTTP/2
/// (offered by ALPN on TLS connections).
pub type HttpClient<B> = Client<HttpsConnector<HttpConnector>, B>;

/// The pooled keep-alive client proxied requests go through: one shared by
/// the APIs that use the system's trust store, one per API with its own
/// `upstream_tls`.
#[derive(Debug, Clone)]
pub struct ProxyClient {
    client: HttpClient<Body>,
}

impl ProxyClient {
    pub fn new(tls: &ClientTls) -> Self {
        ProxyClient {
            client: pooled_client(Duration::from_secs(90), tls),
        }
    }
}

/// A keep-alive client: TCP_NODELAY, 5 s connect timeout, idle connections
/// kept for `idle`, `https://` verified with `tls`. Used for upstreams and
/// plugin calls alike.
pub fn pooled_client<B>(idle: Duration, tls: &ClientTls) -> HttpClient<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(Duration::from_secs(5)));
    tcp.enforce_http(false);
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config((*tls.config).clone())
        .https_or_http();
    let builder = match &tls.server_name {
        Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name.clone())),
        None => builder,
    };
    let connector = builder.enable_http1().enable_http2().wrap_connector(tcp);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(idle)
        .pool_timer(TokioTimer::new())
        .build(connector)
}

impl ProxyClient {
    /// Sends `request` (absolute URI already set) and waits at most `timeout`
    /// for the response head. The response body streams afterwards. The
    /// response is as the upstream sent it: its connection headers (and
    /// an upgrade) are the caller's to handle.
    pub async fn exchange(
        &self,
        request: http::Request<Body>,
        timeout: Duration,
    ) -> Result<http::Response<hyper::body::Incoming>, ProxyError> {
        // Kept for an error message (a reference count, not a copy).
        let upstream = request.uri().authority().cloned();
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => Err(ProxyError::Timeout(timeout)),
            // With TLS 1.3 a server that refuses the client's certificate
            // says so after the client finished its part of the handshake:
            // look for a TLS error whatever the stage.
            Ok(Err(e)) => Err(match crate::tls::handshake_failure(&e) {
                Some(reason) => ProxyError::Tls {
                    upstream: upstream.map(|a| a.to_string()).unwrap_or_default(),
                    reason,
                },
                None if over_body_limit(&e) => ProxyError::RequestBodyTooLarge,
                None if e.is_connect() => ProxyError::Connect(root_cause(&e)),
                None => ProxyError::Other(root_cause(&e)),
            }),
            Ok(Ok(response)) => Ok(response),
        }
    }
}

/// An upstream's response body under the API's read timeout (the longest
/// silence between two pieces) and total deadline: past either, the body
/// ends with an error, so the client's response is cut off (its status has
/// long been sent) and the upstream connection is dropped, rather than a
/// stalled upstream holding the client forever.
///
/// The timer is only armed when the upstream has nothing ready, so a body
/// that arrives whole costs no timer at all.
#[derive(Debug)]
pub struct TimedBody<B> {
    inner: B,
    read: Duration,
    deadline: Option<tokio::time::Instant>,
    /// Armed while waiting for the upstream; `None` after each piece.
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    request_id: crate::outbound::RequestId,
}

impl<B> TimedBody<B> {
    pub fn new(
        inner: B,
        read: Duration,
        deadline: Option<tokio::time::Instant>,
        request_id: crate::outbound::RequestId,
    ) -> Self {
        TimedBody {
            inner,
            read,
            deadline,
            timer: None,
            request_id,
        }
    }
}

impl<B> hyper::body::Body for TimedBody<B>
where
    B: hyper::body::Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
            }
            Poll::Pending => {}
        }
        let (read, deadline) = (this.read, this.deadline);
        let timer = this.timer.get_or_insert_with(|| {
            let due = tokio::time::Instant::now() + read;
            Box::pin(tokio::time::sleep_until(deadline.map_or(due, |d| d.min(due))))
        });
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let why = if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            "upstream response exceeded upstream_total_timeout_ms: cut off"
        } else {
            "upstream response body stalled past upstream_read_timeout_ms: cut off"
        };
        tracing::warn!(request_id = this.request_id.as_str(), "{why}");
        Poll::Ready(Some(Err(why.into())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether sending failed because the request body went over its limit.
fn over_body_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// The protocol a request asks to switch to (`Upgrade`, with `upgrade` in
/// `Connection`; RFC 9110 7.8), e.g. `websocket`.
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers.get_all(header::CONNECTION).iter().any(|value| {
        value
            .to_str()
            .is_ok_and(|v| v.split(',').any(|token| token.trim().eq_ignore_ascii_case("upgrade")))
    });
    if asks {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

impl ProxyClient {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        let u = Upstream::parse("http://127.0.0.1:9001/base/").expect("valid");
        assert_eq!(
            u.uri("/x", Some("a=1")).expect("uri").to_string(),
            "http://127.0.0.1:9001/base/x?a=1"
        );
        assert_eq!(u.to_string(), "http://127.0.0.1:9001/base");
        let secure = Upstream::parse("https://orders.internal/v1").expect("valid");
        assert_eq!(
            secure.uri("/x", None).expect("uri").to_string(),
            "https://orders.internal/v1/x"
        );
        assert_eq!(secure.port(), 443);
        for bad in [
            "127.0.0.1:9001",
            "ftp://x",
            "http://",
            "http://a/?q",
            "not a url",
            "https://user@x",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn routing_allows_the_apis_upstream_host_and_the_allowlist_only() {
        let policy = RoutingPolicy {
            upstream: Upstream::parse("http://10.0.0.1:8080/v1").expect("valid"),
            allow: vec![
                AllowRule::parse("127.0.0.1:9012").expect("valid"),
                AllowRule::parse("*.internal").expect("valid"),
            ],
        };
        for ok in [
            "http://10.0.0.1:8080",
            "http://10.0.0.1:8080/v2",
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

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
        h.append(header::CONNECTION, HeaderValue::from_static("x-other"));
        for name in [
            "x-secret",
            "x-other",
            "keep-alive",
            "proxy-connection",
            "te",
            "upgrade",
            "x-kept",
        ] {
            h.insert(name, HeaderValue::from_static("1"));
        }
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.append("x-kept", HeaderValue::from_static("2"));
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
        assert_eq!(left, [("x-kept", &b"1"[..]), ("x-kept", &b"2"[..])]);

        let mut plain = HeaderMap::new();
        plain.insert(header::HOST, HeaderValue::from_static("example.com"));
        plain.insert("x-user", HeaderValue::from_static("alice"));
        let before = plain.clone();
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain, before);
    }
}
