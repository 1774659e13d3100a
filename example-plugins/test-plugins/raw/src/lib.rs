//! Test-only plugin (not an example), built straight from `wit/0.1/plugin.wit`
//! with wit-bindgen and no SDK, the way an attacker would write one: it
//! returns what the SDK's types would never let a plugin build (framing
//! headers that disagree with the body, 1xx statuses, upstream overrides to
//! anywhere, floods of metadata, headers and log lines, forged log text).
//!
//! Each function reads its parameters from the request's query string, so one
//! endpoint per function serves every variant of its attack.

wit_bindgen::generate!({
    path: "../../../wit/0.1",
    world: "plugin",
});

use exports::portcullis::plugin::guest::Guest;
use portcullis::plugin::http::{self, OutboundRequest};
use portcullis::plugin::log::{self, Level};
use portcullis::plugin::types::{
    Api, AuthOutcome, FunctionInfo, HookKind, Outcome, Request, RequestChanges, Response, Session,
};

/// A complete second response: if it ever reaches a client as a message of
/// its own, the gateway let a plugin split the response stream.
const FORGED_RESPONSE: &str = "HTTP/1.1 200 OK\r\ncontent-length: 6\r\nx-forged: yes\r\n\r\nforged";

/// A complete second request, for the upstream side.
const SMUGGLED_REQUEST: &str = "GET /smuggled HTTP/1.1\r\nhost: upstream\r\ncontent-length: 0\r\n\r\n";

struct Raw;

fn info(name: &str, kind: HookKind, wants_body: bool) -> FunctionInfo {
    FunctionInfo {
        name: name.to_owned(),
        kind,
        wants_body,
    }
}

/// `name=value` from a query string (values are taken as written, `+` and
/// `%XX` decoded).
fn param(request: &Request, name: &str) -> Option<String> {
    request.query.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (n == name).then(|| decode(v))
    })
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn number(request: &Request, name: &str, default: usize) -> usize {
    param(request, name).and_then(|n| n.parse().ok()).unwrap_or(default)
}

fn pair(name: &str, value: &str) -> (String, String) {
    (name.to_owned(), value.to_owned())
}

/// The framing headers `frame=` asks for: `length` (content-length: 0),
/// `chunked` (transfer-encoding: chunked), or `all` (every header the
/// gateway owns, and a header that `connection` names).
fn framing_headers(request: &Request) -> Vec<(String, String)> {
    match param(request, "frame").as_deref() {
        Some("length") => vec![pair("content-length", "0")],
        Some("chunked") => vec![pair("transfer-encoding", "chunked")],
        Some("all") => vec![
            pair("content-length", "1"),
            pair("Transfer-Encoding", "chunked"),
            pair("connection", "keep-alive, x-hop"),
            pair("x-hop", "hop"),
            pair("keep-alive", "timeout=600"),
            pair("upgrade", "h2c"),
            pair("te", "trailers"),
            pair("trailer", "x-trailer"),
            pair("proxy-authenticate", "Basic"),
            pair("proxy-x", "1"),
        ],
        _ => Vec::new(),
    }
}

fn changes() -> RequestChanges {
    RequestChanges {
        method: None,
        path: None,
        query: None,
        set_headers: Vec::new(),
        remove_headers: Vec::new(),
        body: None,
        upstream: None,
        session_metadata: Vec::new(),
    }
}

fn respond(status: u16, headers: Vec<(String, String)>, body: &str) -> Outcome {
    Outcome::Respond(Response {
        status,
        headers,
        body: body.as_bytes().to_vec(),
    })
}

impl Guest for Raw {
    fn functions() -> Vec<FunctionInfo> {
        vec![
            info("respond-framed", HookKind::Request, false),
            info("smuggle", HookKind::Request, false),
            info("route", HookKind::Request, false),
            info("metadata-flood", HookKind::Request, false),
            info("headers-flood", HookKind::Request, false),
            info("remove-flood", HookKind::Request, false),
            info("long-method", HookKind::Request, false),
            info("log-flood", HookKind::Request, false),
            info("log-forge", HookKind::Request, false),
            info("err-huge", HookKind::Request, false),
            info("session", HookKind::Auth, false),
            info("response-frame", HookKind::Response, false),
            info("response-frame-body", HookKind::Response, true),
        ]
    }

    fn on_request(function: String, request: Request, _: Session, _: Api, _: String) -> Result<Outcome, String> {
        let n = |name, default| number(&request, name, default);
        Ok(match function.as_str() {
            // A response whose framing headers disagree with its body.
            "respond-framed" => {
                let status = n("code", 200) as u16;
                let body = param(&request, "body").unwrap_or_else(|| FORGED_RESPONSE.to_owned());
                respond(status, framing_headers(&request), &body)
            }
            // A request to the upstream whose framing hides a second one: in
            // the body the plugin sets, or (`keep`) in the client's own body.
            "smuggle" => Outcome::Continue(RequestChanges {
                set_headers: framing_headers(&request),
                body: param(&request, "keep")
                    .is_none()
                    .then(|| SMUGGLED_REQUEST.as_bytes().to_vec()),
                ..changes()
            }),
            "route" => Outcome::Continue(RequestChanges {
                upstream: param(&request, "to"),
                ..changes()
            }),
            "metadata-flood" => Outcome::Continue(RequestChanges {
                session_metadata: (0..n("n", 24_000)).map(|i| (format!("m{i}"), "v".to_owned())).collect(),
                ..changes()
            }),
            "headers-flood" => respond(
                200,
                (0..n("n", 50_000))
                    .map(|i| (format!("x-{i}"), "v".repeat(n("size", 0))))
                    .collect(),
                "",
            ),
            "remove-flood" => Outcome::Continue(RequestChanges {
                remove_headers: (0..n("n", 100_000)).map(|i| format!("x-{i}")).collect(),
                ..changes()
            }),
            "long-method" => Outcome::Continue(RequestChanges {
                method: Some("A".repeat(n("n", 1 << 20))),
                ..changes()
            }),
            // Log lines, then outbound calls the allowlist refuses (each
            // logged by the gateway), then an answer.
            "log-flood" => {
                for i in 0..n("lines", 0) {
                    log::log(Level::Warn, &format!("flood line {i}"));
                }
                for _ in 0..n("refused", 0) {
                    let call = OutboundRequest {
                        method: "GET".to_owned(),
                        url: "http://169.254.169.254/latest/meta-data/".to_owned(),
                        headers: Vec::new(),
                        body: Vec::new(),
                        timeout_ms: None,
                    };
                    if http::send(&call).is_ok() {
                        return Err("the metadata address answered".to_owned());
                    }
                }
                respond(200, Vec::new(), "{\"ok\":true}")
            }
            // Text that would forge gateway log lines if written raw.
            "log-forge" => {
                let forged =
                    "innocent\n2026-11-28T00:00:00.000000Z  INFO portcullis: FORGED-LOG-LINE admin=true\r\x1b[2K";
                log::log(Level::Info, forged);
                println!("stdout {forged}");
                return Err(format!("failing {forged}"));
            }
            "err-huge" => return Err("E".repeat(n("mb", 8) << 20)),
            other => return Err(format!("no request function {other}")),
        })
    }

    fn on_auth(function: String, request: Request, _: Api, _: String) -> Result<AuthOutcome, String> {
        if function != "session" {
            return Err(format!("no auth function {function}"));
        }
        let n = |name, default| number(&request, name, default);
        let mut metadata: Vec<(String, String)> = (0..n("meta", 0))
            .map(|i| (format!("m{i}"), "v".repeat(n("vlen", 1))))
            .collect();
        if let Some(entry) = param(&request, "entry") {
            metadata.push((entry, "1".to_owned()));
        }
        Ok(AuthOutcome::Authenticated(Session {
            key_id: param(&request, "key").unwrap_or_else(|| "k".repeat(n("keylen", 1))),
            rate: 0,
            per: 0,
            quota_max: -1,
            quota_remaining: -1,
            quota_renewal_seconds: 0,
            metadata,
            tags: (0..n("tags", 0)).map(|i| format!("tag-{i}")).collect(),
            expires: None,
        }))
    }

    fn on_response(
        function: String,
        request: Request,
        mut response: Response,
        _: Session,
        _: Api,
        _: String,
    ) -> Result<Response, String> {
        match function.as_str() {
            // The body streams past (not read); the plugin lies about its length.
            "response-frame" => {}
            // The body is replaced; the upstream's content-length is kept as
            // a careless plugin would, and more framing is added.
            "response-frame-body" => response.body = b"changed by the plugin".to_vec(),
            other => return Err(format!("no response function {other}")),
        }
        response.headers.extend(framing_headers(&request));
        if let Some(code) = param(&request, "code") {
            response.status = code.parse().map_err(|_| "bad code".to_owned())?;
        }
        Ok(response)
    }
}

export!(Raw);
