//! What a plugin returns, checked and typed once: the server applies these
//! without parsing anything again. Every value the plugin gave as text
//! (method, header names and values, the upstream it routes to) is parsed
//! here, as it is checked against the reference's limits and the API's
//! routing policy ([`super::untrusted`]); the framing and connection
//! headers the gateway owns are dropped here too, and named in `dropped`
//! for the log.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, StatusCode};

use super::Session;
use crate::config::Destination;

/// A `request` function's outcome.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "moved once per call; boxing the common variant would allocate on every continue"
)]
pub enum RequestOutcome {
    /// Go on, with these changes.
    Continue(Changes),
    /// Answer the client with this.
    Respond(Reply),
}

/// An `auth` function's outcome.
#[derive(Debug)]
#[expect(clippy::large_enum_variant, reason = "moved once per call, like RequestOutcome")]
pub enum AuthResult {
    /// The caller is who `session` says; the request goes on with
    /// `changes`.
    Authenticated { session: Session, changes: Changes },
    /// Refused, with this answer.
    Respond(Reply),
}

/// The changes of a `continue` outcome.
#[derive(Debug, Default)]
pub struct Changes {
    pub method: Option<Method>,
    /// The path the upstream sees (starts with `/`, no query).
    pub path: Option<String>,
    /// The new query, without `?`; empty removes it.
    pub query: Option<String>,
    /// Each name set replaces every value the request had for it.
    pub set_headers: HeaderMap,
    pub remove_headers: Vec<HeaderName>,
    /// Set on the client's response.
    pub response_headers: HeaderMap,
    pub body: Option<Bytes>,
    /// Where the request goes instead: the URL or name the plugin gave, and
    /// where the API's routing policy sends it.
    pub upstream: Option<(String, Destination)>,
    /// Session metadata to set (checked again once merged with the
    /// session's own, which only the server has).
    pub session_metadata: Vec<(String, String)>,
    /// Headers the plugin set that the gateway owns, dropped.
    pub dropped: Vec<HeaderName>,
}

/// A response a plugin answers with.
#[derive(Debug)]
pub struct Reply {
    /// A final status, 200-599.
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// Not sent for 204 and 304.
    pub body: Bytes,
    /// Headers the plugin set that the gateway owns, dropped.
    pub dropped: Vec<HeaderName>,
}
