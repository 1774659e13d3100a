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
    #[error("cannot build the upstream request: {0}")]
    Internal(String),
}

impl RequestError {
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
                Denied::MissingKey | Denied::UnknownKey | Denied::Expired => StatusCode::UNAUTHORIZED,
                Denied::NoAccess => StatusCode::FORBIDDEN,
                Denied::RepeatedHeader(_) => StatusCode::BAD_REQUEST,
                Denied::RateLimited(_) | Denied::QuotaExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
                Denied::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
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
            | RequestError::BadBody(_) => Blame::Client,
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
