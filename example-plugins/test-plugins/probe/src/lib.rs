//! Test-only plugin (not an example): reports everything the gateway passed
//! in, applies whatever changes its config asks for, fails on request, and
//! carries functions of every hook kind. (Attacks live in `hostile`.)

use portcullis_sdk::{AuthOutcome, Context, Outcome, Request, RequestChanges, Response, Result, plugin};
use serde::Deserialize;
use serde_json::json;

/// Answers with a JSON picture of the request, session, API and config.
fn inspect(req: &Request, ctx: &Context) -> Result<Outcome> {
    let config: serde_json::Value = ctx.config()?;
    let api_config: serde_json::Value = ctx.api_config()?;
    let body = json!({
        "request": {
            "method": req.method(),
            "path": req.path(),
            "upstream_path": req.upstream_path(),
            "query": req.query(),
            "headers": req.headers().collect::<Vec<_>>(),
            "body": req.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
            "client_addr": req.client_addr(),
            "params": req.params().collect::<Vec<_>>(),
            "request_id": req.request_id(),
        },
        "session": {
            "key_id": ctx.session().key_id,
            "anonymous": ctx.session().is_anonymous(),
            "quota_max": ctx.session().quota_max,
        },
        "api": {
            "id": ctx.api().id,
            "name": ctx.api().name,
            "listen_path": ctx.api().listen_path,
            "upstream": ctx.api().upstream,
            "config": api_config,
        },
        "config": config,
    });
    Ok(Response::json(200, &body)?.into())
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Rewrite {
    method: Option<String>,
    path: Option<String>,
    query: Option<String>,
    set_headers: Vec<(String, String)>,
    remove_headers: Vec<String>,
    body: Option<String>,
    upstream: Option<String>,
}

/// Continues with the changes named in its config.
fn rewrite(_req: &Request, ctx: &Context) -> Result<Outcome> {
    let r: Rewrite = ctx.config()?;
    let mut changes = RequestChanges::new();
    changes.method = r.method;
    changes.path = r.path;
    changes.query = r.query;
    changes.set_headers = r.set_headers;
    changes.remove_headers = r.remove_headers;
    changes.body = r.body.map(String::into_bytes);
    changes.upstream = r.upstream;
    Ok(changes.into())
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Order {
    name: String,
    metadata: Vec<(String, String)>,
}

/// Appends its config `name` to the request header `x-order`, and sets the
/// session metadata its config lists: shows hook order and write-back.
fn record_order(req: &Request, ctx: &Context) -> Result<Outcome> {
    let order: Order = ctx.config()?;
    let so_far = req.header("x-order").map(|v| format!("{v},")).unwrap_or_default();
    let mut changes = RequestChanges::new().set_header("x-order", format!("{so_far}{}", order.name));
    for (name, value) in order.metadata {
        changes = changes.set_metadata(name, value);
    }
    Ok(changes.into())
}

/// Appends its config `name` to the response header `x-order` (starting
/// from the request's `x-order`).
fn record_order_response(req: &Request, response: Response, ctx: &Context) -> Result<Response> {
    let order: Order = ctx.config()?;
    let so_far = response
        .get_header("x-order")
        .or(req.header("x-order"))
        .map(|v| format!("{v},"))
        .unwrap_or_default();
    let value = format!("{so_far}{}", order.name);
    let mut response = response;
    response.headers.retain(|(n, _)| n != "x-order");
    Ok(response.header("x-order", value))
}

/// Wraps the response body: `{"wrapped": <body as text>, "status": <status>,
/// "request_body": <whether the request record carried a body>}`.
fn wrap_body(req: &Request, response: Response, _: &Context) -> Result<Response> {
    let text = String::from_utf8_lossy(&response.body).into_owned();
    let status = response.status;
    let body = json!({ "wrapped": text, "status": status, "request_body": req.body().is_some() });
    let mut wrapped = Response::json(201, &body)?;
    wrapped.headers.extend(
        response
            .headers
            .into_iter()
            .filter(|(n, _)| n != "content-type" && n != "content-length"),
    );
    Ok(wrapped)
}

/// Answers with the session it was given.
fn whoami(req: &Request, ctx: &Context) -> Result<Outcome> {
    let s = &ctx.session();
    let body = json!({
        "key_id": s.key_id,
        "rate": s.rate,
        "per": s.per,
        "quota_max": s.quota_max,
        "quota_remaining": s.quota_remaining,
        "metadata": s.metadata,
        "tags": s.tags,
        "x_order": req.header("x-order"),
    });
    Ok(Response::json(200, &body)?.into())
}

fn fail(_: &Request, _: &Context) -> Result<Outcome> {
    Err(portcullis_sdk::Error::msg("deliberate failure"))
}

/// Answers with how many calls this instance has served, so tests can tell
/// a fresh instance (always 1) from a reused one; panics (a trap) when the
/// request has `x-crash`, to show a failed instance is not reused.
fn count(req: &Request, _: &Context) -> Result<Outcome> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    if req.header("x-crash").is_some() {
        panic!("crash requested on call {calls}");
    }
    Ok(Response::json(200, &json!({ "calls": calls }))?.into())
}

/// Writes to stdout and stderr (a flood of it with `?flood`), then answers.
fn print(req: &Request, _: &Context) -> Result<Outcome> {
    println!("to stdout from {}", req.path());
    eprintln!("to stderr");
    if req.query() == "flood" {
        println!("{}", "x".repeat(20_000));
    }
    Ok(Response::text(200, "printed").into())
}

fn check_token(_: &Request, ctx: &Context) -> Result<AuthOutcome> {
    Ok(AuthOutcome::authenticated(ctx.session().clone()))
}

fn stamp(_: &Request, response: Response, _: &Context) -> Result<Response> {
    Ok(response.header("x-stamped", "yes"))
}

/// Sets the response headers its config lists (`{ headers: [[name, value], ...] }`)
/// on the client's response and continues.
fn respond_with_headers(_: &Request, ctx: &Context) -> Result<Outcome> {
    #[derive(serde::Deserialize)]
    struct Headers {
        headers: Vec<(String, String)>,
    }
    let config: Headers = ctx.config()?;
    let changes = config
        .headers
        .into_iter()
        .fold(RequestChanges::new(), |c, (name, value)| c.response_header(name, value));
    Ok(changes.into())
}

plugin! {
    request "response-headers" => respond_with_headers,
    request(body) "inspect" => inspect,
    request "rewrite" => rewrite,
    request "fail" => fail,
    request "record-order" => record_order,
    request "whoami" => whoami,
    request "count" => count,
    request "print" => print,
    response "record-order-response" => record_order_response,
    response(body) "wrap-body" => wrap_body,
    auth "check-token" => check_token,
    response "stamp" => stamp,
}
