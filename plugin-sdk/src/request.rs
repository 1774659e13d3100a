//! The request as a function sees it, read from the gateway's input buffer
//! without copying: each accessor borrows from the one buffer the call
//! received.

use std::ops::Range;
use std::rc::Rc;

use portcullis_wire::RequestRanges;

use crate::wire::{Sections, text};
use crate::{Error, Result};

/// The request as the gateway sees it when the function runs.
///
/// Text is exactly as it arrived: [`Request::path`] keeps its
/// percent-encoding and [`Request::query`] is the raw query string;
/// [`Request::query_param`] decodes one parameter.
#[derive(Debug)]
pub struct Request {
    input: Rc<Vec<u8>>,
    /// Where each field lies in `input`.
    at: RequestRanges,
}

impl Request {
    /// Reads the request section of `input`.
    pub(crate) fn parse(input: Rc<Vec<u8>>, sections: &Sections) -> Result<Self> {
        let at = RequestRanges::read(&input, sections)?;
        Ok(Request { input, at })
    }

    fn text(&self, range: &Range<usize>) -> &str {
        text(&self.input, range)
    }

    /// `GET`, `POST`, ... (upper-case).
    pub fn method(&self) -> &str {
        self.text(&self.at.method)
    }

    /// The request's path in the gateway's canonical form: dot segments
    /// removed, unreserved characters decoded, other percent-escapes kept
    /// (upper case). Routing, limits and the upstream see the same path.
    pub fn path(&self) -> &str {
        self.text(&self.at.path)
    }

    /// The path the upstream will receive: the listen path stripped when the
    /// API says so, after earlier plugins' changes.
    pub fn upstream_path(&self) -> &str {
        self.text(&self.at.upstream_path)
    }

    /// The query string as the client sent it (raw, not decoded), without
    /// the leading `?`; empty when there is none.
    pub fn query(&self) -> &str {
        self.text(&self.at.query)
    }

    /// The request target: the canonical path ([`Self::path`]) and, if any, `?` and
    /// the query (`/orders/7?expand=items`).
    pub fn uri(&self) -> String {
        match self.query() {
            "" => self.path().to_owned(),
            query => format!("{}?{query}", self.path()),
        }
    }

    /// The client's address, `ip:port`.
    pub fn client_addr(&self) -> &str {
        self.text(&self.at.client_addr)
    }

    /// The gateway's id for this request (also sent upstream as
    /// `x-request-id`).
    pub fn request_id(&self) -> &str {
        self.text(&self.at.request_id)
    }

    /// Every header field in arrival order; names are lower-case and may
    /// repeat.
    pub fn headers(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.at.headers.iter().map(|(n, v)| (self.text(n), self.text(v)))
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.at
            .headers
            .iter()
            .find(|(n, _)| self.is_name(n, name))
            .map(|(_, v)| self.text(v))
    }

    /// Every value of header `name`, in arrival order.
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.at
            .headers
            .iter()
            .filter(move |(n, _)| self.is_name(n, name))
            .map(|(_, v)| self.text(v))
    }

    /// Whether the header name at `range` is `name`, ignoring ASCII case.
    /// Compared as bytes: only the values returned are read as text.
    fn is_name(&self, range: &Range<usize>, name: &str) -> bool {
        self.input[range.clone()].eq_ignore_ascii_case(name.as_bytes())
    }

    /// The parameters the endpoint's path template captured, e.g. `{id}`.
    pub fn params(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.at.params.iter().map(|(n, v)| (self.text(n), self.text(v)))
    }

    /// The path parameter `name` captured by the endpoint template.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.at
            .params
            .iter()
            .find(|(n, _)| self.input[n.clone()] == *name.as_bytes())
            .map(|(_, v)| self.text(v))
    }

    /// The first value of query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query().split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }

    /// The body: present only when the function was registered with
    /// `request(body)` or `auth(body)` (see [`plugin!`](crate::plugin)), and
    /// never for a `response` function.
    pub fn body(&self) -> Option<&[u8]> {
        self.at.body.as_ref().map(|range| &self.input[range.clone()])
    }

    /// The body parsed as JSON. The function must be registered with
    /// `request(body)` to receive a body.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let body = self
            .body()
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

#[cfg(test)]
mod tests {
    use super::percent_decode;
    use crate::testing::TestRequest;

    #[test]
    fn header_names_match_in_any_case_and_params_exactly() {
        let req = TestRequest::get("/users/7")
            .header("x-user", "ann")
            .header("Accept", "a/b")
            .header("X-USER", "bob")
            .param("id", "7")
            .build();
        assert_eq!(req.header("X-User"), Some("ann"));
        assert_eq!(req.header("accept"), Some("a/b"));
        assert_eq!(req.header_all("x-user").collect::<Vec<_>>(), ["ann", "bob"]);
        assert_eq!(req.header("x-use"), None);
        assert_eq!(req.param("id"), Some("7"));
        assert_eq!(req.param("ID"), None);
    }

    #[test]
    fn decodes_percent_and_plus() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
