//! `policy`: custom access policy. Rejects requests that lack a required
//! header with 403 and a JSON error; lets the others through, with headers
//! added for the upstream.
//!
//! ```yaml
//! plugin:
//!   path: policy.wasm
//!   function: require-header
//!   config:
//!     header: x-api-client                 # required request header
//!     add_headers: { x-policy: checked }   # set on requests that pass
//! ```

use std::collections::BTreeMap;

use portcullis_sdk::{Context, Outcome, Request, RequestChanges, Response, Result, plugin};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Config {
    header: String,
    #[serde(default)]
    add_headers: BTreeMap<String, String>,
}

fn require_header(req: &Request, ctx: &Context) -> Result<Outcome> {
    let config: Config = ctx.config()?;
    let Some(value) = req.header(&config.header).filter(|v| !v.trim().is_empty()) else {
        let body = json!({ "error": format!("missing required header {}", config.header) });
        return Ok(Response::json(403, &body)?.into());
    };
    let mut changes = RequestChanges::new().set_header("x-client-verified", value);
    for (name, value) in config.add_headers {
        changes = changes.set_header(name, value);
    }
    Ok(changes.into())
}

plugin! {
    request "require-header" => require_header: Config,
}
