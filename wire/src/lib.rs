//! The input buffer of the Portcullis plugin contract 0.2, defined once for
//! both of its sides: the gateway writes it, and the plugin SDK reads it
//! (and writes it too, for plugins' unit tests). Everything a function reads
//! travels in this one `list<u8>`, so a call lowers one value into the guest
//! instead of one per string. The layout is specified in
//! `plugin-sdk/wit/plugin.wit` (the package documentation); this crate is
//! its only implementation.
//!
//! All integers are little-endian. A length or count is a `u32`; a string
//! or byte string is its length and its bytes; a list of fields is a count
//! and that many name and value strings; an option is a byte, 0 (absent)
//! or 1 (present, followed by the value). The buffer is six sections, each
//! its length and its content, in this order: request, session, response,
//! API, config, fan-out. A reader skips what a section holds past the
//! fields it knows, so a later gateway may append fields.
//!
//! Reading checks every length against the buffer and every string's
//! UTF-8: a malformed buffer is an error ([`Malformed`]), never a panic or
//! an out-of-bounds read, and a lying count cannot make the reader
//! allocate.

use std::ops::Range;

/// The buffer is not what the layout says; `0` names what was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed input from the gateway: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

pub type Result<T> = std::result::Result<T, Malformed>;

/// The index of each `http-error` case of the WIT variant, as the fan-out
/// section writes it (`other` and any case a later gateway adds read as
/// `other`).
pub mod http_error {
    pub const NOT_ALLOWED: u8 = 0;
    pub const INVALID_REQUEST: u8 = 1;
    pub const CONNECT: u8 = 2;
    pub const TIMEOUT: u8 = 3;
    pub const TOO_LARGE: u8 = 4;
    pub const CALL_LIMIT: u8 = 5;
    pub const OTHER: u8 = 6;
    pub const CANCELLED: u8 = 7;
}

// ---------------------------------------------------------------- writing

/// Writes a buffer.
#[derive(Debug, Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn with_capacity(capacity: usize) -> Self {
        Writer(Vec::with_capacity(capacity))
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    #[inline]
    pub fn u8(&mut self, value: u8) {
        self.0.push(value);
    }

    #[inline]
    pub fn u16(&mut self, value: u16) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    #[inline]
    pub fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    #[inline]
    pub fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    #[inline]
    pub fn i64(&mut self, value: i64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    /// A length or count. Every length the gateway writes is bounded far
    /// below 4 GiB (bodies, headers and configs all have limits), so
    /// saturating never happens in practice.
    #[inline]
    pub fn len(&mut self, len: usize) {
        self.u32(u32::try_from(len).unwrap_or(u32::MAX));
    }

    #[inline]
    pub fn bytes(&mut self, bytes: &[u8]) {
        self.len(bytes.len());
        self.0.extend_from_slice(bytes);
    }

    #[inline]
    pub fn str(&mut self, text: &str) {
        self.bytes(text.as_bytes());
    }

    pub fn fields<'a>(&mut self, fields: impl ExactSizeIterator<Item = (&'a str, &'a str)>) {
        self.len(fields.len());
        for (name, value) in fields {
            self.str(name);
            self.str(value);
        }
    }

    pub fn opt<T>(&mut self, value: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match value {
            None => self.u8(0),
            Some(value) => {
                self.u8(1);
                write(self, value);
            }
        }
    }

    /// A section: its length, then what `write` wrote.
    pub fn section(&mut self, write: impl FnOnce(&mut Self)) {
        let at = self.0.len();
        self.u32(0);
        write(self);
        let len = u32::try_from(self.0.len() - at - 4).unwrap_or(u32::MAX);
        self.0[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
}

/// The request section's fields.
#[derive(Debug, Clone)]
pub struct RequestSection<'a, H, P> {
    pub method: &'a str,
    pub path: &'a str,
    pub upstream_path: &'a str,
    pub query: &'a str,
    pub client_addr: &'a str,
    pub request_id: &'a str,
    pub headers: H,
    pub params: P,
    /// Present when the function reads the body.
    pub body: Option<&'a [u8]>,
}

/// The session section's fields.
#[derive(Debug, Clone)]
pub struct SessionSection<'a, M, T> {
    pub key_id: &'a str,
    pub alias: Option<&'a str>,
    pub rate: u32,
    pub per: u32,
    pub quota_max: i64,
    pub quota_remaining: i64,
    pub quota_renewal_seconds: u64,
    pub metadata: M,
    pub tags: T,
    pub expires: Option<i64>,
}

/// The API section's fields.
#[derive(Debug, Clone, Copy)]
pub struct ApiSection<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub listen_path: &'a str,
    pub upstream: &'a str,
    pub config: &'a str,
}

/// A response: the response section's content (for `response` functions)
/// and a fan-out call's answer.
#[derive(Debug, Clone)]
pub struct ResponseSection<'a, H> {
    pub status: u16,
    pub headers: H,
    pub body: &'a [u8],
}

/// One fan-out call's result: its response, or the `http-error` case (see
/// [`http_error`]) and its text.
#[derive(Debug, Clone)]
pub enum FanOutEntry<'a, H> {
    Response(ResponseSection<'a, H>),
    Error { case: u8, detail: &'a str },
}

impl<'a, H, P> RequestSection<'a, H, P>
where
    H: ExactSizeIterator<Item = (&'a str, &'a str)>,
    P: ExactSizeIterator<Item = (&'a str, &'a str)>,
{
    pub fn write(self, w: &mut Writer) {
        w.section(|w| {
            for text in [
                self.method,
                self.path,
                self.upstream_path,
                self.query,
                self.client_addr,
                self.request_id,
            ] {
                w.str(text);
            }
            w.fields(self.headers);
            w.fields(self.params);
            w.opt(self.body, Writer::bytes);
        });
    }
}

impl<'a, M, T> SessionSection<'a, M, T>
where
    M: ExactSizeIterator<Item = (&'a str, &'a str)>,
    T: ExactSizeIterator<Item = &'a str>,
{
    pub fn write(self, w: &mut Writer) {
        w.section(|w| {
            w.str(self.key_id);
            w.opt(self.alias, Writer::str);
            w.u32(self.rate);
            w.u32(self.per);
            w.i64(self.quota_max);
            w.i64(self.quota_remaining);
            w.u64(self.quota_renewal_seconds);
            w.fields(self.metadata);
            w.len(self.tags.len());
            for tag in self.tags {
                w.str(tag);
            }
            w.opt(self.expires, Writer::i64);
        });
    }
}

impl<'a, H: ExactSizeIterator<Item = (&'a str, &'a str)>> ResponseSection<'a, H> {
    fn write_content(self, w: &mut Writer) {
        w.u16(self.status);
        w.fields(self.headers);
        w.bytes(self.body);
    }

    /// The response section; `None` (for functions that are not `response`
    /// ones) writes it empty.
    pub fn write(response: Option<Self>, w: &mut Writer) {
        w.section(|w| {
            if let Some(response) = response {
                response.write_content(w);
            }
        });
    }
}

impl ApiSection<'_> {
    pub fn write(self, w: &mut Writer) {
        w.section(|w| {
            for text in [self.id, self.name, self.listen_path, self.upstream, self.config] {
                w.str(text);
            }
        });
    }
}

/// The config section: the reference's `config` as JSON text.
pub fn write_config(w: &mut Writer, config: &str) {
    w.section(|w| w.0.extend_from_slice(config.as_bytes()));
}

/// The fan-out section: empty when the reference has no fan-out.
pub fn write_fan_out<'a, H>(w: &mut Writer, results: impl ExactSizeIterator<Item = (&'a str, FanOutEntry<'a, H>)>)
where
    H: ExactSizeIterator<Item = (&'a str, &'a str)>,
{
    w.section(|w| {
        if results.len() == 0 {
            return;
        }
        w.len(results.len());
        for (name, result) in results {
            // Each entry is its own section, so a reader skips what a
            // later gateway appends to it.
            w.section(|w| {
                w.str(name);
                match result {
                    FanOutEntry::Response(response) => {
                        w.u8(0);
                        response.write_content(w);
                    }
                    FanOutEntry::Error { case, detail } => {
                        w.u8(1);
                        w.u8(case);
                        w.str(detail);
                    }
                }
            });
        }
    });
}

// ---------------------------------------------------------------- reading

/// The sections of a buffer, as byte ranges of it.
#[derive(Debug, Clone, Default)]
pub struct Sections {
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

/// A name and a value, as ranges of the buffer.
pub type Pair = (Range<usize>, Range<usize>);

/// The request section, as ranges of the buffer (read without copying).
#[derive(Debug, Clone)]
pub struct RequestRanges {
    pub method: Range<usize>,
    pub path: Range<usize>,
    pub upstream_path: Range<usize>,
    pub query: Range<usize>,
    pub client_addr: Range<usize>,
    pub request_id: Range<usize>,
    pub headers: Vec<Pair>,
    pub params: Vec<Pair>,
    pub body: Option<Range<usize>>,
}

impl RequestRanges {
    pub fn read(input: &[u8], sections: &Sections) -> Result<Self> {
        let mut r = Reader::new(input, sections.request.clone());
        Ok(RequestRanges {
            method: r.str()?,
            path: r.str()?,
            upstream_path: r.str()?,
            query: r.str()?,
            client_addr: r.str()?,
            request_id: r.str()?,
            headers: r.fields()?,
            params: r.fields()?,
            body: r.opt(Reader::bytes)?,
        })
    }
}

/// The session section, read into owned values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedSession {
    pub key_id: String,
    pub alias: Option<String>,
    pub rate: u32,
    pub per: u32,
    pub quota_max: i64,
    pub quota_remaining: i64,
    pub quota_renewal_seconds: u64,
    pub metadata: Vec<(String, String)>,
    pub tags: Vec<String>,
    pub expires: Option<i64>,
}

impl OwnedSession {
    pub fn read(input: &[u8], sections: &Sections) -> Result<Self> {
        let mut r = Reader::new(input, sections.session.clone());
        Ok(OwnedSession {
            key_id: r.string()?,
            alias: r.opt(Reader::string)?,
            rate: r.u32()?,
            per: r.u32()?,
            quota_max: r.i64()?,
            quota_remaining: r.i64()?,
            quota_renewal_seconds: r.u64()?,
            metadata: r.owned_fields()?,
            tags: {
                let count = r.count(4)?;
                (0..count).map(|_| r.string()).collect::<Result<_>>()?
            },
            expires: r.opt(Reader::i64)?,
        })
    }
}

/// The API section, read into owned values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedApi {
    pub id: String,
    pub name: String,
    pub listen_path: String,
    pub upstream: String,
    pub config: String,
}

impl OwnedApi {
    pub fn read(input: &[u8], sections: &Sections) -> Result<Self> {
        let mut r = Reader::new(input, sections.api.clone());
        Ok(OwnedApi {
            id: r.string()?,
            name: r.string()?,
            listen_path: r.string()?,
            upstream: r.string()?,
            config: r.string()?,
        })
    }
}

/// A response (the response section, or a fan-out call's), read into owned
/// values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl OwnedResponse {
    fn read_content(r: &mut Reader<'_>) -> Result<Self> {
        Ok(OwnedResponse {
            status: r.u16()?,
            headers: r.owned_fields()?,
            body: r.input[r.bytes()?].to_vec(),
        })
    }

    /// The response section (of a `response` function's input).
    pub fn read(input: &[u8], sections: &Sections) -> Result<Self> {
        Self::read_content(&mut Reader::new(input, sections.response.clone()))
    }
}

/// One fan-out call's result as read: the response, or the `http-error`
/// case (see [`http_error`]) and its text.
pub type OwnedFanOut = Vec<(String, std::result::Result<OwnedResponse, (u8, String)>)>;

/// The fan-out section's results; none when the section is empty.
pub fn read_fan_out(input: &[u8], sections: &Sections) -> Result<OwnedFanOut> {
    let mut r = Reader::new(input, sections.fan_out.clone());
    if r.is_empty() {
        return Ok(Vec::new());
    }
    let count = r.count(4)?;
    let mut results = Vec::with_capacity(count);
    for _ in 0..count {
        let mut e = Reader::new(input, r.bytes()?);
        let name = e.string()?;
        let result = match e.u8()? {
            0 => Ok(OwnedResponse::read_content(&mut e)?),
            1 => Err((e.u8()?, e.string()?)),
            _ => return Err(Malformed("fan-out result tag")),
        };
        results.push((name, result));
    }
    Ok(results)
}

/// The config section's text.
pub fn config<'a>(input: &'a [u8], sections: &Sections) -> Result<&'a str> {
    std::str::from_utf8(&input[sections.config.clone()]).map_err(|_| Malformed("config is not UTF-8"))
}

/// A cursor over one range of a buffer.
#[derive(Debug)]
pub struct Reader<'a> {
    input: &'a [u8],
    at: usize,
    end: usize,
}

// The small readers are `#[inline]`: plugins build at `opt-level = "s"`,
// where each was otherwise a call for every length and string of the input,
// a third of a simple function's time (docs/benchmarks.md).
impl<'a> Reader<'a> {
    pub fn new(input: &'a [u8], range: Range<usize>) -> Self {
        Reader {
            input,
            at: range.start.min(input.len()),
            end: range.end.min(input.len()),
        }
    }

    #[inline]
    fn take(&mut self, len: usize) -> Result<Range<usize>> {
        let start = self.at;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= self.end)
            .ok_or(Malformed("truncated"))?;
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

    #[inline]
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    #[inline]
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    #[inline]
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    #[inline]
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
        usize::try_from(self.u32()?).map_err(|_| Malformed("length"))
    }

    /// A count of entries each at least `min_bytes` long: checked against
    /// what is left, so a lying count cannot make the reader allocate.
    pub fn count(&mut self, min_bytes: usize) -> Result<usize> {
        let count = self.len()?;
        if count.saturating_mul(min_bytes) > self.end - self.at {
            return Err(Malformed("count"));
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
        std::str::from_utf8(&self.input[range.clone()]).map_err(|_| Malformed("text is not UTF-8"))?;
        Ok(range)
    }

    pub fn string(&mut self) -> Result<String> {
        let range = self.str()?;
        Ok(text(self.input, &range).to_owned())
    }

    pub fn fields(&mut self) -> Result<Vec<Pair>> {
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
            _ => Err(Malformed("option tag")),
        }
    }
}

/// The text at `range`, which a [`Reader`] checked to be UTF-8.
pub fn text<'a>(input: &'a [u8], range: &Range<usize>) -> &'a str {
    std::str::from_utf8(&input[range.clone()]).unwrap_or_default()
}

#[cfg(test)]
mod tests;
