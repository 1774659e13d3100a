//! The one place gateway errors become HTTP responses. Clients get a short
//! JSON body with the status, a generic message and the request id; the
//! details (addresses, plugin traps) go to the log only.

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};

use crate::auth::Denied;
use crate::plugin::PluginError;
use crate::proxy::ProxyError;

/// Who is to blame for a failed request, and therefore what the client sees.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no API matches this path")]
    NoRoute,
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("cannot read the request body: {0}")]
    BadBody(String),
    #[error("plugin {plugin} failed: {source}")]
    Plugin { plugin: String, source: PluginError },
    #[error(transparent)]
    Upstream(#[from] ProxyError),
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
            RequestError::NoRoute => StatusCode::NOT_FOUND,
            RequestError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::BadBody(_) => StatusCode::BAD_REQUEST,
            RequestError::Plugin { source, .. } => source.status(),
            RequestError::Upstream(ProxyError::Timeout(_)) => StatusCode::GATEWAY_TIMEOUT,
            RequestError::Upstream(_) | RequestError::ResponseTooLarge(_) => StatusCode::BAD_GATEWAY,
            RequestError::Denied(denied) => match denied {
                Denied::MissingKey | Denied::UnknownKey | Denied::Expired => StatusCode::UNAUTHORIZED,
                Denied::NoAccess => StatusCode::FORBIDDEN,
                Denied::RateLimited(_) | Denied::QuotaExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
                Denied::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
            RequestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client is told: no addresses, no plugin internals.
    fn public_message(&self) -> &'static str {
        match self {
            RequestError::NoRoute => "no API matches this path",
            RequestError::BodyTooLarge(_) => "request body too large",
            RequestError::BadBody(_) => "cannot read the request body",
            RequestError::Plugin { source, .. } => match source {
                PluginError::PoolExhausted(_) => "plugin capacity exhausted, retry later",
                PluginError::Timeout(_) | PluginError::CpuBudget(_) => "plugin timed out",
                _ => "plugin failed",
            },
            RequestError::Upstream(ProxyError::Timeout(_)) => "upstream timed out",
            RequestError::Upstream(_) => "upstream unavailable",
            RequestError::ResponseTooLarge(_) => "upstream response too large",
            RequestError::Denied(denied) => match denied {
                Denied::MissingKey => "missing API key",
                Denied::UnknownKey => "unknown API key",
                Denied::Expired => "API key expired",
                Denied::NoAccess => "this key may not access this API, path or method",
                Denied::RateLimited(_) => "rate limit exceeded",
                Denied::QuotaExceeded(_) => "quota exceeded",
                Denied::Store(_) => "session store unavailable, retry later",
            },
            RequestError::Internal(_) => "internal gateway error",
        }
    }

    pub fn into_response(self, request_id: &str) -> Response {
        json_error(self.status(), self.public_message(), request_id)
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

/// The innermost cause of an error chain, for log lines that should say
/// "connection refused" rather than "error trying to connect".
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
