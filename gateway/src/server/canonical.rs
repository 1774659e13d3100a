//! The one canonical spelling of a request path, computed once before
//! routing: routing, endpoint matching, limits, plugins, the access log,
//! traces and the upstream all see it, never the client's raw spelling.
//!
//! RFC 3986 (6.2.2) says `/orders/%70rivate/./x/../42` and
//! `/orders/private/42` name the same resource, and normalising backends
//! serve them alike; a gateway that routed the raw spelling would let a
//! client walk around an endpoint's plugins and limits. So, in one pass:
//!
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
//!   decoded, every other escape is upper-cased;
//! - an encoded NUL is refused, and so is an escape that is not two hex
//!   digits;
//! - an encoded slash (`%2F`) is refused, decoded or kept ([`EscapedSlashes`]);
//! - a `;params` part of a segment is refused, stripped or kept
//!   ([`PathParams`]);
//! - dot segments are removed (RFC 3986 5.2.4), and a path that climbs above
//!   `/` is refused;
//! - consecutive slashes are merged (unless turned off);
//! - a trailing slash is kept, stripped or refused ([`TrailingSlash`]).
//!
//! A path that needs none of this (the common case) is returned borrowed,
//! after one scan of its bytes. It imports nothing from the gateway but the
//! options themselves (`config::PathOptions`).

use std::borrow::Cow;

pub use crate::config::{EscapedSlashes, PathOptions, PathParams, TrailingSlash};

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path climbs above `/` with `..`")]
    AboveRoot,
    #[error("the path holds an encoded NUL (%00)")]
    EncodedNul,
    #[error("the path holds a `%` that is not followed by two hex digits")]
    BadEscape,
    #[error("the path holds an encoded slash (%2F), which this API refuses")]
    EscapedSlash,
    #[error("the path holds a `;` parameter, which this API refuses")]
    Params,
    #[error("the path ends in `/`, which this API refuses")]
    TrailingSlash,
    #[error("the path does not start with `/`")]
    NotAbsolute,
    #[error("the path, canonicalised under its API's `paths` options, leaves the API")]
    OutsideApi,
}

impl PathError {
    /// Whether an option refused the path (another API's options may let
    /// it through), rather than RFC 3986 itself.
    pub fn is_optional(self) -> bool {
        matches!(
            self,
            PathError::EscapedSlash | PathError::Params | PathError::TrailingSlash
        )
    }
}

/// The canonical form of `path` under `options`.
pub fn canonicalize<'a>(path: &'a str, options: &PathOptions) -> Result<Cow<'a, str>, PathError> {
    if !path.starts_with('/') {
        // `*` (OPTIONS) and authority-form (CONNECT) have no path to route.
        return Err(PathError::NotAbsolute);
    }
    if is_canonical(path.as_bytes(), options) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path.as_bytes(), options.escaped_slashes)?;
    let mut segments: Vec<&str> = Vec::new();
    // Whether the path as written ends a directory: a last segment that is
    // empty, `.` or `..` (RFC 3986 5.2.4 keeps the slash after the latter).
    let mut trailing = false;
    let mut raws = decoded[1..].split('/').peekable();
    while let Some(raw) = raws.next() {
        let last = raws.peek().is_none();
        let segment = match raw.find(';') {
            None => raw,
            Some(_) if options.params == PathParams::Reject => return Err(PathError::Params),
            Some(at) if options.params == PathParams::Strip => &raw[..at],
            Some(_) => raw,
        };
        match segment {
            "." => trailing = last,
            ".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
                trailing = last;
            }
            "" if last => trailing = true,
            "" if options.merge_slashes => {}
            segment => segments.push(segment),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    } else if trailing {
        match options.trailing_slash {
            TrailingSlash::Keep => out.push('/'),
            TrailingSlash::Strip => {}
            TrailingSlash::Reject => return Err(PathError::TrailingSlash),
        }
    }
    Ok(Cow::Owned(out))
}

/// Whether `path` is already canonical (no allocation needed).
fn is_canonical(path: &[u8], options: &PathOptions) -> bool {
    let mut canonical = true;
    for (i, &byte) in path.iter().enumerate() {
        match byte {
            b'%' => canonical = false,
            b';' => canonical &= options.params == PathParams::Keep,
            b'/' => {
                let next = &path[i + 1..];
                let segment = &next[..next.iter().position(|&b| b == b'/').unwrap_or(next.len())];
                // A segment that is `.` or `..`, or `//` (an empty segment
                // not at the end).
                let doubled = segment.is_empty() && !next.is_empty();
                canonical &= !(segment == b"." || segment == b".." || (doubled && options.merge_slashes));
                // A trailing slash other than the root's.
                if next.is_empty() && i > 0 {
                    canonical &= options.trailing_slash == TrailingSlash::Keep;
                }
            }
            _ => {}
        }
    }
    canonical
}

/// `path` with unreserved escapes decoded and the rest upper-cased.
fn decode(path: &[u8], slashes: EscapedSlashes) -> Result<String, PathError> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let byte = path[i];
        if byte != b'%' {
            out.push(byte);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            path.get(i + 1).copied().and_then(hex),
            path.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(PathError::BadEscape);
        };
        let decoded = hi << 4 | lo;
        match decoded {
            0 => return Err(PathError::EncodedNul),
            b'/' => match slashes {
                EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                EscapedSlashes::Decode => out.push(b'/'),
                EscapedSlashes::Keep => out.extend_from_slice(b"%2F"),
            },
            b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => out.push(b),
            b => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
            }
        }
        i += 3;
    }
    // The input was a valid URI path (ASCII), and only ASCII was decoded.
    String::from_utf8(out).map_err(|_| PathError::BadEscape)
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
}

/// `rest` as endpoints match it: without the trailing slash a
/// [`TrailingSlash::Keep`] path may carry (`/` stays `/`).
pub fn for_matching(rest: &str) -> &str {
    match rest.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => trimmed,
        _ => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(path: &str) -> Result<String, PathError> {
        canonicalize(path, &PathOptions::default()).map(Cow::into_owned)
    }

    fn with(path: &str, options: PathOptions) -> Result<String, PathError> {
        canonicalize(path, &options).map(Cow::into_owned)
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for path in ["/", "/orders/42", "/a/b.c/d..e/.f/~g", "/orders/42/"] {
            assert!(
                matches!(canonicalize(path, &PathOptions::default()), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
    }

    #[test]
    fn the_issue_spellings_all_name_the_protected_resource() {
        for spelling in [
            "/orders/x/../42",
            "/orders/./42",
            "/orders/x/%2e%2e/42",
            "/orders/x/%2E%2E/42",
            "/orders//42",
            "/orders/%34%32",
            "/orders/x/y/../../42",
            "/orders/x/.%2e/42",
        ] {
            assert_eq!(canon(spelling).as_deref(), Ok("/orders/42"), "{spelling}");
        }
        assert_eq!(canon("/orders/%70rivate/42").as_deref(), Ok("/orders/private/42"));
        assert_eq!(canon("/rl/%6cogin").as_deref(), Ok("/rl/login"));
    }

    #[test]
    fn other_escapes_are_upper_cased_and_kept() {
        assert_eq!(canon("/a%20b/%c3%a9").as_deref(), Ok("/a%20b/%C3%A9"));
        assert_eq!(canon("/q%3fx%23y").as_deref(), Ok("/q%3Fx%23y"));
        // An escape decoded to `%` stays one escape, not the start of another.
        assert_eq!(canon("/%2541").as_deref(), Ok("/%2541"));
    }

    #[test]
    fn refusals() {
        assert_eq!(canon("/.."), Err(PathError::AboveRoot));
        assert_eq!(canon("/a/../../b"), Err(PathError::AboveRoot));
        assert_eq!(canon("/%2e%2e/etc"), Err(PathError::AboveRoot));
        assert_eq!(canon("/a%00b"), Err(PathError::EncodedNul));
        assert_eq!(canon("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(canon("/a%4"), Err(PathError::BadEscape));
        assert_eq!(canon("/a%2fb"), Err(PathError::EscapedSlash));
        assert_eq!(canon("/login;x"), Err(PathError::Params));
        assert_eq!(canon("*"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn trailing_slashes() {
        assert_eq!(canon("/orders/42/").as_deref(), Ok("/orders/42/"));
        assert_eq!(canon("/orders/42//").as_deref(), Ok("/orders/42/"));
        assert_eq!(canon("/orders/42/.").as_deref(), Ok("/orders/42/"));
        assert_eq!(canon("/orders/42/x/..").as_deref(), Ok("/orders/42/"));
        assert_eq!(canon("/.").as_deref(), Ok("/"));
        assert_eq!(canon("//").as_deref(), Ok("/"));
        let strip = PathOptions {
            trailing_slash: TrailingSlash::Strip,
            ..PathOptions::default()
        };
        assert_eq!(with("/orders/42/", strip).as_deref(), Ok("/orders/42"));
        assert_eq!(with("/", strip).as_deref(), Ok("/"));
        let reject = PathOptions {
            trailing_slash: TrailingSlash::Reject,
            ..PathOptions::default()
        };
        assert_eq!(with("/orders/42/", reject), Err(PathError::TrailingSlash));
        assert_eq!(with("/", reject).as_deref(), Ok("/"));
        assert_eq!(for_matching("/42/"), "/42");
        assert_eq!(for_matching("/"), "/");
    }

    #[test]
    fn options_change_what_is_kept() {
        let keep_all = PathOptions {
            merge_slashes: false,
            escaped_slashes: EscapedSlashes::Keep,
            trailing_slash: TrailingSlash::Keep,
            params: PathParams::Keep,
        };
        assert_eq!(with("/a//b", keep_all).as_deref(), Ok("/a//b"));
        assert_eq!(with("/a/x%2f..%2fb", keep_all).as_deref(), Ok("/a/x%2F..%2Fb"));
        assert_eq!(with("/login;x", keep_all).as_deref(), Ok("/login;x"));
        let decode = PathOptions {
            escaped_slashes: EscapedSlashes::Decode,
            params: PathParams::Strip,
            ..PathOptions::default()
        };
        assert_eq!(with("/a/x%2f..%2fb", decode).as_deref(), Ok("/a/b"));
        assert_eq!(with("/rl/login;x", decode).as_deref(), Ok("/rl/login"));
        // Tomcat's `..;` is a dot segment once its parameter is stripped.
        assert_eq!(with("/a/b/..;x/c", decode).as_deref(), Ok("/a/c"));
    }

    #[test]
    fn canonical_is_a_fixed_point() {
        for path in ["/a/./b/../c//d/", "/%7e%41/x%2F", "/a/%2e/b"] {
            let options = PathOptions {
                escaped_slashes: EscapedSlashes::Keep,
                ..PathOptions::default()
            };
            let once = with(path, options).expect("canonical");
            assert_eq!(with(&once, options).as_deref(), Ok(once.as_str()), "{path}");
        }
    }
}
