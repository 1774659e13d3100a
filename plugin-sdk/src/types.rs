//! Convenience methods on the WIT records, and the plugin error type.

use std::fmt;

use crate::{AuthOutcome, Authenticated, Outcome, RequestChanges, Response, Session};

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

impl Session {
    /// A session for `key_id` with no limits, no metadata and no expiry:
    /// the starting point for an auth plugin.
    pub fn new(key_id: impl Into<String>) -> Self {
        Session {
            key_id: key_id.into(),
            alias: None,
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

    /// Names the caller: a human-readable alias for the key, shown by the
    /// admin API and in the context of the gateway's debug log lines.
    pub fn with_alias(mut self, alias: impl Into<String>) -> Self {
        self.alias = Some(alias.into());
        self
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

    /// Adds a header, keeping any values it already has (names are sent
    /// lower-case).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into().to_ascii_lowercase(), value.into()));
        self
    }

    /// Sets a header, replacing every value it had.
    pub fn set_header(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        self.remove_header(&name).header(name, value)
    }

    /// Removes every value of header `name` (case-insensitive).
    pub fn remove_header(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
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
            response_headers: Vec::new(),
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

    /// Sets header `name` on the response the client will receive for this
    /// request, whoever makes it (the upstream, or a later plugin that
    /// answers), replacing that response's values of the name. It is not
    /// sent upstream. Setting a name twice sends both values.
    pub fn response_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.response_headers
            .push((name.into().to_ascii_lowercase(), value.into()));
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

impl AuthOutcome {
    /// The caller is who they say: this is their session, and the request
    /// goes on unchanged.
    pub fn authenticated(session: Session) -> Self {
        AuthOutcome::Authenticated(Authenticated {
            session,
            changes: RequestChanges::new(),
        })
    }

    /// Changes the request of an authenticated caller, as a request
    /// function's `continue` would (for example a header for the upstream
    /// saying who the caller is). No effect on a rejection.
    pub fn with_changes(self, changes: RequestChanges) -> Self {
        match self {
            AuthOutcome::Authenticated(a) => AuthOutcome::Authenticated(Authenticated {
                session: a.session,
                changes,
            }),
            respond => respond,
        }
    }
}

impl From<Session> for AuthOutcome {
    fn from(session: Session) -> Self {
        AuthOutcome::authenticated(session)
    }
}

impl From<Response> for AuthOutcome {
    fn from(response: Response) -> Self {
        AuthOutcome::Respond(response)
    }
}
