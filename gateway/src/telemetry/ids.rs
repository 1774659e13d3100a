//! What identifies one request wherever it goes: the gateway's request id
//! and the W3C trace context that every upstream and outbound call carries.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

/// What every outbound call carries from the client's request besides its
/// id: the W3C trace context. Taken from the request's headers without
/// copying (a header value shares the request's bytes).
#[derive(Debug, Clone, Default)]
pub struct TraceContext {
    traceparent: Option<HeaderValue>,
    tracestate: Option<HeaderValue>,
    /// With traces on: the span calls made now are children of (the
    /// request's, or a plugin invocation's). Outbound calls then carry
    /// their own span's `traceparent` instead of the client's.
    pub span: Option<opentelemetry::Context>,
}

impl TraceContext {
    /// The client's trace context, and the request's span if traced.
    pub fn from_headers(headers: &HeaderMap, span: Option<opentelemetry::Context>) -> Self {
        TraceContext {
            traceparent: headers.get("traceparent").cloned(),
            tracestate: headers.get("tracestate").cloned(),
            span,
        }
    }

    /// Without a span of ours: passes the client's own context on as it
    /// came.
    pub fn forward_client_context(&self, headers: &mut HeaderMap) {
        for (name, value) in [("traceparent", &self.traceparent), ("tracestate", &self.tracestate)] {
            if let Some(value) = value {
                headers.append(HeaderName::from_static(name), value.clone());
            }
        }
    }
}

/// The gateway's id for one request, held both as text (log lines,
/// plugins, error bodies) and as a header value (the response to the client,
/// the upstream request, every outbound call), so no use converts it.
#[derive(Debug, Clone)]
pub struct RequestId {
    text: Arc<str>,
    header: HeaderValue,
}

impl RequestId {
    /// The header that carries it, both ways.
    pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

    /// The client's `x-request-id` when usable (1 to 128 visible ASCII
    /// characters; the value is shared, not copied), otherwise a new id.
    pub fn for_request(headers: &HeaderMap) -> Self {
        if let Some(header) = headers.get(&Self::HEADER).filter(|v| !v.is_empty() && v.len() <= 128)
            && let Ok(text) = header.to_str()
        {
            return RequestId {
                text: text.into(),
                header: header.clone(),
            };
        }
        Self::generate()
    }

    /// A unique id without a system call: a random prefix chosen at
    /// start-up and a counter, formatted as a UUID.
    fn generate() -> Self {
        use std::sync::OnceLock;
        use std::sync::atomic::{AtomicU64, Ordering};
        static PREFIX: OnceLock<u64> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = *PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
        let id = uuid::Uuid::from_u64_pair(prefix, COUNTER.fetch_add(1, Ordering::Relaxed));
        let mut buffer = uuid::Uuid::encode_buffer();
        let text = &*id.hyphenated().encode_lower(&mut buffer);
        RequestId {
            text: text.into(),
            header: HeaderValue::from_str(text).expect("a UUID is a valid header value"),
        }
    }

    /// No request: the id of plugin calls made outside one (while loading
    /// a plugin, or in a benchmark).
    pub fn none() -> Self {
        RequestId {
            text: "".into(),
            header: HeaderValue::from_static(""),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn header(&self) -> &HeaderValue {
        &self.header
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        let with = |value: &[u8]| {
            let mut headers = HeaderMap::new();
            headers.insert(RequestId::HEADER, HeaderValue::from_bytes(value).expect("valid value"));
            RequestId::for_request(&headers)
        };
        let given = with(b"req-123");
        assert_eq!(
            (given.as_str(), given.header().as_bytes()),
            ("req-123", &b"req-123"[..])
        );

        let long = [b'a'; 129];
        let made: Vec<RequestId> = vec![
            RequestId::for_request(&HeaderMap::new()),
            with(b""),
            with(&long),
            with("caf\u{e9}".as_bytes()),
        ];
        for id in &made {
            assert!(uuid::Uuid::parse_str(id.as_str()).is_ok(), "{id:?}");
            assert_eq!(id.header().as_bytes(), id.as_str().as_bytes());
        }
        assert_ne!(made[0].as_str(), made[1].as_str());
        assert_eq!(with(&long[..128]).as_str().len(), 128);
    }
}
