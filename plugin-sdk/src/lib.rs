//! Write [Portcullis](https://github.com/portcullis-gateway/portcullis) gateway
//! plugins in plain Rust.
//!
//! A plugin is a WebAssembly component (built for `wasm32-wasip2`) that exports
//! any number of named functions. The gateway calls a function when a request
//! reaches the endpoint or hook that names it, with the request, the caller's
//! [`Session`], the [`Api`] definition and the plugin reference's own config.
//! The function decides an [`Outcome`]: continue (possibly with
//! [`RequestChanges`]) or answer with a [`Response`].
//!
//! This crate is the one dependency a plugin needs: the types, the
//! [`plugin!`] macro that registers functions by name, outbound [`http`] and
//! [`log`]ging. It does not cover anything the gateway does for you (routing,
//! auth, rate limits, proxying).
//!
//! # Example
//!
//! ```no_run
//! use portcullis_sdk::{plugin, Context, Outcome, Request, RequestChanges, Response, Result};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Config {
//!     greeting: String,
//! }
//!
//! /// A virtual endpoint: answers without contacting any upstream.
//! fn hello(req: &Request, ctx: &Context) -> Result<Outcome> {
//!     let config: Config = ctx.config()?;
//!     let name = req.param("name").unwrap_or("world");
//!     let body = serde_json::json!({ "message": format!("{}, {name}!", config.greeting) });
//!     Ok(Outcome::Respond(Response::json(200, &body)?))
//! }
//!
//! /// A policy: tags the request and lets it through.
//! fn tag(_req: &Request, _ctx: &Context) -> Result<Outcome> {
//!     Ok(Outcome::Continue(RequestChanges::new().set_header("x-tagged", "yes")))
//! }
//!
//! plugin! {
//!     request "hello" => hello,
//!     request "tag" => tag,
//! }
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and name it in
//! an API definition:
//!
//! ```yaml
//! endpoints:
//!   - method: GET
//!     path: /hello/{name}
//!     plugin:
//!       path: target/wasm32-wasip2/release/my_plugin.wasm
//!       function: hello
//!       config: { greeting: Hello }
//! ```

//!
//! # The contract
//!
//! This crate speaks `portcullis:plugin@0.2.0`, whose WIT ships inside it
//! (`wit/plugin.wit`; its doc comments are the reference). A call hands the
//! function one input buffer: [`Request`]'s accessors borrow from it without
//! copying, and [`Context::session`] and [`Context::api`] decode their parts
//! only when called. Gateways that speak 0.2 also load plugins built with
//! the 0.1 SDK, so upgrading a plugin is never forced by a gateway upgrade.

#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
mod console;
mod context;
pub mod http;
pub mod log;
mod macros;
mod request;
pub mod testing;
mod types;
mod wire;

/// The gateway's host functions in a plugin; the fakes of [`testing`] in a
/// native build (`cargo test`).
mod host {
    #[cfg(target_arch = "wasm32")]
    pub(crate) use crate::bindings::portcullis::plugin::http::{send, send_all};
    #[cfg(target_arch = "wasm32")]
    pub(crate) use crate::log::log_in_parts as log;
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) use crate::testing::{log, send, send_all};
}

#[doc(hidden)]
pub mod __rt;

pub use context::{Api, Context};
pub use request::Request;
pub use types::{Error, Result};

/// Generated bindings of the `portcullis:plugin` WIT package. Plugin code
/// rarely needs them directly: the useful types are re-exported at the crate
/// root.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_guest",
        default_bindings_module: "portcullis_sdk::bindings",
        generate_all,
    });
}

pub use bindings::portcullis::plugin::types::{
    AuthOutcome, Authenticated, HookKind, Outcome, RequestChanges, Response, Session,
};

/// Re-exported for building and reading JSON bodies (`portcullis_sdk::serde_json`).
pub use serde_json;
