//! Writing a buffer: the gateway's side (and the SDK's, for plugins' tests).

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
/// [`crate::http_error`]) and its text.
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
