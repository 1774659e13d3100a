//! Test-only plugin (not an example), built straight from `wit/0.1/plugin.wit`
//! with wit-bindgen: its `functions` lists `check` twice, with different
//! kinds. The gateway must refuse it at load, naming the duplicate, rather
//! than pick one of the two.

wit_bindgen::generate!({
    path: "../../../wit/0.1",
    world: "plugin",
});

use exports::portcullis::plugin::guest::Guest;
use portcullis::plugin::types::{Api, AuthOutcome, FunctionInfo, HookKind, Outcome, Request, Response, Session};

struct Dup;

impl Guest for Dup {
    fn functions() -> Vec<FunctionInfo> {
        [
            ("check", HookKind::Request),
            ("other", HookKind::Request),
            ("check", HookKind::Auth),
        ]
        .into_iter()
        .map(|(name, kind)| FunctionInfo {
            name: name.to_owned(),
            kind,
            wants_body: false,
        })
        .collect()
    }

    fn on_request(_: String, _: Request, _: Session, _: Api, _: String) -> Result<Outcome, String> {
        Err("never loaded".to_owned())
    }

    fn on_auth(_: String, _: Request, _: Api, _: String) -> Result<AuthOutcome, String> {
        Err("never loaded".to_owned())
    }

    fn on_response(_: String, _: Request, _: Response, _: Session, _: Api, _: String) -> Result<Response, String> {
        Err("never loaded".to_owned())
    }
}

export!(Dup);
