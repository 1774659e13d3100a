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

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_sdk::testing::{TestContext, TestRequest};

    #[test]
    fn greets_the_name_in_the_path_with_the_configured_greeting() {
        let req = TestRequest::get("/hello/ann?x=1")
            .param("name", "ann")
            .header("user-agent", "test")
            .build();
        let ctx = TestContext::new().config(&json!({ "greeting": "Hi" })).build();
        let response = hello(&req, &ctx).unwrap().responded().expect("answers itself");
        assert_eq!(response.status, 200);
        assert_eq!(response.get_header("x-served-by"), Some("hello.wasm"));
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(body["message"], "Hi, ann!");
        assert_eq!(
            (body["query"].as_str(), body["user_agent"].as_str()),
            (Some("x=1"), Some("test"))
        );
    }

    #[test]
    fn without_a_config_it_says_hello_world() {
        let response = hello(&TestRequest::get("/").build(), &TestContext::new().build())
            .unwrap()
            .responded()
            .expect("answers itself");
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(body["message"], "Hello, world!");
    }
}
