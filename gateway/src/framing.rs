//! The gateway owns HTTP message framing. Every header list a plugin hands
//! back (a response, headers to set on the upstream request, an outbound
//! call's headers) becomes a header map (in `plugin::untrusted`, with the
//! rules here), and headers that frame the message or describe the
//! connection are dropped on the way: the HTTP stack
//! then computes framing from the body the gateway actually sends. So a
//! plugin cannot make one message read as two on a keep-alive connection
//! (response splitting, request smuggling), switch protocols, or hold a
//! connection open.
//!
//! Dropped, never written as given: `content-length`, `transfer-encoding`,
//! `connection` and every header it names, `keep-alive`, `upgrade`, `te`,
//! `trailer`, and every `proxy-*` header. A plugin's status must be a final
//! response (200-599); a 204 or 304 goes out without a body.

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Whether only the gateway may set `name`: it frames the message
/// (`content-length`), is hop-by-hop (the proxy's own list), or is any
/// `proxy-*` header.
pub fn is_gateway_owned(name: &HeaderName) -> bool {
    name == header::CONTENT_LENGTH || is_hop_by_hop(name) || name.as_str().starts_with("proxy-")
}

/// Headers that describe one connection, not the message (RFC 9110 7.6.1),
/// and the non-standard `Proxy-Connection` some clients still send. A
/// `static`: a `const` array is built, and dropped, at every use.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("proxy-connection"),
];

/// Whether `name` is hop-by-hop by itself (not counting what `Connection`
/// names).
#[inline]
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// Removes every field `doomed` picks, and every field a `Connection` field
/// names; returns the names removed.
#[inline]
pub fn strip(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = Vec::new();
    for (name, value) in headers.iter() {
        if name == header::CONNECTION {
            let named = value.to_str().unwrap_or_default().split(',');
            names.extend(named.filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()));
        }
        if doomed(name) {
            names.push(name.clone());
        }
    }
    for name in &names {
        headers.remove(name);
    }
    names
}

/// The statuses a plugin may answer with: final responses only. 1xx would
/// announce a message that never follows (or a protocol switch), and 600+
/// is not HTTP.
pub fn final_status(code: u16) -> Result<StatusCode, String> {
    match StatusCode::from_u16(code) {
        Ok(status) if (200..=599).contains(&code) => Ok(status),
        _ => Err(format!(
            "invalid status {code}: a plugin answers with a final status, 200-599"
        )),
    }
}

/// Whether a response with `status` carries no body (RFC 9110 6.4.1).
pub fn has_no_body(status: StatusCode) -> bool {
    status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED
}

/// A plugin's header list as a header map, without the headers the gateway
/// owns (nor those a `connection` field names). Returns the map and the
/// names it dropped, for the log.
pub fn plugin_headers(fields: &[(String, String)]) -> Result<(HeaderMap, Vec<HeaderName>), String> {
    let mut map = HeaderMap::with_capacity(fields.len());
    for (name, value) in fields {
        let name = parse_name(name)?;
        let value = HeaderValue::from_str(value).map_err(|_| format!("invalid value for header {name:?}"))?;
        map.append(name, value);
    }
    let dropped = strip(&mut map, is_gateway_owned);
    Ok((map, dropped))
}

/// Parses a header name a plugin gave (names are case-insensitive; HTTP/2
/// sends them lower-case, so the map holds them that way).
pub fn parse_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid header name {name:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_and_connection_headers_are_dropped_with_what_connection_names() {
        let fields = [
            ("Content-Length", "0"),
            ("transfer-encoding", "chunked"),
            ("connection", "close, x-secret"),
            ("x-secret", "s"),
            ("keep-alive", "timeout=5"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("proxy-authenticate", "Basic"),
            ("proxy-anything", "1"),
            ("x-kept", "1"),
            ("X-Kept", "2"),
        ]
        .map(|(n, v)| (n.to_owned(), v.to_owned()));
        let (map, dropped) = plugin_headers(&fields).expect("valid");
        let left: Vec<_> = map.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
        assert_eq!(left, [("x-kept", &b"1"[..]), ("x-kept", &b"2"[..])]);
        assert!(dropped.iter().any(|n| n == "x-secret"));
        assert!(dropped.iter().any(|n| n == "content-length"));
    }

    #[test]
    fn only_final_statuses() {
        for bad in [0, 99, 100, 101, 103, 199, 600, 999, 1000] {
            assert!(final_status(bad).is_err(), "{bad}");
        }
        for good in [200, 204, 301, 304, 404, 599] {
            assert!(final_status(good).is_ok(), "{good}");
        }
    }
}
