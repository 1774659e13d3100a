//! The plugins of the benchmark scenarios of `../shared/bench/peers.sh`
//! (not an example), and of the in-process micro-benchmarks
//! (`gateway/benches`). S4 (aggregate) uses the `aggregate` example plugin,
//! and `combine` here for the host-run fan-out on the lean path; `noop`
//! measures the floor, what any plugin call costs.

use portcullis_sdk::http::Merged;
use portcullis_sdk::{Context, Outcome, Request, RequestChanges, Response, Result, plugin};
use serde_json::json;

/// S2: read `x-user`, send the upstream `x-gw-user: user=<x-user>`.
fn header(req: &Request, _: &Context) -> Result<Outcome> {
    let user = req.header("x-user").unwrap_or_default();
    Ok(RequestChanges::new()
        .set_header("x-gw-user", format!("user={user}"))
        .into())
}

/// S3: answer `{"virtual":true,"user":<x-user>,"path":<path>}` directly.
fn virtual_endpoint(req: &Request, _: &Context) -> Result<Outcome> {
    let body = json!({ "virtual": true, "user": req.header("x-user"), "path": req.path() });
    Ok(Response::json(200, &body)?.into())
}

/// The floor: continues unchanged without reading anything, so all it
/// costs is the fresh instance and the records crossing into it.
fn noop(_: &Request, _: &Context) -> Result<Outcome> {
    Ok(Outcome::proceed())
}

/// S4 with a host-run fan-out: merges what the gateway fetched, as the
/// `aggregate` example's `combine` does, in a component that imports no
/// `http` (one core instance).
fn combine(_: &Request, ctx: &Context) -> Result<Outcome> {
    Ok(Merged::new(ctx.fan_out()?).into_response()?.into())
}

/// Micro-benchmark: receives the body and continues unchanged.
fn read_body(req: &Request, _: &Context) -> Result<Outcome> {
    std::hint::black_box(req.body().map(<[u8]>::len));
    Ok(Outcome::proceed())
}

plugin! {
    request "noop" => noop,
    request "header" => header,
    request "virtual" => virtual_endpoint,
    request "combine" => combine,
    request(body) "read-body" => read_body,
}
