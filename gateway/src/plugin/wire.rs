//! The 0.2 contract's input buffer: everything a function reads, written
//! into one `list<u8>` so a call lowers one value into the guest instead of
//! one per string. The layout is specified in `plugin-sdk/wit/plugin.wit`
//! (the package documentation); the SDK's `wire` module reads it.

use super::bindings::{Api, HttpError, Session};
use super::records::{RequestRecord, ResponseRecord};
use crate::upstream::outbound::OutboundResponse;

/// One result of a reference's fan-out, with its call's name.
pub type FanOutResult = (String, Result<OutboundResponse, HttpError>);

/// Writes the input of one call. `response` is present for `response`
/// functions only; `fan_out` is empty unless the reference has one.
pub fn input(
    request: &RequestRecord<'_>,
    session: &Session,
    response: Option<&ResponseRecord<'_>>,
    api: &Api,
    config: &str,
    fan_out: &[FanOutResult],
) -> Vec<u8> {
    let fanned: usize = fan_out
        .iter()
        .map(|(_, r)| r.as_ref().map_or(0, |r| r.body.len() + 64 * r.headers.len()))
        .sum();
    let body = request.body.map_or(0, <[u8]>::len) + response.map_or(0, |r| r.body.len()) + fanned;
    let mut w = Writer(Vec::with_capacity(512 + body + config.len()));
    w.section(|w| {
        for text in [
            request.method,
            request.path,
            request.upstream_path,
            request.query,
            request.client_addr,
            request.request_id,
        ] {
            w.str(text);
        }
        w.fields(request.headers.iter().map(|&(n, v)| (n, v)));
        w.fields(request.params.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        w.opt(request.body, Writer::bytes);
    });
    w.section(|w| {
        w.str(&session.key_id);
        w.opt(session.alias.as_deref(), Writer::str);
        w.u32(session.rate);
        w.u32(session.per);
        w.i64(session.quota_max);
        w.i64(session.quota_remaining);
        w.u64(session.quota_renewal_seconds);
        w.fields(session.metadata.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        w.len(session.tags.len());
        for tag in &session.tags {
            w.str(tag);
        }
        w.opt(session.expires, Writer::i64);
    });
    w.section(|w| {
        if let Some(response) = response {
            w.0.extend_from_slice(&response.status.to_le_bytes());
            w.fields(response.headers.iter().map(|&(n, v)| (n, v)));
            w.bytes(response.body);
        }
    });
    w.section(|w| {
        for text in [&api.id, &api.name, &api.listen_path, &api.upstream, &api.config] {
            w.str(text);
        }
    });
    w.section(|w| w.0.extend_from_slice(config.as_bytes()));
    w.section(|w| {
        if fan_out.is_empty() {
            return;
        }
        w.len(fan_out.len());
        for (name, result) in fan_out {
            w.section(|w| {
                w.str(name);
                match result {
                    Ok(response) => {
                        w.0.push(0);
                        w.0.extend_from_slice(&response.status.to_le_bytes());
                        w.fields(response.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
                        w.bytes(&response.body);
                    }
                    Err(error) => {
                        let (case, detail) = error_case(error);
                        w.0.push(1);
                        w.0.push(case);
                        w.str(detail);
                    }
                }
            });
        }
    });
    w.0
}

/// An `http-error` as its case's index in the WIT variant and its text.
fn error_case(error: &HttpError) -> (u8, &str) {
    match error {
        HttpError::NotAllowed(host) => (0, host),
        HttpError::InvalidRequest(why) => (1, why),
        HttpError::Connect(why) => (2, why),
        HttpError::Timeout => (3, ""),
        HttpError::TooLarge => (4, ""),
        HttpError::CallLimit => (5, ""),
        HttpError::Other(why) => (6, why),
        HttpError::Cancelled => (7, ""),
    }
}

struct Writer(Vec<u8>);

impl Writer {
    /// A length as the buffer's `u32`. Every length the gateway writes is
    /// bounded far below 4 GiB (bodies, headers and configs all have
    /// limits), so saturating never happens in practice.
    fn len(&mut self, len: usize) {
        self.u32(u32::try_from(len).unwrap_or(u32::MAX));
    }

    fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn i64(&mut self, value: i64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.len(bytes.len());
        self.0.extend_from_slice(bytes);
    }

    fn str(&mut self, text: &str) {
        self.bytes(text.as_bytes());
    }

    fn fields<'a>(&mut self, fields: impl ExactSizeIterator<Item = (&'a str, &'a str)>) {
        self.len(fields.len());
        for (name, value) in fields {
            self.str(name);
            self.str(value);
        }
    }

    fn opt<T>(&mut self, value: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match value {
            None => self.0.push(0),
            Some(value) => {
                self.0.push(1);
                write(self, value);
            }
        }
    }

    /// A section: its length, then what `write` wrote.
    fn section(&mut self, write: impl FnOnce(&mut Self)) {
        let at = self.0.len();
        self.u32(0);
        write(self);
        let len = self.0.len() - at - 4;
        self.0[at..at + 4].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    }
}
