//! Runtime support for [`plugin!`](crate::plugin): the function table and the
//! dispatch from the exported `guest` interface to plain Rust functions.
//! Not a public API; the macro is.

use std::sync::Once;

pub use crate::bindings::exports::portcullis::plugin::guest::Guest;
use crate::bindings::portcullis::plugin::types::FunctionInfo;
pub use crate::{Api, AuthOutcome, Context, HookKind, Outcome, Request, Response, Session};

/// A registered function, by kind.
#[derive(Debug)]
pub enum Handler {
    /// Continues or responds.
    Request(fn(&Request, &Context) -> crate::Result<Outcome>),
    /// Returns a session or a rejection.
    Auth(fn(&Request, &Context) -> crate::Result<AuthOutcome>),
    /// Returns the (possibly changed) response.
    Response(fn(&Request, Response, &Context) -> crate::Result<Response>),
}

/// One row of the table the macro builds.
#[derive(Debug)]
pub struct Entry {
    /// The name operators use in `function:`.
    pub name: &'static str,
    /// Whether the gateway passes the body in.
    pub wants_body: bool,
    pub handler: Handler,
}

impl Handler {
    fn kind(&self) -> HookKind {
        match self {
            Handler::Request(_) => HookKind::Request,
            Handler::Auth(_) => HookKind::Auth,
            Handler::Response(_) => HookKind::Response,
        }
    }
}

pub fn functions(table: &[Entry]) -> Vec<FunctionInfo> {
    table
        .iter()
        .map(|e| FunctionInfo {
            name: e.name.to_owned(),
            kind: e.handler.kind(),
            wants_body: e.wants_body,
        })
        .collect()
}

/// Routes panics to the gateway's log (attributed to this plugin) before the
/// instance aborts, so operators see the message and location.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            crate::log::log(crate::log::Level::Error, &format!("plugin panicked: {info}"));
        }));
    });
}

fn lookup<'t>(table: &'t [Entry], function: &str) -> Result<&'t Handler, String> {
    install_panic_hook();
    table
        .iter()
        .find(|e| e.name == function)
        .map(|e| &e.handler)
        .ok_or_else(|| {
            let names: Vec<_> = table.iter().map(|e| e.name).collect();
            format!("no function `{function}` in this plugin (it has: {})", names.join(", "))
        })
}

fn wrong_kind(function: &str, handler: &Handler, wanted: &str) -> String {
    format!(
        "function `{function}` is a {:?} function, not a {wanted} function",
        handler.kind()
    )
}

pub fn on_request(
    table: &[Entry],
    function: String,
    request: Request,
    session: Session,
    api: Api,
    config_json: String,
) -> Result<Outcome, String> {
    match lookup(table, &function)? {
        Handler::Request(f) => f(
            &request,
            &Context {
                session,
                api,
                config_json,
            },
        )
        .map_err(|e| e.to_string()),
        other => Err(wrong_kind(&function, other, "request")),
    }
}

pub fn on_auth(
    table: &[Entry],
    function: String,
    request: Request,
    api: Api,
    config_json: String,
) -> Result<AuthOutcome, String> {
    match lookup(table, &function)? {
        Handler::Auth(f) => f(
            &request,
            &Context {
                session: Session::new(""),
                api,
                config_json,
            },
        )
        .map_err(|e| e.to_string()),
        other => Err(wrong_kind(&function, other, "auth")),
    }
}

pub fn on_response(
    table: &[Entry],
    function: String,
    request: Request,
    response: Response,
    session: Session,
    api: Api,
    config_json: String,
) -> Result<Response, String> {
    match lookup(table, &function)? {
        Handler::Response(f) => f(
            &request,
            response,
            &Context {
                session,
                api,
                config_json,
            },
        )
        .map_err(|e| e.to_string()),
        other => Err(wrong_kind(&function, other, "response")),
    }
}
