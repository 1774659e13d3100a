//! The settings of the gateway's other parts, as plain data: how paths are
//! canonicalised, where sessions are kept, where the access log goes and
//! where traces are sent. The modules they configure import them from here,
//! so `config` imports none of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How paths are canonicalised: `paths:` of the gateway file, overridable
/// per API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathOptions {
    /// `//` is `/`.
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
    pub trailing_slash: TrailingSlash,
    pub params: PathParams,
}

impl Default for PathOptions {
    fn default() -> Self {
        PathOptions {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
            trailing_slash: TrailingSlash::Keep,
            params: PathParams::Reject,
        }
    }
}

impl PathOptions {
    /// These options with everything an option may refuse let through
    /// (kept as written): to find the API whose own options decide.
    pub fn lenient(&self) -> PathOptions {
        PathOptions {
            escaped_slashes: EscapedSlashes::Keep,
            trailing_slash: TrailingSlash::Keep,
            params: PathParams::Keep,
            ..*self
        }
    }
}

/// What `%2F` (an encoded `/`) in a path means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// Refused with 400: backends disagree on whether it separates segments.
    Reject,
    /// Decoded to `/` before dot segments are removed: a separator.
    Decode,
    /// Kept as `%2F`, part of its segment (an id holding a slash), and sent
    /// on so.
    Keep,
}

/// What a `/` at the end of a path (other than `/` itself) means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrailingSlash {
    /// Endpoints match as if it were absent (`/orders/42/` is governed by
    /// `/orders/{id}`); plugins and the upstream see it.
    Keep,
    /// Removed: plugins and the upstream see `/orders/42`.
    Strip,
    /// Refused with 400.
    Reject,
}

/// What a `;` in a path segment (`/login;jsessionid=x`) means: some
/// servers (Tomcat, Jetty) drop what follows it before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathParams {
    /// Refused with 400.
    Reject,
    /// Removed from each segment before routing, as those servers do.
    Strip,
    /// Kept as part of the segment (for backends that give `;` no meaning).
    Keep,
}

/// Which store, from `session_store` in gateway.yaml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// The embedded database file.
    Embedded(PathBuf),
    /// A Redis URL (`redis://host:port/db`).
    Redis(String),
}

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    File(PathBuf),
}

impl std::fmt::Display for LogTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogTarget::Stdout => f.write_str("stdout"),
            LogTarget::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The file an `access_log.path` names: `stdout`, or a path relative to
/// the gateway file's directory.
pub fn log_target(base: &Path, path: &str) -> LogTarget {
    if path == "stdout" {
        LogTarget::Stdout
    } else {
        LogTarget::File(base.join(path))
    }
}

/// `tracing:` of gateway.yaml, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// The OTLP/HTTP traces URL (`.../v1/traces`).
    pub endpoint: String,
    pub service_name: String,
    /// The share of new traces recorded, 0 to 1; a client's sampled flag
    /// decides for the traces it continues.
    pub sampling_ratio: f64,
    /// Sent with every export (an API key of a hosted backend, say).
    pub headers: BTreeMap<String, String>,
}
