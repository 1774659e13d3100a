//! `router`: dynamic routing. Picks the upstream for each request from a
//! header (first) or a path parameter, among the upstreams its config lists,
//! and removes the routing segment from the path sent upstream. A config
//! value names one of the API's `upstreams` (balanced, health-checked), or is
//! a URL the API's `routing.allow` permits.
//!
//! ```yaml
//! upstream: eu
//! upstreams:
//!   eu: { targets: [http://127.0.0.1:9011, http://127.0.0.1:9013] }
//!   us: http://127.0.0.1:9012
//! endpoints:
//!   - path: /{region}/{*rest}
//!     plugin:
//!       path: router.wasm
//!       function: by-region
//!       config:
//!         header: x-region       # wins over the path parameter when present
//!         param: region
//!         rest_param: rest       # the path the upstream sees: /{rest}
//!         upstreams:             # route name -> upstream name or URL
//!           eu: eu
//!           us: us
//! ```

use std::collections::BTreeMap;

use portcullis_sdk::{Context, Outcome, Request, RequestChanges, Response, Result, plugin};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    param: Option<String>,
    #[serde(default)]
    rest_param: Option<String>,
    upstreams: BTreeMap<String, String>,
}

fn by_region(req: &Request, ctx: &Context) -> Result<Outcome> {
    let config: Config = ctx.config()?;
    let from_header = config.header.as_deref().and_then(|h| req.header(h));
    let from_param = config.param.as_deref().and_then(|p| req.param(p));
    let Some(choice) = from_header.or(from_param) else {
        return Ok(Response::json(400, &json!({ "error": "no routing key in the request" }))?.into());
    };
    let Some(upstream) = config.upstreams.get(&choice.to_ascii_lowercase()) else {
        let known: Vec<&String> = config.upstreams.keys().collect();
        return Ok(Response::json(
            400,
            &json!({ "error": format!("unknown route {choice:?}"), "known": known }),
        )?
        .into());
    };
    let mut changes = RequestChanges::new()
        .upstream(upstream)
        .set_header("x-routed-to", choice);
    if let Some(rest) = config.rest_param.as_deref().and_then(|p| req.param(p)) {
        changes = changes.path(format!("/{rest}"));
    }
    Ok(changes.into())
}

plugin! {
    request "by-region" => by_region: Config,
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_sdk::testing::{TestContext, TestRequest};

    fn ctx() -> Context {
        TestContext::new()
            .config(&json!({
                "header": "x-region", "param": "region", "rest_param": "rest",
                "upstreams": { "eu": "eu", "us": "http://10.0.0.2:8080" }
            }))
            .build()
    }

    #[test]
    fn routes_by_header_first_then_by_path_parameter() {
        let by_param = TestRequest::get("/eu/items/7")
            .param("region", "eu")
            .param("rest", "items/7")
            .build();
        let changes = by_region(&by_param, &ctx()).unwrap().continued().expect("routed");
        assert_eq!(changes.upstream.as_deref(), Some("eu"));
        assert_eq!(changes.path.as_deref(), Some("/items/7"));
        let by_header = TestRequest::get("/eu/x")
            .param("region", "eu")
            .header("x-region", "US")
            .build();
        let changes = by_region(&by_header, &ctx()).unwrap().continued().expect("routed");
        assert_eq!(changes.upstream.as_deref(), Some("http://10.0.0.2:8080"));
    }

    #[test]
    fn an_unknown_or_missing_region_is_a_400() {
        let unknown = TestRequest::get("/asia/x").param("region", "asia").build();
        assert_eq!(
            by_region(&unknown, &ctx())
                .unwrap()
                .responded()
                .expect("refused")
                .status,
            400
        );
        let missing = TestRequest::get("/").build();
        assert_eq!(
            by_region(&missing, &ctx())
                .unwrap()
                .responded()
                .expect("refused")
                .status,
            400
        );
    }
}
