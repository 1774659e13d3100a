//! Runtime support for [`plugin!`](crate::plugin): the function table and the
//! dispatch from the exported `guest` interface to plain Rust functions.
//! Not a public API; the macro is.

use std::rc::Rc;
use std::sync::Once;

pub use crate::bindings::exports::portcullis::plugin::guest::Guest;
pub use crate::bindings::exports::portcullis::plugin::schemas::Guest as Schemas;
use crate::bindings::portcullis::plugin::types::FunctionInfo;
use crate::wire::Sections;
pub use crate::{AuthOutcome, Context, HookKind, Outcome, Request, Response};

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
    /// The JSON Schema of the function's `config`, when it declares a type.
    pub schema: Option<fn() -> String>,
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

/// The JSON Schema of `T`, as the `schemas` export hands it to the gateway.
pub fn schema<T: schemars::JsonSchema + serde::de::DeserializeOwned>() -> String {
    schemars::schema_for!(T).to_value().to_string()
}

pub fn config_schemas(table: &[Entry]) -> Vec<Option<String>> {
    table.iter().map(|e| e.schema.map(|schema| schema())).collect()
}

/// Routes panics to the gateway's log (attributed to this plugin) before the
/// instance aborts, so operators see the message and location.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            flush_output();
            crate::log::log(crate::log::Level::Error, &format!("plugin panicked: {info}"));
        }));
    });
}

/// Logs what the call wrote to stdout and stderr (see `console`).
fn flush_output() {
    #[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
    crate::console::flush();
}

/// The function at `index` (the gateway calls by position in the list
/// `functions` returned), with the request and context read from `input`.
fn prepare(table: &[Entry], index: u32, input: Vec<u8>) -> Result<(&Handler, Request, Context), String> {
    install_panic_hook();
    let entry = usize::try_from(index)
        .ok()
        .and_then(|i| table.get(i))
        .ok_or_else(|| format!("no function number {index} in this plugin (it has {})", table.len()))?;
    let sections = Sections::split(&input).map_err(|e| e.to_string())?;
    let input = Rc::new(input);
    let request = Request::parse(Rc::clone(&input), &sections).map_err(|e| e.to_string())?;
    Ok((&entry.handler, request, Context::new(input, sections)))
}

fn wrong_kind(handler: &Handler, wanted: &str) -> String {
    format!("function is a {:?} function, not a {wanted} function", handler.kind())
}

pub fn on_request(table: &[Entry], index: u32, input: Vec<u8>) -> Result<Outcome, String> {
    let result = match prepare(table, index, input)? {
        (Handler::Request(f), request, ctx) => f(&request, &ctx).map_err(|e| e.to_string()),
        (other, ..) => Err(wrong_kind(other, "request")),
    };
    flush_output();
    result
}

pub fn on_auth(table: &[Entry], index: u32, input: Vec<u8>) -> Result<AuthOutcome, String> {
    let result = match prepare(table, index, input)? {
        (Handler::Auth(f), request, ctx) => f(&request, &ctx).map_err(|e| e.to_string()),
        (other, ..) => Err(wrong_kind(other, "auth")),
    };
    flush_output();
    result
}

pub fn on_response(table: &[Entry], index: u32, input: Vec<u8>) -> Result<Response, String> {
    let result = match prepare(table, index, input)? {
        (Handler::Response(f), request, ctx) => ctx
            .response()
            .map_err(|e| e.to_string())
            .and_then(|response| f(&request, response, &ctx).map_err(|e| e.to_string())),
        (other, ..) => Err(wrong_kind(other, "response")),
    };
    flush_output();
    result
}
