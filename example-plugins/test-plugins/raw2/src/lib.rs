//! Test-only plugin (not an example), built straight from the 0.2 contract
//! (`plugin-sdk/wit/plugin.wit`) with wit-bindgen and no SDK, the way an
//! attacker would write one. It attacks what 0.2 added: headers for the
//! client's response, an auth function's request changes and the session's
//! alias; and it answers with the raw input buffer, so a test can check the
//! layout the gateway sends against the WIT's description.

wit_bindgen::generate!({
    path: "../../../plugin-sdk/wit",
    world: "plugin",
});

use exports::portcullis::plugin::guest::Guest;
use portcullis::plugin::types::{
    AuthOutcome, Authenticated, FunctionInfo, HookKind, Outcome, RequestChanges, Response, Session,
};

/// A complete second response: if it ever reaches a client as a message of
/// its own, the gateway let a plugin split the response stream.
const FORGED_RESPONSE: &str = "HTTP/1.1 200 OK\r\ncontent-length: 6\r\nx-forged: yes\r\n\r\nforged";

/// The functions, by index (the gateway calls by position).
const FUNCTIONS: [(&str, HookKind); 7] = [
    ("echo-input", HookKind::Request),
    ("response-header-flood", HookKind::Request),
    ("response-header-split", HookKind::Request),
    ("response-header-framing", HookKind::Request),
    ("auth-alias-control", HookKind::Auth),
    ("auth-upstream-anywhere", HookKind::Auth),
    ("auth-framing", HookKind::Auth),
];

struct Raw;

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
