//! `aggregate`: one public endpoint backed by several internal services.
//!
//! Calls every service named in its config **concurrently** through the
//! gateway's outbound HTTP (only hosts on the API's `outbound.allow` list are
//! reachable), waits at most `deadline_ms` for the whole batch, and answers
//! one merged JSON document. A service that fails or is late leaves its part
//! `null` with the reason under `errors`, and the response says so with
//! `x-partial: true`.
//!
//! ```yaml
//! plugin:
//!   path: aggregate.wasm
//!   function: merge
//!   config:
//!     deadline_ms: 500          # for the whole fan-out (default 1000)
//!     first: 1                  # optional: answer once this many parts arrived
//!     services:                 # part name -> URL; {param} is filled from the path
//!       user: http://127.0.0.1:9002/users/{id}
//!       stock: http://127.0.0.1:9003/stock/{id}
//!       price: http://127.0.0.1:9004/prices/{id}
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use portcullis_sdk::http::{Batch, Merged, OutboundRequest};
use portcullis_sdk::{Context, Outcome, Request, Result, plugin};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Config {
    services: BTreeMap<String, String>,
    #[serde(default = "default_deadline_ms")]
    deadline_ms: u64,
    /// Answer as soon as this many parts succeeded; the others are cancelled.
    #[serde(default)]
    first: Option<u32>,
}

fn default_deadline_ms() -> u64 {
    1000
}

/// `url` with every `{name}` replaced by the path parameter of that name.
fn fill(url: &str, req: &Request) -> String {
    req.params().fold(url.to_owned(), |url, (name, value)| {
        url.replace(&format!("{{{name}}}"), value)
    })
}

fn merge(req: &Request, ctx: &Context) -> Result<Outcome> {
    let config: Config = ctx.config()?;
    let calls = config
        .services
        .values()
        .map(|url| OutboundRequest::get(&fill(url, req)).header("accept", "application/json"))
        .collect();
    let mut batch = Batch::new(calls).deadline(Duration::from_millis(config.deadline_ms));
    if let Some(n) = config.first {
        batch = batch.first(n);
    }
    let results = batch.send();
    let mut merged = Merged::new(config.services.keys().map(String::as_str).zip(results));
    for (name, value) in req.params() {
        merged.document.insert(name.to_owned(), Value::String(value.to_owned()));
    }
    Ok(merged.into_response()?.into())
}

plugin! {
    request "merge" => merge: Config,
}
