//! The 0.2 contract's input buffer: everything a function reads, written
//! into one `list<u8>` so a call lowers one value into the guest instead of
//! one per string. The layout is defined once, in the `portcullis-wire`
//! crate, which the SDK reads it with; here the gateway's values are handed
//! to it.

use portcullis_wire::{ApiSection, FanOutEntry, RequestSection, ResponseSection, SessionSection, Writer, http_error};

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
    let mut w = Writer::with_capacity(512 + body + config.len());
    RequestSection {
        method: request.method,
        path: request.path,
        upstream_path: request.upstream_path,
        query: request.query,
        client_addr: request.client_addr,
        request_id: request.request_id,
        headers: request.headers.iter().map(|&(n, v)| (n, v)),
        params: request.params.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        body: request.body,
    }
    .write(&mut w);
    SessionSection {
        key_id: &session.key_id,
        alias: session.alias.as_deref(),
        rate: session.rate,
        per: session.per,
        quota_max: session.quota_max,
        quota_remaining: session.quota_remaining,
        quota_renewal_seconds: session.quota_renewal_seconds,
        metadata: session.metadata.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        tags: session.tags.iter().map(String::as_str),
        expires: session.expires,
    }
    .write(&mut w);
    ResponseSection::write(
        response.map(|r| ResponseSection {
            status: r.status,
            headers: r.headers.iter().map(|&(n, v)| (n, v)),
            body: r.body,
        }),
        &mut w,
    );
    ApiSection {
        id: &api.id,
        name: &api.name,
        listen_path: &api.listen_path,
        upstream: &api.upstream,
        config: &api.config,
    }
    .write(&mut w);
    portcullis_wire::write_config(&mut w, config);
    portcullis_wire::write_fan_out(
        &mut w,
        fan_out.iter().map(|(name, result)| {
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
    w.into_bytes()
}

/// An `http-error` as its case's index in the WIT variant and its text.
fn error_case(error: &HttpError) -> (u8, &str) {
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
