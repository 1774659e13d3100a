//! `hello`: a virtual endpoint. Answers JSON built from the request, a path
//! parameter and the plugin's config, without contacting any upstream.
//!
//! ```yaml
//! plugin: { path: hello.wasm, function: hello, config: { greeting: Hello } }
//! ```

use portcullis_sdk::{Context, Outcome, Request, Response, Result, plugin};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// The word before the name.
    greeting: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            greeting: "Hello".into(),
        }
    }
}

fn hello(req: &Request, ctx: &Context) -> Result<Outcome> {
    let config: Config = ctx.config()?;
    let name = req.param("name").unwrap_or("world");
    let body = json!({
        "message": format!("{}, {name}!", config.greeting),
        "method": req.method(),
        "path": req.path(),
        "query": req.query(),
        "user_agent": req.header("user-agent"),
        "api": ctx.api().id,
        "request_id": req.request_id(),
    });
    Ok(Response::json(200, &body)?.header("x-served-by", "hello.wasm").into())
}

plugin! {
    request "hello" => hello: Config,
}
