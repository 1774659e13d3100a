//! Convenience methods on the WIT records, and the plugin error type.

use std::fmt;

use crate::{Outcome, Request, RequestChanges, Response, Session};

/// A plugin failure. Returning `Err` from a function fails the request with a
/// 500 (the message goes to the gateway's log, never to the client).
///
/// Any `std::error::Error` converts into it, so `?` works on serde, UTF-8 and
/// HTTP errors alike; [`Error::msg`] makes one from text.
#[derive(Debug)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error(message.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(error: E) -> Self {
        Error(error.to_string())
    }
}

/// `Result` with the plugin [`Error`] as default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The first value of `name` (case-insensitive) in a header list.
pub(crate) fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Every value of header `name`, in arrival order.
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path parameter `name` captured by the endpoint template.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The first value of query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }

    /// The body parsed as JSON. The function must be registered with
    /// `request(body)` (see [`plugin!`](crate::plugin)) to receive a body.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let body = self
            .body
            .as_deref()
            .ok_or_else(|| Error::msg("no request body: register the function with `request(body)`"))?;
        Ok(serde_json::from_slice(body)?)
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Session {
    /// A session for `key_id` with no limits, no metadata and no expiry:
    /// the starting point for an auth plugin.
    pub fn new(key_id: impl Into<String>) -> Self {
        Session {
            key_id: key_id.into(),
            rate: 0,
            per: 0,
            quota_max: -1,
            quota_remaining: -1,
            quota_renewal_seconds: 0,
            metadata: Vec::new(),
            tags: Vec::new(),
            expires: None,
        }
    }

    /// Allows `rate` requests per `per` seconds.
    pub fn with_rate(mut self, rate: u32, per: u32) -> Self {
        self.rate = rate;
        self.per = per;
        self
    }

    /// Allows `max` requests per `renewal_seconds` (0: never renews).
    pub fn with_quota(mut self, max: i64, renewal_seconds: u64) -> Self {
        self.quota_max = max;
        self.quota_remaining = max;
        self.quota_renewal_seconds = renewal_seconds;
        self
    }

    /// Adds a metadata entry.
    pub fn with_metadata(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((name.into(), value.into()));
        self
    }

    /// Adds a tag.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Expires at `unix_seconds`.
    pub fn expires_at(mut self, unix_seconds: i64) -> Self {
        self.expires = Some(unix_seconds);
        self
    }

    /// Whether this is the anonymous session of a keyless API.
    pub fn is_anonymous(&self) -> bool {
        self.key_id.is_empty()
    }

    /// The metadata value `name`.
    pub fn metadata(&self, name: &str) -> Option<&str> {
        self.metadata.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Whether the session carries `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

impl Response {
    /// An empty response with this status.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A JSON response (`content-type: application/json`).
    pub fn json(status: u16, value: &impl serde::Serialize) -> Result<Self> {
        Ok(Response::new(status)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(value)?))
    }

    /// A plain-text response (`content-type: text/plain; charset=utf-8`).
    pub fn text(status: u16, text: impl Into<String>) -> Self {
        Response::new(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(text.into().into_bytes())
    }

    /// Adds a header (names are sent lower-case).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into().to_ascii_lowercase(), value.into()));
        self
    }

    /// Replaces the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The first value of header `name` (case-insensitive).
    pub fn get_header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

#[expect(clippy::derivable_impls, reason = "the struct is generated by wit-bindgen")]
impl Default for RequestChanges {
    fn default() -> Self {
        RequestChanges {
            method: None,
            path: None,
            query: None,
            set_headers: Vec::new(),
            remove_headers: Vec::new(),
            body: None,
            upstream: None,
            session_metadata: Vec::new(),
        }
    }
}

impl RequestChanges {
    /// No changes: the request continues as it is.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets header `name` to `value`, replacing any existing values.
    pub fn set_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.set_headers.push((name.into().to_ascii_lowercase(), value.into()));
        self
    }

    /// Removes every value of header `name`.
    pub fn remove_header(mut self, name: impl Into<String>) -> Self {
        self.remove_headers.push(name.into().to_ascii_lowercase());
        self
    }

    /// Changes the method sent upstream.
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.method = Some(method.into());
        self
    }

    /// Changes the path sent upstream (must start with `/`).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Replaces the query string (without `?`; empty removes it).
    pub fn query(mut self, query: impl Into<String>) -> Self {
        self.query = Some(query.into());
        self
    }

    /// Replaces the request body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sets a metadata entry on the caller's session; it is saved with the
    /// key, so later requests (and later plugins) see it.
    pub fn set_metadata(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.session_metadata.push((name.into(), value.into()));
        self
    }

    /// Sends the request to another upstream: dynamic routing. Either the
    /// name of one of the API's `upstreams` (balanced and health-checked by
    /// the gateway), or a URL (`http://host:port`, optionally with a base
    /// path) the API's routing allows.
    pub fn upstream(mut self, url: impl Into<String>) -> Self {
        self.upstream = Some(url.into());
        self
    }
}

impl Outcome {
    /// Continue unchanged.
    pub fn proceed() -> Self {
        Outcome::Continue(RequestChanges::new())
    }
}

impl From<Response> for Outcome {
    fn from(response: Response) -> Self {
        Outcome::Respond(response)
    }
}

impl From<RequestChanges> for Outcome {
    fn from(changes: RequestChanges) -> Self {
        Outcome::Continue(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn decodes_percent_and_plus() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
