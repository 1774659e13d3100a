//! Outbound HTTP to the services the API allows (`outbound.allow`).
//!
//! Calls go through the gateway's shared, pooled client. A host that is not on
//! the API's allowlist is refused before any connection is made. Every
//! failure is an [`HttpError`] value your code handles; none of them traps.
//!
//! ```no_run
//! # fn f() -> portcullis_sdk::Result<()> {
//! use portcullis_sdk::http;
//! let user: serde_json::Value = http::get("http://127.0.0.1:9002/users/7")?.json()?;
//! # Ok(()) }
//! ```

use std::time::Duration;

pub use crate::bindings::portcullis::plugin::http::{HttpError, OutboundRequest, OutboundResponse};
use crate::types::find_header;

/// Sends `request` and waits for the response.
pub fn send(request: &OutboundRequest) -> Result<OutboundResponse, HttpError> {
    crate::bindings::portcullis::plugin::http::send(request)
}

/// `GET url` with no extra headers and the API's default timeout.
pub fn get(url: &str) -> Result<OutboundResponse, HttpError> {
    send(&OutboundRequest::get(url))
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
