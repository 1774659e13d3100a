//! The one place gateway errors become HTTP responses. Clients get a short
//! JSON body with the status, a generic message and the request id, plus
//! the headers the error carries (`Retry-After`, a refusing limit's
//! `X-RateLimit-*`); the details (addresses, plugin traps) go to the log
//! only. Each error says whose fault it is ([`Blame`]), which the log line,
//! the metrics and the access log report. A plugin's fallback response is
//! made in `hooks`, as it is a response and not an error.

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};

use crate::plugin::PluginError;
use crate::server::auth::Denied;
use crate::server::jwt::TokenError;
use crate::server::policy::Refusal;
use crate::telemetry::Blame;
use crate::upstream::UpstreamError;

/// Who is to blame for a failed request, and therefore what the client sees.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no API matches this path")]
    NoRoute,
    #[error("no endpoint of this API matches this path and method")]
    NoEndpoint,
    #[error("invalid path: {0}")]
    BadPath(#[from] crate::server::canonical::PathError),
    #[error("this API is served over TLS only")]
    TlsRequired,
    #[error("this API needs a client certificate")]
    ClientCertRequired,
    #[error("request body not received within {0} ms")]
    BodyTimeout(u64),
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("cannot read the request body: {0}")]
    BadBody(String),
    #[error("plugin {plugin} failed: {source}")]
    Plugin { plugin: String, source: PluginError },
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("upstream response larger than {0} bytes, the limit of a response plugin that reads it")]
    ResponseTooLarge(usize),
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error(transparent)]
    Refused(#[from] crate::server::policy::Refusal),
    #[error("cannot build the upstream request: {0}")]
    Internal(String),
}

impl RequestError {
    /// `rate` or `quota` when a limit refused the request.
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            RequestError::Denied(Denied::RateLimited(_)) => Some("rate"),
            RequestError::Denied(Denied::QuotaExceeded(_)) => Some("quota"),
            _ => None,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::NoRoute | RequestError::NoEndpoint => StatusCode::NOT_FOUND,
            RequestError::BadPath(_) => StatusCode::BAD_REQUEST,
            RequestError::TlsRequired => StatusCode::MISDIRECTED_REQUEST,
            RequestError::ClientCertRequired => StatusCode::FORBIDDEN,
            RequestError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            RequestError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::BadBody(_) => StatusCode::BAD_REQUEST,
            RequestError::Plugin { source, .. } => source.status(),
            RequestError::Upstream(UpstreamError::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
            RequestError::Upstream(UpstreamError::Unavailable { .. } | UpstreamError::AtCapacity(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RequestError::Upstream(UpstreamError::Invalid(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            RequestError::Upstream(_) | RequestError::ResponseTooLarge(_) => StatusCode::BAD_GATEWAY,
            RequestError::Denied(denied) => match denied {
                Denied::MissingKey | Denied::UnknownKey | Denied::Expired | Denied::Token(_) => {
                    StatusCode::UNAUTHORIZED
                }
                Denied::NoAccess => StatusCode::FORBIDDEN,
                Denied::RepeatedHeader(_) => StatusCode::BAD_REQUEST,
                Denied::RateLimited(_) | Denied::QuotaExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
                Denied::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
            RequestError::Refused(_) => StatusCode::FORBIDDEN,
            RequestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whose fault the failure is.
    pub fn blame(&self) -> Blame {
        match self {
            RequestError::NoRoute
            | RequestError::NoEndpoint
            | RequestError::BadPath(_)
            | RequestError::TlsRequired
            | RequestError::ClientCertRequired
            | RequestError::BodyTimeout(_)
            | RequestError::BodyTooLarge(_)
            | RequestError::BadBody(_)
            | RequestError::Refused(_) => Blame::Client,
            RequestError::Denied(Denied::Store(_)) => Blame::Gateway,
            RequestError::Denied(_) => Blame::Client,
            // Out of instance slots: the gateway's capacity, not the plugin.
            RequestError::Plugin {
                source: PluginError::PoolExhausted(_),
                ..
            } => Blame::Gateway,
            RequestError::Plugin { .. } => Blame::Plugin,
            RequestError::Upstream(UpstreamError::Invalid(_)) | RequestError::Internal(_) => Blame::Gateway,
            RequestError::Upstream(_) | RequestError::ResponseTooLarge(_) => Blame::Upstream,
        }
    }

    /// What the client is told: no addresses, no plugin internals.
    fn public_message(&self) -> &'static str {
        match self {
            RequestError::NoRoute => "no API matches this path",
            RequestError::NoEndpoint => "no endpoint matches this path and method",
            RequestError::BadPath(_) => "invalid request path",
            RequestError::TlsRequired => "this API is served over HTTPS only",
            RequestError::ClientCertRequired => "this API needs a client certificate",
            RequestError::BodyTimeout(_) => "request body not received in time",
            RequestError::BodyTooLarge(_) => "request body too large",
            RequestError::BadBody(_) => "cannot read the request body",
            RequestError::Plugin { source, .. } => match source {
                PluginError::PoolExhausted(_) => "plugin capacity exhausted, retry later",
                PluginError::Timeout(_) | PluginError::CpuBudget(_) => "plugin timed out",
                _ => "plugin failed",
            },
            RequestError::Upstream(UpstreamError::Timeout { .. }) => "upstream timed out",
            RequestError::Upstream(UpstreamError::AtCapacity(_)) => "upstream at capacity, retry later",
            RequestError::Upstream(UpstreamError::Invalid(_)) => "internal gateway error",
            RequestError::Upstream(_) => "upstream unavailable",
            RequestError::ResponseTooLarge(_) => "upstream response too large",
            RequestError::Denied(denied) => match denied {
                Denied::MissingKey => "missing API key",
                Denied::UnknownKey => "unknown API key",
                Denied::Expired => "API key expired",
                Denied::NoAccess => "this key may not access this API, path or method",
                Denied::RepeatedHeader(_) => "a header the rate limit counts callers by is sent more than once",
                Denied::RateLimited(_) => "rate limit exceeded",
                Denied::QuotaExceeded(_) => "quota exceeded",
                Denied::Store(_) => "session store unavailable, retry later",
                Denied::Token(_) => "invalid token",
            },
            RequestError::Refused(refusal) => match refusal {
                Refusal::ClientIp => "your address may not call this API",
                Refusal::Endpoint => "this endpoint is forbidden",
                Refusal::Cors => "cross-origin request not allowed",
            },
            RequestError::Internal(_) => "internal gateway error",
        }
    }

    pub fn into_response(self, request_id: &str) -> Response {
        let mut response = match &self {
            // The client's own spelling, so saying what is wrong with it
            // gives nothing away.
            RequestError::BadPath(why) => {
                json_error(self.status(), &format!("invalid request path: {why}"), request_id)
            }
            // RFC 6750: which of the token's checks failed is the
            // client's to know (and tells nothing of the keys).
            RequestError::Denied(Denied::Token(why)) => {
                let mut response = json_error(self.status(), &why.to_string(), request_id);
                let challenge = if *why == TokenError::Missing {
                    "Bearer".to_owned()
                } else {
                    format!("Bearer error=\"invalid_token\", error_description=\"{why}\"")
                };
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
                }
                response
            }
            _ => json_error(self.status(), self.public_message(), request_id),
        };
        if let RequestError::Upstream(e) = &self
            && let Some(after) = e.retry_after()
        {
            // Whole seconds, rounded up: never "0", which invites a storm.
            let seconds = after.as_millis().div_ceil(1000).max(1);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds as u64));
        }
        if let RequestError::Denied(Denied::RateLimited(headers) | Denied::QuotaExceeded(headers)) = &self {
            headers.apply(response.headers_mut());
        }
        response
    }
}

impl RequestError {
    /// The error as a gRPC client understands it: HTTP 200 and one header
    /// block with `grpc-status` (the HTTP status mapped: 401 is
    /// UNAUTHENTICATED, 429 RESOURCE_EXHAUSTED, 502 and 503 UNAVAILABLE,
    /// 504 DEADLINE_EXCEEDED) and `grpc-message`, plus the headers the
    /// error carries (`retry-after`, `x-ratelimit-*`) as metadata.
    pub fn into_grpc_response(self, request_id: &str) -> Response {
        let code = crate::grpc::code_for(self.status());
        let message = match &self {
            RequestError::BadPath(why) => format!("invalid request path: {why}"),
            RequestError::Denied(Denied::Token(why)) => why.to_string(),
            _ => self.public_message().to_owned(),
        };
        let http = self.into_response(request_id);
        let mut response = Response::new(Body::empty());
        let headers = response.headers_mut();
        for (name, value) in http.headers() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                headers.append(name, value.clone());
            }
        }
        headers.extend(crate::grpc::trailers_only(code, &message));
        response
    }
}

/// `{"error": "...", "status": 404, "request_id": "..."}` with that status.
pub fn json_error(status: StatusCode, message: &str, request_id: &str) -> Response {
    let body = serde_json::json!({ "error": message, "status": status.as_u16(), "request_id": request_id });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use http::HeaderName;

    use super::*;
    use crate::server::auth::LimitHeaders;
    use crate::store::StoreError;

    /// Every kind of failure: what the client sees and whose fault it is.
    #[test]
    fn each_error_has_its_status_its_public_message_and_its_blame() {
        let upstream = |e: UpstreamError| RequestError::Upstream(e);
        let plugin = |e: PluginError| RequestError::Plugin {
            plugin: "p.wasm#f".into(),
            source: e,
        };
        let cases = [
            (RequestError::NoRoute, 404, "no API matches this path", Blame::Client),
            (
                RequestError::NoEndpoint,
                404,
                "no endpoint matches this path and method",
                Blame::Client,
            ),
            (
                RequestError::TlsRequired,
                421,
                "this API is served over HTTPS only",
                Blame::Client,
            ),
            (
                RequestError::ClientCertRequired,
                403,
                "this API needs a client certificate",
                Blame::Client,
            ),
            (
                RequestError::BodyTimeout(10),
                408,
                "request body not received in time",
                Blame::Client,
            ),
            (
                RequestError::BodyTooLarge(1),
                413,
                "request body too large",
                Blame::Client,
            ),
            (
                RequestError::BadBody("reset".into()),
                400,
                "cannot read the request body",
                Blame::Client,
            ),
            (
                RequestError::Denied(Denied::MissingKey),
                401,
                "missing API key",
                Blame::Client,
            ),
            (
                RequestError::Denied(Denied::NoAccess),
                403,
                "this key may not access this API, path or method",
                Blame::Client,
            ),
            (
                RequestError::Denied(Denied::RepeatedHeader(HeaderName::from_static("x-user"))),
                400,
                "a header the rate limit counts callers by is sent more than once",
                Blame::Client,
            ),
            (
                RequestError::Denied(Denied::Store(StoreError::Unavailable("down".into()))),
                503,
                "session store unavailable, retry later",
                Blame::Gateway,
            ),
            (
                plugin(PluginError::PoolExhausted(4)),
                503,
                "plugin capacity exhausted, retry later",
                Blame::Gateway,
            ),
            (
                plugin(PluginError::CpuBudget(Duration::from_millis(5))),
                504,
                "plugin timed out",
                Blame::Plugin,
            ),
            (
                plugin(PluginError::Trap("panic".into())),
                500,
                "plugin failed",
                Blame::Plugin,
            ),
            (
                upstream(UpstreamError::Connect {
                    target: "10.0.0.1:80".into(),
                    reason: "refused".into(),
                }),
                502,
                "upstream unavailable",
                Blame::Upstream,
            ),
            (
                upstream(UpstreamError::Timeout {
                    target: "10.0.0.1:80".into(),
                    timeout: Duration::from_secs(1),
                }),
                504,
                "upstream timed out",
                Blame::Upstream,
            ),
            (
                upstream(UpstreamError::AtCapacity(Arc::from("u"))),
                503,
                "upstream at capacity, retry later",
                Blame::Upstream,
            ),
            (
                upstream(UpstreamError::Protocol("101")),
                502,
                "upstream unavailable",
                Blame::Upstream,
            ),
            (
                upstream(UpstreamError::Invalid("uri".into())),
                500,
                "internal gateway error",
                Blame::Gateway,
            ),
            (
                RequestError::ResponseTooLarge(1),
                502,
                "upstream response too large",
                Blame::Upstream,
            ),
            (
                RequestError::Internal("x".into()),
                500,
                "internal gateway error",
                Blame::Gateway,
            ),
        ];
        for (error, status, message, blame) in cases {
            let what = error.to_string();
            assert_eq!(error.blame(), blame, "{what}");
            let response = error.into_response("req-1");
            assert_eq!(response.status().as_u16(), status, "{what}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json", "{what}");
            let body = body_json(response);
            assert_eq!(body["error"], message, "{what}: no internal detail reaches the client");
            assert_eq!(
                (body["status"].as_u64(), body["request_id"].as_str()),
                (Some(u64::from(status)), Some("req-1"))
            );
        }
    }

    #[test]
    fn a_refusal_carries_its_limit_headers_and_an_unavailable_upstream_its_retry_after() {
        let mut headers = LimitHeaders::default();
        headers.0.push((
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderValue::from_static("2"),
        ));
        headers
            .0
            .push((HeaderName::from_static("retry-after"), HeaderValue::from_static("1")));
        let refused = RequestError::Denied(Denied::RateLimited(headers)).into_response("r");
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            (
                refused.headers()["x-ratelimit-limit"].as_bytes(),
                refused.headers()["retry-after"].as_bytes()
            ),
            (&b"2"[..], &b"1"[..])
        );

        let unavailable = RequestError::Upstream(UpstreamError::Unavailable {
            upstream: Arc::from("u"),
            why: "every target is ejected",
            retry_after: Duration::from_millis(1500),
        })
        .into_response("r");
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            unavailable.headers()[header::RETRY_AFTER],
            "2",
            "whole seconds, rounded up"
        );
    }

    /// A path refusal says what is wrong with the client's own spelling.
    #[test]
    fn a_bad_path_says_why() {
        let response = RequestError::BadPath(crate::server::canonical::PathError::BadEscape).into_response("r");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = body_json(response);
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("invalid request path: ")),
            "{body}"
        );
    }

    fn body_json(response: Response) -> serde_json::Value {
        let bytes = futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(response.into_body()))
            .expect("a full body is ready")
            .expect("body")
            .to_bytes();
        serde_json::from_slice(&bytes).expect("JSON")
    }
}
