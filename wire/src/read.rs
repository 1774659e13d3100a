//! Reading a buffer: the SDK's side. Every length is checked against the
//! buffer and every string's UTF-8 validated.

use std::ops::Range;

use crate::{Malformed, Result};

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
/// case (see [`crate::http_error`]) and its text.
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
