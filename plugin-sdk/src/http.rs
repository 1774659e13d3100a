//! Outbound HTTP to the services the API allows (`outbound.allow`).
//!
//! Calls go through the gateway's shared, pooled client. A host that is not on
//! the API's allowlist is refused before any connection is made. Every
//! failure is an [`HttpError`] value your code handles; none of them traps.
//!
//! ```no_run
//! # fn f() -> portcullis_sdk::Result<()> {
//! use portcullis_sdk::http::{self, Batch, Merged, OutboundRequest};
//! use std::time::Duration;
//!
//! // One call.
//! let user: serde_json::Value = http::get("http://127.0.0.1:9002/users/7")?.json()?;
//!
//! // Several at once, with a deadline for the whole batch; merge the JSON.
//! let results = Batch::new(vec![
//!     OutboundRequest::get("http://127.0.0.1:9002/users/7"),
//!     OutboundRequest::get("http://127.0.0.1:9003/stock/7"),
//! ])
//! .deadline(Duration::from_millis(250))
//! .send();
//! let merged = Merged::new(["user", "stock"].into_iter().zip(results));
//! let response = merged.into_response()?; // 200, `x-partial: true` if a part is missing
//! # Ok(()) }
//! ```

use std::time::Duration;

use crate::Response;
pub use crate::bindings::portcullis::plugin::http::{BatchOptions, HttpError, OutboundRequest, OutboundResponse};
use crate::types::find_header;

/// Sends `request` and waits for the response.
pub fn send(request: &OutboundRequest) -> Result<OutboundResponse, HttpError> {
    crate::host::send(request)
}

/// `GET url` with no extra headers and the API's default timeout.
pub fn get(url: &str) -> Result<OutboundResponse, HttpError> {
    send(&OutboundRequest::get(url))
}

/// Sends every request concurrently and waits for all of them (up to the
/// API's `outbound.timeout_ms`); one result per request, in order.
pub fn fetch_all(requests: &[OutboundRequest]) -> Vec<Result<OutboundResponse, HttpError>> {
    crate::host::send_all(
        requests,
        BatchOptions {
            deadline_ms: None,
            min_successes: None,
        },
    )
}

/// A batch of concurrent requests with a deadline and an early-exit rule.
///
/// Calls still running at the deadline are cancelled and come back as
/// [`HttpError::Timeout`]; with [`Batch::first`], once enough calls
/// succeeded the rest come back as [`HttpError::Cancelled`]. Results that
/// arrived are always kept.
#[derive(Debug, Clone)]
pub struct Batch {
    requests: Vec<OutboundRequest>,
    options: BatchOptions,
}

impl Batch {
    /// A batch of these requests, waiting for all of them up to the API's
    /// `outbound.timeout_ms`.
    pub fn new(requests: Vec<OutboundRequest>) -> Self {
        Batch {
            requests,
            options: BatchOptions {
                deadline_ms: None,
                min_successes: None,
            },
        }
    }

    /// Ends the whole batch at `deadline`.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.options.deadline_ms = Some(u32::try_from(deadline.as_millis()).unwrap_or(u32::MAX));
        self
    }

    /// Ends the batch as soon as `n` calls succeeded (2xx); `first(1)` is
    /// "the first success wins".
    pub fn first(mut self, n: u32) -> Self {
        self.options.min_successes = Some(n);
        self
    }

    /// Runs the batch; one result per request, in order.
    pub fn send(&self) -> Vec<Result<OutboundResponse, HttpError>> {
        crate::host::send_all(&self.requests, self.options)
    }
}

impl OutboundRequest {
    /// A request with this method and URL, no headers, no body.
    pub fn new(method: &str, url: &str) -> Self {
        OutboundRequest {
            method: method.to_owned(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms: None,
        }
    }

    /// `GET url`.
    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    /// `POST url` with this body.
    pub fn post(url: &str, body: impl Into<Vec<u8>>) -> Self {
        Self::new("POST", url).body(body)
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Overrides the API's default timeout for this call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ms = Some(u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX));
        self
    }
}

impl OutboundResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> crate::Result<T> {
        Ok(serde_json::from_slice(&self.body)?)
    }
}

impl HttpError {
    /// A short, stable description: `timeout`, `not allowed: host:port`,
    /// `connect: connection refused`, ...
    pub fn reason(&self) -> String {
        match self {
            HttpError::NotAllowed(host) => format!("not allowed: {host}"),
            HttpError::InvalidRequest(why) => format!("invalid request: {why}"),
            HttpError::Connect(why) => format!("connect: {why}"),
            HttpError::Timeout => "timeout".into(),
            HttpError::TooLarge => "response too large".into(),
            HttpError::CallLimit => "call limit reached".into(),
            HttpError::Other(why) => why.clone(),
            HttpError::Cancelled => "cancelled".into(),
        }
    }
}

/// Named JSON parts merged into one document, the common aggregation case.
///
/// Each 2xx response's JSON body goes under its name. A failed part (an
/// [`HttpError`], a non-2xx status, a body that is not JSON) is `null` under
/// its name and its reason goes under `errors`, so clients can tell missing
/// from empty.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    /// The merged document.
    pub document: serde_json::Map<String, serde_json::Value>,
    /// Why each missing part is missing, by name.
    pub errors: serde_json::Map<String, serde_json::Value>,
}

impl Merged {
    /// Merges `(name, result)` pairs: names zipped with the results of
    /// [`Batch::send`], or the results of the reference's `fan_out`
    /// ([`crate::Context::fan_out`]).
    pub fn new<N: AsRef<str>>(parts: impl IntoIterator<Item = (N, Result<OutboundResponse, HttpError>)>) -> Self {
        let mut merged = Merged::default();
        for (name, result) in parts {
            merged.add(name.as_ref(), result);
        }
        merged
    }

    /// Adds one part.
    pub fn add(&mut self, name: &str, result: Result<OutboundResponse, HttpError>) {
        let value = match result {
            Ok(response) if response.is_success() => match response.json() {
                Ok(value) => Ok(value),
                Err(e) => Err(format!("invalid JSON: {e}")),
            },
            Ok(response) => Err(format!("status {}", response.status)),
            Err(e) => Err(e.reason()),
        };
        match value {
            Ok(value) => {
                self.document.insert(name.to_owned(), value);
            }
            Err(reason) => {
                self.document.insert(name.to_owned(), serde_json::Value::Null);
                self.errors.insert(name.to_owned(), reason.into());
            }
        }
    }

    /// Whether any part is missing.
    pub fn is_partial(&self) -> bool {
        !self.errors.is_empty()
    }

    /// A 200 JSON response: the document, plus `errors` when partial, and
    /// the header `x-partial: true|false`.
    pub fn into_response(self) -> crate::Result<Response> {
        let partial = self.is_partial();
        let mut document = self.document;
        if partial {
            document.insert("errors".into(), serde_json::Value::Object(self.errors));
        }
        Ok(Response::json(200, &document)?.header("x-partial", partial.to_string()))
    }
}
