//! Host bindings generated from `wit/`. Kept in one place so the rest of the
//! runtime refers to a few chosen names.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: {
        "portcullis:plugin/http.send": async,
        "portcullis:plugin/http.send-all": async,
    },
    exports: { default: async },
});

pub use self::portcullis::plugin::http::{BatchOptions, HttpError, OutboundRequest, OutboundResponse};
pub use self::portcullis::plugin::log::Level;
pub use self::portcullis::plugin::types::{Api, AuthOutcome, Outcome, RequestChanges, Response, Session};
pub use self::portcullis::plugin::types::{FunctionInfo, HookKind};
