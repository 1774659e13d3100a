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
