//! Test-only plugin (not an example), built straight from the 0.2 contract
//! (`plugin-sdk/wit/plugin.wit`) with wit-bindgen and no SDK, the way an
//! attacker would write one. It attacks what 0.2 added: headers for the
//! client's response, an auth function's request changes and the session's
//! alias; and it answers with the raw input buffer, so a test can check the
//! layout the gateway sends against the WIT's description. `log-parts`
//! sends the `log-part` import what the SDK never would.

wit_bindgen::generate!({
    path: "../../../plugin-sdk/wit",
    world: "plugin",
});

use exports::portcullis::plugin::guest::Guest;
use portcullis::plugin::log::{Level, log_part};
use portcullis::plugin::types::{
    AuthOutcome, Authenticated, FunctionInfo, HookKind, Outcome, RequestChanges, Response, Session,
};

/// A complete second response: if it ever reaches a client as a message of
/// its own, the gateway let a plugin split the response stream.
const FORGED_RESPONSE: &str = "HTTP/1.1 200 OK\r\ncontent-length: 6\r\nx-forged: yes\r\n\r\nforged";

/// The functions, by index (the gateway calls by position).
const FUNCTIONS: [(&str, HookKind); 8] = [
    ("echo-input", HookKind::Request),
    ("response-header-flood", HookKind::Request),
    ("response-header-split", HookKind::Request),
    ("response-header-framing", HookKind::Request),
    ("auth-alias-control", HookKind::Auth),
    ("auth-upstream-anywhere", HookKind::Auth),
    ("auth-framing", HookKind::Auth),
    ("log-parts", HookKind::Request),
];

struct Raw;

/// Calls `log-part` with `bytes` (zero-padded to 96) and a `len` that may
/// claim more than 96.
fn part(level: Level, len: u8, last: bool, bytes: &[u8]) {
    let mut w = [0u64; 12];
    for (word, chunk) in w.iter_mut().zip(bytes.chunks(8)) {
        let mut le = [0u8; 8];
        le[..chunk.len()].copy_from_slice(chunk);
        *word = u64::from_le_bytes(le);
    }
    log_part(
        level, len, last, w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8], w[9], w[10], w[11],
    );
}

/// What `log-parts` sends: every way a guest can misuse `log-part`.
fn log_parts() {
    // A `len` over 96 counts as 96; the level of the last part counts.
    part(Level::Debug, 255, false, &[b'a'; 96]);
    part(Level::Trace, 96, false, &[b'b'; 96]);
    part(Level::Warn, 8, true, b"parts-ok");
    // Control characters cannot start a line of their own.
    part(Level::Warn, 32, true, b"parts-forge\n1999-01-01T00:00\x1b[2J");
    // Bytes that are not UTF-8 are replaced.
    part(Level::Warn, 13, true, b"parts-bad-\xff\xfe!");
    // 100 parts of 96 bytes: the line is cut at 4 KiB, the rest counted.
    for i in 0..100 {
        let mut bytes = [b'z'; 96];
        bytes[..11].copy_from_slice(b"parts-long-");
        part(Level::Warn, 96, i == 99, &bytes);
    }
    // Never ended: written when the function returns.
    part(Level::Error, 16, false, b"parts-unfinished");
}

fn changes(response_headers: Vec<(String, String)>) -> RequestChanges {
    RequestChanges {
        method: None,
        path: None,
        query: None,
        set_headers: Vec::new(),
        remove_headers: Vec::new(),
        body: None,
        upstream: None,
        session_metadata: Vec::new(),
        response_headers,
    }
}

fn session(alias: Option<String>) -> Session {
    Session {
        key_id: "raw".into(),
        alias,
        rate: 0,
        per: 0,
        quota_max: -1,
        quota_remaining: -1,
        quota_renewal_seconds: 0,
        metadata: Vec::new(),
        tags: Vec::new(),
        expires: None,
    }
}

fn pair(name: &str, value: &str) -> (String, String) {
    (name.to_owned(), value.to_owned())
}

impl Guest for Raw {
    fn functions() -> Vec<FunctionInfo> {
        FUNCTIONS
            .iter()
            .map(|&(name, kind)| FunctionInfo {
                name: name.to_owned(),
                kind,
                wants_body: false,
            })
            .collect()
    }

    fn on_request(function: u32, input: Vec<u8>) -> Result<Outcome, String> {
        Ok(match function {
            0 => Outcome::Respond(Response {
                status: 200,
                headers: vec![pair("content-type", "application/octet-stream")],
                body: input,
            }),
            // More entries than any limit, and more than the gateway will
            // even lift.
            1 => Outcome::Continue(changes((0..10_001).map(|i| pair(&format!("x-{i}"), "v")).collect())),
            2 => Outcome::Continue(changes(vec![pair("x-split", &format!("a\r\n\r\n{FORGED_RESPONSE}"))])),
            3 => Outcome::Continue(changes(vec![
                pair("content-length", "0"),
                pair("transfer-encoding", "chunked"),
                pair("connection", "close"),
                pair("x-kept", "yes"),
            ])),
            7 => {
                log_parts();
                Outcome::Continue(changes(Vec::new()))
            }
            other => return Err(format!("no request function {other}")),
        })
    }

    fn on_auth(function: u32, _input: Vec<u8>) -> Result<AuthOutcome, String> {
        let authenticated = |session, changes| AuthOutcome::Authenticated(Authenticated { session, changes });
        Ok(match function {
            4 => authenticated(session(Some("raw\nforged log line".into())), changes(Vec::new())),
            5 => authenticated(
                session(None),
                RequestChanges {
                    upstream: Some("http://169.254.169.254/latest/meta-data".into()),
                    ..changes(Vec::new())
                },
            ),
            6 => authenticated(
                session(Some("Raw".into())),
                changes(vec![pair("content-length", "999"), pair("x-auth-kept", "yes")]),
            ),
            other => return Err(format!("no auth function {other}")),
        })
    }

    fn on_response(function: u32, _input: Vec<u8>) -> Result<Response, String> {
        Err(format!("no response function {function}"))
    }
}

/// Declares a schema for `echo-input` only, so a test can check that a
/// schema from a component built without the SDK is enforced too.
impl exports::portcullis::plugin::schemas::Guest for Raw {
    fn config_schemas() -> Vec<Option<String>> {
        FUNCTIONS
            .iter()
            .map(|(name, _)| {
                (*name == "echo-input")
                    .then(|| r#"{"type": "object", "properties": {"mode": {"enum": ["raw"]}}}"#.to_owned())
            })
            .collect()
    }
}

export!(Raw);
