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

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_sdk::testing::{TestContext, TestRequest};

    fn ctx() -> Context {
        TestContext::new()
            .config(&json!({ "header": "x-client-id", "add_headers": { "x-policy": "checked" } }))
            .build()
    }

    #[test]
    fn a_request_without_the_header_is_refused() {
        let response = require_header(&TestRequest::get("/").build(), &ctx())
            .unwrap()
            .responded()
            .expect("refused");
        assert_eq!(response.status, 403);
        let blank = TestRequest::get("/").header("x-client-id", "  ").build();
        assert!(
            require_header(&blank, &ctx()).unwrap().responded().is_some(),
            "blank is missing"
        );
    }

    #[test]
    fn a_request_with_it_goes_on_verified_with_the_configured_headers() {
        let req = TestRequest::get("/").header("X-Client-Id", "c1").build();
        let changes = require_header(&req, &ctx()).unwrap().continued().expect("goes on");
        assert_eq!(
            changes.set_headers,
            [
                ("x-client-verified".to_owned(), "c1".to_owned()),
                ("x-policy".to_owned(), "checked".to_owned())
            ]
        );
    }

    #[test]
    fn a_config_without_the_header_is_an_error() {
        let ctx = TestContext::new().config(&json!({})).build();
        assert!(require_header(&TestRequest::get("/").build(), &ctx).is_err());
    }
}
