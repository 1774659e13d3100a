//! `aggregate`: one public endpoint backed by several internal services.
//! Calls each service named in its config through the gateway's outbound
//! HTTP (only hosts on the API's `outbound.allow` list are reachable) and
//! answers one merged JSON document. A service that fails leaves its part
//! `null`, names the failure under `errors` and marks the answer partial
//! (`x-partial: true`).
//!
//! ```yaml
//! plugin:
//!   path: aggregate.wasm
//!   function: merge
//!   config:
//!     services:                 # part name -> URL; {param} is filled from the path
//!       user: http://127.0.0.1:9002/users/{id}
//!       stock: http://127.0.0.1:9003/stock/{id}
//! ```

use std::collections::BTreeMap;

use portcullis_sdk::http::{self, OutboundRequest};
use portcullis_sdk::{Context, Outcome, Request, Response, Result, plugin};
use serde::Deserialize;
use serde_json::{Map, Value, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    services: BTreeMap<String, String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// `url` with every `{name}` replaced by the path parameter of that name.
fn fill(url: &str, req: &Request) -> String {
    req.params
        .iter()
        .fold(url.to_owned(), |url, (name, value)| {
            url.replace(&format!("{{{name}}}"), value)
        })
}

fn merge(req: &Request, ctx: &Context) -> Result<Outcome> {
    let config: Config = ctx.config()?;
    let mut document = Map::new();
    for (name, value) in &req.params {
        document.insert(name.clone(), Value::String(value.clone()));
    }
    let mut errors = Map::new();
    for (part, url) in &config.services {
        let mut call = OutboundRequest::get(&fill(url, req)).header("accept", "application/json");
        if let Some(ms) = config.timeout_ms {
            call = call.timeout(std::time::Duration::from_millis(ms));
        }
        let value = match http::send(&call) {
            Ok(response) if response.is_success() => response.json::<Value>().unwrap_or_else(|e| {
                errors.insert(part.clone(), json!(format!("invalid JSON: {e}")));
                Value::Null
            }),
            Ok(response) => {
                errors.insert(part.clone(), json!(format!("status {}", response.status)));
                Value::Null
            }
            Err(e) => {
                errors.insert(part.clone(), json!(e.to_string()));
                Value::Null
            }
        };
        document.insert(part.clone(), value);
    }
    let partial = !errors.is_empty();
    if partial {
        document.insert("errors".into(), Value::Object(errors));
    }
    let response = Response::json(200, &document)?.header("x-partial", partial.to_string());
    Ok(response.into())
}

plugin! {
    request "merge" => merge,
}
