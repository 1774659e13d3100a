//! `aggregate`: one public endpoint backed by several internal services.
//!
//! Calls every service named in its config **concurrently** through the
//! gateway's outbound HTTP (only hosts on the API's `outbound.allow` list are
//! reachable), waits at most `deadline_ms` for the whole batch, and answers
//! one merged JSON document. A service that fails or is late leaves its part
//! `null` with the reason under `errors`, and the response says so with
//! `x-partial: true`.
//!
//! Two functions give that document:
//! - `merge` makes the calls itself, as configured below;
//! - `combine` merges the results of the plugin reference's `fan_out`,
//!   calls the gateway made before calling it (declared in the YAML, checked
//!   against the allowlist at load, and cheaper: nothing crosses the
//!   boundary but the results, in the function's input).
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
//!
//! ```yaml
//! plugin:
//!   path: aggregate.wasm
//!   function: combine
//!   fan_out:
//!     deadline_ms: 500
//!     calls:
//!       user: http://127.0.0.1:9002/users/{id}
//!       stock: http://127.0.0.1:9003/stock/{id}
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
    answer(Merged::new(config.services.keys().zip(results)), req)
}

fn combine(req: &Request, ctx: &Context) -> Result<Outcome> {
    answer(Merged::new(ctx.fan_out()?), req)
}

/// The merged document, with the path's parameters beside the parts.
fn answer(mut merged: Merged, req: &Request) -> Result<Outcome> {
    for (name, value) in req.params() {
        merged.document.insert(name.to_owned(), Value::String(value.to_owned()));
    }
    Ok(merged.into_response()?.into())
}

plugin! {
    request "merge" => merge: Config,
    request "combine" => combine,
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_sdk::Response;
    use portcullis_sdk::http::{HttpError, OutboundResponse};
    use portcullis_sdk::testing::{FakeHttp, TestContext, TestRequest};
    use serde_json::json;

    fn ctx() -> Context {
        TestContext::new()
            .config(&json!({ "services": {
                "user": "http://users.internal/users/{id}",
                "orders": "http://orders.internal/orders?user={id}"
            } }))
            .build()
    }

    fn body(response: &Response) -> Value {
        serde_json::from_slice(&response.body).unwrap()
    }

    #[test]
    fn merges_every_service_under_its_name() {
        let http = FakeHttp::install();
        http.respond_json("http://users.internal/users/7", 200, &json!({ "name": "ann" }))
            .respond_json("http://orders.internal/orders?user=7", 200, &json!([1, 2]));
        let req = TestRequest::get("/profile/7").param("id", "7").build();
        let response = merge(&req, &ctx()).unwrap().responded().expect("answers itself");
        assert_eq!(response.status, 200);
        assert_eq!(response.get_header("x-partial"), Some("false"));
        let body = body(&response);
        assert_eq!(
            (&body["user"]["name"], &body["orders"], &body["id"]),
            (&json!("ann"), &json!([1, 2]), &json!("7"))
        );
        let urls: Vec<String> = http.calls().into_iter().map(|c| c.url).collect();
        assert_eq!(urls.len(), 2);
        assert!(
            http.calls()
                .iter()
                .all(|c| c.headers.contains(&("accept".into(), "application/json".into())))
        );
    }

    #[test]
    fn a_failing_service_gives_a_partial_result_that_says_why() {
        let http = FakeHttp::install();
        http.respond_json("http://users.internal/users/7", 200, &json!({ "name": "ann" }))
            .fail(
                "http://orders.internal/orders?user=7",
                HttpError::Connect("connection refused".into()),
            );
        let req = TestRequest::get("/profile/7").param("id", "7").build();
        let response = merge(&req, &ctx()).unwrap().responded().expect("answers itself");
        assert_eq!(response.status, 200);
        assert_eq!(response.get_header("x-partial"), Some("true"));
        let body = body(&response);
        assert_eq!(body["user"]["name"], "ann");
        assert_eq!(body["orders"], Value::Null, "{body}");
        assert_eq!(body["errors"]["orders"], "connect: connection refused");
    }

    #[test]
    fn combines_what_the_gateway_fetched() {
        let ok = |body: &Value| {
            Ok(OutboundResponse {
                status: 200,
                headers: vec![],
                body: body.to_string().into_bytes(),
            })
        };
        let ctx = TestContext::new()
            .fan_out("orders", ok(&json!([1, 2])))
            .fan_out("user", ok(&json!({ "name": "ann" })))
            .fan_out("stock", Err(HttpError::Timeout))
            .build();
        let req = TestRequest::get("/profile/7").param("id", "7").build();
        let response = combine(&req, &ctx).unwrap().responded().expect("answers itself");
        assert_eq!(response.get_header("x-partial"), Some("true"));
        let body = body(&response);
        assert_eq!(
            (&body["user"]["name"], &body["orders"], &body["id"], &body["stock"]),
            (&json!("ann"), &json!([1, 2]), &json!("7"), &Value::Null)
        );
        assert_eq!(body["errors"]["stock"], "timeout");
    }

    #[test]
    fn a_timed_out_service_is_reported_too() {
        let http = FakeHttp::install();
        http.time_out("http://users.internal/users/7").respond_json(
            "http://orders.internal/orders?user=7",
            200,
            &json!([]),
        );
        let req = TestRequest::get("/profile/7").param("id", "7").build();
        let response = merge(&req, &ctx()).unwrap().responded().expect("answers itself");
        assert_eq!(response.get_header("x-partial"), Some("true"));
        assert!(body(&response).to_string().contains("timeout"));
    }
}
