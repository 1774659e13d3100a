//! Forwarding to upstreams: header hygiene (hop-by-hop removal,
//! `X-Forwarded-*`), upgrades, and the timeouts on a response body as it
//! streams back. Bodies stream through in both directions; nothing here
//! buffers. Connections and targets are the `upstream` module's.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::framing;

/// Removes hop-by-hop headers, including any that `Connection` names.
///
/// One pass over the fields finds them, so a message without any costs no
/// hash lookups (one with `Connection: keep-alive`, two): this runs twice
/// per proxied request.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    framing::strip(headers, framing::is_hop_by_hop);
}

/// Headers with which some backends and frameworks replace the method or
/// path of a request (Symfony, Laravel, IIS, Express middleware).
static OVERRIDE_HEADERS: [HeaderName; 5] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
];

/// Removes every header that would override the method or path the
/// gateway routed on. One pass finds whether there is any.
pub fn strip_override_headers(headers: &mut HeaderMap) {
    if headers.keys().any(|name| OVERRIDE_HEADERS.contains(name)) {
        for name in &OVERRIDE_HEADERS {
            headers.remove(name);
        }
    }
}

/// Prepares an upstream response's headers for the client: a message
/// framed by `Transfer-Encoding` has no `Content-Length` (RFC 9112 6.3: the
/// former wins, and the latter would frame the client's copy wrongly), and
/// hop-by-hop headers go.
pub fn upstream_response_headers(headers: &mut HeaderMap) {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    strip_hop_by_hop(headers);
}

/// Prepares request headers for the upstream: hop-by-hop removed, `Host`
/// left to the client (it becomes the upstream's authority), and
/// `X-Forwarded-For/-Proto/-Host` added. `client_ip` is the peer's address,
/// `proto` the scheme the client spoke (`http` or `https`), `authority` the
/// request target's (HTTP/2's `:authority`, or an absolute-form target's),
/// the host when there is no `Host` field.
pub fn forwarded_request_headers(
    headers: &mut HeaderMap,
    client_ip: &HeaderValue,
    proto: &HeaderValue,
    authority: Option<&http::uri::Authority>,
) {
    // `TE: trailers` is the one TE that crosses (as HTTP/2 allows): gRPC
    // servers use it to know the client reads trailers.
    let trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers")))
    });
    strip_hop_by_hop(headers);
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let host = headers
        .remove(header::HOST)
        .or_else(|| authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
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
    request_id: crate::telemetry::RequestId,
    /// The target's in-flight slot, held until the body is done.
    _in_flight: Option<crate::upstream::InFlight>,
}

impl<B> TimedBody<B> {
    pub fn new(
        inner: B,
        read: Duration,
        deadline: Option<tokio::time::Instant>,
        request_id: crate::telemetry::RequestId,
        in_flight: Option<crate::upstream::InFlight>,
    ) -> Self {
        TimedBody {
            inner,
            read,
            deadline,
            timer: None,
            request_id,
            _in_flight: in_flight,
        }
    }
}

impl<B> TimedBody<B> {
    /// Logs why the body ends here; the error that ends it.
    fn cut_off(&self, total: bool) -> Box<dyn std::error::Error + Send + Sync> {
        let why = if total {
            "upstream response exceeded upstream_total_timeout_ms: cut off"
        } else {
            "upstream response body stalled past upstream_read_timeout_ms: cut off"
        };
        tracing::warn!(request_id = self.request_id.as_str(), "{why}");
        why.into()
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
        // A client reading slowly polls for each piece long after the
        // upstream sent it: the total deadline holds all the same.
        if let Some(deadline) = this.deadline
            && tokio::time::Instant::now() >= deadline
        {
            return Poll::Ready(Some(Err(this.cut_off(true))));
        }
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
        let total = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
        Poll::Ready(Some(Err(this.cut_off(total))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The protocol a request asks to switch to (`Upgrade`, with `upgrade` in
/// `Connection`; RFC 9110 7.8), e.g. `websocket`, if every protocol it
/// offers is one of `allowed` (lower case names, versions ignored). Any
/// other upgrade is ignored: the request goes on as plain HTTP, its
/// `Upgrade` removed with the other hop-by-hop headers.
pub fn allowed_upgrade(headers: &HeaderMap, allowed: &[String]) -> Option<HeaderValue> {
    let protocol = upgrade_protocol(headers)?;
    let offered = protocol.to_str().ok()?;
    let known = offered.split(',').all(|offer| {
        let name = offer.trim().split('/').next().unwrap_or_default();
        allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
    });
    known.then_some(protocol)
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

#[cfg(test)]
mod tests {
    use super::*;

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
