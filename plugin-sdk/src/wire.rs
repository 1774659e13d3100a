//! Reads the gateway's input buffer (its layout is specified in
//! `wit/plugin.wit`, the package documentation). Every length is checked
//! against the buffer and every string's UTF-8 validated: a malformed input
//! fails the call with an error, never a panic or an out-of-bounds read.

use std::ops::Range;

use crate::http::{HttpError, OutboundResponse};
use crate::{Error, Result};

/// The sections of an input, as byte ranges of it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sections {
    pub request: Range<usize>,
    pub session: Range<usize>,
    pub response: Range<usize>,
    pub api: Range<usize>,
    pub config: Range<usize>,
    /// Empty when the gateway sent none (0.2.0 gateways send five sections).
    pub fan_out: Range<usize>,
}

impl Sections {
    pub fn split(input: &[u8]) -> Result<Self> {
        let mut r = Reader::new(input, 0..input.len());
        Ok(Sections {
            request: r.bytes()?,
            session: r.bytes()?,
            response: r.bytes()?,
            api: r.bytes()?,
            config: r.bytes()?,
            fan_out: if r.is_empty() { 0..0 } else { r.bytes()? },
        })
    }
}

/// A cursor over one range of the input.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    input: &'a [u8],
    at: usize,
    end: usize,
}

fn malformed(what: &str) -> Error {
    Error::msg(format!("malformed input from the gateway: {what}"))
}

// The small readers are `#[inline]`: plugins build at `opt-level = "s"`,
// where each was otherwise a call for every length and string of the input,
// a third of a simple function's time (docs/benchmarks.md).
impl<'a> Reader<'a> {
    pub fn new(input: &'a [u8], range: Range<usize>) -> Self {
        Reader {
            input,
            at: range.start,
            end: range.end.min(input.len()),
        }
    }

    #[inline]
    fn take(&mut self, len: usize) -> Result<Range<usize>> {
        let start = self.at;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= self.end)
            .ok_or_else(|| malformed("truncated"))?;
        self.at = end;
        Ok(start..end)
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let range = self.take(N)?;
        let mut out = [0; N];
        out.copy_from_slice(&self.input[range]);
        Ok(out)
    }

    #[inline]
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    #[inline]
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// Whether everything has been read.
    pub fn is_empty(&self) -> bool {
        self.at >= self.end
    }

    /// A count or length, as a `usize`.
    #[inline]
    pub fn len(&mut self) -> Result<usize> {
        usize::try_from(self.u32()?).map_err(|_| malformed("length"))
    }

    /// A count of entries each at least `min_bytes` long: checked against
    /// what is left, so a lying count cannot make the reader allocate.
    pub fn count(&mut self, min_bytes: usize) -> Result<usize> {
        let count = self.len()?;
        if count.saturating_mul(min_bytes) > self.end - self.at {
            return Err(malformed("count"));
        }
        Ok(count)
    }

    #[inline]
    pub fn bytes(&mut self) -> Result<Range<usize>> {
        let len = self.len()?;
        self.take(len)
    }

    /// A string: its range, checked to be UTF-8.
    #[inline]
    pub fn str(&mut self) -> Result<Range<usize>> {
        let range = self.bytes()?;
        std::str::from_utf8(&self.input[range.clone()]).map_err(|_| malformed("text is not UTF-8"))?;
        Ok(range)
    }

    pub fn string(&mut self) -> Result<String> {
        let range = self.str()?;
        Ok(text(self.input, &range).to_owned())
    }

    pub fn fields(&mut self) -> Result<Vec<(Range<usize>, Range<usize>)>> {
        let count = self.count(8)?;
        let mut fields = Vec::with_capacity(count);
        for _ in 0..count {
            fields.push((self.str()?, self.str()?));
        }
        Ok(fields)
    }

    pub fn owned_fields(&mut self) -> Result<Vec<(String, String)>> {
        let count = self.count(8)?;
        (0..count).map(|_| Ok((self.string()?, self.string()?))).collect()
    }

    pub fn opt<T>(&mut self, read: impl FnOnce(&mut Self) -> Result<T>) -> Result<Option<T>> {
        match self.u8()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            _ => Err(malformed("option tag")),
        }
    }
}

/// The text at `range`, which a [`Reader`] checked to be UTF-8.
pub(crate) fn text<'a>(input: &'a [u8], range: &Range<usize>) -> &'a str {
    std::str::from_utf8(&input[range.clone()]).unwrap_or_default()
}

/// Writes an input buffer: the gateway's side of the layout, here so tests
/// (the SDK's, and plugins' through [`crate::testing`]) make inputs without a
/// gateway.
#[derive(Debug, Default)]
pub(crate) struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    pub fn len(&mut self, len: usize) {
        self.u32(u32::try_from(len).unwrap_or(u32::MAX));
    }

    pub fn bytes(&mut self, bytes: &[u8]) {
        self.len(bytes.len());
        self.0.extend_from_slice(bytes);
    }

    pub fn str(&mut self, text: &str) {
        self.bytes(text.as_bytes());
    }

    pub fn fields(&mut self, fields: &[(String, String)]) {
        self.len(fields.len());
        for (name, value) in fields {
            self.str(name);
            self.str(value);
        }
    }

    pub fn opt<T>(&mut self, value: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match value {
            None => self.0.push(0),
            Some(value) => {
                self.0.push(1);
                write(self, value);
            }
        }
    }

    pub fn section(&mut self, write: impl FnOnce(&mut Self)) {
        let at = self.0.len();
        self.u32(0);
        write(self);
        let len = u32::try_from(self.0.len() - at - 4).unwrap_or(u32::MAX);
        self.0[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// The `fan-out` section's content: nothing when there are no results.
    pub fn fan_out(&mut self, results: &[(String, std::result::Result<OutboundResponse, HttpError>)]) {
        if results.is_empty() {
            return;
        }
        self.len(results.len());
        for (name, result) in results {
            self.section(|w| {
                w.str(name);
                match result {
                    Ok(response) => {
                        w.0.push(0);
                        w.0.extend_from_slice(&response.status.to_le_bytes());
                        w.fields(&response.headers);
                        w.bytes(&response.body);
                    }
                    Err(error) => {
                        let (case, detail) = match error {
                            HttpError::NotAllowed(host) => (0, host.as_str()),
                            HttpError::InvalidRequest(why) => (1, why.as_str()),
                            HttpError::Connect(why) => (2, why.as_str()),
                            HttpError::Timeout => (3, ""),
                            HttpError::TooLarge => (4, ""),
                            HttpError::CallLimit => (5, ""),
                            HttpError::Other(why) => (6, why.as_str()),
                            HttpError::Cancelled => (7, ""),
                        };
                        w.0.extend_from_slice(&[1, case]);
                        w.str(detail);
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::http::{HttpError, OutboundResponse};
    use crate::{Context, Request};

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
            w.fields(headers);
            w.fields(&[("id".into(), "7".into())]);
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
            w.fields(&[("plan".into(), "gold".into())]);
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
        w.section(|w| w.fan_out(&results));
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
