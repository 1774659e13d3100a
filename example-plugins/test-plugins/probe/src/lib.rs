//! Test-only plugin (not an example): reports everything the gateway passed
//! in, applies whatever changes its config asks for, fails on request, and
//! carries functions of every hook kind. (Attacks live in `hostile`.)

use portcullis_sdk::{
    AuthOutcome, Context, Outcome, Request, RequestChanges, Response, Result, plugin,
};
use serde::Deserialize;
use serde_json::json;

/// Answers with a JSON picture of the request, session, API and config.
fn inspect(req: &Request, ctx: &Context) -> Result<Outcome> {
    let config: serde_json::Value = ctx.config()?;
    let api_config: serde_json::Value = ctx.api_config()?;
    let body = json!({
        "request": {
            "method": req.method,
            "path": req.path,
            "upstream_path": req.upstream_path,
            "query": req.query,
            "headers": req.headers,
            "body": req.body.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
            "client_addr": req.client_addr,
            "params": req.params,
            "request_id": req.request_id,
        },
        "session": {
            "key_id": ctx.session.key_id,
            "anonymous": ctx.session.is_anonymous(),
            "quota_max": ctx.session.quota_max,
        },
        "api": {
            "id": ctx.api.id,
            "name": ctx.api.name,
            "listen_path": ctx.api.listen_path,
            "upstream": ctx.api.upstream,
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

fn fail(_: &Request, _: &Context) -> Result<Outcome> {
    Err(portcullis_sdk::Error::msg("deliberate failure"))
}

fn check_token(_: &Request, ctx: &Context) -> Result<AuthOutcome> {
    Ok(AuthOutcome::Authenticated(ctx.session.clone()))
}

fn stamp(_: &Request, response: Response, _: &Context) -> Result<Response> {
    Ok(response.header("x-stamped", "yes"))
}

plugin! {
    request(body) "inspect" => inspect,
    request "rewrite" => rewrite,
    request "fail" => fail,
    auth "check-token" => check_token,
    response "stamp" => stamp,
}
