//! The gateway's input buffer, read (and, for tests, written) with the
//! `portcullis-wire` crate, which defines its layout once for the gateway
//! and the SDK (specified in `wit/plugin.wit`, the package documentation).
//! A malformed input fails the call with an error, never a panic or an
//! out-of-bounds read (a `Malformed` error becomes the SDK's `Error`). This
//! module adapts the crate to the SDK's types.

use portcullis_wire::{FanOutEntry, ResponseSection, http_error};
pub(crate) use portcullis_wire::{Sections, Writer, text};

use crate::http::{HttpError, OutboundResponse};

/// An `http-error` as the wire carries it: its case and text.
pub(crate) fn error_case(error: &HttpError) -> (u8, &str) {
    match error {
        HttpError::NotAllowed(host) => (http_error::NOT_ALLOWED, host),
        HttpError::InvalidRequest(why) => (http_error::INVALID_REQUEST, why),
        HttpError::Connect(why) => (http_error::CONNECT, why),
        HttpError::Timeout => (http_error::TIMEOUT, ""),
        HttpError::TooLarge => (http_error::TOO_LARGE, ""),
        HttpError::CallLimit => (http_error::CALL_LIMIT, ""),
        HttpError::Other(why) => (http_error::OTHER, why),
        HttpError::Cancelled => (http_error::CANCELLED, ""),
    }
}

/// An `http-error` read from the wire: `other`, and any case a later
/// gateway adds, read as `other`.
pub(crate) fn http_error(case: u8, detail: String) -> HttpError {
    match case {
        http_error::NOT_ALLOWED => HttpError::NotAllowed(detail),
        http_error::INVALID_REQUEST => HttpError::InvalidRequest(detail),
        http_error::CONNECT => HttpError::Connect(detail),
        http_error::TIMEOUT => HttpError::Timeout,
        http_error::TOO_LARGE => HttpError::TooLarge,
        http_error::CALL_LIMIT => HttpError::CallLimit,
        http_error::CANCELLED => HttpError::Cancelled,
        _ => HttpError::Other(detail),
    }
}

/// Writes the fan-out section of `results`, as the gateway does.
pub(crate) fn write_fan_out(w: &mut Writer, results: &[(String, Result<OutboundResponse, HttpError>)]) {
    portcullis_wire::write_fan_out(
        w,
        results.iter().map(|(name, result)| {
            let entry = match result {
                Ok(response) => FanOutEntry::Response(ResponseSection {
                    status: response.status,
                    headers: response.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
                    body: &response.body,
                }),
                Err(error) => {
                    let (case, detail) = error_case(error);
                    FanOutEntry::Error { case, detail }
                }
            };
            (name.as_str(), entry)
        }),
    );
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::{Context, Request, Result};

    fn input(headers: &[(String, String)], config: &str) -> Vec<u8> {
        let mut w = Writer::default();
        w.section(|w| {
            for text in [
                "GET",
                "/shop/a%20b",
                "/a%20b",
                "x=1&y=%C3%A9",
                "127.0.0.1:5000",
                "req-1",
            ] {
                w.str(text);
            }
            w.fields(headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            w.fields([("id", "7")].into_iter());
            w.opt(Some(&b"{}"[..]), Writer::bytes);
        });
        w.section(|w| {
            w.str("alice");
            w.opt(Some("Alice A."), Writer::str);
            for n in [10, 60] {
                w.u32(n);
            }
            for n in [100i64, 99] {
                w.0.extend_from_slice(&n.to_le_bytes());
            }
            w.0.extend_from_slice(&3600u64.to_le_bytes());
            w.fields([("plan", "gold")].into_iter());
            w.len(1);
            w.str("staff");
            w.opt(None::<()>, |_, ()| {});
            w.0.extend_from_slice(b"a later field");
        });
        w.section(|_| {});
        w.section(|w| {
            for text in ["shop", "Shop", "/shop/", "http://127.0.0.1:9001", "{\"tier\":1}"] {
                w.str(text);
            }
        });
        w.section(|w| w.0.extend_from_slice(config.as_bytes()));
        w.0
    }

    fn parse(input: Vec<u8>) -> Result<(Request, Context)> {
        let sections = Sections::split(&input)?;
        let input = Rc::new(input);
        let request = Request::parse(Rc::clone(&input), &sections)?;
        Ok((request, Context::new(input, sections)))
    }

    #[test]
    fn reads_every_section_and_skips_fields_it_does_not_know() {
        let headers = [
            ("x-a".into(), "1".into()),
            ("X-B".into(), "2".into()),
            ("x-a".into(), "3".into()),
        ];
        let (req, ctx) = parse(input(&headers, "{\"k\":true}")).expect("well-formed");
        assert_eq!(req.method(), "GET");
        assert_eq!(req.path(), "/shop/a%20b");
        assert_eq!(req.upstream_path(), "/a%20b");
        assert_eq!(req.uri(), "/shop/a%20b?x=1&y=%C3%A9");
        assert_eq!(req.query_param("y").as_deref(), Some("é"));
        assert_eq!(req.header("x-b"), Some("2"));
        assert_eq!(req.header_all("X-A").collect::<Vec<_>>(), ["1", "3"]);
        assert_eq!(req.param("id"), Some("7"));
        assert_eq!(req.body(), Some(&b"{}"[..]));
        assert_eq!((req.client_addr(), req.request_id()), ("127.0.0.1:5000", "req-1"));
        let session = ctx.session();
        assert_eq!(
            (session.key_id.as_str(), session.alias.as_deref()),
            ("alice", Some("Alice A."))
        );
        assert_eq!((session.rate, session.per, session.quota_remaining), (10, 60, 99));
        assert_eq!(session.metadata("plan"), Some("gold"));
        assert!(session.has_tag("staff"));
        assert_eq!(session.expires, None);
        assert_eq!(ctx.api().listen_path, "/shop/");
        assert_eq!(ctx.config_json(), "{\"k\":true}");
        assert!(ctx.response().is_err(), "a request function's input has no response");
        assert!(
            ctx.fan_out().expect("none").is_empty(),
            "a 0.2.0 gateway's five sections"
        );
    }

    #[test]
    fn reads_fan_out_results_and_skips_what_an_entry_appends() {
        let results = vec![
            (
                "a".to_owned(),
                Ok(OutboundResponse {
                    status: 201,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: b"[1]".to_vec(),
                }),
            ),
            ("b".to_owned(), Err(HttpError::Connect("refused".into()))),
            ("c".to_owned(), Err(HttpError::Cancelled)),
        ];
        let mut input = input(&[], "{}");
        let mut w = Writer::default();
        write_fan_out(&mut w, &results);
        input.extend_from_slice(&w.0);
        let (_, ctx) = parse(input.clone()).expect("well-formed");
        let read = ctx.fan_out().expect("well-formed");
        assert_eq!(read.len(), 3);
        let (name, Ok(a)) = &read[0] else { panic!("{read:?}") };
        assert_eq!((name.as_str(), a.status, &a.body[..]), ("a", 201, &b"[1]"[..]));
        assert_eq!(a.header("Content-Type"), Some("application/json"));
        assert!(matches!(&read[1], (n, Err(HttpError::Connect(why))) if n == "b" && why == "refused"));
        assert!(matches!(&read[2], (n, Err(HttpError::Cancelled)) if n == "c"));

        // A later gateway's extra field at the end of an entry is skipped.
        let mut w = Writer::default();
        w.section(|w| {
            w.len(1);
            w.section(|w| {
                w.str("x");
                w.0.extend_from_slice(&[1, 3]);
                w.str("");
                w.0.extend_from_slice(b"appended");
            });
        });
        let mut later = self::input(&[], "{}");
        later.extend_from_slice(&w.0);
        let (_, ctx) = parse(later).expect("well-formed");
        assert!(matches!(&ctx.fan_out().expect("well-formed")[..], [(n, Err(HttpError::Timeout))] if n == "x"));

        // Every truncation of the section is an error, never a panic.
        let five = self::input(&[], "{}").len();
        for cut in five + 1..input.len() {
            let mut bad = input.clone();
            bad.truncate(cut);
            assert!(parse(bad).is_err(), "cut at {cut}");
        }
        // So is an entry count or a length that lies.
        let mut lying = self::input(&[], "{}");
        lying.extend_from_slice(&[8, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 3, 0, 0, 0]);
        let (_, ctx) = parse(lying).expect("the section itself is whole");
        assert!(ctx.fan_out().is_err());
    }

    #[test]
    fn a_truncated_or_lying_input_is_an_error() {
        let good = input(&[], "{}");
        for cut in [3, 10, 40, good.len() - 1] {
            let mut bad = good.clone();
            bad.truncate(cut);
            assert!(parse(bad).is_err(), "cut at {cut}");
        }
        // A header count far beyond the buffer is refused before allocating.
        let mut lying = Writer::default();
        lying.section(|w| {
            for _ in 0..6 {
                w.str("");
            }
            w.u32(u32::MAX);
        });
        for _ in 0..4 {
            lying.section(|_| {});
        }
        assert!(parse(lying.0).is_err());
    }
}
