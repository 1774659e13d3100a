//! Values that come back from a plugin are untrusted. Every list and string
//! in an outcome is bounded and checked here, in one pass, before the
//! gateway acts on any of it, and typed as it is checked ([`super::outcome`]); and plugin text is escaped and cut before it
//! reaches a log line. A plugin may be written without our SDK, so nothing
//! here assumes the SDK's guard rails.
//!
//! Limits from the plugin reference's [`Limits`] (documented in
//! docs/configuration.md); the fixed ones are the constants below.

use http::{HeaderMap, HeaderName};

use super::bindings::{AuthOutcome, FunctionInfo, Outcome, RequestChanges, Response, Session};
use super::outcome::{AuthResult, Changes, Reply, RequestOutcome};
use crate::config::Limits;
use crate::config::RoutingPolicy;
use crate::framing;
use crate::text::is_unsafe_char;

/// Longest `key-id` (and `alias`) an auth plugin may return.
pub const MAX_KEY_ID_BYTES: usize = 256;
/// Longest method a plugin may set.
pub const MAX_METHOD_BYTES: usize = 32;
/// Longest path, query or upstream URL a plugin may set.
pub const MAX_URL_BYTES: usize = 8 << 10;
/// Plugin text (an `Err`, a trap, a log line) kept in one log field.
pub const MAX_TEXT_BYTES: usize = 2 << 10;
/// Most functions a component may list, and the longest name.
pub const MAX_FUNCTIONS: usize = 256;
pub const MAX_FUNCTION_NAME_BYTES: usize = 128;

/// Checks a request function's outcome and types it.
pub fn check_outcome(outcome: Outcome, limits: &Limits, routing: &RoutingPolicy) -> Result<RequestOutcome, String> {
    match outcome {
        Outcome::Respond(response) => check_response(response, limits).map(RequestOutcome::Respond),
        Outcome::Continue(changes) => check_changes(changes, limits, routing).map(RequestOutcome::Continue),
    }
}

/// Checks an auth function's outcome and types it. The session is checked
/// on its own here; merged with what is stored, it is checked again by
/// [`check_session_size`].
pub fn check_auth(outcome: AuthOutcome, limits: &Limits, routing: &RoutingPolicy) -> Result<AuthResult, String> {
    match outcome {
        AuthOutcome::Respond(response) => check_response(response, limits).map(AuthResult::Respond),
        AuthOutcome::Authenticated(a) => {
            check_session(&a.session, limits)?;
            Ok(AuthResult::Authenticated {
                changes: check_changes(a.changes, limits, routing)?,
                session: a.session,
            })
        }
    }
}

/// Checks a response a plugin answers with and types it.
pub fn check_response(response: Response, limits: &Limits) -> Result<Reply, String> {
    let status = framing::final_status(response.status)?;
    check_body("response", &response.body, limits)?;
    let (headers, dropped) = check_headers("headers", response.headers, limits)?;
    Ok(Reply {
        status,
        headers,
        body: response.body.into(),
        dropped,
    })
}

fn check_changes(changes: RequestChanges, limits: &Limits, routing: &RoutingPolicy) -> Result<Changes, String> {
    let (set_headers, mut dropped) = check_headers("set-headers", changes.set_headers, limits)?;
    let (response_headers, dropped_too) = check_headers("response-headers", changes.response_headers, limits)?;
    dropped.extend(dropped_too);
    check_count("remove-headers", changes.remove_headers.len(), limits.max_headers)?;
    check_bytes(
        "remove-headers",
        changes.remove_headers.iter().map(String::len).sum(),
        limits.max_header_bytes,
        "max_header_bytes",
    )?;
    let remove_headers = changes
        .remove_headers
        .iter()
        .map(|name| framing::parse_name(name))
        .collect::<Result<_, _>>()?;
    check_count(
        "session-metadata",
        changes.session_metadata.len(),
        limits.max_session_entries,
    )?;
    check_bytes(
        "session-metadata",
        pairs_bytes(&changes.session_metadata),
        limits.max_session_bytes,
        "max_session_bytes",
    )?;
    let method = match changes.method {
        None => None,
        // CONNECT would turn the upstream connection into a tunnel.
        Some(method) => match http::Method::from_bytes(method.as_bytes()) {
            Ok(parsed) if method.len() <= MAX_METHOD_BYTES && !method.eq_ignore_ascii_case("CONNECT") => Some(parsed),
            _ => return Err(format!("invalid method {:?} (any token but CONNECT)", cut(&method))),
        },
    };
    if let Some(path) = &changes.path
        && (path.len() > MAX_URL_BYTES
            || !path.starts_with('/')
            || path.contains('?')
            || http::uri::PathAndQuery::try_from(path.as_str()).is_err())
    {
        return Err(format!(
            "invalid path {:?} (must start with '/', no query, at most {MAX_URL_BYTES} bytes)",
            cut(path)
        ));
    }
    if let Some(query) = &changes.query
        && (query.len() > MAX_URL_BYTES || http::uri::PathAndQuery::try_from(format!("/?{query}").as_str()).is_err())
    {
        return Err(format!(
            "invalid query {:?} (at most {MAX_URL_BYTES} bytes)",
            cut(query)
        ));
    }
    if let Some(body) = &changes.body {
        check_body("request", body, limits)?;
    }
    let upstream = match changes.upstream {
        None => None,
        Some(upstream) if upstream.len() > MAX_URL_BYTES => {
            return Err(format!("upstream URL longer than {MAX_URL_BYTES} bytes"));
        }
        Some(upstream) => {
            let destination = routing.target(&upstream)?;
            Some((upstream, destination))
        }
    };
    Ok(Changes {
        method,
        path: changes.path,
        query: changes.query,
        set_headers,
        remove_headers,
        response_headers,
        body: changes.body.map(Into::into),
        upstream,
        session_metadata: changes.session_metadata,
        dropped,
    })
}

/// Checks a session an auth function returned.
fn check_session(session: &Session, limits: &Limits) -> Result<(), String> {
    if session.key_id.is_empty() {
        return Err("an authenticated session needs a key-id".to_owned());
    }
    if session.key_id.len() > MAX_KEY_ID_BYTES || session.key_id.chars().any(is_unsafe_char) {
        return Err(format!(
            "invalid key-id {:?} (at most {MAX_KEY_ID_BYTES} bytes, no control characters)",
            cut(&session.key_id)
        ));
    }
    if let Some(alias) = &session.alias
        && (alias.len() > MAX_KEY_ID_BYTES || alias.chars().any(is_unsafe_char))
    {
        return Err(format!(
            "invalid alias {:?} (at most {MAX_KEY_ID_BYTES} bytes, no control characters)",
            cut(alias)
        ));
    }
    check_session_size(
        &session.key_id,
        session.tags.iter().map(String::as_str),
        session.metadata.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        limits,
    )
}

/// Checks the size of a session as it would be saved: key id, tags and
/// metadata together.
pub fn check_session_size<'a>(
    key_id: &str,
    tags: impl ExactSizeIterator<Item = &'a str>,
    metadata: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    limits: &Limits,
) -> Result<(), String> {
    check_count(
        "session tags and metadata",
        tags.len() + metadata.len(),
        limits.max_session_entries,
    )?;
    let bytes =
        key_id.len() + tags.map(str::len).sum::<usize>() + metadata.map(|(n, v)| n.len() + v.len()).sum::<usize>();
    check_bytes("session", bytes, limits.max_session_bytes, "max_session_bytes")
}

/// Checks what `functions` listed at load: bounded, and each name once.
pub fn check_functions(functions: &[FunctionInfo]) -> Result<(), String> {
    if functions.len() > MAX_FUNCTIONS {
        return Err(format!(
            "lists {} functions; at most {MAX_FUNCTIONS} are allowed",
            functions.len()
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(functions.len());
    for f in functions {
        if f.name.is_empty() || f.name.len() > MAX_FUNCTION_NAME_BYTES || f.name.chars().any(is_unsafe_char) {
            return Err(format!(
                "invalid function name \"{}\" (1-{MAX_FUNCTION_NAME_BYTES} bytes, no control, line-separator or bidirectional characters)",
                escape(&f.name, MAX_FUNCTION_NAME_BYTES)
            ));
        }
        if !seen.insert(f.name.as_str()) {
            return Err(format!("lists the function `{}` more than once", f.name));
        }
    }
    Ok(())
}

/// Header fields: count, total bytes, and valid names and values, as a
/// header map without the headers the gateway owns (nor those a
/// `connection` field names); returns the names it dropped, for the log.
fn check_headers(
    what: &str,
    headers: Vec<(String, String)>,
    limits: &Limits,
) -> Result<(HeaderMap, Vec<HeaderName>), String> {
    check_count(what, headers.len(), limits.max_headers)?;
    check_bytes(what, pairs_bytes(&headers), limits.max_header_bytes, "max_header_bytes")?;
    framing::plugin_headers(&headers)
}

fn pairs_bytes(pairs: &[(String, String)]) -> usize {
    pairs.iter().map(|(n, v)| n.len() + v.len()).sum()
}

fn check_count(what: &str, count: usize, max: usize) -> Result<(), String> {
    if count > max {
        return Err(format!("{what}: {count} entries, more than the limit of {max}"));
    }
    Ok(())
}

fn check_bytes(what: &str, bytes: usize, max: usize, limit: &str) -> Result<(), String> {
    if bytes > max {
        return Err(format!("{what} of {bytes} bytes exceeds {limit} ({max})"));
    }
    Ok(())
}

fn check_body(what: &str, body: &[u8], limits: &Limits) -> Result<(), String> {
    check_bytes(
        &format!("{what} body"),
        body.len(),
        limits.max_body_bytes,
        "max_body_bytes",
    )
}

/// The first bytes of a long value, for an error message.
fn cut(text: &str) -> &str {
    &text[..floor_char_boundary(text, 64)]
}

fn floor_char_boundary(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// Plugin text made safe for one log field: control characters (newline,
/// carriage return, escape, ...) and Unicode line and direction controls
/// escaped, so the text cannot start a forged log line or rewrite the
/// terminal; cut to `max` bytes with a note of how much was cut.
pub fn escape(text: &str, max: usize) -> String {
    escape_cut(text, max, 0)
}

/// [`escape`] for text of which `cut` more bytes were already dropped
/// before it got here; the note counts them too.
pub fn escape_cut(text: &str, max: usize, cut: usize) -> String {
    let kept = &text[..floor_char_boundary(text, max)];
    let mut out = String::with_capacity(kept.len() + 16);
    for c in kept.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe_char(c) => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    let cut = cut + (text.len() - kept.len());
    if cut > 0 {
        out.push_str(&format!("... ({cut} more bytes cut)"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_line_breaks_escapes_and_direction_controls() {
        assert_eq!(
            escape("ok\nINFO forged\r\x1b[2J\u{202e}x", 100),
            "ok\\nINFO forged\\r\\u{1b}[2J\\u{202e}x"
        );
        assert_eq!(escape("héllo", 2), "h... (5 more bytes cut)");
    }

    #[test]
    fn duplicate_and_oversized_function_names_are_refused() {
        let f = |name: &str| FunctionInfo {
            name: name.to_owned(),
            kind: super::super::HookKind::Request,
            wants_body: false,
        };
        assert!(check_functions(&[f("a"), f("b")]).is_ok());
        let err = check_functions(&[f("a"), f("b"), f("a")]).expect_err("duplicate");
        assert!(err.contains("`a` more than once"), "{err}");
        assert!(check_functions(&[f("")]).is_err());
        assert!(check_functions(&[f(&"x".repeat(129))]).is_err());
        assert!(check_functions(&[f("a\nb")]).is_err());
        // Line separators and direction controls would forge or reorder the
        // "the component exports ..." error line; refused, and escaped in
        // the refusal itself.
        for name in [
            "ok\u{2028}error: forged",
            "a\u{2029}b",
            "txt\u{202e}exe",
            "a\u{85}b",
            "a\u{2066}b",
        ] {
            let err = check_functions(&[f(name)]).expect_err(name);
            assert!(!err.chars().any(is_unsafe_char), "{err:?}");
        }
    }
}
