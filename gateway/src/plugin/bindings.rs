//! Host bindings generated from the contract's WIT, one module per version
//! the gateway speaks. Kept in one place so the rest of the runtime refers
//! to a few chosen names.
//!
//! The gateway works in 0.2's types ([`Outcome`], [`Session`], ...), which
//! are a superset of 0.1's; what a 0.1 plugin returns converts into them
//! (see `records`), and what it receives is lowered from them.

/// `portcullis:plugin@0.1.0`, frozen (`wit/0.1`).
pub mod v01 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1",
        world: "plugin",
        imports: {
            "portcullis:plugin/http.send": async,
            "portcullis:plugin/http.send-all": async,
        },
        exports: { default: async },
    });
}

/// `portcullis:plugin@0.2.0`, current (`plugin-sdk/wit`).
pub mod v02 {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit",
        world: "plugin",
        imports: {
            "portcullis:plugin/http.send": async,
            "portcullis:plugin/http.send-all": async,
        },
        exports: { default: async },
    });
}

pub use v01::portcullis::plugin::http::{BatchOptions, HttpError, OutboundRequest, OutboundResponse};
pub use v01::portcullis::plugin::log::Level;
pub use v01::portcullis::plugin::types::Api;
pub use v02::portcullis::plugin::types::{
    AuthOutcome, Authenticated, FunctionInfo, HookKind, Outcome, RequestChanges, Response, Session,
};
