//! The records the gateway passes into a guest, borrowed from the exchange
//! being served. Lowering copies the gateway's own bytes (the parsed
//! request's header map, path and body) straight into guest memory; building
//! the generated owned records first would copy every string, and the body,
//! once more on the host for each hook call.
//!
//! Their shapes are the WIT records `request` and `response`
//! (`wit/plugin.wit`); a mismatch fails when a plugin loads, where every hook
//! export is type-checked against them.

use http::HeaderMap;
use wasmtime::component::{ComponentType, Lower};

/// The WIT `request` record, borrowed.
#[derive(Debug, ComponentType, Lower)]
#[component(record)]
pub struct RequestRecord<'a> {
    pub method: &'a str,
    pub path: &'a str,
    #[component(name = "upstream-path")]
    pub upstream_path: &'a str,
    pub query: &'a str,
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: Option<&'a [u8]>,
    #[component(name = "client-addr")]
    pub client_addr: &'a str,
    pub params: &'a [(String, String)],
    #[component(name = "request-id")]
    pub request_id: &'a str,
}

/// The WIT `response` record, borrowed: the upstream's response as a
/// `response` hook receives it.
#[derive(Debug, ComponentType, Lower)]
#[component(record)]
pub struct ResponseRecord<'a> {
    pub status: u16,
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: &'a [u8],
}

/// A header map's fields as the text pairs a guest receives. Values are
/// borrowed from the map; the rare value that is not UTF-8 (obs-text) is
/// converted lossily and held here, so [`HeaderText::fields`] can borrow it
/// too.
#[derive(Debug)]
pub struct HeaderText<'a> {
    headers: &'a HeaderMap,
    /// Lossy conversions of the values that are not UTF-8, in map order.
    lossy: Vec<String>,
}

impl<'a> HeaderText<'a> {
    pub fn new(headers: &'a HeaderMap) -> Self {
        let lossy = headers
            .values()
            .filter(|value| std::str::from_utf8(value.as_bytes()).is_err())
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect();
        HeaderText { headers, lossy }
    }

    /// `(name, value)` per field, in the map's order; names are lower-case.
    pub fn fields(&self) -> Vec<(&str, &str)> {
        let mut lossy = self.lossy.iter();
        self.headers
            .iter()
            .map(|(name, value)| {
                let text = std::str::from_utf8(value.as_bytes())
                    .ok()
                    .or_else(|| lossy.next().map(String::as_str));
                (name.as_str(), text.unwrap_or_default())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn header_text_keeps_order_repeats_and_converts_obs_text_lossily() {
        let mut headers = HeaderMap::new();
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append(
            "x-latin",
            HeaderValue::from_bytes(b"caf\xe9").expect("obs-text is a valid value"),
        );
        headers.append("x-a", HeaderValue::from_static("2"));
        headers.append("x-utf8", HeaderValue::from_bytes("né".as_bytes()).expect("valid value"));
        headers.append(
            "x-latin2",
            HeaderValue::from_bytes(b"\xff").expect("obs-text is a valid value"),
        );
        let text = HeaderText::new(&headers);
        assert_eq!(
            text.fields(),
            [
                ("x-a", "1"),
                ("x-a", "2"),
                ("x-latin", "caf\u{fffd}"),
                ("x-utf8", "né"),
                ("x-latin2", "\u{fffd}"),
            ]
        );
    }
}
