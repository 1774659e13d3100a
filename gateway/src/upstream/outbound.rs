//! Outbound HTTP on behalf of plugins: the per-API allowlist and the one
//! shared, pooled client every plugin call goes through.
//!
//! Deny by default: a URL whose host is not on the API's `outbound.allow`
//! list is refused before any connection is attempted, and redirects are
//! never followed (a redirect could lead off the list). This module knows
//! nothing about wasm; the plugin runtime maps its results onto the WIT types.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http::uri::{Scheme, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Body as _;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use tokio::sync::Semaphore;

use crate::config::{AllowRule, Limits, OutboundConfig};
use crate::telemetry::{self, RequestId, TraceContext};
use crate::tls::ClientTls;
use crate::upstream::{Failure, HttpClient, failure, pooled_client, root_cause};

/// What one API lets its plugins reach, and how.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    pub allow: Vec<AllowRule>,
    /// Default per-call timeout.
    pub timeout: Duration,
    /// The API's own client when it has `upstream_tls`; otherwise the
    /// shared one, which verifies against the system's trust store.
    pub client: Option<HttpClient<Full<Bytes>>>,
}

impl OutboundPolicy {
    /// An API's policy: its `outbound` settings, and its own client when
    /// it has `upstream_tls`.
    pub fn new(config: &OutboundConfig, tls: Option<&ClientTls>) -> Self {
        OutboundPolicy {
            allow: config.allow.clone(),
            timeout: config.timeout,
            client: tls.map(OutboundClient::pooled),
        }
    }
}

impl OutboundPolicy {
    /// Whether `uri`'s host and port are on the list.
    pub fn allows(&self, uri: &Uri) -> bool {
        AllowRule::any_allows(&self.allow, uri)
    }
}

/// An outbound request, already in host types.
#[derive(Debug)]
pub struct OutboundRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout: Option<Duration>,
}

#[derive(Debug)]
pub struct OutboundResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("host {0} is not on the API's outbound allowlist")]
    NotAllowed(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("timed out")]
    Timeout,
    #[error("response body larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Other(String),
}

impl OutboundError {
    /// A short name for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            OutboundError::NotAllowed(_) => "not_allowed",
            OutboundError::Invalid(_) => "invalid",
            OutboundError::Connect(_) => "connect_error",
            OutboundError::Timeout => "timeout",
            OutboundError::TooLarge(_) => "too_large",
            OutboundError::Other(_) => "other",
        }
    }
}

/// Why a batch stopped before every call had finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchStop {
    /// The deadline passed.
    Deadline,
    /// Enough calls had succeeded.
    Enough,
}

/// Runs `calls` (each tagged with its index among `len` results)
/// concurrently inside the caller's task, until all have finished, the
/// deadline passes, or `min_successes` of them answered 2xx. Results come
/// back in index order; `None` where a call was not given or was still
/// running when the batch stopped (dropping it cancelled it), and then the
/// second value says why.
pub async fn batch<F>(
    len: usize,
    calls: impl IntoIterator<Item = (usize, F)>,
    deadline: Duration,
    min_successes: Option<u32>,
) -> (Vec<Option<Result<OutboundResponse, OutboundError>>>, BatchStop)
where
    F: Future<Output = Result<OutboundResponse, OutboundError>>,
{
    use futures_util::StreamExt;
    let mut results: Vec<Option<_>> = (0..len).map(|_| None).collect();
    let mut running: futures_util::stream::FuturesUnordered<_> = calls
        .into_iter()
        .map(|(i, call)| async move { (i, call.await) })
        .collect();
    let deadline = tokio::time::Instant::now() + deadline;
    let mut successes = 0;
    let stop = loop {
        match tokio::time::timeout_at(deadline, running.next()).await {
            Ok(Some((i, result))) => {
                if result.as_ref().is_ok_and(|r| (200..300).contains(&r.status)) {
                    successes += 1;
                }
                results[i] = Some(result);
                if min_successes.is_some_and(|n| successes >= n) {
                    break BatchStop::Enough;
                }
            }
            // Every call finished: nothing is left to stop.
            Ok(None) => break BatchStop::Deadline,
            Err(_) => break BatchStop::Deadline,
        }
    };
    (results, stop)
}

/// The gateway's shared outbound client: keep-alive connections pooled across
/// all plugin invocations, and a gateway-wide cap on calls in flight.
///
/// hyper-util's client rather than a higher-level one: plugins send fully
/// formed requests, and redirects are never followed, so there is nothing for
/// a richer client to add but cost on every call.
#[derive(Debug, Clone)]
pub struct OutboundClient {
    client: HttpClient<Full<Bytes>>,
    in_flight: Arc<Semaphore>,
}

impl OutboundClient {
    /// A client allowing at most `max_in_flight` calls at once across the
    /// gateway; further calls wait (within their own timeout) for a slot.
    pub fn new(max_in_flight: usize) -> Self {
        OutboundClient {
            client: Self::pooled(&ClientTls::system()),
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
        }
    }

    /// A pooled client for an API's own `upstream_tls`.
    pub fn pooled(tls: &ClientTls) -> HttpClient<Full<Bytes>> {
        pooled_client(Duration::from_secs(5), Duration::from_secs(60), tls)
    }

    /// Sends `request` if `policy` allows its host and it is within the
    /// plugin's `limits` (headers, body); reads at most `max_body_bytes` of
    /// the response. Framing and connection headers the plugin set are
    /// dropped (see [`crate::framing`]).
    pub async fn send(
        &self,
        policy: &OutboundPolicy,
        request: OutboundRequest,
        limits: &Limits,
        request_id: &RequestId,
        trace: &TraceContext,
    ) -> Result<OutboundResponse, OutboundError> {
        let max_body_bytes = limits.max_body_bytes;
        let invalid_url = |why: &dyn std::fmt::Display| OutboundError::Invalid(format!("URL {:?}: {why}", request.url));
        let uri: Uri = request.url.parse().map_err(|e| invalid_url(&e))?;
        match uri.scheme() {
            Some(scheme) if *scheme == Scheme::HTTP || *scheme == Scheme::HTTPS => {}
            _ => return Err(invalid_url(&"expected an absolute http:// or https:// URL")),
        }
        if !policy.allows(&uri) {
            let host = uri.host().unwrap_or_default();
            return Err(OutboundError::NotAllowed(match uri.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            }));
        }
        let method = Method::from_bytes(request.method.as_bytes())
            .map_err(|_| OutboundError::Invalid(format!("method {:?}", request.method)))?;
        if request.body.len() > max_body_bytes {
            return Err(OutboundError::Invalid(format!(
                "body of {} bytes exceeds max_body_bytes ({max_body_bytes})",
                request.body.len()
            )));
        }
        let header_bytes: usize = request.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        if request.headers.len() > limits.max_headers || header_bytes > limits.max_header_bytes {
            return Err(OutboundError::Invalid(format!(
                "{} headers of {header_bytes} bytes exceed max_headers ({}) or max_header_bytes ({})",
                request.headers.len(),
                limits.max_headers,
                limits.max_header_bytes
            )));
        }
        let (mut headers, _dropped) =
            crate::framing::plugin_headers(&request.headers).map_err(OutboundError::Invalid)?;
        let mut outgoing = http::Request::new(Full::new(Bytes::from(request.body)));
        *outgoing.method_mut() = method;
        *outgoing.uri_mut() = uri;
        headers.reserve(3);
        headers.append(RequestId::HEADER, request_id.header().clone());
        let span = trace.span.as_ref().map(|parent| {
            let uri = outgoing.uri();
            let span = telemetry::child(
                parent,
                format!("{} {}", outgoing.method(), uri.host().unwrap_or_default()),
                SpanKind::Client,
                vec![
                    KeyValue::new("http.request.method", outgoing.method().to_string()),
                    KeyValue::new("url.full", uri.to_string()),
                    KeyValue::new("server.address", uri.host().unwrap_or_default().to_owned()),
                ],
            );
            telemetry::inject(&span, &mut headers);
            span
        });
        if span.is_none() {
            trace.forward_client_context(&mut headers);
        }
        *outgoing.headers_mut() = headers;
        let timeout = request.timeout.unwrap_or(policy.timeout);
        let call = async {
            let _slot = self
                .in_flight
                .acquire()
                .await
                .map_err(|e| OutboundError::Other(e.to_string()))?;
            let client = policy.client.as_ref().unwrap_or(&self.client);
            let response = client.request(outgoing).await.map_err(|e| match failure(&e) {
                Failure::Tls(reason) => OutboundError::Connect(format!("TLS handshake failed: {reason}")),
                Failure::Connect(why) => OutboundError::Connect(why),
                Failure::Reset(why) => OutboundError::Other(why),
                Failure::BodyTooLarge => OutboundError::Other("request body too large".into()),
            })?;
            let (parts, body) = response.into_parts();
            if body.size_hint().lower() > max_body_bytes as u64 {
                return Err(OutboundError::TooLarge(max_body_bytes));
            }
            let body = match Limited::new(body, max_body_bytes).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) if e.is::<LengthLimitError>() => return Err(OutboundError::TooLarge(max_body_bytes)),
                Err(e) => return Err(OutboundError::Other(root_cause(&*e))),
            };
            let headers = parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            Ok(OutboundResponse {
                status: parts.status.as_u16(),
                headers,
                body,
            })
        };
        let result = tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| OutboundError::Timeout)
            .and_then(|r| r);
        if let Some(span) = span {
            telemetry::end_call(&span, result.as_ref().map(|r| r.status).map_err(ToString::to_string));
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> OutboundPolicy {
        OutboundPolicy {
            allow: entries
                .iter()
                .map(|e| AllowRule::parse(e).expect("valid entry"))
                .collect(),
            timeout: Duration::from_secs(1),
            client: None,
        }
    }

    fn allows(p: &OutboundPolicy, url: &str) -> bool {
        p.allows(&url.parse().expect("valid url"))
    }

    #[test]
    fn empty_list_denies_everything() {
        assert!(!allows(&policy(&[]), "http://127.0.0.1:9000/"));
    }

    #[test]
    fn host_port_and_wildcards() {
        let p = policy(&["127.0.0.1:9002", "users.internal", "*.svc.local:8080", "[::1]:9000"]);
        assert!(allows(&p, "http://127.0.0.1:9002/x"));
        assert!(!allows(&p, "http://127.0.0.1:9003/x"));
        assert!(allows(&p, "http://users.internal/"));
        assert!(allows(&p, "https://USERS.internal:8443/"));
        assert!(allows(&p, "http://a.svc.local:8080/"));
        assert!(!allows(&p, "http://svc.local:8080/"));
        assert!(!allows(&p, "http://a.svc.local:8081/"));
        assert!(allows(&p, "http://[::1]:9000/"));
        assert!(!allows(&p, "http://evil.com/?users.internal"));
    }

    #[test]
    fn rejects_malformed_entries() {
        for bad in ["http://x", "x/y", "a*b", "host:port", ""] {
            assert!(AllowRule::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
